// What one warp does with one 256-token chunk of a row. nvcc compiles it into the kernels
// with real shuffles (sae_cuda.cu); the host build runs the very same source with an
// emulated 32-lane warp (emulated/warp_emulator.h), so its logic is tested without a GPU.
//
// A Warp provides lane(), shfl_down(v, d), shfl_up(v, d) and shfl_idx(v, src) with the
// semantics of __shfl_*_sync over a full mask.
//
// The row's recurrence state s (w forward, u for the adjoint; see sae_step.h) evolves
// through per-token affine maps s <- a_t * s + b_t. Chunk k of a row covers tokens
// [256k, 256k + 256): it depends on T only, never on B or on the schedule. Per chunk:
//   1. registers: each lane composes the maps of its kPerLane tokens, in processing order;
//   2. shuffles: a Kogge-Stone scan of the lane maps, in processing order (lane 31 first
//      for the forward pass, which runs backwards in t), gives each lane the map of the
//      lanes before it and every lane the chunk's total map;
//   3. carry: the state entering the next chunk is ALWAYS total(carry in), never a replayed
//      state, so every schedule (sae_schedule.h) chains the very same operations.
// Each lane then replays its tokens from before(carry in) with the per-token arithmetic of
// sae_step.h and stores its outputs.
#pragma once

#include "../sae_step.h"
#include "sae_runs.h"

namespace sae {

template <typename acc_t>
struct Affine {
  acc_t a, b;  // s -> a * s + b
};

template <typename acc_t>
SAE_HD Affine<acc_t> identity_map() {
  return {acc_t(1), acc_t(0)};
}

// (f o g)(s) = f(g(s)): g is applied first.
template <typename acc_t>
SAE_HD Affine<acc_t> compose(const Affine<acc_t>& f, const Affine<acc_t>& g) {
  return {f.a * g.a, f.a * g.b + f.b};
}

template <typename acc_t>
SAE_HD acc_t apply(const Affine<acc_t>& f, acc_t s) {
  return f.a * s + f.b;
}

template <typename acc_t>
SAE_HD Affine<acc_t> select(bool c, const Affine<acc_t>& x, const Affine<acc_t>& y) {
  return {c ? x.a : y.a, c ? x.b : y.b};
}

// before: for each lane, the composition of the maps of every lane before it in processing
// order (identity for the first). total: all 32 lanes, the same value in every lane.
// Reverse: processing order runs from lane 31 down to lane 0.
template <bool Reverse, typename acc_t, class Warp>
SAE_HD void warp_scan(Warp& warp, Affine<acc_t> f, Affine<acc_t>& before, Affine<acc_t>& total) {
  const int lane = warp.lane();
  SAE_UNROLL
  for (int off = 1; off < kWarpSize; off <<= 1) {
    // Every lane shuffles; only lanes with a partner that far back use the result.
    const acc_t pa = Reverse ? warp.shfl_down(f.a, off) : warp.shfl_up(f.a, off);
    const acc_t pb = Reverse ? warp.shfl_down(f.b, off) : warp.shfl_up(f.b, off);
    const bool has_partner = Reverse ? lane + off < kWarpSize : lane >= off;
    f = select(has_partner, compose(f, Affine<acc_t>{pa, pb}), f);
  }
  const acc_t ea = Reverse ? warp.shfl_down(f.a, 1) : warp.shfl_up(f.a, 1);
  const acc_t eb = Reverse ? warp.shfl_down(f.b, 1) : warp.shfl_up(f.b, 1);
  const bool first = Reverse ? lane == kWarpSize - 1 : lane == 0;
  before = select(first, identity_map<acc_t>(), Affine<acc_t>{ea, eb});
  const int last = Reverse ? 0 : kWarpSize - 1;
  total = Affine<acc_t>{warp.shfl_idx(f.a, last), warp.shfl_idx(f.b, last)};
}

// A lane's tokens, decoded: x, y are (rewards, values) forward and (grad_advantages,
// grad_returns) for the adjoint; lam[k] is lambda_t for a valid token and -1 for a masked
// or out-of-range one.
template <typename acc_t>
struct Tile {
  acc_t x[kPerLane], y[kPerLane], lam[kPerLane];
};

template <typename acc_t>
SAE_HD acc_t lambda_or_invalid(bool valid, bool cut, const RowLambdas<acc_t>& l) {
  return valid ? token_lambda<acc_t>(cut, l) : masked_token_lambda<acc_t>();
}

// The tokens of lane `lane` in chunk `chunk`, relative to the row's first token: where they
// start and how many of the row's `len` tokens exist.
SAE_HD int64_t lane_t0(int64_t chunk, int lane) { return chunk * kChunk + int64_t(lane) * kPerLane; }

SAE_HD int lane_count(int64_t len, int64_t t0) {
  const int64_t left = len - t0;
  return left <= 0 ? 0 : (left >= kPerLane ? kPerLane : int(left));
}

// A chunk's maps (sae_warp.h's step 2) and a row's carried state, each twice: the scan's own
// and, Critic (forward only), the critic chain's, whose lambda_t is the row's lam_critic at
// every valid token. Without a critic chain the second half is never computed.
template <typename acc_t>
struct ChunkMaps {
  Affine<acc_t> before, total, cbefore, ctotal;
};

template <typename acc_t>
struct Carry {
  acc_t s, c;
};

// 1. This lane's tokens as one map, composed in processing order; masked tokens are the
// identity (selected, not branched, so the warp never diverges). Critic: the critic chain's
// map, lambda_t = lc on every valid token.
template <bool Adjoint, bool Critic, typename acc_t>
SAE_HD Affine<acc_t> lane_map(const Tile<acc_t>& t, acc_t gamma, acc_t lc) {
  Affine<acc_t> mine = identity_map<acc_t>();
  SAE_UNROLL
  for (int j = 0; j < kPerLane; ++j) {
    const int k = Adjoint ? j : kPerLane - 1 - j;
    const acc_t lam = Critic ? lc : t.lam[k];
    Affine<acc_t> tok;
    if (Adjoint) adjoint_map(t.x[k], t.y[k], lam, gamma, tok.a, tok.b);
    else forward_map(t.x[k], t.y[k], lam, gamma, tok.a, tok.b);
    mine = select(is_valid_lambda(t.lam[k]), compose(tok, mine), mine);
  }
  return mine;
}

// Replays a lane's tokens from the states entering the lane; masked tokens output 0. With a
// critic chain, o1 (returns) comes from it, as the CPU kernel's critic pass computes them.
template <bool Adjoint, bool Critic, typename acc_t>
SAE_HD void lane_replay(const Tile<acc_t>& t, acc_t gamma, acc_t lc, Carry<acc_t> state,
                        acc_t (&o0)[kPerLane], acc_t (&o1)[kPerLane]) {
  SAE_UNROLL
  for (int j = 0; j < kPerLane; ++j) {
    const int k = Adjoint ? j : kPerLane - 1 - j;
    acc_t next = state.s, d0, d1;
    if (Adjoint) adjoint_token(t.x[k], t.y[k], t.lam[k], gamma, next, d0, d1);
    else forward_token(t.x[k], t.y[k], t.lam[k], gamma, next, d0, d1);
    const bool valid = is_valid_lambda(t.lam[k]);
    if (Critic) {
      acc_t cnext = state.c, c0;
      forward_token(t.x[k], t.y[k], lc, gamma, cnext, c0, d1);
      state.c = valid ? cnext : state.c;
    }
    o0[k] = valid ? d0 : acc_t(0);
    o1[k] = valid ? d1 : acc_t(0);
    state.s = valid ? next : state.s;
  }
}

// The chunk's maps: each lane's `before` and the chunk total (identical in every lane).
template <bool Adjoint, bool Critic, typename acc_t, class Warp>
SAE_HD ChunkMaps<acc_t> chunk_maps(Warp& warp, const Tile<acc_t>& t, acc_t gamma, acc_t lc) {
  ChunkMaps<acc_t> m;
  warp_scan<!Adjoint>(warp, lane_map<Adjoint, false>(t, gamma, lc), m.before, m.total);
  if (Critic) warp_scan<!Adjoint>(warp, lane_map<Adjoint, true>(t, gamma, lc), m.cbefore, m.ctotal);
  return m;
}

// The state entering the next chunk: total(carry in), for each chain.
template <bool Critic, typename acc_t>
SAE_HD Carry<acc_t> carry_out(const Affine<acc_t>& total, const Affine<acc_t>& ctotal,
                              Carry<acc_t> in) {
  return Carry<acc_t>{apply(total, in.s), Critic ? apply(ctotal, in.c) : in.c};
}

// Replays the chunk from the states entering it and stores this lane's n outputs at
// element `at` of out0 / out1.
template <bool Adjoint, bool Critic, typename acc_t>
SAE_HD void chunk_replay_store(const ScanArgs& s, bool vec_out, int64_t at, int n,
                               const Tile<acc_t>& t, acc_t lc, const ChunkMaps<acc_t>& m,
                               Carry<acc_t> carry_in) {
  acc_t o0[kPerLane], o1[kPerLane];
  const Carry<acc_t> mine{apply(m.before, carry_in.s),
                          Critic ? apply(m.cbefore, carry_in.c) : acc_t(0)};
  lane_replay<Adjoint, Critic>(t, acc_t(s.p.gamma), lc, mine, o0, o1);
  store_run(s.out0, at, n, vec_out, o0);
  store_run(s.out1, at, n, vec_out, o1);
}

}  // namespace sae
