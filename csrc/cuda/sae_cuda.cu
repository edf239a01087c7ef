// CUDA kernels: one warp per row running cuda/sae_warp.h, and an elementwise kernel for
// the segmentation op. Launchers check their inputs through the same code as the CPU path,
// run on the inputs' device and current stream, and never synchronise with the host.
#include <ATen/core/Tensor.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <tuple>

#include "../sae_checks.h"
#include "sae_warp.h"

namespace sae {
namespace {

constexpr int kWarpsPerBlock = 4;

struct DeviceWarp {
  __device__ __forceinline__ int lane() const { return threadIdx.x & (kWarpSize - 1); }
  template <typename T>
  __device__ __forceinline__ T shfl_down(T v, int d) const {
    return __shfl_down_sync(0xffffffffu, v, d);
  }
  template <typename T>
  __device__ __forceinline__ T shfl_up(T v, int d) const {
    return __shfl_up_sync(0xffffffffu, v, d);
  }
  template <typename T>
  __device__ __forceinline__ T shfl_idx(T v, int src) const {
    return __shfl_sync(0xffffffffu, v, src);
  }
};

template <typename acc_t, bool Adjoint>
__global__ void __launch_bounds__(kWarpsPerBlock * kWarpSize)
    scan_rows_kernel(const ScanArgs args, const VecFlags vec) {
  const int64_t row = int64_t(blockIdx.x) * kWarpsPerBlock + threadIdx.x / kWarpSize;
  if (row >= args.B) return;  // uniform per warp: all lanes of a warp share the row
  DeviceWarp warp;
  warp_scan_row<acc_t, Adjoint>(warp, args, vec, row);
}

__global__ void boundaries_kernel(const CutSource cut, const Mat mask, const Params p, int64_t B,
                                  int64_t T, bool* out) {
  const int64_t n = B * T;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t b = i / T, t = i - b * T;
    out[i] = load_nonzero(mask.kind, mask.ptr, b * mask.sb + t * mask.st) &&
             is_cut(cut, p, cut.src.ptr, b * cut.src.sb + t * cut.src.st);
  }
}

void check_cuda(const char* op, const at::Tensor& t) {
  TORCH_CHECK(t.is_cuda(), op, ": all tensors must be on one CUDA device; got one on ",
              t.device());
}

template <bool Adjoint>
void launch_scan(const Prepared& pr, const at::Tensor& like) {
  const ScanArgs& s = pr.args;
  if (s.B == 0) return;
  const c10::cuda::CUDAGuard guard(like.device());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream(like.device().index()).stream();
  const VecFlags vec = vec_flags(s, pr.use_double ? 8 : 4);
  const int64_t blocks = (s.B + kWarpsPerBlock - 1) / kWarpsPerBlock;
  TORCH_CHECK(blocks <= int64_t(0x7fffffff), "sae: batch too large for one launch");
  const dim3 grid(static_cast<unsigned>(blocks)), block(kWarpsPerBlock * kWarpSize);
  if (pr.use_double) scan_rows_kernel<double, Adjoint><<<grid, block, 0, stream>>>(s, vec);
  else scan_rows_kernel<float, Adjoint><<<grid, block, 0, stream>>>(s, vec);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

std::tuple<at::Tensor, at::Tensor> advantages_cuda(
    const at::Tensor& rewards, const at::Tensor& values, const at::Tensor& logprobs,
    const at::Tensor& mask, double gamma, double lam, double lam_inner, double threshold,
    const c10::optional<at::Tensor>& bootstrap) {
  const char* op = "sae.advantages";
  for (const auto* t : {&rewards, &values, &logprobs, &mask}) check_cuda(op, *t);
  if (bootstrap.has_value() && bootstrap->defined()) check_cuda(op, *bootstrap);
  Prepared pr = prepare_forward(op, rewards, values, logprobs, true, mask, gamma, lam, lam_inner,
                                threshold, bootstrap);
  launch_scan<false>(pr, rewards);
  return {pr.out0, pr.out1};
}

std::tuple<at::Tensor, at::Tensor> advantages_from_boundaries_cuda(
    const at::Tensor& rewards, const at::Tensor& values, const at::Tensor& boundaries,
    const at::Tensor& mask, double gamma, double lam, double lam_inner,
    const c10::optional<at::Tensor>& bootstrap) {
  const char* op = "sae.advantages_from_boundaries";
  for (const auto* t : {&rewards, &values, &boundaries, &mask}) check_cuda(op, *t);
  if (bootstrap.has_value() && bootstrap->defined()) check_cuda(op, *bootstrap);
  Prepared pr = prepare_forward(op, rewards, values, boundaries, false, mask, gamma, lam,
                                lam_inner, 0.0, bootstrap);
  launch_scan<false>(pr, rewards);
  return {pr.out0, pr.out1};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> advantages_backward_cuda(
    const c10::optional<at::Tensor>& grad_advantages, const c10::optional<at::Tensor>& grad_returns,
    const at::Tensor& mask, const c10::optional<at::Tensor>& logprobs,
    const c10::optional<at::Tensor>& boundaries, double gamma, double lam, double lam_inner,
    double threshold) {
  const char* op = "sae.advantages_backward";
  check_cuda(op, mask);
  for (const auto* t : {&grad_advantages, &grad_returns, &logprobs, &boundaries})
    if (t->has_value() && (*t)->defined()) check_cuda(op, **t);
  Prepared pr = prepare_adjoint(op, grad_advantages, grad_returns, mask, logprobs, boundaries,
                                gamma, lam, lam_inner, threshold);
  launch_scan<true>(pr, mask);
  return {pr.out0, pr.out1, pr.out2};
}

at::Tensor segment_boundaries_cuda(const at::Tensor& logprobs, const at::Tensor& mask,
                                   double threshold) {
  const char* op = "sae.segment_boundaries";
  check_cuda(op, logprobs);
  check_cuda(op, mask);
  CutSource cut;
  Mat mask_mat;
  Params p;
  at::Tensor out = prepare_boundaries(op, logprobs, mask, threshold, cut, mask_mat, p);
  const int64_t n = out.numel();
  if (n == 0) return out;
  const c10::cuda::CUDAGuard guard(logprobs.device());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream(logprobs.device().index()).stream();
  const int threads = 256;
  const int64_t blocks = std::min<int64_t>((n + threads - 1) / threads, 65535);
  boundaries_kernel<<<static_cast<unsigned>(blocks), threads, 0, stream>>>(
      cut, mask_mat, p, out.size(0), out.size(1), out.data_ptr<bool>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
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
