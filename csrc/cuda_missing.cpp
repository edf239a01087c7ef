// Compiled only into CPU-only builds: CUDA kernels that say so. Without them a CUDA tensor
// would meet the dispatcher's generic "could not run with arguments from the CUDA backend".
#include <torch/csrc/stable/library.h>

#include <cstdint>
#include <stdexcept>
#include <string>

namespace {

// A stable boxed kernel is not told which op it serves, so each op gets its own.
template <const char* Op>
void no_cuda_kernels(StableIValue*, uint64_t, uint64_t) {
  throw std::runtime_error(
      std::string(Op) +
      ": this build of sae_ext has no CUDA kernels (it was built CPU-only). Build it from "
      "source with the CUDA kernels (SAE_BUILD_CUDA=1, a CUDA toolkit of torch's CUDA major "
      "version; see README.md); `python -m sae_ext.info` shows what this build is.");
}

constexpr char kAdvantages[] = "sae::advantages";
constexpr char kAdvantagesOut[] = "sae::advantages.out";
constexpr char kFromBoundaries[] = "sae::advantages_from_boundaries";
constexpr char kBoundaries[] = "sae::segment_boundaries";
constexpr char kBackward[] = "sae::advantages_backward";

}  // namespace

STABLE_TORCH_LIBRARY_IMPL(sae, CUDA, m) {
  m.impl("advantages", &no_cuda_kernels<kAdvantages>);
  m.impl("advantages.out", &no_cuda_kernels<kAdvantagesOut>);
  m.impl("advantages_from_boundaries", &no_cuda_kernels<kFromBoundaries>);
  m.impl("segment_boundaries", &no_cuda_kernels<kBoundaries>);
  m.impl("advantages_backward", &no_cuda_kernels<kBackward>);
}
