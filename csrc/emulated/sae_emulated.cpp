// CPU registrations of the test hooks that run the CUDA launcher's whole schedule
// (emulated/emulated_scan.h over cuda/sae_schedule.h) on CPU tensors with emulated warps and
// blocks, choosing loaders and schedule exactly as the CUDA launcher does for an H100/H200.
// Slow by design; tests only.
#include <torch/csrc/stable/library.h>

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
    fail("emulated warp: ", e.what());
  }
}

std::tuple<Tensor, Tensor> emulated_advantages(
    const Tensor& rewards, const Tensor& values, const Tensor& logprobs,
    const Tensor& mask, double gamma, double lam, double lam_inner, double threshold,
    const OptTensor& bootstrap) {
  Prepared pr = prepare_forward("sae._warp_emulated_advantages", DeviceType::CPU, rewards, values,
                                logprobs, true, mask, gamma, lam, lam_inner, threshold, bootstrap);
  emulate<false>(pr);
  return {pr.out0, pr.out1};
}

std::tuple<Tensor, Tensor, Tensor> emulated_advantages_backward(
    const OptTensor& grad_advantages, const OptTensor& grad_returns,
    const Tensor& mask, const OptTensor& logprobs,
    const OptTensor& boundaries, double gamma, double lam, double lam_inner,
    double threshold) {
  Prepared pr = prepare_adjoint("sae._warp_emulated_advantages_backward", DeviceType::CPU, grad_advantages,
                                grad_returns, mask, logprobs, boundaries, gamma, lam, lam_inner,
                                threshold);
  emulate<true>(pr);
  return {pr.out0, pr.out1, pr.out2};
}

}  // namespace

STABLE_TORCH_LIBRARY_IMPL(sae, CPU, m) {
  m.impl("_warp_emulated_advantages", TORCH_BOX(&emulated_advantages));
  m.impl("_warp_emulated_advantages_backward", TORCH_BOX(&emulated_advantages_backward));
}

}  // namespace sae
