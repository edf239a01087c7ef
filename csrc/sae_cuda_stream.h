// The CUDA launchers' view of torch through the stable ABI: the inputs' device made
// current, torch's current stream on it, and a launch check, none of them through c10.
#pragma once

#include <cuda_runtime.h>
#include <torch/csrc/inductor/aoti_torch/c/shim.h>
#include <torch/csrc/stable/accelerator.h>
#include <torch/csrc/stable/macros.h>

#include "sae_checks.h"

// aoti_torch_get_current_cuda_stream is declared in the C shim only under USE_CUDA, which
// torch's extension builders do not define; this is its declaration there (a C ABI function
// of libtorch_cuda since torch 2.3). torch/csrc/stable/accelerator.h reaches the same stream
// as getCurrentStream(i).nativeHandle(), but only from TORCH_TARGET_VERSION 2.13 on.
#ifndef USE_CUDA
extern "C" AOTI_TORCH_EXPORT AOTITorchError aoti_torch_get_current_cuda_stream(int32_t device_index,
                                                                             void** ret_stream);
#endif

namespace sae {

// For a launch on `like`'s device: that device current (restored on scope exit), and the
// stream torch is using there.
struct OnDevice {
  torch::stable::accelerator::DeviceGuard guard;
  cudaStream_t stream = nullptr;
  explicit OnDevice(const Tensor& like) : guard(like.get_device_index()) {
    void* s = nullptr;
    STABLE_TORCH_ERROR_CODE_CHECK(aoti_torch_get_current_cuda_stream(like.get_device_index(), &s));
    stream = static_cast<cudaStream_t>(s);
  }
};

// After a kernel launch: a bad configuration or a sticky error from earlier work.
inline void check_launch(const char* what) {
  const cudaError_t err = cudaGetLastError();
  SAE_CHECK(err == cudaSuccess, what, " failed to launch: ", cudaGetErrorString(err), " (",
            cudaGetErrorName(err), ")");
}

}  // namespace sae
