// How the chunks of a batch are spread over warps and blocks, written once against a Warp
// (sae_warp.h) and a Block interface that nvcc compiles with __syncthreads and shared
// memory (sae_cuda.cu) and the host emulates (emulated/warp_emulator.h):
//   block_index(), num_blocks()  this block in a 1-D grid (int64);
//   warp_index(), num_warps()    this warp in the block;
//   shared()                     kSharedBytes of memory shared by the block's warps;
//   sync()                       a barrier over all the block's threads.
//
// Every schedule does the same arithmetic in the same order: the chunks of a row are
// chained in processing order by carry = total.a * carry + total.b, one thread per row,
// and each lane replays from before(carry in). So the bits never depend on B, on the
// schedule, or on the order the hardware runs blocks in:
//   RowPerBlock: a block of W warps walks one row, W chunks per round: each warp scans
//     one chunk (whose loads were issued during the previous round), writes its total to
//     shared memory; one thread chains the round's carries; each warp replays its chunk.
//   SplitRow (few long rows; no block ever waits on another): pass 1 writes every chunk's
//     total to a workspace, pass 2 chains each row's carries (one thread per row), pass 3
//     replays every chunk from its carry in. Its price: the inputs are read twice, three
//     launches, and pass 2's serial chain of nchunks steps per row.
#pragma once

#include <algorithm>
#include <cstddef>

#include "sae_loaders.h"

namespace sae {

constexpr int kMaxRowWarps = 8;      // RowPerBlock: warps per block at most (256 threads)
constexpr int kSplitWarps = 8;       // SplitRow passes 1 and 3: warps per block
constexpr int kChainThreads = 128;   // SplitRow pass 2: threads (rows) per block
constexpr int kTargetWarpsPerSm = 32;
constexpr int64_t kSplitMinChunks = 16;  // rows of >= 4096 tokens may be split
constexpr int64_t kMaxGrid = 0x7fffffff;
constexpr int kSharedBytes = kMaxRowWarps * 3 * 8;

enum class ScheduleKind : int { RowPerBlock = 0, SplitRow = 1 };

struct Schedule {
  ScheduleKind kind;
  int warps;             // warps per block (RowPerBlock: W; SplitRow: passes 1 and 3)
  int64_t blocks;        // grid of the scan kernel (RowPerBlock) or of passes 1 and 3
  int64_t chain_blocks;  // SplitRow: grid of pass 2
  int64_t nchunks;
};

SAE_HD int64_t num_chunks(int64_t T) { return (T + kChunk - 1) / kChunk; }

// Processing position -> chunk: the forward pass runs backwards in t.
template <bool Adjoint>
SAE_HD int64_t chunk_at(int64_t nchunks, int64_t pos) {
  return Adjoint ? pos : nchunks - 1 - pos;
}

inline int pow2_at_least(int64_t x, int cap) {
  int p = 1;
  while (p < x && p < cap) p <<= 1;
  return p;
}

inline Schedule row_schedule(int64_t B, int64_t T, int warps) {
  const int w = std::max(1, std::min(warps, kMaxRowWarps));
  return Schedule{ScheduleKind::RowPerBlock, w, std::min(B, kMaxGrid), 0, num_chunks(T)};
}

inline Schedule split_schedule(int64_t B, int64_t T) {
  const int64_t n = num_chunks(T), units = B * n;
  return Schedule{ScheduleKind::SplitRow, kSplitWarps,
                  std::min((units + kSplitWarps - 1) / kSplitWarps, kMaxGrid),
                  std::min((B + kChainThreads - 1) / kChainThreads, kMaxGrid), n};
}

// The host's choice, from the shape and the device's SM count only (never affects bits).
// Rows are split only when there are fewer rows than SMs (so whole rows cannot even give
// every SM one block) and they are long enough (>= 16 chunks) for three launches and a
// second read of the inputs to pay. Otherwise a block per row, with enough warps per row
// (power of two, at most 8, at most the row's chunks) that B * W reaches about 32 warps per
// SM.
inline Schedule choose_schedule(int64_t B, int64_t T, int sm_count) {
  const int64_t n = num_chunks(T);
  if (B < sm_count && n >= kSplitMinChunks) return split_schedule(B, T);
  const int64_t want = (int64_t(sm_count) * kTargetWarpsPerSm + B - 1) / std::max<int64_t>(B, 1);
  return row_schedule(B, T, std::min(pow2_at_least(want, kMaxRowWarps),
                                     pow2_at_least(std::max<int64_t>(n, 1), kMaxRowWarps)));
}

// Bytes of device workspace the schedule needs (SplitRow: per chunk its total map and its
// carry in), allocated by the caller.
inline size_t scan_workspace_bytes(const Schedule& sc, int64_t B, bool use_double) {
  if (sc.kind != ScheduleKind::SplitRow) return 0;
  return size_t(3 * B * sc.nchunks) * (use_double ? 8 : 4);
}

template <typename acc_t, bool Adjoint>
SAE_HD acc_t initial_carry(const ScanArgs& s, int64_t row) {
  if (Adjoint || s.bootstrap.ptr == nullptr) return acc_t(0);
  return load_number<acc_t>(s.bootstrap.kind, s.bootstrap.ptr, row * s.bootstrap.sb);
}

template <typename acc_t, bool Adjoint>
SAE_HD void finish_row(const ScanArgs& s, int64_t row, acc_t carry) {
  if (Adjoint && s.out2 != nullptr) static_cast<acc_t*>(s.out2)[row] = carry;
}

template <class L, bool Adjoint>
SAE_HD typename L::Raw load_chunk(const ScanArgs& s, const VecFlags& vec, int64_t row,
                                  int64_t chunk, int lane) {
  const int64_t t0 = lane_t0(chunk, lane);
  return L::load(s, vec, row, t0, lane_count(s.T, t0));
}

// RowPerBlock. Every thread of the block must call it (it synchronises the block).
template <class L, bool Adjoint, class Warp, class Block>
SAE_HD void scan_rows_per_block(Warp& warp, Block& blk, const ScanArgs& s, const VecFlags& vec) {
  using acc_t = typename L::acc;
  using Raw = typename L::Raw;
  // Two chunks in flight per warp for float32 work; float64 work would need more than the
  // 128 registers a thread may have at 2 blocks per SM, and would spill.
  constexpr bool kPrefetch = sizeof(acc_t) == 4;
  const int lane = warp.lane(), w = blk.warp_index(), W = blk.num_warps();
  const bool leader = w == 0 && lane == 0;
  Affine<acc_t>* totals = static_cast<Affine<acc_t>*>(blk.shared());
  acc_t* carry_in = reinterpret_cast<acc_t*>(totals + kMaxRowWarps);
  const int64_t nchunks = num_chunks(s.T);
  const acc_t gamma = acc_t(s.p.gamma);
  for (int64_t row = blk.block_index(); row < s.B; row += blk.num_blocks()) {
    acc_t carry = initial_carry<acc_t, Adjoint>(s, row);  // used by the leader only
    Raw next{};
    if (kPrefetch && w < nchunks)
      next = load_chunk<L, Adjoint>(s, vec, row, chunk_at<Adjoint>(nchunks, w), lane);
    for (int64_t base = 0; base < nchunks; base += W) {
      const int64_t pos = base + w;
      Raw cur{};
      if (kPrefetch) {
        cur = next;
        // The next round's loads go out before this round's scan and barriers.
        if (pos + W < nchunks)
          next = load_chunk<L, Adjoint>(s, vec, row, chunk_at<Adjoint>(nchunks, pos + W), lane);
      } else if (pos < nchunks) {
        cur = load_chunk<L, Adjoint>(s, vec, row, chunk_at<Adjoint>(nchunks, pos), lane);
      }
      Tile<acc_t> t;
      L::decode(s, cur, t);
      Affine<acc_t> before, total;
      chunk_maps<Adjoint>(warp, t, gamma, before, total);
      if (lane == 0) totals[w] = total;
      blk.sync();
      if (leader) {
        const int64_t nw = nchunks - base < W ? nchunks - base : W;
        for (int i = 0; i < nw; ++i) {
          carry_in[i] = carry;
          carry = apply(totals[i], carry);
        }
      }
      blk.sync();
      if (pos < nchunks) {
        const int64_t t0 = lane_t0(chunk_at<Adjoint>(nchunks, pos), lane);
        chunk_replay_store<Adjoint>(s, vec.out, row, t0, lane_count(s.T, t0), t, before,
                                    carry_in[w]);
      }
    }
    if (leader) finish_row<acc_t, Adjoint>(s, row, carry);
  }
}

// SplitRow workspace: [B * nchunks] total.a, then total.b, then carry in; index row * nchunks
// + chunk.
template <typename acc_t>
struct SplitWorkspace {
  acc_t* ta;
  acc_t* tb;
  acc_t* cin;
  SAE_HD SplitWorkspace(void* ws, int64_t units)
      : ta(static_cast<acc_t*>(ws)), tb(ta + units), cin(ta + 2 * units) {}
};

// SplitRow pass 1 (Replay = false) and pass 3 (Replay = true): one warp per chunk,
// grid-stride over the batch's chunks.
template <class L, bool Adjoint, bool Replay, class Warp, class Block>
SAE_HD void split_chunks(Warp& warp, Block& blk, const ScanArgs& s, const VecFlags& vec, void* ws) {
  using acc_t = typename L::acc;
  const int lane = warp.lane();
  const int64_t nchunks = num_chunks(s.T), units = s.B * nchunks;
  const SplitWorkspace<acc_t> sw(ws, units);
  // Unit u = row * nchunks + chunk, grid-stride; (row, chunk) advance by the stride's
  // quotient and remainder so the loop has no 64-bit division.
  const int64_t u0 = blk.block_index() * blk.num_warps() + blk.warp_index();
  const int64_t stride = blk.num_blocks() * blk.num_warps();
  if (u0 >= units) return;
  const int64_t dq = stride / nchunks, dr = stride - dq * nchunks;
  int64_t row = u0 / nchunks, chunk = u0 - row * nchunks;
  for (; row < s.B; row += dq, chunk += dr) {
    if (chunk >= nchunks) {
      chunk -= nchunks;
      ++row;
      if (row >= s.B) break;
    }
    const int64_t u = row * nchunks + chunk;
    const typename L::Raw raw = load_chunk<L, Adjoint>(s, vec, row, chunk, lane);
    Tile<acc_t> t;
    L::decode(s, raw, t);
    Affine<acc_t> before, total;
    chunk_maps<Adjoint>(warp, t, acc_t(s.p.gamma), before, total);
    if (Replay) {
      const int64_t t0 = lane_t0(chunk, lane);
      chunk_replay_store<Adjoint>(s, vec.out, row, t0, lane_count(s.T, t0), t, before, sw.cin[u]);
    } else if (lane == 0) {
      sw.ta[u] = total.a;
      sw.tb[u] = total.b;
    }
  }
}

// SplitRow pass 2: row `row`'s carries, chained in processing order exactly as the
// RowPerBlock leader chains them. Loads go out kBatch at a time ahead of the chain.
template <typename acc_t, bool Adjoint>
SAE_HD void split_chain_row(const ScanArgs& s, void* ws, int64_t row) {
  constexpr int kBatch = 16;
  const int64_t nchunks = num_chunks(s.T);
  const SplitWorkspace<acc_t> sw(ws, s.B * nchunks);
  const acc_t* __restrict__ ta = sw.ta;
  const acc_t* __restrict__ tb = sw.tb;
  acc_t* __restrict__ cin = sw.cin;
  acc_t carry = initial_carry<acc_t, Adjoint>(s, row);
  for (int64_t base = 0; base < nchunks; base += kBatch) {
    Affine<acc_t> f[kBatch];
    SAE_UNROLL
    for (int i = 0; i < kBatch; ++i) {
      const int64_t u = row * nchunks + chunk_at<Adjoint>(nchunks, base + i);
      f[i] = base + i < nchunks ? Affine<acc_t>{ta[u], tb[u]} : identity_map<acc_t>();
    }
    SAE_UNROLL
    for (int i = 0; i < kBatch; ++i) {
      if (base + i < nchunks) {
        cin[row * nchunks + chunk_at<Adjoint>(nchunks, base + i)] = carry;
        carry = apply(f[i], carry);
      }
    }
  }
  finish_row<acc_t, Adjoint>(s, row, carry);
}

}  // namespace sae
