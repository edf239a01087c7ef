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
  if (m.ptr == nullptr) {  // an absent mask: every token valid
    for (; k < n; ++k) dst[k] = I(-1);
    return;
  }
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
  if (c.src.ptr == nullptr) {  // no cut source: no token starts a segment
    for (int k = 0; k < n; ++k) dst[k] = I(0);
    return;
  }
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
  vec_t<S, W> invalid;
  Vec<S, W> gamma;
  explicit Consts(const Params& p) {
    invalid = vec_t<S, W>{} + masked_token_lambda<S>();
    gamma = Vec<S, W>(S(p.gamma));
  }
};

// One row's lambdas (row_lambdas() of sae_elem.h: its own where given, else the call's),
// broadcast to vectors for staging.
template <typename S, int W>
struct RowLam {
  vec_t<S, W> lam, lam_inner;
  S lam_critic;
  SAE_INLINE RowLam() = default;
  SAE_INLINE RowLam(const ScanArgs& a, int64_t row) {
    const RowLambdas<S> l = row_lambdas<S>(a, row);
    lam = vec_t<S, W>{} + l.lam;
    lam_inner = vec_t<S, W>{} + l.lam_inner;
    lam_critic = l.lam_critic;
  }
};

// Step 1 for one row: lambda_t (lam or lam_inner on valid tokens, -1 on masked ones) for
// tokens t0 .. t0+n-1, padded with masked tokens to a multiple of W.
template <typename S, int W>
SAE_INLINE void stage_lambda(const ScanArgs& a, const Consts<S, W>& cs, const RowLam<S, W>& rl,
                             int64_t row, int64_t t0, int n, S* ls) {
  typedef typename Vec<S, W>::I I;
  typedef vec_t<I, W> M;
  typedef vec_t<S, W> R;
  alignas(64) I valid[kTile + W], cut[kTile + W];
  stage_nonzero<I, W>(a.mask, row, t0, n, valid);
  stage_cut<I, W>(a.cut, a.p, row, t0, n, cut);
  const int nw = (n + W - 1) / W * W;
  for (int k = n; k < nw; ++k) valid[k] = cut[k] = 0;
  for (int k = 0; k < nw; k += W) {
    const M v = loadu<M>(valid + k), c = loadu<M>(cut + k);
    storeu<R>(ls + k, v ? (c ? rl.lam : rl.lam_inner) : cs.invalid);
  }
}

// Step 1 for the common layouts, one straight loop per row: rewards and values both
// contiguous float32 or both bfloat16 (K); log-probs of the same dtype contiguous, bool
// boundaries contiguous, or no cut source at all (GAE mode: nothing read for it); a
// contiguous one-byte mask or none. Everything else takes the generic path.
enum class CutIn : int { LP, BD, None };

struct Layout {
  bool fast;
  int code;  // (K == BF16) * 6 + CutIn * 2 + (no mask)
};

inline Layout layout_of(const ScanArgs& a) {
  const auto contiguous = [](const Mat& m) { return m.ptr != nullptr && m.st == 1; };
  const Layout generic{false, 0};
  if (!contiguous(a.x) || !contiguous(a.y) || a.x.kind != a.y.kind) return generic;
  const Kind k = a.x.kind;
  if (k != Kind::F32 && k != Kind::BF16) return generic;
  const bool no_mask = a.mask.ptr == nullptr;
  if (!no_mask && (a.mask.st != 1 || a.mask.kind != Kind::B8)) return generic;
  CutIn cut = CutIn::None;
  if (a.cut.src.ptr != nullptr) {
    if (a.cut.src.st != 1) return generic;
    cut = a.cut.from_logprobs ? CutIn::LP : CutIn::BD;
    if (cut == CutIn::LP ? a.cut.src.kind != k : a.cut.src.kind != Kind::B8) return generic;
  }
  return Layout{true, (k == Kind::BF16) * 6 + int(cut) * 2 + int(no_mask)};
}

// Reverse (here, in scan_engine.h and in sae_warp.h's warp_scan): the walk runs from a row's
// last token to its first, as the forward pass does; the adjoint walks forward in time.
template <typename S, int W, Kind K, CutIn C, bool NoMask, bool Reverse>
SAE_INLINE void stage_row_fast(const ScanArgs& a, const Consts<S, W>& cs, const RowLam<S, W>& rl,
                               int64_t row, int64_t t0, int n, S* xs, S* ys, S* ls) {
  typedef vec_t<S, W> R;
  typedef vec_t<typename Vec<S, W>::I, W> M;
  constexpr int es = K == Kind::BF16 ? 2 : 4;
  const char* pa = static_cast<const char*>(a.x.ptr) + (row * a.x.sb + t0) * es;
  const char* pb = static_cast<const char*>(a.y.ptr) + (row * a.y.sb + t0) * es;
  const uint8_t* pm = NoMask ? nullptr : static_cast<const uint8_t*>(a.mask.ptr) + row * a.mask.sb + t0;
  const char* pc = C == CutIn::None ? nullptr
                 : static_cast<const char*>(a.cut.src.ptr) + (row * a.cut.src.sb + t0) * (C == CutIn::LP ? es : 1);
  const float thr = a.p.log_p32;
  // Runs are read in the direction the scan walks the row, so that the hardware
  // prefetchers, which follow descending streams too, run ahead into the next tile.
  for (int kk = 0; kk + W <= n; kk += W) {
    const int k = Reverse ? n - W - kk : kk;
    storeu<R>(xs + k, __builtin_convertvector(f32_lanes<W>(K, pa + k * es), R));
    storeu<R>(ys + k, __builtin_convertvector(f32_lanes<W>(K, pb + k * es), R));
    if (C == CutIn::None) {
      if (NoMask) storeu<R>(ls + k, rl.lam_inner);
      else {
        const M valid = __builtin_convertvector(loadu<vec_t<uint8_t, W>>(pm + k) != 0, M);
        storeu<R>(ls + k, valid ? rl.lam_inner : cs.invalid);
      }
      continue;
    }
    M cut;
    if (C == CutIn::LP) cut = __builtin_convertvector(f32_lanes<W>(K, pc + k * es) < thr, M);  // NaN: false
    else cut = __builtin_convertvector(loadu<vec_t<uint8_t, W>>(pc + k) != 0, M);
    if (NoMask) {
      storeu<R>(ls + k, cut ? rl.lam : rl.lam_inner);
    } else {
      const M valid = __builtin_convertvector(loadu<vec_t<uint8_t, W>>(pm + k) != 0, M);
      storeu<R>(ls + k, valid ? (cut ? rl.lam : rl.lam_inner) : cs.invalid);
    }
  }
  // The n % W tokens left over (a row's first and last tiles, tiles_in() of scan_engine.h)
  // one at a time, with the same conversions and comparisons as the vectors' lanes: at the
  // start of the run when it is walked in reverse, else at its end.
  const int rest = n % W, k0 = Reverse ? 0 : n - rest;
  const S lam = rl.lam[0], inner = rl.lam_inner[0];
  for (int k = k0; k < k0 + rest; ++k) {
    xs[k] = S(load_number<float>(K, pa, k));
    ys[k] = S(load_number<float>(K, pb, k));
    const bool valid = NoMask || pm[k] != 0;
    bool cut = false;
    if (C == CutIn::LP) cut = load_number<float>(K, pc, k) < thr;  // NaN: false
    else if (C == CutIn::BD) cut = pc[k] != 0;
    ls[k] = !valid ? masked_token_lambda<S>() : cut ? lam : inner;
  }
}

// Step 1 for one row, tokens t0 .. t0+n-1 (element (row, t) of each Mat; packed rows pass
// their start in t0), padded with masked tokens up to `upto` (a multiple of W, >= n).
template <typename S, int W, bool Reverse>
SAE_INLINE void stage_row(const ScanArgs& a, const Consts<S, W>& cs, const RowLam<S, W>& rl,
                          Layout layout, int64_t row, int64_t t0, int n, int upto, S* xs, S* ys,
                          S* ls) {
  int done = n;
  if (layout.fast) {
    switch (layout.code) {
#define SAE_FAST(code, K, C, NM) \
  case code: stage_row_fast<S, W, K, C, NM, Reverse>(a, cs, rl, row, t0, n, xs, ys, ls); break;
      SAE_FAST(0, Kind::F32, CutIn::LP, false)
      SAE_FAST(1, Kind::F32, CutIn::LP, true)
      SAE_FAST(2, Kind::F32, CutIn::BD, false)
      SAE_FAST(3, Kind::F32, CutIn::BD, true)
      SAE_FAST(4, Kind::F32, CutIn::None, false)
      SAE_FAST(5, Kind::F32, CutIn::None, true)
      SAE_FAST(6, Kind::BF16, CutIn::LP, false)
      SAE_FAST(7, Kind::BF16, CutIn::LP, true)
      SAE_FAST(8, Kind::BF16, CutIn::BD, false)
      SAE_FAST(9, Kind::BF16, CutIn::BD, true)
      SAE_FAST(10, Kind::BF16, CutIn::None, false)
      SAE_FAST(11, Kind::BF16, CutIn::None, true)
#undef SAE_FAST
      default: break;
    }
  } else {
    stage_numbers<S, W>(a.x, row, t0, n, xs);
    stage_numbers<S, W>(a.y, row, t0, n, ys);
    stage_lambda<S, W>(a, cs, rl, row, t0, n, ls);
    done = (n + W - 1) / W * W;
  }
  for (int k = done; k < upto; ++k) xs[k] = ys[k] = S(0), ls[k] = masked_token_lambda<S>();
}

}  // namespace cpu
}  // namespace sae
