// The CPU kernels of the sae ops: arguments checked and outputs allocated by sae_checks
// (the code every backend shares), then the scan (dispatch.h) or the segmentation.
#include <torch/csrc/stable/library.h>

#include <optional>
#include <tuple>

#include "../sae_checks.h"
#include "dispatch.h"
#include "segmentation.h"

namespace sae {
namespace {

using OptDouble = std::optional<double>;

std::tuple<Tensor, Tensor> advantages_cpu(
    const Tensor& rewards, const Tensor& values, const OptTensor& logprobs, const OptTensor& mask,
    double gamma, double lam, double lam_inner, double threshold, const OptTensor& bootstrap,
    const OptTensor& lam_rows, const OptTensor& lam_inner_rows, OptDouble lam_critic,
    const OptTensor& lam_critic_rows, const OptTensor& cu_seqlens) {
  Prepared pr = prepare_forward(
      "sae.advantages", DeviceType::CPU, rewards, values, logprobs, true, mask, gamma, lam,
      lam_inner, threshold, bootstrap,
      variant_options(lam_rows, lam_inner_rows, lam_critic, lam_critic_rows, cu_seqlens));
  cpu::scan_all_rows<false>(pr.args, pr.use_double);
  return {pr.out0, pr.out1};
}

std::tuple<Tensor, Tensor> advantages_out_cpu(
    const Tensor& rewards, const Tensor& values, const OptTensor& logprobs, const OptTensor& mask,
    double gamma, double lam, double lam_inner, double threshold, const OptTensor& bootstrap,
    const OptTensor& lam_rows, const OptTensor& lam_inner_rows, OptDouble lam_critic,
    const OptTensor& lam_critic_rows, const OptTensor& cu_seqlens, Tensor out_advantages,
    Tensor out_returns) {
  Options o = variant_options(lam_rows, lam_inner_rows, lam_critic, lam_critic_rows, cu_seqlens);
  o.out_advantages = out_advantages;
  o.out_returns = out_returns;
  Prepared pr = prepare_forward("sae.advantages.out", DeviceType::CPU, rewards, values, logprobs,
                                true, mask, gamma, lam, lam_inner, threshold, bootstrap, o);
  cpu::scan_all_rows<false>(pr.args, pr.use_double);
  return {out_advantages, out_returns};
}

std::tuple<Tensor, Tensor> advantages_from_boundaries_cpu(
    const Tensor& rewards, const Tensor& values, const Tensor& boundaries, const OptTensor& mask,
    double gamma, double lam, double lam_inner, const OptTensor& bootstrap,
    const OptTensor& lam_rows, const OptTensor& lam_inner_rows, OptDouble lam_critic,
    const OptTensor& lam_critic_rows, const OptTensor& cu_seqlens) {
  Prepared pr = prepare_forward(
      "sae.advantages_from_boundaries", DeviceType::CPU, rewards, values, boundaries, false, mask,
      gamma, lam, lam_inner, 0.0, bootstrap,
      variant_options(lam_rows, lam_inner_rows, lam_critic, lam_critic_rows, cu_seqlens));
  cpu::scan_all_rows<false>(pr.args, pr.use_double);
  return {pr.out0, pr.out1};
}

std::tuple<Tensor, Tensor, Tensor> advantages_backward_cpu(
    const OptTensor& grad_advantages, const OptTensor& grad_returns, const Tensor& mask,
    const OptTensor& logprobs, const OptTensor& boundaries, double gamma, double lam,
    double lam_inner, double threshold, const OptTensor& lam_rows,
    const OptTensor& lam_inner_rows, const OptTensor& cu_seqlens) {
  Prepared pr = prepare_adjoint(
      "sae.advantages_backward", DeviceType::CPU, grad_advantages, grad_returns, mask, logprobs,
      boundaries, gamma, lam, lam_inner, threshold,
      variant_options(lam_rows, lam_inner_rows, std::nullopt, std::nullopt, cu_seqlens));
  cpu::scan_all_rows<true>(pr.args, pr.use_double);
  return {pr.out0, pr.out1, pr.row_out};
}

}  // namespace

STABLE_TORCH_LIBRARY_IMPL(sae, CPU, m) {
  m.impl("advantages", TORCH_BOX(&advantages_cpu));
  m.impl("advantages.out", TORCH_BOX(&advantages_out_cpu));
  m.impl("advantages_from_boundaries", TORCH_BOX(&advantages_from_boundaries_cpu));
  m.impl("advantages_backward", TORCH_BOX(&advantages_backward_cpu));
  m.impl("segment_boundaries", TORCH_BOX(&cpu::segment_boundaries));
}

}  // namespace sae
