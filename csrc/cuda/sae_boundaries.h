// The segmentation op's per-thread work: 8 consecutive tokens of a row, the mask and the
// log-prob runs loaded independently (wide loads where aligned), 8 flags stored as one
// 64-bit store. Storage kinds fixed at compile time for the common pairs, read at run time
// (one switch per tensor per run) for the rest. Host and device compile it alike.
#pragma once

#include "sae_loaders.h"

namespace sae {

struct BoundaryVec {
  bool mask, cut, out;
};

inline BoundaryVec boundary_vec_flags(const CutSource& cut, const Mat& mask, const bool* out, int64_t T) {
  return BoundaryVec{run_aligned(mask.ptr, mask.sb, mask.st, kind_size(mask.kind)),
                     run_aligned(cut.src.ptr, cut.src.sb, cut.src.st, kind_size(cut.src.kind)),
                     run_aligned(out, T, 1, 1)};
}

// Bit k: token t0 + k is valid and starts a segment.
template <Kind M, Kind C>
struct BoundarySpec {
  static SAE_HD uint32_t flags(const CutSource& cut, const Mat& mask, const Params& p,
                               const BoundaryVec& vec, int64_t row, int64_t t0, int n) {
    const Run<M> m = load_run<M>(mask, row, t0, n, vec.mask);
    const Run<C> c = load_run<C>(cut.src, row, t0, n, vec.cut);
    uint32_t bits = 0;
    SAE_UNROLL
    for (int k = 0; k < kPerLane; ++k)
      bits |= uint32_t(run_nonzero(m, k) && run_cut(c, k, p, true)) << k;
    return bits;
  }
  static bool matches(const CutSource& cut, const Mat& mask) {
    return cut.src.kind == C && mask.kind == M;
  }
};

struct BoundaryGeneric {
  static SAE_HD uint32_t flags(const CutSource& cut, const Mat& mask, const Params& p,
                               const BoundaryVec& vec, int64_t row, int64_t t0, int n) {
    return detail::load_flags_any(mask, row, t0, n, vec.mask, p, false, false) &
           detail::load_flags_any(cut.src, row, t0, n, vec.cut, p, true, true);
  }
  static bool matches(const CutSource&, const Mat&) { return true; }
};

template <class L>
SAE_HD void boundaries_run(const CutSource& cut, const Mat& mask, const Params& p,
                           const BoundaryVec& vec, int64_t T, int64_t row, int64_t t0, bool* out) {
  const int n = lane_count(T, t0);
  const uint32_t bits = L::flags(cut, mask, p, vec, row, t0, n);
  // One byte per flag (bool), little-endian within the two words.
  uint32_t lo = 0, hi = 0;
  SAE_UNROLL
  for (int k = 0; k < 4; ++k) {
    lo |= ((bits >> k) & 1u) << (8 * k);
    hi |= ((bits >> (k + 4)) & 1u) << (8 * k);
  }
  bool* p_out = out + row * T + t0;
#if defined(__CUDA_ARCH__)
  if (vec.out && n == kPerLane) {
    __stcs(reinterpret_cast<uint2*>(p_out), make_uint2(lo, hi));
    return;
  }
#endif
  SAE_UNROLL
  for (int k = 0; k < kPerLane; ++k)
    if (k < n) p_out[k] = (bits >> k) & 1u;
}

using BoundaryLoaders =
    LoaderList<BoundarySpec<Kind::B8, Kind::F32>, BoundarySpec<Kind::F32, Kind::F32>,
               BoundarySpec<Kind::B8, Kind::BF16>, BoundarySpec<Kind::BF16, Kind::BF16>,
               BoundarySpec<Kind::B8, Kind::F16>, BoundarySpec<Kind::F16, Kind::F16>,
               BoundarySpec<Kind::B8, Kind::F64>, BoundarySpec<Kind::F64, Kind::F64>>;

namespace detail {
template <class F>
bool try_boundary(LoaderList<>, const CutSource&, const Mat&, F&) {
  return false;
}
template <class L, class... Rest, class F>
bool try_boundary(LoaderList<L, Rest...>, const CutSource& c, const Mat& m, F& f) {
  if (L::matches(c, m)) {
    f(L{});
    return true;
  }
  return try_boundary(LoaderList<Rest...>{}, c, m, f);
}
}  // namespace detail

template <class F>
void with_boundary_loader(const CutSource& cut, const Mat& mask, bool force_generic, F&& f) {
  if (force_generic || !detail::try_boundary(BoundaryLoaders{}, cut, mask, f)) f(BoundaryGeneric{});
}

}  // namespace sae
