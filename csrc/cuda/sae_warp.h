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
SAE_HD acc_t lambda_or_invalid(bool valid, bool cut, const Params& p) {
  return valid ? token_lambda<acc_t>(cut, p) : acc_t(-1);
}

// The tokens of lane `lane` in chunk `chunk`: where they start and how many exist.
SAE_HD int64_t lane_t0(int64_t chunk, int lane) { return chunk * kChunk + int64_t(lane) * kPerLane; }

SAE_HD int lane_count(int64_t T, int64_t t0) {
  const int64_t left = T - t0;
  return left <= 0 ? 0 : (left >= kPerLane ? kPerLane : int(left));
}

// 1. This lane's tokens as one map, composed in processing order; masked tokens are the
// identity (selected, not branched, so the warp never diverges).
template <bool Adjoint, typename acc_t>
SAE_HD Affine<acc_t> lane_map(const Tile<acc_t>& t, acc_t gamma) {
  Affine<acc_t> mine = identity_map<acc_t>();
  SAE_UNROLL
  for (int j = 0; j < kPerLane; ++j) {
    const int k = Adjoint ? j : kPerLane - 1 - j;
    Affine<acc_t> tok;
    if (Adjoint) adjoint_map(t.x[k], t.y[k], t.lam[k], gamma, tok.a, tok.b);
    else forward_map(t.x[k], t.y[k], t.lam[k], gamma, tok.a, tok.b);
    mine = select(t.lam[k] >= acc_t(0), compose(tok, mine), mine);
  }
  return mine;
}

// Replays a lane's tokens from the state entering the lane; masked tokens output 0.
template <bool Adjoint, typename acc_t>
SAE_HD void lane_replay(const Tile<acc_t>& t, acc_t gamma, acc_t state, acc_t (&o0)[kPerLane],
                        acc_t (&o1)[kPerLane]) {
  SAE_UNROLL
  for (int j = 0; j < kPerLane; ++j) {
    const int k = Adjoint ? j : kPerLane - 1 - j;
    acc_t next = state, d0, d1;
    if (Adjoint) adjoint_token(t.x[k], t.y[k], t.lam[k], gamma, next, d0, d1);
    else forward_token(t.x[k], t.y[k], t.lam[k], gamma, next, d0, d1);
    const bool valid = t.lam[k] >= acc_t(0);
    o0[k] = valid ? d0 : acc_t(0);
    o1[k] = valid ? d1 : acc_t(0);
    state = valid ? next : state;
  }
}

// The chunk's maps: each lane's `before` and the chunk total (identical in every lane).
template <bool Adjoint, typename acc_t, class Warp>
SAE_HD void chunk_maps(Warp& warp, const Tile<acc_t>& t, acc_t gamma, Affine<acc_t>& before,
                       Affine<acc_t>& total) {
  warp_scan<!Adjoint>(warp, lane_map<Adjoint>(t, gamma), before, total);
}

// Replays the chunk from the state entering it and stores the outputs of this lane.
template <bool Adjoint, typename acc_t>
SAE_HD void chunk_replay_store(const ScanArgs& s, bool vec_out, int64_t row, int64_t t0, int n,
                               const Tile<acc_t>& t, const Affine<acc_t>& before, acc_t carry_in) {
  acc_t o0[kPerLane], o1[kPerLane];
  lane_replay<Adjoint>(t, acc_t(s.p.gamma), apply(before, carry_in), o0, o1);
  store_run(s.out0, s.T, row, t0, n, vec_out, o0);
  store_run(s.out1, s.T, row, t0, n, vec_out, o1);
}

}  // namespace sae
