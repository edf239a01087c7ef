// The scan engine: a thread's rows in groups of NV vectors of W rows, each group tile by
// tile (see below), for the forward (advantages) and the adjoint pass. Templates on the
// accumulation type S, the vector width W and NV; builds_*.cpp instantiate them
// per ISA (scan_builds.h).
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
template <typename S, int W, bool Reverse, bool Stream>
SAE_INLINE void copy_out(S* dst, const S* src, int n) {
  typedef vec_t<S, W> R;
  if (Reverse && n % W == 0) {
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

// Which pass a scan makes: the forward (advantages, returns = advantages + values), the
// forward with a critic chain (returns from a second carry whose lambda_t is the row's
// lam_critic at every valid token), or the adjoint.
enum class Pass : int { Forward, Critic, Adjoint };

// Row g of a group at tile iteration ii: its tile j, the tile's first token within the
// row and its length; n == 0 when the row has no tile at this iteration (shorter rows of a
// packed group finish early and idle as masked lanes). The forward walks each row's tiles
// from its last one.
//
// Tiles are anchored at the 64-byte lines of the row's outputs, not at its token 0: the
// row's first tile is short by `lead` tokens, the phase of its first output within a line.
// A row whose outputs start mid-line (T not a multiple of 16 floats, packed rows) then
// still writes whole lines from every tile but its first and last, which is what lets the
// streaming stores take them without the line being read first, and its inputs' vectors
// do not straddle lines either (256 x 6119 float32, 2 threads: ~1.7x the time of 256 x
// 6144 when tiles started at token 0). Tiles only stage the data: the recursion runs
// token by token across them, so where they fall cannot change a bit of the results.
struct TileOf {
  int64_t t0;
  int n;
};

SAE_INLINE int tile_lead(const void* out0, int64_t out_offset, int elem_bytes) {
  const uintptr_t at = reinterpret_cast<uintptr_t>(out0) + uintptr_t(out_offset * elem_bytes);
  return int(at % 64) / elem_bytes;
}

SAE_INLINE int64_t tiles_in(int64_t len, int lead) {
  return len == 0 ? 0 : (len + lead + kTile - 1) / kTile;
}

template <bool Reverse>
SAE_INLINE TileOf tile_of(int64_t len, int lead, int64_t ntiles_row, int64_t ii) {
  const int64_t j = Reverse ? ntiles_row - 1 - ii : ii;
  if (j < 0 || j >= ntiles_row) return TileOf{0, 0};
  const int64_t b = std::max<int64_t>(0, j * kTile - lead);
  const int64_t e = std::min<int64_t>(len, (j + 1) * kTile - lead);
  return TileOf{b, int(e - b)};
}

// What a lane scans: a row, or one chunk of a split row (split_rows.h). Its tokens are
// (row, start + t) for 0 <= t < len, its outputs at out_offset + t; init / init_c are the
// carries entering it (S values held exactly in double); writes_u: it ends its row, so the
// adjoint's carry after it is the row's grad_bootstrap.
struct Seg {
  int64_t row, start, len, out_offset;
  double init, init_c;
  bool writes_u;
};

// Rows row[0 .. n) as segments of their own.
template <typename S>
SAE_INLINE Seg whole_row(const ScanArgs& a, int64_t row, bool adjoint) {
  const RowSpan sp = row_span(a, row);
  const double init = (!adjoint && a.bootstrap.ptr != nullptr)
                          ? double(load_number<S>(a.bootstrap.kind, a.bootstrap.ptr, row * a.bootstrap.sb))
                          : 0.0;
  return Seg{row, sp.start, sp.len, sp.out_offset, init, init, true};
}

// The segments segs[0 .. nrows-1] (1 <= nrows <= NV * W). Forward runs each row's t = len-1
// .. 0 carrying w (and, Critic, the critic chain's w); the adjoint runs t = 0 .. len-1
// carrying u (sae_step.h).
//
// Compose: each segment's map of the carry entering it to the carry leaving it,
// s_out = A * s_in + B (and the critic chain's Ac, Bc), goes to comp[4 * g ..]: B is the
// scan from s_in = 0, A the product of the valid tokens' factors. Write: the outputs are
// written, scanning from the segments' init carries. A split row's three phases are
// Compose alone, then Write alone (split_rows.h); chained_walk.h asks for both in one walk
// over the staged tiles, B then scanned from 0 in a second chain beside the replay's, with
// the same operations as Compose alone, so that its maps (and outputs) are the same bits.
template <typename S, int W, int NV, Pass M, bool Compose, bool Write = !Compose>
SAE_INLINE void scan_group(const ScanArgs& a, const Consts<S, W>& cs, Layout layout, bool stream,
                           const Seg* segs, int64_t nrows, double* comp) {
  constexpr bool Adjoint = M == Pass::Adjoint, Critic = M == Pass::Critic;
  typedef typename Vec<S, W>::raw R;
  typedef Vec<S, W> V;
  constexpr int G = NV * W;
  constexpr int P = kTile + W;  // row pitch of the stage, one spare chunk
  static_assert(kTile % W == 0, "a tile holds whole chunks");
  alignas(64) S xs[G][P], ys[G][P], ls[G][P], o0s[G][P], o1s[G][P];
  const int nv = int((nrows + W - 1) / W);
  RowSpan span[G];
  int64_t rows[G];
  int64_t ntl[G];
  int lead[G];
  RowLam<S, W> rl[G];
  int64_t ntiles = 0;
  for (int g = 0; g < nrows; ++g) {
    rows[g] = segs[g].row;
    span[g] = RowSpan{segs[g].start, segs[g].len, segs[g].out_offset};
    lead[g] = tile_lead(a.out0, span[g].out_offset, int(sizeof(S)));
    ntl[g] = tiles_in(span[g].len, lead[g]);
    ntiles = std::max(ntiles, ntl[g]);
    rl[g] = RowLam<S, W>(a, rows[g]);
  }
  constexpr bool Both = Compose && Write;
  // Both: carry / ccarry replay from the inits, mcarry / mccarry compose B / Bc from 0.
  V carry[NV], ccarry[NV], lcrit[NV], prod[NV], cprod[NV], mcarry[NV], mccarry[NV];
  for (int v = 0; v < NV; ++v) {
    S init[W], initc[W], lc[W];
    for (int g = 0; g < W; ++g) {
      const int64_t r = v * W + g;
      init[g] = (Write && r < nrows) ? S(segs[r].init) : S(0);
      initc[g] = (Write && r < nrows) ? S(segs[r].init_c) : S(0);
      lc[g] = r < nrows ? rl[r].lam_critic : S(0);
    }
    memcpy(&carry[v].v, init, sizeof(init));
    memcpy(&ccarry[v].v, initc, sizeof(initc));
    memcpy(&lcrit[v].v, lc, sizeof(lc));
    prod[v] = cprod[v] = V(S(1));
    mcarry[v] = mccarry[v] = V(S(0));
  }
  // Lanes of missing rows in the last vector: masked tokens, never stored.
  for (int g = int(nrows); g < nv * W; ++g) {
    for (int k = 0; k < P; ++k) xs[g][k] = ys[g][k] = S(0), ls[g][k] = masked_token_lambda<S>();
  }
  S* const out0 = static_cast<S*>(a.out0);
  S* const out1 = static_cast<S*>(a.out1);
  for (int64_t ii = 0; ii < ntiles; ++ii) {
    TileOf tl[G];
    int nmax = 0;
    for (int g = 0; g < nrows; ++g) {
      tl[g] = tile_of<!Adjoint>(span[g].len, lead[g], ntl[g], ii);
      nmax = std::max(nmax, tl[g].n);
    }
    const int nc = (nmax + W - 1) / W;
    // Each row's next tile is prefetched, a few rows per chunk during step 2, so that the
    // requests are spread over the compute instead of queueing up in one burst.
    const int pf_rows = int((nrows + nc - 1) / nc);
    // 1.
    for (int g = 0; g < nrows; ++g) {
      stage_row<S, W, !Adjoint>(a, cs, rl[g], layout, rows[g], span[g].start + tl[g].t0, tl[g].n,
                                nc * W, xs[g], ys[g], ls[g]);
    }
    // 2.
    for (int cc = 0; cc < nc; ++cc) {
      const int k0 = (Adjoint ? cc : nc - 1 - cc) * W;
      if (kPrefetchTiles > 0) {
        for (int g = cc * pf_rows; g < std::min<int64_t>(nrows, (cc + 1) * pf_rows); ++g) {
          const TileOf tp = tile_of<!Adjoint>(span[g].len, lead[g], ntl[g], ii + kPrefetchTiles);
          if (tp.n == 0) continue;
          const int64_t t = span[g].start + tp.t0;
          prefetch_run(a.x, rows[g], t, tp.n);
          prefetch_run(a.y, rows[g], t, tp.n);
          prefetch_run(a.mask, rows[g], t, tp.n);
          prefetch_run(a.cut.src, rows[g], t, tp.n);
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
          const auto ok = valid_lambda_lanes<S>(l[v][k]);
          V s = carry[v], r0, r1;
          if (Adjoint) adjoint_token(V::of(x[v][k]), V::of(y[v][k]), V::of(l[v][k]), cs.gamma, s, r0, r1);
          else forward_token(V::of(x[v][k]), V::of(y[v][k]), V::of(l[v][k]), cs.gamma, s, r0, r1);
          if (Compose) prod[v].v = ok ? (cs.gamma * V::of(l[v][k]) * prod[v]).v : prod[v].v;
          if (Both) {  // the map's B: the same step from 0, its outputs dropped
            V m = mcarry[v], m0, m1;
            if (Adjoint) adjoint_token(V::of(x[v][k]), V::of(y[v][k]), V::of(l[v][k]), cs.gamma, m, m0, m1);
            else forward_token(V::of(x[v][k]), V::of(y[v][k]), V::of(l[v][k]), cs.gamma, m, m0, m1);
            mcarry[v].v = ok ? m.v : mcarry[v].v;
          }
          if (Critic) {  // same tokens, lambda_t = lam_critic: only its returns are kept
            V sc = ccarry[v], c0, c1;
            forward_token(V::of(x[v][k]), V::of(y[v][k]), lcrit[v], cs.gamma, sc, c0, c1);
            r1 = c1;
            ccarry[v].v = ok ? sc.v : ccarry[v].v;
            if (Compose) cprod[v].v = ok ? (cs.gamma * lcrit[v] * cprod[v]).v : cprod[v].v;
            if (Both) {
              V mc = mccarry[v], d0, d1;
              forward_token(V::of(x[v][k]), V::of(y[v][k]), lcrit[v], cs.gamma, mc, d0, d1);
              mccarry[v].v = ok ? mc.v : mccarry[v].v;
            }
          }
          if (Write) {
            o0[v][k] = ok ? r0.v : R{};
            o1[v][k] = ok ? r1.v : R{};
          }
          carry[v].v = ok ? s.v : carry[v].v;
        }
      }
      for (int v = 0; v < NV; ++v) {
        if (!Write || v >= nv) break;
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
      if (!Write || tl[g].n == 0) continue;
      const int64_t off = span[g].out_offset + tl[g].t0;
      if (stream) {
        copy_out<S, W, !Adjoint, true>(out0 + off, o0s[g], tl[g].n);
        copy_out<S, W, !Adjoint, true>(out1 + off, o1s[g], tl[g].n);
      } else {
        copy_out<S, W, !Adjoint, false>(out0 + off, o0s[g], tl[g].n);
        copy_out<S, W, !Adjoint, false>(out1 + off, o1s[g], tl[g].n);
      }
    }
  }
  if (Compose) {
    for (int v = 0; v < nv; ++v) {
      S A[W], B[W], Ac[W], Bc[W];
      memcpy(A, &prod[v].v, sizeof(A));
      memcpy(B, Both ? &mcarry[v].v : &carry[v].v, sizeof(B));
      memcpy(Ac, &cprod[v].v, sizeof(Ac));
      memcpy(Bc, Both ? &mccarry[v].v : &ccarry[v].v, sizeof(Bc));
      for (int g = 0; g < W && v * W + g < nrows; ++g) {
        double* c = comp + 4 * (v * W + g);
        c[0] = A[g], c[1] = B[g], c[2] = Ac[g], c[3] = Bc[g];
      }
    }
  }
  if (Write && Adjoint) {
    for (int v = 0; v < nv; ++v) {
      S u[W];
      memcpy(u, &carry[v].v, sizeof(u));
      for (int g = 0; g < W && v * W + g < nrows; ++g)
        if (segs[v * W + g].writes_u) static_cast<S*>(a.row_out)[rows[v * W + g]] = u[g];
    }
  }
}

// A row alone (B = 1, or the one row left over after the groups): a vector group would
// spend nearly all of its work transposing empty lanes, so the row is staged as usual and
// the recursion runs in scalar code. It makes the same IEEE operations in the same order as
// a vector lane, so the results are bitwise those the row gets inside a group.
template <typename S, int W, Pass M, bool Compose, bool Write = !Compose>
SAE_INLINE void scan_one_row(const ScanArgs& a, const Consts<S, W>& cs, Layout layout, bool stream,
                             const Seg& seg, double* comp) {
  constexpr bool Adjoint = M == Pass::Adjoint, Critic = M == Pass::Critic;
  constexpr int P = kTile + W;
  alignas(64) S xs[1][P], ys[1][P], ls[1][P], o0s[P], o1s[P];
  const S gamma = S(a.p.gamma);
  const int64_t row = seg.row;
  const RowSpan span{seg.start, seg.len, seg.out_offset};
  const RowLam<S, W> rl(a, row);
  const S lcrit = rl.lam_critic;
  constexpr bool Both = Compose && Write;
  S carry = Write ? S(seg.init) : S(0);
  S ccarry = Write ? S(seg.init_c) : S(0);
  S prod = S(1), cprod = S(1);
  S mcarry = S(0), mccarry = S(0);  // Both: B and Bc from 0, as in scan_group
  S* const out0 = static_cast<S*>(a.out0) + span.out_offset;
  S* const out1 = static_cast<S*>(a.out1) + span.out_offset;
  const int lead = tile_lead(a.out0, span.out_offset, int(sizeof(S)));
  const int64_t ntiles = tiles_in(span.len, lead);
  for (int64_t ii = 0; ii < ntiles; ++ii) {
    const TileOf tl = tile_of<!Adjoint>(span.len, lead, ntiles, ii);
    const int64_t t0 = tl.t0;
    const int n = tl.n;
    const TileOf tp = tile_of<!Adjoint>(span.len, lead, ntiles, ii + kPrefetchTiles);
    if (kPrefetchTiles > 0 && tp.n > 0) {
      prefetch_run(a.x, row, span.start + tp.t0, tp.n);
      prefetch_run(a.y, row, span.start + tp.t0, tp.n);
      prefetch_run(a.mask, row, span.start + tp.t0, tp.n);
      prefetch_run(a.cut.src, row, span.start + tp.t0, tp.n);
    }
    stage_row<S, W, !Adjoint>(a, cs, rl, layout, row, span.start + t0, n, (n + W - 1) / W * W,
                              xs[0], ys[0], ls[0]);
    for (int j = 0; j < n; ++j) {
      const int k = Adjoint ? j : n - 1 - j;
      const S l = ls[0][k];
      if (is_valid_lambda(l)) {
        S r0, r1;
        if (Adjoint) adjoint_token(xs[0][k], ys[0][k], l, gamma, carry, r0, r1);
        else forward_token(xs[0][k], ys[0][k], l, gamma, carry, r0, r1);
        if (Compose) prod = gamma * l * prod;
        if (Both) {
          S m0, m1;
          if (Adjoint) adjoint_token(xs[0][k], ys[0][k], l, gamma, mcarry, m0, m1);
          else forward_token(xs[0][k], ys[0][k], l, gamma, mcarry, m0, m1);
        }
        if (Critic) {
          S c0;
          forward_token(xs[0][k], ys[0][k], lcrit, gamma, ccarry, c0, r1);
          if (Compose) cprod = gamma * lcrit * cprod;
          if (Both) {
            S d0, d1;
            forward_token(xs[0][k], ys[0][k], lcrit, gamma, mccarry, d0, d1);
          }
        }
        o0s[k] = r0;
        o1s[k] = r1;
      } else {
        o0s[k] = o1s[k] = S(0);
      }
    }
    if (!Write) continue;
    if (stream) {
      copy_out<S, W, !Adjoint, true>(out0 + t0, o0s, n);
      copy_out<S, W, !Adjoint, true>(out1 + t0, o1s, n);
    } else {
      copy_out<S, W, !Adjoint, false>(out0 + t0, o0s, n);
      copy_out<S, W, !Adjoint, false>(out1 + t0, o1s, n);
    }
  }
  if (Compose) {
    comp[0] = prod, comp[1] = Both ? mcarry : carry, comp[2] = cprod, comp[3] = Both ? mccarry : ccarry;
  }
  if (Write && Adjoint && seg.writes_u) {
    static_cast<S*>(a.row_out)[row] = carry;
  }
}

// What a task scans: segs[begin .. end) when segs is given (with Compose, their maps go to
// comp[4 * i ..]), else rows order[begin .. end) (order null: rows begin .. end-1). The
// chained walk (chained_walk.h) takes split rows begin .. end-1 instead, row i's chunks
// being segs[first[i] .. first[i + 1]).
struct Work {
  const int64_t* order;
  const Seg* segs;
  double* comp;
  const int64_t* first;
};

// Outputs too large to stay cached are written with streaming stores.
SAE_INLINE bool stream_outputs(const ScanArgs& a, int64_t elem_bytes) {
  const int64_t tokens = a.cu.ptr != nullptr ? a.T : a.B * a.T;
  return 2 * tokens * elem_bytes >= kStreamBytes;
}

// After a task's streaming stores: order them before the stores of whatever runs next.
SAE_INLINE void fence_streaming_stores(bool stream) {
#if SAE_X86
  if (stream) __asm__ __volatile__("sfence" ::: "memory");
#else
  (void)stream;
#endif
}

// In groups of NV * W.
template <typename S, int W, int NV, Pass M, bool Compose>
SAE_INLINE void scan_rows(const ScanArgs& a, const Work& wk, int64_t begin, int64_t end) {
  const Consts<S, W> cs(a.p);
  const Layout layout = layout_of(a);
  const bool stream = stream_outputs(a, int64_t(sizeof(S)));
  Seg own[NV * W];
  for (int64_t i0 = begin; i0 < end; i0 += NV * W) {
    const int64_t nrows = std::min<int64_t>(NV * W, end - i0);
    const Seg* segs = wk.segs + i0;
    if (wk.segs == nullptr) {
      for (int g = 0; g < nrows; ++g)
        own[g] = whole_row<S>(a, wk.order != nullptr ? wk.order[i0 + g] : i0 + g, M == Pass::Adjoint);
      segs = own;
    }
    double* comp = Compose ? wk.comp + 4 * i0 : nullptr;
    if (nrows == 1) scan_one_row<S, W, M, Compose>(a, cs, layout, stream, segs[0], comp);
    else scan_group<S, W, NV, M, Compose>(a, cs, layout, stream, segs, nrows, comp);
  }
  fence_streaming_stores(stream);
}

}  // namespace cpu
}  // namespace sae
