// The CPU kernel of sae.segment_boundaries: where segments start, as a bool [B, T].
#pragma once

#include "../sae_checks.h"

namespace sae {
namespace cpu {

Tensor segment_boundaries(const Tensor& logprobs, const Tensor& mask, double threshold);

}  // namespace cpu
}  // namespace sae
