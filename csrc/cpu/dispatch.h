// The CPU scan over all rows of a call: the ISA variant (AVX2 or baseline vectors), the
// group shape and the threads are chosen in dispatch.cpp.
#pragma once

#include "../sae_elem.h"

namespace sae {
namespace cpu {

// Every row of `a`: the forward pass (advantages, returns) or, Adjoint, its adjoint;
// float64 accumulation when use_double, else float32. Outputs are a.out0, a.out1, a.row_out.
template <bool Adjoint>
void scan_all_rows(const ScanArgs& a, bool use_double);

// The name of the ISA variant the scan runs here ("avx2" or "base"; SAE_CPU_VECTOR=base
// forces the baseline one, as the tests do).
const char* isa_name();

}  // namespace cpu
}  // namespace sae
