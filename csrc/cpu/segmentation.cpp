// Segmentation on CPU: mask != 0 and logprobs < log(threshold), token by token, through the
// same staging as the scan (so the cut test is the scan's own), rows over torch's threads.
#include "segmentation.h"

#include <torch/csrc/stable/ops.h>

#include <algorithm>
#include <cstdint>

#include "staging.h"

namespace sae {
namespace cpu {

Tensor segment_boundaries(const Tensor& logprobs, const Tensor& mask, double threshold) {
  CutSource cut;
  Mat mask_mat;
  Params p;
  Tensor out = prepare_boundaries("sae.segment_boundaries", DeviceType::CPU, logprobs, mask,
                                  threshold, cut, mask_mat, p);
  const int64_t B = out.size(0), T = out.size(1);
  bool* dst = static_cast<bool*>(out.data_ptr());
  if (B == 0 || T == 0) return out;
  torch::stable::parallel_for(0, B, std::max<int64_t>(1, 32768 / std::max<int64_t>(1, T)),
                   [&](int64_t begin, int64_t end) {
                     alignas(64) int32_t valid[kTile], is_cut[kTile];
                     for (int64_t row = begin; row < end; ++row) {
                       for (int64_t t0 = 0; t0 < T; t0 += kTile) {
                         const int n = int(std::min<int64_t>(kTile, T - t0));
                         stage_nonzero<int32_t, 4>(mask_mat, row, t0, n, valid);
                         stage_cut<int32_t, 4>(cut, p, row, t0, n, is_cut);
                         for (int k = 0; k < n; ++k) dst[row * T + t0 + k] = (valid[k] & is_cut[k]) != 0;
                       }
                     }
                   });
  return out;
}

}  // namespace cpu
}  // namespace sae
