// The scan engine: a thread's rows in groups of NV vectors of W rows, each group tile by
// tile (see below), for the forward (advantages) and the adjoint pass. Templates on the
// accumulation type S, the vector width W and NV; dispatch.cpp instantiates them per ISA.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>

#include "../sae_elem.h"
#include "../sae_step.h"
#include "simd.h"
#include "staging.h"

namespace sae {
namespace cpu {

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

}  // namespace cpu
}  // namespace sae
