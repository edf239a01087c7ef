// The CUDA kernels and their torch-free launchers: the device Warp and Block of
// sae_warp.h / sae_schedule.h, one kernel per schedule step and loader, and launch_*
// functions that take the kernels' arguments, a workspace and a stream, choose nothing
// that changes bits, and never synchronise with the host.
#pragma once

#include <cuda_runtime.h>

#include <atomic>

#include "sae_boundaries.h"
#include "sae_schedule.h"

namespace sae {
namespace cuda {

// 2 blocks of 256 threads per SM, so at most 128 registers per thread. (Without the minimum,
// ptxas was seen to pick 64 registers for some loaders and spill predicates to the stack.)
constexpr int kMinBlocksPerSm = 2;

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

struct DeviceBlock {
  void* smem;
  __device__ __forceinline__ int warp_index() const { return int(threadIdx.x) / kWarpSize; }
  __device__ __forceinline__ int num_warps() const { return int(blockDim.x) / kWarpSize; }
  __device__ __forceinline__ int64_t block_index() const { return int64_t(blockIdx.x); }
  __device__ __forceinline__ int64_t num_blocks() const { return int64_t(gridDim.x); }
  __device__ __forceinline__ void* shared() const { return smem; }
  __device__ __forceinline__ void sync() const { __syncthreads(); }
};

template <class L, bool Adjoint, bool Critic>
__global__ void __launch_bounds__(kMaxRowWarps * kWarpSize, kMinBlocksPerSm)
    rows_kernel(const ScanArgs s, const VecFlags vec) {
  __shared__ alignas(16) unsigned char smem[kSharedBytes];
  DeviceWarp warp;
  DeviceBlock blk{smem};
  scan_rows_per_block<L, Adjoint, Critic>(warp, blk, s, vec);
}

template <class L, bool Adjoint, bool Replay, bool Critic>
__global__ void __launch_bounds__(kSplitWarps * kWarpSize, kMinBlocksPerSm)
    split_kernel(const ScanArgs s, const VecFlags vec, void* ws) {
  DeviceWarp warp;
  DeviceBlock blk{nullptr};
  split_chunks<L, Adjoint, Replay, Critic>(warp, blk, s, vec, ws);
}

template <typename acc_t, bool Adjoint, bool Critic>
__global__ void __launch_bounds__(kChainThreads) chain_kernel(const ScanArgs s, void* ws) {
  __shared__ alignas(16) unsigned char smem[chain_shared_bytes<acc_t, Critic>()];
  DeviceWarp warp;
  DeviceBlock blk{smem};
  split_chain_rows<acc_t, Adjoint, Critic>(warp, blk, s, ws);
}

// 2-D grid: x over a row's runs of 8 tokens, y over rows (grid-stride both ways), so no
// 64-bit division in the loop.
template <class L>
__global__ void __launch_bounds__(256) boundaries_kernel(const CutSource cut, const Mat mask,
                                                         const Params p, const BoundaryVec vec,
                                                         int64_t B, int64_t T, bool* out) {
  const int64_t runs = (T + kPerLane - 1) / kPerLane;
  for (int64_t row = blockIdx.y; row < B; row += gridDim.y)
    for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < runs;
         i += int64_t(gridDim.x) * blockDim.x)
      boundaries_run<L>(cut, mask, p, vec, T, row, i * kPerLane, out);
}

// rows_kernel<L, ...>'s blocks per SM at W = 1, 2, 4, 8 warps (row_warps), from the runtime
// (a host query of the compiled kernel's resources: no sync, no launch), asked once per
// device and kernel and kept.
template <class L, bool Adjoint, bool Critic>
RowOccupancy rows_kernel_occupancy(int device) {
  constexpr int kCachedDevices = 64;
  static std::atomic<int> cached[kCachedDevices][4];  // 0: not asked yet
  const bool cacheable = device >= 0 && device < kCachedDevices;
  RowOccupancy occ{};
  for (int i = 0; i < 4; ++i) {
    int n = cacheable ? cached[device][i].load(std::memory_order_relaxed) : 0;
    if (n <= 0) {
      if (cudaOccupancyMaxActiveBlocksPerMultiprocessor(&n, rows_kernel<L, Adjoint, Critic>,
                                                        (1 << i) * kWarpSize, 0) != cudaSuccess ||
          n <= 0) {
        (void)cudaGetLastError();  // not the launch's error: W only needs a guess then
        n = modelled_row_occupancy(128).blocks_per_sm[i];
      } else if (cacheable) {
        cached[device][i].store(n, std::memory_order_relaxed);
      }
    }
    occ.blocks_per_sm[i] = n;
  }
  return occ;
}

// The occupancy of the rows kernel that launch_scan would launch for s.
template <bool Adjoint>
RowOccupancy row_occupancy(const ScanArgs& s, bool use_double, int device) {
  RowOccupancy occ{};
  if constexpr (!Adjoint) {
    if (s.critic) {
      with_critic_loader(use_double, [&](auto loader) {
        occ = rows_kernel_occupancy<decltype(loader), false, true>(device);
      });
      return occ;
    }
  }
  with_loader<Adjoint>(s, use_double, false, [&](auto loader) {
    occ = rows_kernel_occupancy<decltype(loader), Adjoint, false>(device);
  });
  return occ;
}

inline int device_sm_count(int device) {
  int sm = 0;
  if (cudaDeviceGetAttribute(&sm, cudaDevAttrMultiProcessorCount, device) != cudaSuccess || sm <= 0)
    sm = 132;  // only the schedule choice depends on it, never the bits
  return sm;
}

// The kernels of schedule sc for loader L.
template <class L, bool Adjoint, bool Critic>
void launch_schedule(const ScanArgs& s, const VecFlags& vec, const Schedule& sc, void* ws,
                     cudaStream_t stream) {
  using acc_t = typename L::acc;
  if (sc.kind == ScheduleKind::RowPerBlock) {
    rows_kernel<L, Adjoint, Critic><<<unsigned(sc.blocks), unsigned(sc.warps * kWarpSize), 0, stream>>>(s, vec);
    return;
  }
  if (sc.blocks == 0) return;
  const unsigned threads = kSplitWarps * kWarpSize;
  split_kernel<L, Adjoint, false, Critic><<<unsigned(sc.blocks), threads, 0, stream>>>(s, vec, ws);
  chain_kernel<acc_t, Adjoint, Critic><<<unsigned(sc.chain_blocks), kChainThreads, 0, stream>>>(s, ws);
  split_kernel<L, Adjoint, true, Critic><<<unsigned(sc.blocks), threads, 0, stream>>>(s, vec, ws);
}

// The forward (Adjoint = false) or adjoint scan of s with schedule sc (choose_schedule);
// ws: scan_workspace_bytes(sc, ...) bytes of device memory, or null when that is 0.
template <bool Adjoint>
cudaError_t launch_scan(const ScanArgs& s, bool use_double, const Schedule& sc, void* ws,
                        cudaStream_t stream) {
  if (s.B == 0) return cudaSuccess;
  const VecFlags vec = vec_flags(s, use_double ? 8 : 4);
  if constexpr (!Adjoint) {
    if (s.critic) {
      with_critic_loader(use_double, [&](auto loader) {
        launch_schedule<decltype(loader), false, true>(s, vec, sc, ws, stream);
      });
      return cudaGetLastError();
    }
  }
  with_loader<Adjoint>(s, use_double, false, [&](auto loader) {
    launch_schedule<decltype(loader), Adjoint, false>(s, vec, sc, ws, stream);
  });
  return cudaGetLastError();
}

inline cudaError_t launch_boundaries(const CutSource& cut, const Mat& mask, const Params& p,
                                     int64_t B, int64_t T, bool* out, cudaStream_t stream) {
  const int64_t runs = (T + kPerLane - 1) / kPerLane;
  if (B == 0 || runs == 0) return cudaSuccess;
  const BoundaryVec vec = boundary_vec_flags(cut, mask, out, T);
  const int64_t bx = (runs + 255) / 256;
  const dim3 grid(unsigned(bx < kMaxGrid ? bx : kMaxGrid), unsigned(B < 65535 ? B : 65535));
  with_boundary_loader(cut, mask, false, [&](auto loader) {
    using L = decltype(loader);
    boundaries_kernel<L><<<grid, 256, 0, stream>>>(cut, mask, p, vec, B, T, out);
  });
  return cudaGetLastError();
}

}  // namespace cuda
}  // namespace sae
