// CUDA kernels: one warp per row running cuda/sae_warp.h, and an elementwise kernel for
// the segmentation op. Launchers check their inputs through the same code as the CPU path,
// run on the inputs' device and current stream, and never synchronise with the host.
#include <cuda_runtime.h>
#include <torch/csrc/stable/library.h>

#include <tuple>

#include "../sae_checks.h"
#include "../sae_cuda_stream.h"
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

template <bool Adjoint>
void launch_scan(const Prepared& pr, const Tensor& like) {
  const ScanArgs& s = pr.args;
  if (s.B == 0) return;
  const OnDevice on(like);
  const VecFlags vec = vec_flags(s, pr.use_double ? 8 : 4);
  const int64_t blocks = (s.B + kWarpsPerBlock - 1) / kWarpsPerBlock;
  SAE_CHECK(blocks <= int64_t(0x7fffffff), "sae: batch too large for one launch");
  const dim3 grid(static_cast<unsigned>(blocks)), block(kWarpsPerBlock * kWarpSize);
  if (pr.use_double) scan_rows_kernel<double, Adjoint><<<grid, block, 0, on.stream>>>(s, vec);
  else scan_rows_kernel<float, Adjoint><<<grid, block, 0, on.stream>>>(s, vec);
  check_launch("sae scan kernel");
}

std::tuple<Tensor, Tensor> advantages_cuda(
    const Tensor& rewards, const Tensor& values, const Tensor& logprobs,
    const Tensor& mask, double gamma, double lam, double lam_inner, double threshold,
    const OptTensor& bootstrap) {
  const char* op = "sae.advantages";
  Prepared pr = prepare_forward(op, DeviceType::CUDA, rewards, values, logprobs, true, mask, gamma, lam, lam_inner,
                                threshold, bootstrap);
  launch_scan<false>(pr, rewards);
  return {pr.out0, pr.out1};
}

std::tuple<Tensor, Tensor> advantages_from_boundaries_cuda(
    const Tensor& rewards, const Tensor& values, const Tensor& boundaries,
    const Tensor& mask, double gamma, double lam, double lam_inner,
    const OptTensor& bootstrap) {
  const char* op = "sae.advantages_from_boundaries";
  Prepared pr = prepare_forward(op, DeviceType::CUDA, rewards, values, boundaries, false, mask, gamma, lam,
                                lam_inner, 0.0, bootstrap);
  launch_scan<false>(pr, rewards);
  return {pr.out0, pr.out1};
}

std::tuple<Tensor, Tensor, Tensor> advantages_backward_cuda(
    const OptTensor& grad_advantages, const OptTensor& grad_returns,
    const Tensor& mask, const OptTensor& logprobs,
    const OptTensor& boundaries, double gamma, double lam, double lam_inner,
    double threshold) {
  const char* op = "sae.advantages_backward";
  Prepared pr = prepare_adjoint(op, DeviceType::CUDA, grad_advantages, grad_returns, mask, logprobs, boundaries,
                                gamma, lam, lam_inner, threshold);
  launch_scan<true>(pr, mask);
  return {pr.out0, pr.out1, pr.out2};
}

Tensor segment_boundaries_cuda(const Tensor& logprobs, const Tensor& mask, double threshold) {
  const char* op = "sae.segment_boundaries";
  CutSource cut;
  Mat mask_mat;
  Params p;
  Tensor out = prepare_boundaries(op, DeviceType::CUDA, logprobs, mask, threshold, cut, mask_mat, p);
  const int64_t n = out.numel();
  if (n == 0) return out;
  const OnDevice on(logprobs);
  const int threads = 256;
  const int64_t blocks = std::min<int64_t>((n + threads - 1) / threads, 65535);
  boundaries_kernel<<<static_cast<unsigned>(blocks), threads, 0, on.stream>>>(
      cut, mask_mat, p, out.size(0), out.size(1), static_cast<bool*>(out.data_ptr()));
  check_launch("sae segmentation kernel");
  return out;
}

}  // namespace

STABLE_TORCH_LIBRARY_IMPL(sae, CUDA, m) {
  m.impl("advantages", TORCH_BOX(&advantages_cuda));
  m.impl("advantages_from_boundaries", TORCH_BOX(&advantages_from_boundaries_cuda));
  m.impl("advantages_backward", TORCH_BOX(&advantages_backward_cuda));
  m.impl("segment_boundaries", TORCH_BOX(&segment_boundaries_cuda));
}

}  // namespace sae
