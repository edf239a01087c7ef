// CUDA registrations of the sae ops: thin wrappers that check and allocate through the
// shared prepare_* code (stable ABI), pick the schedule for the device, allocate its workspace
// through PyTorch's caching allocator, and call the torch-free launchers of sae_launch.cuh on
// the inputs' device and current stream. No host synchronisation anywhere.
#include <cuda_runtime.h>
#include <torch/csrc/stable/library.h>

#include <optional>
#include <tuple>

#include "../sae_checks.h"
#include "../sae_cuda_stream.h"
#include "sae_launch.cuh"

namespace sae {
namespace {

// A launcher's cudaError_t as an error naming what failed.
void check_cuda(cudaError_t err, const char* what) {
  SAE_CHECK(err == cudaSuccess, what, " failed: ", cudaGetErrorString(err), " (",
            cudaGetErrorName(err), ")");
}

template <bool Adjoint>
void run_scan(const Prepared& pr, const Tensor& like) {
  const OnDevice on(like);
  const int device = like.get_device_index();
  const Schedule sc = choose_schedule(pr.args.B, pr.args.T, cuda::device_sm_count(device),
                                      cuda::row_occupancy<Adjoint>(pr.args, pr.use_double, device),
                                      pr.args.cu.ptr != nullptr);
  const size_t bytes = scan_workspace_bytes(sc, pr.use_double, pr.args.critic);
  // Held until the launch is queued; the caching allocator keeps it for this stream's work.
  Tensor ws;
  if (bytes) ws = torch::stable::new_empty(like, {int64_t(bytes)}, torch::headeronly::ScalarType::Byte);
  check_cuda(cuda::launch_scan<Adjoint>(pr.args, pr.use_double, sc,
                                        bytes ? ws.data_ptr() : nullptr, on.stream),
             Adjoint ? "sae adjoint scan" : "sae scan");
}

using OptDouble = std::optional<double>;

std::tuple<Tensor, Tensor> advantages_cuda(
    const Tensor& rewards, const Tensor& values, const OptTensor& logprobs, const OptTensor& mask,
    double gamma, double lam, double lam_inner, double threshold, const OptTensor& bootstrap,
    const OptTensor& lam_rows, const OptTensor& lam_inner_rows, OptDouble lam_critic,
    const OptTensor& lam_critic_rows, const OptTensor& cu_seqlens) {
  Prepared pr = prepare_forward(
      "sae.advantages", DeviceType::CUDA, rewards, values, logprobs, true, mask, gamma, lam,
      lam_inner, threshold, bootstrap,
      variant_options(lam_rows, lam_inner_rows, lam_critic, lam_critic_rows, cu_seqlens));
  run_scan<false>(pr, rewards);
  return {pr.out0, pr.out1};
}

std::tuple<Tensor, Tensor> advantages_out_cuda(
    const Tensor& rewards, const Tensor& values, const OptTensor& logprobs, const OptTensor& mask,
    double gamma, double lam, double lam_inner, double threshold, const OptTensor& bootstrap,
    const OptTensor& lam_rows, const OptTensor& lam_inner_rows, OptDouble lam_critic,
    const OptTensor& lam_critic_rows, const OptTensor& cu_seqlens, Tensor out_advantages,
    Tensor out_returns) {
  Options o = variant_options(lam_rows, lam_inner_rows, lam_critic, lam_critic_rows, cu_seqlens);
  o.out_advantages = out_advantages;
  o.out_returns = out_returns;
  Prepared pr = prepare_forward("sae.advantages.out", DeviceType::CUDA, rewards, values, logprobs,
                                true, mask, gamma, lam, lam_inner, threshold, bootstrap, o);
  run_scan<false>(pr, rewards);
  return {out_advantages, out_returns};
}

std::tuple<Tensor, Tensor> advantages_from_boundaries_cuda(
    const Tensor& rewards, const Tensor& values, const Tensor& boundaries, const OptTensor& mask,
    double gamma, double lam, double lam_inner, const OptTensor& bootstrap,
    const OptTensor& lam_rows, const OptTensor& lam_inner_rows, OptDouble lam_critic,
    const OptTensor& lam_critic_rows, const OptTensor& cu_seqlens) {
  Prepared pr = prepare_forward(
      "sae.advantages_from_boundaries", DeviceType::CUDA, rewards, values, boundaries, false,
      mask, gamma, lam, lam_inner, 0.0, bootstrap,
      variant_options(lam_rows, lam_inner_rows, lam_critic, lam_critic_rows, cu_seqlens));
  run_scan<false>(pr, rewards);
  return {pr.out0, pr.out1};
}

std::tuple<Tensor, Tensor, Tensor> advantages_backward_cuda(
    const OptTensor& grad_advantages, const OptTensor& grad_returns, const Tensor& mask,
    const OptTensor& logprobs, const OptTensor& boundaries, double gamma, double lam,
    double lam_inner, double threshold, const OptTensor& lam_rows,
    const OptTensor& lam_inner_rows, const OptTensor& cu_seqlens) {
  Prepared pr = prepare_adjoint(
      "sae.advantages_backward", DeviceType::CUDA, grad_advantages, grad_returns, mask, logprobs,
      boundaries, gamma, lam, lam_inner, threshold,
      variant_options(lam_rows, lam_inner_rows, std::nullopt, std::nullopt, cu_seqlens));
  run_scan<true>(pr, mask);
  return {pr.out0, pr.out1, pr.row_out};
}

Tensor segment_boundaries_cuda(const Tensor& logprobs, const Tensor& mask, double threshold) {
  CutSource cut;
  Mat mask_mat;
  Params p;
  Tensor out = prepare_boundaries("sae.segment_boundaries", DeviceType::CUDA, logprobs, mask,
                                  threshold, cut, mask_mat, p);
  const OnDevice on(logprobs);
  check_cuda(cuda::launch_boundaries(cut, mask_mat, p, out.size(0), out.size(1),
                                     static_cast<bool*>(out.data_ptr()), on.stream),
             "sae segmentation");
  return out;
}

}  // namespace

STABLE_TORCH_LIBRARY_IMPL(sae, CUDA, m) {
  m.impl("advantages", TORCH_BOX(&advantages_cuda));
  m.impl("advantages.out", TORCH_BOX(&advantages_out_cuda));
  m.impl("advantages_from_boundaries", TORCH_BOX(&advantages_from_boundaries_cuda));
  m.impl("advantages_backward", TORCH_BOX(&advantages_backward_cuda));
  m.impl("segment_boundaries", TORCH_BOX(&segment_boundaries_cuda));
}

}  // namespace sae
