// The CPU kernels of the sae ops: the shared wrappers (scan_ops.h) over the scan
// (dispatch.h), and the segmentation.
#include <torch/csrc/stable/library.h>

#include "../scan_ops.h"
#include "dispatch.h"
#include "segmentation.h"

namespace sae {
namespace {

struct CpuScan {
  static constexpr DeviceType device = DeviceType::CPU;
  static constexpr OpNames names{"sae.advantages", "sae.advantages.out",
                                 "sae.advantages_from_boundaries", "sae.advantages_backward"};
  template <bool Adjoint>
  static void scan(const Prepared& pr, const Tensor&) {
    cpu::scan_all_rows<Adjoint>(pr.args, pr.use_double);
  }
};

using Ops = ScanOps<CpuScan>;

}  // namespace

STABLE_TORCH_LIBRARY_IMPL(sae, CPU, m) {
  m.impl("advantages", TORCH_BOX(&Ops::advantages));
  m.impl("advantages.out", TORCH_BOX(&Ops::advantages_out));
  m.impl("advantages_from_boundaries", TORCH_BOX(&Ops::advantages_from_boundaries));
  m.impl("advantages_backward", TORCH_BOX(&Ops::advantages_backward));
  m.impl("segment_boundaries", TORCH_BOX(&cpu::segment_boundaries));
}

}  // namespace sae
