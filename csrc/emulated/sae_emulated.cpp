// CPU registrations of the test hooks that run the CUDA kernel's per-warp algorithm
// (cuda/sae_warp.h) on CPU tensors with an emulated warp. One emulated warp walks every
// row in turn, as a warp of a grid-stride kernel would. Slow by design; tests only.
#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>
#include <torch/library.h>

#include <tuple>

#include "../cuda/sae_warp.h"
#include "../sae_checks.h"
#include "warp_emulator.h"

namespace sae {
namespace {

template <bool Adjoint>
void emulate_rows(const Prepared& pr) {
  const ScanArgs& s = pr.args;
  const VecFlags vec = vec_flags(s, pr.use_double ? 8 : 4);
  try {
    emu::run_warp([&](emu::EmulatedWarp& warp) {
      for (int64_t row = 0; row < s.B; ++row) {
        if (pr.use_double) warp_scan_row<double, Adjoint>(warp, s, vec, row);
        else warp_scan_row<float, Adjoint>(warp, s, vec, row);
      }
    });
  } catch (const emu::WarpDivergence& e) {
    TORCH_CHECK(false, "emulated warp: ", e.what());
  }
}

std::tuple<at::Tensor, at::Tensor> emulated_advantages(
    const at::Tensor& rewards, const at::Tensor& values, const at::Tensor& logprobs,
    const at::Tensor& mask, double gamma, double lam, double lam_inner, double threshold,
    const c10::optional<at::Tensor>& bootstrap) {
  Prepared pr = prepare_forward("sae._warp_emulated_advantages", rewards, values, logprobs, true,
                                mask, gamma, lam, lam_inner, threshold, bootstrap);
  emulate_rows<false>(pr);
  return {pr.out0, pr.out1};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> emulated_advantages_backward(
    const c10::optional<at::Tensor>& grad_advantages, const c10::optional<at::Tensor>& grad_returns,
    const at::Tensor& mask, const c10::optional<at::Tensor>& logprobs,
    const c10::optional<at::Tensor>& boundaries, double gamma, double lam, double lam_inner,
    double threshold) {
  Prepared pr = prepare_adjoint("sae._warp_emulated_advantages_backward", grad_advantages,
                                grad_returns, mask, logprobs, boundaries, gamma, lam, lam_inner,
                                threshold);
  emulate_rows<true>(pr);
  return {pr.out0, pr.out1, pr.out2};
}

}  // namespace

TORCH_LIBRARY_IMPL(sae, CPU, m) {
  m.impl("_warp_emulated_advantages", &emulated_advantages);
  m.impl("_warp_emulated_advantages_backward", &emulated_advantages_backward);
}

}  // namespace sae
