// CUDA registrations of the sae ops: the shared wrappers (scan_ops.h), which check and
// allocate through the shared prepare_* code (stable ABI), over a scan that picks the
// schedule for the device, allocates its workspace through PyTorch's caching allocator, and
// calls the torch-free launchers of sae_launch.cuh on the inputs' device and current stream.
// No host synchronisation anywhere.
#include <cuda_runtime.h>
#include <torch/csrc/stable/library.h>

#include "../scan_ops.h"
#include "../sae_cuda_stream.h"
#include "sae_launch.cuh"

namespace sae {
namespace {

// A launcher's cudaError_t as an error naming what failed.
void check_cuda(cudaError_t err, const char* what) {
  SAE_CHECK(err == cudaSuccess, what, " failed: ", cudaGetErrorString(err), " (",
            cudaGetErrorName(err), ")");
}

// The scan on the inputs' device and current stream, with the schedule for the device and
// its workspace from PyTorch's caching allocator.
struct CudaScan {
  static constexpr DeviceType device = DeviceType::CUDA;
  static constexpr OpNames names{"sae.advantages", "sae.advantages.out",
                                 "sae.advantages_from_boundaries", "sae.advantages_backward"};
  template <bool Adjoint>
  static void scan(const Prepared& pr, const Tensor& like) {
    const OnDevice on(like);
    const int device = like.get_device_index();
    const Schedule sc = choose_schedule(pr.args.B, pr.args.T, cuda::device_sm_count(device),
                                        cuda::row_occupancy<Adjoint>(pr.args, pr.use_double, device),
                                        pr.args.cu.ptr != nullptr);
    const size_t bytes = scan_workspace_bytes(sc, pr.use_double, pr.args.critic);
    // Held until the launch is queued; the caching allocator keeps it for this stream's work.
    Tensor ws;
    if (bytes) {
      ws = torch::stable::new_empty(like, {int64_t(bytes)}, torch::headeronly::ScalarType::Byte);
    }
    check_cuda(cuda::launch_scan<Adjoint>(pr.args, pr.use_double, sc,
                                          bytes ? ws.data_ptr() : nullptr, on.stream),
               Adjoint ? "sae adjoint scan" : "sae scan");
  }
};

using Ops = ScanOps<CudaScan>;

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
  m.impl("advantages", TORCH_BOX(&Ops::advantages));
  m.impl("advantages.out", TORCH_BOX(&Ops::advantages_out));
  m.impl("advantages_from_boundaries", TORCH_BOX(&Ops::advantages_from_boundaries));
  m.impl("advantages_backward", TORCH_BOX(&Ops::advantages_backward));
  m.impl("segment_boundaries", TORCH_BOX(&segment_boundaries_cuda));
}

}  // namespace sae
