// Dtype staging, step 1 of the scan (scan_engine.h): a row's run of up to kTile tokens of
// each input, of any dtype and stride, converted into contiguous stack buffers of the
// accumulation type, and lambda_t formed from the mask and the cut source.
#pragma once

#include <cstdint>

#include "../sae_elem.h"
#include "../sae_step.h"
#include "simd.h"

namespace sae {
namespace cpu {

// ---------------------------------------------------------------------------------------
// Step 1 of the scan: one row's run of n <= kTile tokens of one input, converted into a
// contiguous stack buffer. The dtype/stride dispatch happens once per run, so the loops are
// straight vector code for contiguous float32 / bfloat16 / float16 / float64 and one-byte
// masks, and a per-element loop through sae_elem.h for everything else.

constexpr int kTile = 64;  // tokens per tile; a multiple of every W
constexpr int kNV = 2;     // vectors per group (1 when there are too few rows per thread)
constexpr int kPrefetchTiles = 1;  // how far ahead the inputs are prefetched
constexpr int64_t kStreamBytes = int64_t(8) << 20;  // outputs at least this large bypass the caches

SAE_INLINE int elem_size(Kind k) {
  return (k == Kind::F64 || k == Kind::I64) ? 8 : (k == Kind::F32 || k == Kind::I32) ? 4
       : (k == Kind::F16 || k == Kind::BF16 || k == Kind::I16) ? 2 : 1;
}

// Prefetch of one row's run of an input into L2 (hint 2: not L1, see "The scan").
SAE_INLINE void prefetch_run(const Mat& m, int64_t row, int64_t t0, int n) {
  if (m.ptr == nullptr || m.st != 1) return;
  const int size = elem_size(m.kind);
  const char* p = static_cast<const char*>(m.ptr) + (row * m.sb + t0) * size;
  for (int off = 0; off < n * size; off += 64) __builtin_prefetch(p + off, 0, 2);
}

// W float32 values from W contiguous elements of a float16 / bfloat16 / float32 run.
template <int W>
SAE_INLINE vec_t<float, W> f32_lanes(Kind kind, const void* p) {
  typedef vec_t<float, W> F;
  if (kind == Kind::BF16) {
    const vec_t<uint16_t, W> h = loadu<vec_t<uint16_t, W>>(p);
    return vcast<F>(__builtin_convertvector(h, vec_t<uint32_t, W>) << 16);
  }
  if (kind == Kind::F16) {  // f16_bits_to_float (sae_elem.h), lane-wise
    typedef vec_t<int32_t, W> U;
    const U h = __builtin_convertvector(loadu<vec_t<uint16_t, W>>(p), U);
    const U sign = (h & 0x8000) << 16, exp = (h >> 10) & 0x1f, man = h & 0x3ff;
    const F sub = __builtin_convertvector(man, F) * 5.9604644775390625e-8f;  // exact
    const U sub_bits = vcast<U>(sub) | sign;
    const U inf_nan = sign | 0x7f800000 | (man << 13);
    const U normal = sign | ((exp + 112) << 23) | (man << 13);
    return vcast<F>(exp == 0 ? sub_bits : exp == 31 ? inf_nan : normal);
  }
  return loadu<F>(p);
}

// dst[k] = element (row, t0 + k) of m as S, k < n; zeros up to the next multiple of W.
template <typename S, int W>
SAE_INLINE void stage_numbers(const Mat& m, int64_t row, int64_t t0, int n, S* dst) {
  typedef vec_t<S, W> R;
  const int nw = (n + W - 1) / W * W;
  if (m.ptr == nullptr) {
    for (int k = 0; k < nw; k += W) storeu<R>(dst + k, R{});
    return;
  }
  int k = 0;
  if (m.st == 1) {
    const char* p = static_cast<const char*>(m.ptr) + (row * m.sb + t0) * elem_size(m.kind);
    switch (m.kind) {
      case Kind::F64:
        for (; k + W <= n; k += W) {
          storeu<R>(dst + k, __builtin_convertvector(loadu<vec_t<double, W>>(p + k * 8), R));
        }
        break;
      case Kind::F32:
        for (; k + W <= n; k += W) {
          R r = __builtin_convertvector(f32_lanes<W>(Kind::F32, p + k * 4), R);
          SAE_OPAQUE(r);  // for float this is a plain copy: keep it from becoming memcpy
          storeu<R>(dst + k, r);
        }
        break;
      case Kind::BF16:
        for (; k + W <= n; k += W) {
          storeu<R>(dst + k, __builtin_convertvector(f32_lanes<W>(Kind::BF16, p + k * 2), R));
        }
        break;
      case Kind::F16:
        for (; k + W <= n; k += W) {
          storeu<R>(dst + k, __builtin_convertvector(f32_lanes<W>(Kind::F16, p + k * 2), R));
        }
        break;
      default:
        break;
    }
  }
  for (; k < n; ++k) dst[k] = load_number<S>(m.kind, m.ptr, row * m.sb + (t0 + k) * m.st);
  for (; k < nw; ++k) dst[k] = S(0);
}

// dst[k] = all ones where element (row, t0 + k) of m is nonzero (in its own sense: -0 is
// zero, NaN is not), else 0; k < n.
template <typename I, int W>
SAE_INLINE void stage_nonzero(const Mat& m, int64_t row, int64_t t0, int n, I* dst) {
  typedef vec_t<I, W> M;
  int k = 0;
  if (m.st == 1 && m.kind == Kind::B8) {
    const uint8_t* p = static_cast<const uint8_t*>(m.ptr) + row * m.sb + t0;
    for (; k + W <= n; k += W) {
      storeu<M>(dst + k, __builtin_convertvector(loadu<vec_t<uint8_t, W>>(p + k) != 0, M));
    }
  } else if (m.st == 1 && m.kind == Kind::F32) {
    const float* p = static_cast<const float*>(m.ptr) + row * m.sb + t0;
    for (; k + W <= n; k += W) {
      storeu<M>(dst + k, __builtin_convertvector(f32_lanes<W>(Kind::F32, p + k) != 0.0f, M));
    }
  }
  for (; k < n; ++k) dst[k] = load_nonzero(m.kind, m.ptr, row * m.sb + (t0 + k) * m.st) ? I(-1) : I(0);
}

// dst[k] = all ones where token (row, t0 + k) starts a segment (before masking); k < n.
template <typename I, int W>
SAE_INLINE void stage_cut(const CutSource& c, const Params& p, int64_t row, int64_t t0, int n,
                          I* dst) {
  if (!c.from_logprobs) return stage_nonzero<I, W>(c.src, row, t0, n, dst);
  typedef vec_t<I, W> M;
  const Mat& m = c.src;
  int k = 0;
  if (m.st == 1) {
    const char* q = static_cast<const char*>(m.ptr) + (row * m.sb + t0) * elem_size(m.kind);
    switch (m.kind) {
      case Kind::F64:
        for (; k + W <= n; k += W) {
          storeu<M>(dst + k, __builtin_convertvector(loadu<vec_t<double, W>>(q + k * 8) < p.log_p64, M));
        }
        break;
      case Kind::F32:
        for (; k + W <= n; k += W) {
          storeu<M>(dst + k, __builtin_convertvector(f32_lanes<W>(Kind::F32, q + k * 4) < p.log_p32, M));
        }
        break;
      case Kind::BF16:
        for (; k + W <= n; k += W) {
          storeu<M>(dst + k, __builtin_convertvector(f32_lanes<W>(Kind::BF16, q + k * 2) < p.log_p32, M));
        }
        break;
      case Kind::F16:
        for (; k + W <= n; k += W) {
          storeu<M>(dst + k, __builtin_convertvector(f32_lanes<W>(Kind::F16, q + k * 2) < p.log_p32, M));
        }
        break;
      default:
        break;
    }
  }
  for (; k < n; ++k) dst[k] = is_cut(c, p, m.ptr, row * m.sb + (t0 + k) * m.st) ? I(-1) : I(0);
}

// Per-call constants, as vectors.
template <typename S, int W>
struct Consts {
  vec_t<S, W> lam, lam_inner, invalid;
  Vec<S, W> gamma;
  explicit Consts(const Params& p) {
    lam = vec_t<S, W>{} + S(p.lam);
    lam_inner = vec_t<S, W>{} + S(p.lam_inner);
    invalid = vec_t<S, W>{} + S(-1);
    gamma = Vec<S, W>(S(p.gamma));
  }
};

// Step 1 for one row: lambda_t (lam or lam_inner on valid tokens, -1 on masked ones) for
// tokens t0 .. t0+n-1, padded with masked tokens to a multiple of W.
template <typename S, int W>
SAE_INLINE void stage_lambda(const ScanArgs& a, const Consts<S, W>& cs, int64_t row, int64_t t0,
                             int n, S* ls) {
  typedef typename Vec<S, W>::I I;
  typedef vec_t<I, W> M;
  typedef vec_t<S, W> R;
  alignas(64) I valid[kTile + W], cut[kTile + W];
  stage_nonzero<I, W>(a.mask, row, t0, n, valid);
  stage_cut<I, W>(a.cut, a.p, row, t0, n, cut);
  const int nw = (n + W - 1) / W * W;
  for (int k = n; k < nw; ++k) valid[k] = 0;
  for (int k = 0; k < nw; k += W) {
    const M v = loadu<M>(valid + k), c = loadu<M>(cut + k);
    storeu<R>(ls + k, v ? (c ? cs.lam : cs.lam_inner) : cs.invalid);
  }
}

// Step 1 for the common layouts, one straight loop per row: rewards and values both
// contiguous float32 (K = F32) or both bfloat16, a contiguous one-byte mask, and contiguous
// log-probs of the same dtype (LP) or contiguous bool boundaries.
enum class Layout { Generic, F32_LP, F32_BD, BF16_LP, BF16_BD };

inline Layout layout_of(const ScanArgs& a) {
  const auto contiguous = [](const Mat& m) { return m.ptr != nullptr && m.st == 1; };
  if (!contiguous(a.a) || !contiguous(a.b) || !contiguous(a.mask) || !contiguous(a.cut.src) ||
      a.a.kind != a.b.kind || a.mask.kind != Kind::B8)
    return Layout::Generic;
  const Kind k = a.a.kind;
  const bool lp = a.cut.from_logprobs;
  if (lp ? a.cut.src.kind != k : a.cut.src.kind != Kind::B8) return Layout::Generic;
  if (k == Kind::F32) return lp ? Layout::F32_LP : Layout::F32_BD;
  if (k == Kind::BF16) return lp ? Layout::BF16_LP : Layout::BF16_BD;
  return Layout::Generic;
}

template <typename S, int W, Kind K, bool LP, bool Backward>
SAE_INLINE void stage_row_fast(const ScanArgs& a, const Consts<S, W>& cs, int64_t row, int64_t t0,
                               int n, S* xs, S* ys, S* ls) {
  typedef vec_t<S, W> R;
  typedef vec_t<typename Vec<S, W>::I, W> M;
  constexpr int es = K == Kind::BF16 ? 2 : 4;
  const char* pa = static_cast<const char*>(a.a.ptr) + (row * a.a.sb + t0) * es;
  const char* pb = static_cast<const char*>(a.b.ptr) + (row * a.b.sb + t0) * es;
  const uint8_t* pm = static_cast<const uint8_t*>(a.mask.ptr) + row * a.mask.sb + t0;
  const char* pc = static_cast<const char*>(a.cut.src.ptr) + (row * a.cut.src.sb + t0) * (LP ? es : 1);
  const float thr = a.p.log_p32;
  // Runs are read in the direction the scan walks the row, so that the hardware
  // prefetchers, which follow descending streams too, run ahead into the next tile.
  for (int kk = 0; kk < n; kk += W) {
    const int k = Backward ? n - W - kk : kk;
    storeu<R>(xs + k, __builtin_convertvector(f32_lanes<W>(K, pa + k * es), R));
    storeu<R>(ys + k, __builtin_convertvector(f32_lanes<W>(K, pb + k * es), R));
    const M valid = __builtin_convertvector(loadu<vec_t<uint8_t, W>>(pm + k) != 0, M);
    M cut;
    if (LP) cut = __builtin_convertvector(f32_lanes<W>(K, pc + k * es) < thr, M);  // NaN: false
    else cut = __builtin_convertvector(loadu<vec_t<uint8_t, W>>(pc + k) != 0, M);
    storeu<R>(ls + k, valid ? (cut ? cs.lam : cs.lam_inner) : cs.invalid);
  }
}

// Step 1 for rows row0 .. row0+nrows-1, tokens t0 .. t0+n-1 (a full tile unless it is the
// rows' last, partial one, which takes the generic path).
template <typename S, int W, int P, bool Backward>
SAE_INLINE void stage_tile(const ScanArgs& a, const Consts<S, W>& cs, Layout layout, int64_t row0,
                           int64_t nrows, int64_t t0, int n, S (*xs)[P], S (*ys)[P], S (*ls)[P]) {
  if (n % W != 0) layout = Layout::Generic;
  switch (layout) {
    case Layout::F32_LP:
      for (int g = 0; g < nrows; ++g) stage_row_fast<S, W, Kind::F32, true, Backward>(a, cs, row0 + g, t0, n, xs[g], ys[g], ls[g]);
      return;
    case Layout::F32_BD:
      for (int g = 0; g < nrows; ++g) stage_row_fast<S, W, Kind::F32, false, Backward>(a, cs, row0 + g, t0, n, xs[g], ys[g], ls[g]);
      return;
    case Layout::BF16_LP:
      for (int g = 0; g < nrows; ++g) stage_row_fast<S, W, Kind::BF16, true, Backward>(a, cs, row0 + g, t0, n, xs[g], ys[g], ls[g]);
      return;
    case Layout::BF16_BD:
      for (int g = 0; g < nrows; ++g) stage_row_fast<S, W, Kind::BF16, false, Backward>(a, cs, row0 + g, t0, n, xs[g], ys[g], ls[g]);
      return;
    default:
      for (int g = 0; g < nrows; ++g) {
        stage_numbers<S, W>(a.a, row0 + g, t0, n, xs[g]);
        stage_numbers<S, W>(a.b, row0 + g, t0, n, ys[g]);
        stage_lambda<S, W>(a, cs, row0 + g, t0, n, ls[g]);
      }
  }
}

}  // namespace cpu
}  // namespace sae
