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

using Advantages = std::tuple<at::Tensor, at::Tensor>(const at::Tensor&, const at::Tensor&,
                                                      const at::Tensor&, const at::Tensor&, double,
                                                      double, double, double,
                                                      const std::optional<at::Tensor>&);

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

  // GAE with gamma = 1, lam = 0.5: advantage_t = 0.5^(T-1-t).
  auto [adv, ret] = op.call(rewards, values, logprobs, mask, 1.0, 0.5, 0.5, 0.2, std::nullopt);
  double err = 0.0;
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = 0; t < T; ++t)
      err = std::max(err, std::abs(adv[b][t].item<double>() - std::pow(0.5, double(T - 1 - t))));
  expect(err == 0.0, "GAE advantages are 0.5^(T-1-t)");
  expect(at::equal(ret, adv + values), "returns are advantages + values");

  // SAE with lam_inner = 1 and no cuts: every token's advantage is the whole reward.
  auto [sae_adv, sae_ret] = op.call(rewards, values, logprobs, mask, 1.0, 0.5, 1.0, 0.2, std::nullopt);
  expect(at::equal(sae_adv, at::ones({B, T})), "SAE with no cut: advantages are all 1");

  // Bad input: the error names the argument.
  try {
    op.call(rewards, at::zeros({B, T + 1}), logprobs, mask, 1.0, 0.5, 1.0, 0.2, std::nullopt);
    expect(false, "a mis-shaped `values` raises");
  } catch (const std::exception& e) {
    expect(std::string(e.what()).find("`values`") != std::string::npos,
           std::string("a mis-shaped `values` raises: ") + e.what());
  }
  std::printf("%d passed, %d failed\n", 4 - failures, failures);
  return failures == 0 ? 0 : 1;
}
