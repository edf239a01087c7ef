// CUDA registrations of the sae ops: thin wrappers that check and allocate through the
// shared prepare_* code, pick the schedule for the device, allocate its workspace through
// PyTorch's caching allocator, and call the torch-free launchers of sae_launch.cuh on the
// inputs' device and current stream. No host synchronisation anywhere.
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <tuple>

#include "../sae_checks.h"
#include "sae_launch.cuh"

namespace sae {
namespace {

// The tensor every other one is checked against (prepare_*: same device) must be on a
// CUDA device before the guard is made. TODO(device checks): prepare_* will check every
// tensor against the expected device; this then goes.
void check_on_cuda(const char* op, const char* name, const at::Tensor& t) {
  TORCH_CHECK(t.is_cuda(), op, ": `", name, "` must be on a CUDA device, got one on ", t.device());
}

template <bool Adjoint>
void run_scan(const Prepared& pr, const at::Tensor& like) {
  const c10::cuda::CUDAGuard guard(like.device());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream(like.device().index()).stream();
  const Schedule sc = choose_schedule(pr.args.B, pr.args.T, cuda::device_sm_count(like.device().index()));
  const size_t bytes = scan_workspace_bytes(sc, pr.args.B, pr.use_double);
  const at::Tensor ws = bytes ? at::empty({int64_t(bytes)}, like.options().dtype(at::kByte)) : at::Tensor();
  C10_CUDA_CHECK(cuda::launch_scan<Adjoint>(pr.args, pr.use_double, sc, bytes ? ws.data_ptr() : nullptr, stream));
}

std::tuple<at::Tensor, at::Tensor> advantages_cuda(
    const at::Tensor& rewards, const at::Tensor& values, const at::Tensor& logprobs,
    const at::Tensor& mask, double gamma, double lam, double lam_inner, double threshold,
    const c10::optional<at::Tensor>& bootstrap) {
  check_on_cuda("sae.advantages", "rewards", rewards);
  Prepared pr = prepare_forward("sae.advantages", rewards, values, logprobs, true, mask, gamma,
                                lam, lam_inner, threshold, bootstrap);
  run_scan<false>(pr, rewards);
  return {pr.out0, pr.out1};
}

std::tuple<at::Tensor, at::Tensor> advantages_from_boundaries_cuda(
    const at::Tensor& rewards, const at::Tensor& values, const at::Tensor& boundaries,
    const at::Tensor& mask, double gamma, double lam, double lam_inner,
    const c10::optional<at::Tensor>& bootstrap) {
  check_on_cuda("sae.advantages_from_boundaries", "rewards", rewards);
  Prepared pr = prepare_forward("sae.advantages_from_boundaries", rewards, values, boundaries,
                                false, mask, gamma, lam, lam_inner, 0.0, bootstrap);
  run_scan<false>(pr, rewards);
  return {pr.out0, pr.out1};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> advantages_backward_cuda(
    const c10::optional<at::Tensor>& grad_advantages, const c10::optional<at::Tensor>& grad_returns,
    const at::Tensor& mask, const c10::optional<at::Tensor>& logprobs,
    const c10::optional<at::Tensor>& boundaries, double gamma, double lam, double lam_inner,
    double threshold) {
  check_on_cuda("sae.advantages_backward", "mask", mask);
  Prepared pr = prepare_adjoint("sae.advantages_backward", grad_advantages, grad_returns, mask,
                                logprobs, boundaries, gamma, lam, lam_inner, threshold);
  run_scan<true>(pr, mask);
  return {pr.out0, pr.out1, pr.out2};
}

at::Tensor segment_boundaries_cuda(const at::Tensor& logprobs, const at::Tensor& mask,
                                   double threshold) {
  check_on_cuda("sae.segment_boundaries", "logprobs", logprobs);
  CutSource cut;
  Mat mask_mat;
  Params p;
  at::Tensor out = prepare_boundaries("sae.segment_boundaries", logprobs, mask, threshold, cut,
                                      mask_mat, p);
  const c10::cuda::CUDAGuard guard(logprobs.device());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream(logprobs.device().index()).stream();
  C10_CUDA_CHECK(cuda::launch_boundaries(cut, mask_mat, p, out.size(0), out.size(1),
                                         out.data_ptr<bool>(), stream));
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(sae, CUDA, m) {
  m.impl("advantages", &advantages_cuda);
  m.impl("advantages_from_boundaries", &advantages_from_boundaries_cuda);
  m.impl("advantages_backward", &advantages_backward_cuda);
  m.impl("segment_boundaries", &segment_boundaries_cuda);
}

}  // namespace sae
