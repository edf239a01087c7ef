// The CUDA kernel's per-warp algorithm: one warp scans one row. nvcc compiles it into the
// kernel with real shuffles (sae_cuda.cu); the host build runs the very same source with an
// emulated 32-lane warp (emulated/warp_emulator.h) so its logic is tested without a GPU.
//
// A Warp provides lane(), shfl_down(v, d), shfl_up(v, d) and shfl_idx(v, src) with the
// semantics of __shfl_*_sync over a full mask.
//
// The row's recurrence state s (w forward, u for the adjoint; see sae_step.h) evolves
// through per-token affine maps s <- a_t * s + b_t. The scan has three levels, as in
// cub::WarpScan-based scans:
//   1. registers: each lane owns kPerLane consecutive tokens of a chunk and composes their
//      maps into one;
//   2. shuffles: a Kogge-Stone exclusive scan of those maps across the 32 lanes, in
//      processing order (lane 31 first for the forward pass, which runs backwards in t);
//   3. carry: the state leaving one chunk enters the next, so rows of any length work.
// Each lane then replays its tokens from its exact incoming state with the same per-token
// arithmetic as the CPU kernel, and stores its outputs.
#pragma once

#include "../sae_step.h"

namespace sae {

constexpr int kWarpSize = 32;
constexpr int kPerLane = 8;
constexpr int64_t kChunk = int64_t(kWarpSize) * kPerLane;

template <typename acc_t>
struct Affine {
  acc_t a, b;  // s -> a * s + b
};

// (f o g)(s) = f(g(s)): g is applied first.
template <typename acc_t>
SAE_HD Affine<acc_t> compose(const Affine<acc_t>& f, const Affine<acc_t>& g) {
  return {f.a * g.a, f.a * g.b + f.b};
}

// For each lane, the composition of the maps of every lane before it in processing order
// (identity for the first). Reverse: processing order runs from lane 31 down to lane 0.
template <bool Reverse, typename acc_t, class Warp>
SAE_HD Affine<acc_t> warp_exclusive_scan(Warp& warp, Affine<acc_t> f) {
  const int lane = warp.lane();
  for (int off = 1; off < kWarpSize; off <<= 1) {
    // Every lane shuffles; only lanes with a partner that far back use the result.
    const acc_t pa = Reverse ? warp.shfl_down(f.a, off) : warp.shfl_up(f.a, off);
    const acc_t pb = Reverse ? warp.shfl_down(f.b, off) : warp.shfl_up(f.b, off);
    const bool has_partner = Reverse ? lane + off < kWarpSize : lane >= off;
    if (has_partner) f = compose(f, Affine<acc_t>{pa, pb});
  }
  const acc_t ea = Reverse ? warp.shfl_down(f.a, 1) : warp.shfl_up(f.a, 1);
  const acc_t eb = Reverse ? warp.shfl_down(f.b, 1) : warp.shfl_up(f.b, 1);
  const bool first = Reverse ? lane == kWarpSize - 1 : lane == 0;
  return first ? Affine<acc_t>{acc_t(1), acc_t(0)} : Affine<acc_t>{ea, eb};
}

// Which tensors may be read (and written) with wide loads: unit stride along T, and every
// run of kPerLane elements starting 16-byte aligned (8 for one-byte kinds). Decided once per
// launch on the host.
struct VecFlags {
  bool a, b, mask, cut, out;
};

inline bool run_aligned(const void* ptr, int64_t row_stride, int64_t st, int elem_size) {
  const int64_t align = kPerLane * elem_size >= 16 ? 16 : kPerLane * elem_size;
  return ptr != nullptr && st == 1 && reinterpret_cast<uintptr_t>(ptr) % 16 == 0 &&
         (row_stride * elem_size) % align == 0;
}

inline VecFlags vec_flags(const ScanArgs& s, int acc_size) {
  const auto ok = [](const Mat& m) { return run_aligned(m.ptr, m.sb, m.st, kind_size(m.kind)); };
  return VecFlags{ok(s.a), ok(s.b), ok(s.mask), ok(s.cut.src),
                  run_aligned(s.out0, s.T, 1, acc_size) && run_aligned(s.out1, s.T, 1, acc_size)};
}

// A run of kPerLane elements of one tensor: either read in place (strided) or first copied
// into registers with wide loads.
struct Run {
  const void* ptr;
  int64_t st;
};

SAE_HD void copy_wide(void* dst, const void* src, int bytes) {
#if defined(__CUDA_ARCH__)
  if (bytes % 16 == 0) {
    for (int i = 0; i < bytes / 16; ++i)
      static_cast<uint4*>(dst)[i] = static_cast<const uint4*>(src)[i];
  } else {
    *static_cast<uint2*>(dst) = *static_cast<const uint2*>(src);
  }
#else
  memcpy(dst, src, bytes);
#endif
}

struct alignas(16) RunBuffer {
  unsigned char bytes[kPerLane * 8];
};

SAE_HD Run fetch_run(const Mat& m, int64_t row, int64_t t0, int n, bool vec, RunBuffer& buf) {
  const int size = kind_size(m.kind);
  const char* base =
      static_cast<const char*>(m.ptr) + (row * m.sb + t0 * m.st) * int64_t(size);
  if (vec && n == kPerLane) {
    copy_wide(buf.bytes, base, kPerLane * size);
    return Run{buf.bytes, 1};
  }
  return Run{base, m.st};
}

// x[k] for the lane's tokens; out-of-range tokens (k >= n) and a null tensor read as 0.
template <typename acc_t>
SAE_HD void load_numbers(const Mat& m, int64_t row, int64_t t0, int n, bool vec,
                         acc_t (&x)[kPerLane]) {
  if (m.ptr == nullptr || n <= 0) {
    for (int k = 0; k < kPerLane; ++k) x[k] = acc_t(0);
    return;
  }
  RunBuffer buf;
  const Run r = fetch_run(m, row, t0, n, vec, buf);
  for (int k = 0; k < kPerLane; ++k)
    x[k] = k < n ? load_number<acc_t>(m.kind, r.ptr, k * r.st) : acc_t(0);
}

// lam[k] = lambda_t for valid tokens, -1 for masked or out-of-range ones.
template <typename acc_t>
SAE_HD void load_lambdas(const ScanArgs& s, const VecFlags& vec, int64_t row, int64_t t0, int n,
                         acc_t (&lam)[kPerLane]) {
  for (int k = 0; k < kPerLane; ++k) lam[k] = acc_t(-1);
  if (n <= 0) return;
  RunBuffer mbuf, cbuf;
  const Run mr = fetch_run(s.mask, row, t0, n, vec.mask, mbuf);
  const Run cr = fetch_run(s.cut.src, row, t0, n, vec.cut, cbuf);
  for (int k = 0; k < kPerLane; ++k) {
    if (k < n && load_nonzero(s.mask.kind, mr.ptr, k * mr.st))
      lam[k] = token_lambda<acc_t>(is_cut(s.cut, s.p, cr.ptr, k * cr.st), s.p);
  }
}

template <typename acc_t>
SAE_HD void store_run(void* out, int64_t T, int64_t row, int64_t t0, int n, bool vec,
                      const acc_t (&x)[kPerLane]) {
  if (n <= 0) return;
  acc_t* p = static_cast<acc_t*>(out) + row * T + t0;
  if (vec && n == kPerLane) {
#if defined(__CUDA_ARCH__)
    for (int i = 0; i < int(kPerLane * sizeof(acc_t)) / 16; ++i)
      reinterpret_cast<uint4*>(p)[i] = reinterpret_cast<const uint4*>(x)[i];
#else
    memcpy(p, x, sizeof(x));
#endif
    return;
  }
  for (int k = 0; k < n; ++k) p[k] = x[k];
}

// Scans row `row` of `s`: the forward pass (advantages, returns) or, with Adjoint, the
// gradient pass. Every lane of the warp must call it with the same row.
template <typename acc_t, bool Adjoint, class Warp>
SAE_HD void warp_scan_row(Warp& warp, const ScanArgs& s, const VecFlags& vec, int64_t row) {
  const int lane = warp.lane();
  const int64_t T = s.T;
  const acc_t gamma = acc_t(s.p.gamma);
  acc_t carry = acc_t(0);
  if (!Adjoint && s.bootstrap.ptr != nullptr)
    carry = load_number<acc_t>(s.bootstrap.kind, s.bootstrap.ptr, row * s.bootstrap.sb);

  const int64_t nchunks = (T + kChunk - 1) / kChunk;
  for (int64_t i = 0; i < nchunks; ++i) {
    const int64_t chunk = Adjoint ? i : nchunks - 1 - i;
    const int64_t t0 = chunk * kChunk + int64_t(lane) * kPerLane;
    const int64_t left = T - t0;
    const int n = left <= 0 ? 0 : (left >= kPerLane ? kPerLane : int(left));

    acc_t x[kPerLane], y[kPerLane], lam[kPerLane];
    load_numbers(s.a, row, t0, n, vec.a, x);
    load_numbers(s.b, row, t0, n, vec.b, y);
    load_lambdas(s, vec, row, t0, n, lam);

    // 1. This lane's tokens as one map, composed in processing order.
    Affine<acc_t> mine{acc_t(1), acc_t(0)};
    for (int j = 0; j < kPerLane; ++j) {
      const int k = Adjoint ? j : kPerLane - 1 - j;
      if (lam[k] < acc_t(0)) continue;
      acc_t a, b;
      if (Adjoint) adjoint_map(x[k], y[k], lam[k], gamma, a, b);
      else forward_map(x[k], y[k], lam[k], gamma, a, b);
      mine = compose(Affine<acc_t>{a, b}, mine);
    }
    // 2. What the lanes before this one do to the carried state.
    const Affine<acc_t> before = warp_exclusive_scan<!Adjoint>(warp, mine);
    acc_t state = before.a * carry + before.b;

    // Replay the lane's tokens exactly.
    acc_t o0[kPerLane], o1[kPerLane];
    for (int j = 0; j < kPerLane; ++j) {
      const int k = Adjoint ? j : kPerLane - 1 - j;
      o0[k] = acc_t(0);
      o1[k] = acc_t(0);
      if (lam[k] < acc_t(0)) continue;
      if (Adjoint) adjoint_token(x[k], y[k], lam[k], gamma, state, o0[k], o1[k]);
      else forward_token(x[k], y[k], lam[k], gamma, state, o0[k], o1[k]);
    }
    store_run(s.out0, T, row, t0, n, vec.out, o0);
    store_run(s.out1, T, row, t0, n, vec.out, o1);

    // 3. The state leaving the last lane in processing order enters the next chunk.
    carry = warp.shfl_idx(state, Adjoint ? kWarpSize - 1 : 0);
  }
  if (Adjoint && s.out2 != nullptr && lane == 0) static_cast<acc_t*>(s.out2)[row] = carry;
}

}  // namespace sae
