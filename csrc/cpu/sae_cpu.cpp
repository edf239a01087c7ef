// CPU kernels. The recursion is a serial dependency chain per row, so a row alone runs at
// the latency of a few dependent float ops per token. To reach memory speed each thread
// walks rows side by side, one SIMD lane per row (W lanes per vector, NV vectors per group
// so that their dependency chains overlap), and each group tile by tile: inputs of any
// dtype and stride are read row-contiguously and converted into small stack buffers,
// transposed in registers for the recursion, and the results are transposed back and
// written out a tile row at a time (see "The scan" below). No heap temporaries are made.
//
// Rows never interact and every lane runs the same IEEE operations (sae_step.h, built with
// -ffp-contract=off), so results are bitwise the same whatever the number of threads, the
// vector width picked at run time (AVX2 or baseline), or where a row lands in a group.
//
// Threads come from torch::stable::parallel_for: a call through the stable C shim into
// libtorch's own at::parallel_for, so the rows share torch's intra-op thread pool
// (torch.get_num_threads()) whatever this file is compiled with.
#include <torch/csrc/stable/library.h>
#include <torch/csrc/stable/ops.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <tuple>

#include "../sae_checks.h"
#include "../sae_step.h"

#if !defined(__GNUC__) && !defined(__clang__)
#error "sae_cpu.cpp uses GCC/Clang vector extensions"
#endif

#define SAE_INLINE inline __attribute__((always_inline))

// Every function that passes vectors by value is always_inline, so no call ever crosses
// the AVX2 / baseline boundary with one; GCC's ABI notes about that are noise here.
#pragma GCC diagnostic ignored "-Wpsabi"

#if defined(__x86_64__) || defined(__i386__)
#define SAE_X86 1
#define SAE_TARGET_WIDE __attribute__((target("avx2")))
#define SAE_OPAQUE(v) __asm__("" : "+x"(v))
#else
#define SAE_X86 0
#define SAE_TARGET_WIDE
#if defined(__aarch64__)
#define SAE_OPAQUE(v) __asm__("" : "+w"(v))
#else
#define SAE_OPAQUE(v) __asm__("" : "+m"(v))
#endif
#endif

namespace sae {
namespace {

// ---------------------------------------------------------------------------------------
// W lanes of S (float or double) as a GCC/Clang vector, with the integer mask type that
// comparisons produce, and the operators forward_token / adjoint_token need.

template <typename S> struct IntOf;
template <> struct IntOf<float> { using type = int32_t; };
template <> struct IntOf<double> { using type = int64_t; };

// N lanes of T as a GCC/Clang vector (declared through a class template so that the
// attribute survives template instantiation).
template <typename T, int N>
struct VecType {
  typedef T type __attribute__((vector_size(sizeof(T) * N)));
};
template <typename T, int N>
using vec_t = typename VecType<T, N>::type;

template <typename S, int W>
struct Vec {
  typedef vec_t<S, W> raw;
  typedef typename IntOf<S>::type I;
  typedef vec_t<I, W> mask;
  raw v;
  SAE_INLINE Vec() = default;
  SAE_INLINE explicit Vec(S s) : v(raw{} + s) {}
  SAE_INLINE static Vec of(raw x) {
    Vec r;
    r.v = x;
    return r;
  }
  SAE_INLINE friend Vec operator+(Vec a, Vec b) { return of(a.v + b.v); }
  SAE_INLINE friend Vec operator-(Vec a, Vec b) { return of(a.v - b.v); }
  SAE_INLINE friend Vec operator*(Vec a, Vec b) { return of(a.v * b.v); }
};

template <typename To, typename From>
SAE_INLINE To vcast(const From& f) {  // bitwise reinterpretation of a vector
  static_assert(sizeof(To) == sizeof(From), "vcast size mismatch");
  To t;
  memcpy(&t, &f, sizeof(To));
  return t;
}

// Unaligned vector loads and stores. Written as vector assignments rather than memcpy:
// GCC's generic tuning copies a 32-byte memcpy between two memory locations as two 16-byte
// halves, and a 32-byte load of data just stored that way cannot be forwarded from the
// store buffer (it stalls until the stores reach L1).
template <typename R>
struct Unaligned {
  typedef R type __attribute__((aligned(1), may_alias));
};
template <typename R>
SAE_INLINE R loadu(const void* p) {
  return *static_cast<const typename Unaligned<R>::type*>(p);
}
template <typename R>
SAE_INLINE void storeu(void* p, R v) {
  *static_cast<typename Unaligned<R>::type*>(p) = v;
}

// In-register transposes: r[i][j] <- r[j][i]. Only lane moves, so exact for any data.
template <typename R>
SAE_INLINE void transpose8(R (&r)[8]) {  // 8 x 4-byte lanes
  R t[8], u[8];
  for (int i = 0; i < 4; ++i) {
    t[2 * i] = __builtin_shufflevector(r[2 * i], r[2 * i + 1], 0, 8, 1, 9, 4, 12, 5, 13);
    t[2 * i + 1] = __builtin_shufflevector(r[2 * i], r[2 * i + 1], 2, 10, 3, 11, 6, 14, 7, 15);
  }
  for (int h = 0; h < 2; ++h) {
    for (int i = 0; i < 2; ++i) {
      const R a = t[4 * h + i], b = t[4 * h + 2 + i];
      u[4 * h + 2 * i] = __builtin_shufflevector(a, b, 0, 1, 8, 9, 4, 5, 12, 13);
      u[4 * h + 2 * i + 1] = __builtin_shufflevector(a, b, 2, 3, 10, 11, 6, 7, 14, 15);
    }
  }
  for (int i = 0; i < 4; ++i) {
    r[i] = __builtin_shufflevector(u[i], u[4 + i], 0, 1, 2, 3, 8, 9, 10, 11);
    r[4 + i] = __builtin_shufflevector(u[i], u[4 + i], 4, 5, 6, 7, 12, 13, 14, 15);
  }
}

template <typename R>
SAE_INLINE void transpose4(R (&r)[4]) {  // 4 lanes of any width
  const R t0 = __builtin_shufflevector(r[0], r[1], 0, 4, 1, 5);
  const R t1 = __builtin_shufflevector(r[0], r[1], 2, 6, 3, 7);
  const R t2 = __builtin_shufflevector(r[2], r[3], 0, 4, 1, 5);
  const R t3 = __builtin_shufflevector(r[2], r[3], 2, 6, 3, 7);
  r[0] = __builtin_shufflevector(t0, t2, 0, 1, 4, 5);
  r[1] = __builtin_shufflevector(t0, t2, 2, 3, 6, 7);
  r[2] = __builtin_shufflevector(t1, t3, 0, 1, 4, 5);
  r[3] = __builtin_shufflevector(t1, t3, 2, 3, 6, 7);
}

template <typename R>
SAE_INLINE void transpose2(R (&r)[2]) {
  const R a = __builtin_shufflevector(r[0], r[1], 0, 2);
  const R b = __builtin_shufflevector(r[0], r[1], 1, 3);
  r[0] = a;
  r[1] = b;
}

template <int W, typename R>
SAE_INLINE void transpose(R (&r)[W]) {
  if constexpr (W == 8) transpose8(r);
  else if constexpr (W == 4) transpose4(r);
  else transpose2(r);
}

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

Layout layout_of(const ScanArgs& a) {
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

// ---------------------------------------------------------------------------------------
// The scan. A thread walks its rows in groups of NV vectors of W rows, and each group tile
// by tile (kTile tokens; backwards in t for the forward pass):
//   1. each row's tile of every input is read contiguously, converted to acc_t, and
//      lambda_t is formed (-1 on masked tokens); all of it is staged on the stack;
//   2. chunk by chunk (W tokens), W rows x W tokens are loaded from the stage and
//      transposed in registers so that one vector holds one token of W rows; the recursion
//      steps the NV vectors together, token by token, so that their independent dependency
//      chains overlap; the results are transposed back into a row-major stage;
//   3. each row's tile of both outputs is written out contiguously, with streaming stores
//      when the outputs are too large to stay cached (their lines are then never read in).
// The staging pays for itself: loading W rows x W tokens straight from the tensors (and
// storing the results straight back) measured slower, in cache and out of it, mostly
// because rows a multiple of 4 KiB apart (T a power of two) put every row's line for a
// given t in the same L1 set. For the same reason the next tile is prefetched into L2 only,
// and its prefetches are spread over step 2's chunks: the hardware prefetchers lose track
// of 4 * NV * W short streams, and one burst of a few hundred prefetches just queues up.

// A store that bypasses the caches (dst aligned to the vector). Inline assembly rather
// than intrinsics: the intrinsics are tied to a target and cannot be inlined through the
// target-neutral templates shared by the two builds.
template <typename S, typename R>
SAE_INLINE void store_stream(S* dst, R r) {
#if SAE_X86
  if constexpr (sizeof(R) == 32 && sizeof(S) == 4) __asm__("vmovntps %1, %0" : "=m"(*reinterpret_cast<R*>(dst)) : "x"(r));
  else if constexpr (sizeof(R) == 32) __asm__("vmovntpd %1, %0" : "=m"(*reinterpret_cast<R*>(dst)) : "x"(r));
  else if constexpr (sizeof(S) == 4) __asm__("movntps %1, %0" : "=m"(*reinterpret_cast<R*>(dst)) : "x"(r));
  else __asm__("movntpd %1, %0" : "=m"(*reinterpret_cast<R*>(dst)) : "x"(r));
#else
  storeu<R>(dst, r);
#endif
}

// Step 3 for one row: n values, a vector at a time, in the direction the scan walks. The
// stage was just written a vector at a time, and wider loads (libc memcpy's) spanning
// several pending stores would wait for them to reach L1; the opaque register keeps GCC
// from turning the loop into such a call.
template <typename S, int W, bool Backward, bool Stream>
SAE_INLINE void copy_out(S* dst, const S* src, int n) {
  typedef vec_t<S, W> R;
  if (Backward && n % W == 0) {
    for (int k = n - W; k >= 0; k -= W) {
      R r = loadu<R>(src + k);
      SAE_OPAQUE(r);
      if (Stream && (reinterpret_cast<uintptr_t>(dst) % sizeof(R)) == 0) store_stream(dst + k, r);
      else storeu<R>(dst + k, r);
    }
    return;
  }
  int k = 0;
  for (; k + W <= n; k += W) {
    R r = loadu<R>(src + k);
    SAE_OPAQUE(r);
    if (Stream && (reinterpret_cast<uintptr_t>(dst) % sizeof(R)) == 0) store_stream(dst + k, r);
    else storeu<R>(dst + k, r);
  }
  for (; k < n; ++k) {
    S x = src[k];
    SAE_OPAQUE(x);
    dst[k] = x;
  }
}

// Rows row0 .. row0+nrows-1 (1 <= nrows <= NV * W). Forward runs t = T-1 .. 0 carrying w;
// the adjoint runs t = 0 .. T-1 carrying u (sae_step.h).
template <typename S, int W, int NV, bool Adjoint>
SAE_INLINE void scan_group(const ScanArgs& a, const Consts<S, W>& cs, Layout layout, bool stream,
                           int64_t row0, int64_t nrows) {
  typedef typename Vec<S, W>::raw R;
  typedef Vec<S, W> V;
  constexpr int G = NV * W;
  constexpr int P = kTile + W;  // row pitch of the stage, one spare chunk
  static_assert(kTile % W == 0, "a tile holds whole chunks");
  alignas(64) S xs[G][P], ys[G][P], ls[G][P], o0s[G][P], o1s[G][P];
  const int nv = int((nrows + W - 1) / W);
  V carry[NV];
  for (int v = 0; v < NV; ++v) {
    S init[W];
    for (int g = 0; g < W; ++g) {
      const int64_t r = v * W + g;
      init[g] = (!Adjoint && r < nrows && a.bootstrap.ptr != nullptr)
                    ? load_number<S>(a.bootstrap.kind, a.bootstrap.ptr, (row0 + r) * a.bootstrap.sb)
                    : S(0);
    }
    memcpy(&carry[v].v, init, sizeof(init));
  }
  // Lanes of missing rows in the last vector: masked tokens, never stored.
  for (int g = int(nrows); g < nv * W; ++g) {
    for (int k = 0; k < P; ++k) xs[g][k] = ys[g][k] = S(0), ls[g][k] = S(-1);
  }
  S* const out0 = static_cast<S*>(a.out0);
  S* const out1 = static_cast<S*>(a.out1);
  const int64_t T = a.T;
  const int64_t ntiles = (T + kTile - 1) / kTile;
  for (int64_t ii = 0; ii < ntiles; ++ii) {
    const int64_t t0 = (Adjoint ? ii : ntiles - 1 - ii) * kTile;
    const int n = int(std::min<int64_t>(kTile, T - t0));
    const int nc = (n + W - 1) / W;
    // Tile ip's inputs are prefetched a few rows per chunk during step 2, so that the
    // requests are spread over the compute instead of queueing up in one burst.
    const int64_t ip = Adjoint ? ii + kPrefetchTiles : ntiles - 1 - ii - kPrefetchTiles;
    const bool pf = kPrefetchTiles > 0 && ip >= 0 && ip < ntiles;
    const int64_t tp = ip * kTile;
    const int np = pf ? int(std::min<int64_t>(kTile, T - tp)) : 0;
    const int pf_rows = int((nrows + nc - 1) / nc);
    // 1.
    stage_tile<S, W, P, !Adjoint>(a, cs, layout, row0, nrows, t0, n, xs, ys, ls);
    // 2.
    for (int cc = 0; cc < nc; ++cc) {
      const int k0 = (Adjoint ? cc : nc - 1 - cc) * W;
      if (pf) {
        for (int g = cc * pf_rows; g < std::min<int64_t>(nrows, (cc + 1) * pf_rows); ++g) {
          prefetch_run(a.a, row0 + g, tp, np);
          prefetch_run(a.b, row0 + g, tp, np);
          prefetch_run(a.mask, row0 + g, tp, np);
          prefetch_run(a.cut.src, row0 + g, tp, np);
        }
      }
      R x[NV][W], y[NV][W], l[NV][W];
      for (int v = 0; v < NV; ++v) {
        if (v >= nv) break;
        for (int g = 0; g < W; ++g) {
          x[v][g] = loadu<R>(&xs[v * W + g][k0]);
          y[v][g] = loadu<R>(&ys[v * W + g][k0]);
          l[v][g] = loadu<R>(&ls[v * W + g][k0]);
        }
        transpose<W>(x[v]);
        transpose<W>(y[v]);
        transpose<W>(l[v]);
      }
      R o0[NV][W], o1[NV][W];
      for (int j = 0; j < W; ++j) {
        const int k = Adjoint ? j : W - 1 - j;
        for (int v = 0; v < NV; ++v) {
          if (v >= nv) break;
          const auto ok = l[v][k] >= S(0);
          V s = carry[v], r0, r1;
          if (Adjoint) adjoint_token(V::of(x[v][k]), V::of(y[v][k]), V::of(l[v][k]), cs.gamma, s, r0, r1);
          else forward_token(V::of(x[v][k]), V::of(y[v][k]), V::of(l[v][k]), cs.gamma, s, r0, r1);
          o0[v][k] = ok ? r0.v : R{};
          o1[v][k] = ok ? r1.v : R{};
          carry[v].v = ok ? s.v : carry[v].v;
        }
      }
      for (int v = 0; v < NV; ++v) {
        if (v >= nv) break;
        transpose<W>(o0[v]);
        transpose<W>(o1[v]);
        for (int g = 0; g < W; ++g) {
          storeu<R>(&o0s[v * W + g][k0], o0[v][g]);
          storeu<R>(&o1s[v * W + g][k0], o1[v][g]);
        }
      }
    }
    // 3.
    for (int g = 0; g < nrows; ++g) {
      if (stream) {
        copy_out<S, W, !Adjoint, true>(out0 + (row0 + g) * T + t0, o0s[g], n);
        copy_out<S, W, !Adjoint, true>(out1 + (row0 + g) * T + t0, o1s[g], n);
      } else {
        copy_out<S, W, !Adjoint, false>(out0 + (row0 + g) * T + t0, o0s[g], n);
        copy_out<S, W, !Adjoint, false>(out1 + (row0 + g) * T + t0, o1s[g], n);
      }
    }
  }
  if (Adjoint) {
    for (int v = 0; v < nv; ++v) {
      S u[W];
      memcpy(u, &carry[v].v, sizeof(u));
      for (int g = 0; g < W && v * W + g < nrows; ++g) static_cast<S*>(a.out2)[row0 + v * W + g] = u[g];
    }
  }
}

// A row alone (B = 1, or the one row left over after the groups): a vector group would
// spend nearly all of its work transposing empty lanes, so the row is staged as usual and
// the recursion runs in scalar code. It makes the same IEEE operations in the same order as
// a vector lane, so the results are bitwise those the row gets inside a group.
template <typename S, int W, bool Adjoint>
SAE_INLINE void scan_one_row(const ScanArgs& a, const Consts<S, W>& cs, Layout layout, bool stream,
                             int64_t row) {
  constexpr int P = kTile + W;
  alignas(64) S xs[1][P], ys[1][P], ls[1][P], o0s[P], o1s[P];
  const S gamma = S(a.p.gamma);
  S carry = (!Adjoint && a.bootstrap.ptr != nullptr)
                ? load_number<S>(a.bootstrap.kind, a.bootstrap.ptr, row * a.bootstrap.sb)
                : S(0);
  S* const out0 = static_cast<S*>(a.out0) + row * a.T;
  S* const out1 = static_cast<S*>(a.out1) + row * a.T;
  const int64_t T = a.T;
  const int64_t ntiles = (T + kTile - 1) / kTile;
  for (int64_t ii = 0; ii < ntiles; ++ii) {
    const int64_t t0 = (Adjoint ? ii : ntiles - 1 - ii) * kTile;
    const int n = int(std::min<int64_t>(kTile, T - t0));
    const int64_t ip = Adjoint ? ii + kPrefetchTiles : ntiles - 1 - ii - kPrefetchTiles;
    if (kPrefetchTiles > 0 && ip >= 0 && ip < ntiles) {
      const int64_t tp = ip * kTile;
      const int np = int(std::min<int64_t>(kTile, T - tp));
      prefetch_run(a.a, row, tp, np);
      prefetch_run(a.b, row, tp, np);
      prefetch_run(a.mask, row, tp, np);
      prefetch_run(a.cut.src, row, tp, np);
    }
    stage_tile<S, W, P, !Adjoint>(a, cs, layout, row, 1, t0, n, xs, ys, ls);
    for (int j = 0; j < n; ++j) {
      const int k = Adjoint ? j : n - 1 - j;
      const S l = ls[0][k];
      if (l >= S(0)) {
        S r0, r1;
        if (Adjoint) adjoint_token(xs[0][k], ys[0][k], l, gamma, carry, r0, r1);
        else forward_token(xs[0][k], ys[0][k], l, gamma, carry, r0, r1);
        o0s[k] = r0;
        o1s[k] = r1;
      } else {
        o0s[k] = o1s[k] = S(0);
      }
    }
    if (stream) {
      copy_out<S, W, !Adjoint, true>(out0 + t0, o0s, n);
      copy_out<S, W, !Adjoint, true>(out1 + t0, o1s, n);
    } else {
      copy_out<S, W, !Adjoint, false>(out0 + t0, o0s, n);
      copy_out<S, W, !Adjoint, false>(out1 + t0, o1s, n);
    }
  }
  if (Adjoint) static_cast<S*>(a.out2)[row] = carry;
}

// Rows [begin, end) in groups of NV * W.
template <typename S, int W, int NV, bool Adjoint>
SAE_INLINE void scan_rows(const ScanArgs& a, int64_t begin, int64_t end) {
  const Consts<S, W> cs(a.p);
  const Layout layout = layout_of(a);
  // Outputs too large to stay cached are written with streaming stores.
  const bool stream = 2 * a.B * a.T * int64_t(sizeof(S)) >= kStreamBytes;
  for (int64_t row0 = begin; row0 < end; row0 += NV * W) {
    const int64_t nrows = std::min<int64_t>(NV * W, end - row0);
    if (nrows == 1) scan_one_row<S, W, Adjoint>(a, cs, layout, stream, row0);
    else scan_group<S, W, NV, Adjoint>(a, cs, layout, stream, row0, nrows);
  }
#if SAE_X86
  if (stream) __asm__ __volatile__("sfence" ::: "memory");  // order the streaming stores
#endif
}

// Two builds of the scan: 32-byte vectors for AVX2 machines, 16-byte vectors (SSE2, NEON)
// for everything else. Same lanes, same operations, same results.
template <typename S, int NV, bool Adjoint>
SAE_TARGET_WIDE void scan_rows_wide(const ScanArgs& a, int64_t begin, int64_t end) {
  scan_rows<S, 32 / sizeof(S), NV, Adjoint>(a, begin, end);
}

template <typename S, int NV, bool Adjoint>
void scan_rows_base(const ScanArgs& a, int64_t begin, int64_t end) {
  scan_rows<S, 16 / sizeof(S), NV, Adjoint>(a, begin, end);
}

// AVX2 where the CPU and OS have it; SAE_CPU_VECTOR=base forces the 16-byte build (tests).
bool use_wide() {
#if SAE_X86
  static const bool wide = [] {
    const char* env = std::getenv("SAE_CPU_VECTOR");
    if (env != nullptr && std::strcmp(env, "base") == 0) return false;
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") != 0;
  }();
  return wide;
#else
  return false;
#endif
}

template <typename S, bool Adjoint>
void scan_all_rows_as(const ScanArgs& a) {
  const bool wide = use_wide();
  const int64_t W = (wide ? 32 : 16) / int64_t(sizeof(S));
  // Two vector chains per group hide the recursion's latency; one when that would leave a
  // thread without rows.
  const int nv = a.B >= kNV * W * int64_t(torch::stable::get_num_threads()) ? kNV : 1;
  const int64_t G = W * nv;
  const int64_t ngroups = (a.B + G - 1) / G;
  // Enough tokens per task that thread start-up is amortised.
  const int64_t grain = std::max<int64_t>(1, 65536 / std::max<int64_t>(1, G * a.T));
  torch::stable::parallel_for(0, ngroups, grain, [&](int64_t gb, int64_t ge) {
    const int64_t begin = gb * G, end = std::min(a.B, ge * G);
    if (wide) {
      if (nv == kNV) scan_rows_wide<S, kNV, Adjoint>(a, begin, end);
      else scan_rows_wide<S, 1, Adjoint>(a, begin, end);
    } else {
      if (nv == kNV) scan_rows_base<S, kNV, Adjoint>(a, begin, end);
      else scan_rows_base<S, 1, Adjoint>(a, begin, end);
    }
  });
}

template <bool Adjoint>
void scan_all_rows(const ScanArgs& a, bool use_double) {
  if (a.B == 0 || a.T == 0) {
    if (Adjoint && a.B > 0) {  // no tokens: dLoss/dbootstrap is 0
      if (use_double) std::fill_n(static_cast<double*>(a.out2), a.B, 0.0);
      else std::fill_n(static_cast<float*>(a.out2), a.B, 0.0f);
    }
    return;
  }
  if (use_double) scan_all_rows_as<double, Adjoint>(a);
  else scan_all_rows_as<float, Adjoint>(a);
}

// ---------------------------------------------------------------------------------------
// Launchers.

std::tuple<Tensor, Tensor> advantages_cpu(const Tensor& rewards, const Tensor& values,
                                          const Tensor& logprobs, const Tensor& mask,
                                          double gamma, double lam, double lam_inner,
                                          double threshold, const OptTensor& bootstrap) {
  Prepared pr = prepare_forward("sae.advantages", DeviceType::CPU, rewards, values, logprobs, true,
                                mask, gamma, lam, lam_inner, threshold, bootstrap);
  scan_all_rows<false>(pr.args, pr.use_double);
  return {pr.out0, pr.out1};
}

std::tuple<Tensor, Tensor> advantages_from_boundaries_cpu(
    const Tensor& rewards, const Tensor& values, const Tensor& boundaries, const Tensor& mask,
    double gamma, double lam, double lam_inner, const OptTensor& bootstrap) {
  Prepared pr = prepare_forward("sae.advantages_from_boundaries", DeviceType::CPU, rewards, values,
                                boundaries, false, mask, gamma, lam, lam_inner, 0.0, bootstrap);
  scan_all_rows<false>(pr.args, pr.use_double);
  return {pr.out0, pr.out1};
}

std::tuple<Tensor, Tensor, Tensor> advantages_backward_cpu(
    const OptTensor& grad_advantages, const OptTensor& grad_returns, const Tensor& mask,
    const OptTensor& logprobs, const OptTensor& boundaries, double gamma, double lam,
    double lam_inner, double threshold) {
  Prepared pr = prepare_adjoint("sae.advantages_backward", DeviceType::CPU, grad_advantages,
                                grad_returns, mask, logprobs, boundaries, gamma, lam, lam_inner,
                                threshold);
  scan_all_rows<true>(pr.args, pr.use_double);
  return {pr.out0, pr.out1, pr.out2};
}

Tensor segment_boundaries_cpu(const Tensor& logprobs, const Tensor& mask, double threshold) {
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

}  // namespace

STABLE_TORCH_LIBRARY_IMPL(sae, CPU, m) {
  m.impl("advantages", TORCH_BOX(&advantages_cpu));
  m.impl("advantages_from_boundaries", TORCH_BOX(&advantages_from_boundaries_cpu));
  m.impl("advantages_backward", TORCH_BOX(&advantages_backward_cpu));
  m.impl("segment_boundaries", TORCH_BOX(&segment_boundaries_cpu));
}

}  // namespace sae
