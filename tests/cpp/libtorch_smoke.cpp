// A libtorch program calling sae::advantages through the dispatcher, as a C++ user of the
// CMake library target would: the op is found by name once the library is linked (its
// static initialisers register it), and its results are checked against closed forms.
#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>

#include <cmath>
#include <cstdio>
#include <optional>
#include <string>
#include <tuple>

namespace {

using OptTensor = std::optional<at::Tensor>;
// The schema's order (csrc/torch_bindings.cpp): the inputs, the scalars, bootstrap, then the
// variants (lam_rows, lam_inner_rows, lam_critic, lam_critic_rows, cu_seqlens).
using Advantages = std::tuple<at::Tensor, at::Tensor>(
    const at::Tensor&, const at::Tensor&, const OptTensor&, const OptTensor&, double, double,
    double, double, const OptTensor&, const OptTensor&, const OptTensor&, std::optional<double>,
    const OptTensor&, const OptTensor&);

int failures = 0;

void expect(bool ok, const std::string& what) {
  std::printf("%s: %s\n", ok ? "ok" : "FAILED", what.c_str());
  failures += ok ? 0 : 1;
}

}  // namespace

int main() {
  const auto op = c10::Dispatcher::singleton()
                      .findSchemaOrThrow("sae::advantages", "")
                      .typed<Advantages>();
  const int64_t B = 2, T = 5;
  // One reward of 1 on each row's last token, zero values, no segment cuts (log p = 0).
  at::Tensor rewards = at::zeros({B, T});
  rewards.select(1, T - 1).fill_(1.0);
  const at::Tensor values = at::zeros({B, T}), logprobs = at::zeros({B, T});
  const at::Tensor mask = at::ones({B, T}, at::kBool);
  // Every variant absent, unless lam_rows is given.
  auto call = [&](const at::Tensor& v, double lam, double lam_inner,
                  const OptTensor& lam_rows = std::nullopt) {
    return op.call(rewards, v, logprobs, mask, 1.0, lam, lam_inner, 0.2, std::nullopt, lam_rows,
                   lam_rows, std::nullopt, std::nullopt, std::nullopt);
  };

  // GAE with gamma = 1, lam = 0.5: advantage_t = 0.5^(T-1-t).
  auto [adv, ret] = call(values, 0.5, 0.5);
  double err = 0.0;
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = 0; t < T; ++t)
      err = std::max(err, std::abs(adv[b][t].item<double>() - std::pow(0.5, double(T - 1 - t))));
  expect(err == 0.0, "GAE advantages are 0.5^(T-1-t)");
  expect(at::equal(ret, adv + values), "returns are advantages + values");

  // SAE with lam_inner = 1 and no cuts: every token's advantage is the whole reward.
  auto [sae_adv, sae_ret] = call(values, 0.5, 1.0);
  expect(at::equal(sae_adv, at::ones({B, T})), "SAE with no cut: advantages are all 1");

  // Per-row lambdas (GAE, lam = lam_inner per row): row 1 with lam = 1 sees the whole reward.
  auto [row_adv, row_ret] = call(values, 0.0, 0.0, at::tensor({0.5, 1.0}, at::kDouble));
  expect(at::equal(row_adv[0], adv[0]) && at::equal(row_adv[1], at::ones({T})),
         "per-row lambdas: row 0 as lam = 0.5, row 1 as lam = 1");

  // Bad input: the error names the argument.
  try {
    call(at::zeros({B, T + 1}), 0.5, 1.0);
    expect(false, "a mis-shaped `values` raises");
  } catch (const std::exception& e) {
    expect(std::string(e.what()).find("`values`") != std::string::npos,
           std::string("a mis-shaped `values` raises: ") + e.what());
  }
  std::printf("%d passed, %d failed\n", 5 - failures, failures);
  return failures == 0 ? 0 : 1;
}
