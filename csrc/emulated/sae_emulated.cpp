// CPU registrations of the test hooks that run the CUDA launcher's whole schedule
// (emulated/emulated_scan.h over cuda/sae_schedule.h) on CPU tensors with emulated warps and
// blocks, choosing loaders and schedule exactly as the CUDA launcher does for an H100/H200.
// Slow by design; tests only.
#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>
#include <torch/library.h>

#include <tuple>

#include "../sae_checks.h"
#include "emulated_scan.h"

namespace sae {
namespace {

template <bool Adjoint>
void emulate(const Prepared& pr) {
  try {
    emu::emulate_scan<Adjoint>(pr.args, pr.use_double, emu::ScanOptions{});
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
  emulate<false>(pr);
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
  emulate<true>(pr);
  return {pr.out0, pr.out1, pr.out2};
}

}  // namespace

TORCH_LIBRARY_IMPL(sae, CPU, m) {
  m.impl("_warp_emulated_advantages", &emulated_advantages);
  m.impl("_warp_emulated_advantages_backward", &emulated_advantages_backward);
}

}  // namespace sae
