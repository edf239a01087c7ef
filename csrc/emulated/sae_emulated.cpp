// CPU registrations of the test hooks that run the CUDA kernel's per-warp algorithm
// (cuda/sae_warp.h) on CPU tensors with an emulated warp. One emulated warp walks every
// row in turn, as a warp of a grid-stride kernel would. Slow by design; tests only.
#include <torch/csrc/stable/library.h>

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
    fail("emulated warp: ", e.what());
  }
}

std::tuple<Tensor, Tensor> emulated_advantages(
    const Tensor& rewards, const Tensor& values, const Tensor& logprobs,
    const Tensor& mask, double gamma, double lam, double lam_inner, double threshold,
    const OptTensor& bootstrap) {
  Prepared pr = prepare_forward("sae._warp_emulated_advantages", DeviceType::CPU, rewards, values,
                                logprobs, true, mask, gamma, lam, lam_inner, threshold, bootstrap);
  emulate_rows<false>(pr);
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
  emulate_rows<true>(pr);
  return {pr.out0, pr.out1, pr.out2};
}

}  // namespace

STABLE_TORCH_LIBRARY_IMPL(sae, CPU, m) {
  m.impl("_warp_emulated_advantages", TORCH_BOX(&emulated_advantages));
  m.impl("_warp_emulated_advantages_backward", TORCH_BOX(&emulated_advantages_backward));
}

}  // namespace sae
