// CPU registrations of the test hooks that run the CUDA launcher's whole schedule
// (emulated/emulated_scan.h over cuda/sae_schedule.h) on CPU tensors with emulated warps and
// blocks, choosing loaders and schedule exactly as the CUDA launcher does for an H100/H200.
// They take the product ops' arguments, variants included, through the same wrappers
// (scan_ops.h). Slow by design; tests only.
#include <torch/csrc/stable/library.h>

#include "../scan_ops.h"
#include "emulated_scan.h"

namespace sae {
namespace {

struct EmulatedScan {
  static constexpr DeviceType device = DeviceType::CPU;
  static constexpr OpNames names{"sae._warp_emulated_advantages", nullptr,
                                 "sae._warp_emulated_advantages_from_boundaries",
                                 "sae._warp_emulated_advantages_backward"};
  template <bool Adjoint>
  static void scan(const Prepared& pr, const Tensor&) {
    try {
      emu::emulate_scan<Adjoint>(pr.args, pr.use_double, emu::ScanOptions{});
    } catch (const emu::WarpDivergence& e) {
      fail("emulated warp: ", e.what());
    }
  }
};

using Ops = ScanOps<EmulatedScan>;

}  // namespace

STABLE_TORCH_LIBRARY_IMPL(sae, CPU, m) {
  m.impl("_warp_emulated_advantages", TORCH_BOX(&Ops::advantages));
  m.impl("_warp_emulated_advantages_from_boundaries", TORCH_BOX(&Ops::advantages_from_boundaries));
  m.impl("_warp_emulated_advantages_backward", TORCH_BOX(&Ops::advantages_backward));
}

}  // namespace sae
