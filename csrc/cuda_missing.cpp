// Compiled only into CPU-only builds: CUDA kernels that say so. Without them a CUDA tensor
// would meet the dispatcher's generic "could not run with arguments from the CUDA backend".
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/library.h>

namespace {

void no_cuda_kernels(const c10::OperatorHandle& op, torch::jit::Stack*) {
  TORCH_CHECK(false, op.schema().name(),
              ": this build of sae_ext has no CUDA kernels (it was built CPU-only). Install the "
              "sae-ext wheel built for your torch and CUDA version (`python -m sae_ext.info` "
              "shows what this build is), or rebuild with SAE_BUILD_CUDA=1 and CUDA_HOME set.");
}

}  // namespace

TORCH_LIBRARY_IMPL(sae, CUDA, m) {
  for (const char* name : {"advantages", "advantages_from_boundaries", "segment_boundaries",
                           "advantages_backward"}) {
    m.impl(name, torch::CppFunction::makeFromBoxedFunction<&no_cuda_kernels>());
  }
}
