// The CPU kernels of the sae ops: arguments checked and outputs allocated by sae_checks
// (the code every backend shares), then the scan (dispatch.h) or the segmentation.
#include <torch/csrc/stable/library.h>

#include <tuple>

#include "../sae_checks.h"
#include "dispatch.h"
#include "segmentation.h"

namespace sae {
namespace {


std::tuple<Tensor, Tensor> advantages_cpu(const Tensor& rewards, const Tensor& values,
                                          const Tensor& logprobs, const Tensor& mask,
                                          double gamma, double lam, double lam_inner,
                                          double threshold, const OptTensor& bootstrap) {
  Prepared pr = prepare_forward("sae.advantages", DeviceType::CPU, rewards, values, logprobs, true,
                                mask, gamma, lam, lam_inner, threshold, bootstrap);
  cpu::scan_all_rows<false>(pr.args, pr.use_double);
  return {pr.out0, pr.out1};
}

std::tuple<Tensor, Tensor> advantages_from_boundaries_cpu(
    const Tensor& rewards, const Tensor& values, const Tensor& boundaries, const Tensor& mask,
    double gamma, double lam, double lam_inner, const OptTensor& bootstrap) {
  Prepared pr = prepare_forward("sae.advantages_from_boundaries", DeviceType::CPU, rewards, values,
                                boundaries, false, mask, gamma, lam, lam_inner, 0.0, bootstrap);
  cpu::scan_all_rows<false>(pr.args, pr.use_double);
  return {pr.out0, pr.out1};
}

std::tuple<Tensor, Tensor, Tensor> advantages_backward_cpu(
    const OptTensor& grad_advantages, const OptTensor& grad_returns, const Tensor& mask,
    const OptTensor& logprobs, const OptTensor& boundaries, double gamma, double lam,
    double lam_inner, double threshold) {
  Prepared pr = prepare_adjoint("sae.advantages_backward", DeviceType::CPU, grad_advantages,
                                grad_returns, mask, logprobs, boundaries, gamma, lam, lam_inner,
                                threshold);
  cpu::scan_all_rows<true>(pr.args, pr.use_double);
  return {pr.out0, pr.out1, pr.out2};
}

}  // namespace

STABLE_TORCH_LIBRARY_IMPL(sae, CPU, m) {
  m.impl("advantages", TORCH_BOX(&advantages_cpu));
  m.impl("advantages_from_boundaries", TORCH_BOX(&advantages_from_boundaries_cpu));
  m.impl("advantages_backward", TORCH_BOX(&advantages_backward_cpu));
  m.impl("segment_boundaries", TORCH_BOX(&cpu::segment_boundaries));
}

}  // namespace sae
