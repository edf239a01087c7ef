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
//     total to a workspace; pass 2 (a block per row) reads a row's totals into shared
//     memory in one coalesced read, 512 at a time, and one thread chains them there; pass 3
//     replays every chunk from its carry in, visiting the chunks in the reverse of pass 1's
//     order. Its price: the inputs are read twice (the second time partly from the L2),
//     three launches, and pass 2's serial chain of nchunks dependent steps per row.
#pragma once

#include <algorithm>
#include <cstddef>

#include "sae_loaders.h"

namespace sae {

constexpr int kMaxRowWarps = 8;      // RowPerBlock: warps per block at most (256 threads)
constexpr int kSplitWarps = 8;       // SplitRow passes 1 and 3: warps per block
constexpr int kChainWarps = 4;       // SplitRow pass 2: warps of a row's block
constexpr int kChainThreads = kChainWarps * kWarpSize;
// SplitRow pass 2: chunk totals per shared-memory batch; 512 chunks are a 131072-token row,
// whose totals then take one L2 round trip in all.
constexpr int kChainBatch = 512;
constexpr int kChainPerThread = kChainBatch / kChainThreads;
static_assert(kChainBatch % kChainThreads == 0, "a chain batch is whole loads of every thread");
constexpr int64_t kSplitMinChunks = 16;  // rows of >= 4096 tokens may be split
constexpr int64_t kMaxGrid = 0x7fffffff;
// RowPerBlock's shared memory: per warp a chunk total and a carry in, for the scan and for
// a critic chain.
constexpr int kSharedBytes = kMaxRowWarps * 6 * 8;

enum class ScheduleKind : int { RowPerBlock = 0, SplitRow = 1 };

struct Schedule {
  ScheduleKind kind;
  int warps;             // warps per block (RowPerBlock: W; SplitRow: passes 1 and 3)
  int64_t blocks;        // grid of the scan kernel (RowPerBlock) or of passes 1 and 3
  int64_t chain_blocks;  // SplitRow: grid of pass 2 (a block per row)
  int64_t nchunks;       // chunks of a padded row (packed rows: of all N tokens)
  int64_t slots;         // SplitRow: chunk slots of the workspace (chunk_slot)
};

SAE_HD int64_t num_chunks(int64_t T) { return (T + kChunk - 1) / kChunk; }

// Processing position -> chunk: the forward pass runs backwards in t.
template <bool Adjoint>
SAE_HD int64_t chunk_at(int64_t nchunks, int64_t pos) {
  return Adjoint ? pos : nchunks - 1 - pos;
}

// Workspace slots of a split call. Padded rows: row * nchunks + chunk. Packed rows: row b's
// chunk c is slot start_b / kChunk + b + c, which is below that of row b + 1's first chunk
// (floor((start + len) / kChunk) >= floor(start / kChunk) + ceil(len / kChunk) - 1) and
// below num_chunks(N) + B for any offsets row_span() yields, so no row-length prefix sum
// is needed and unchecked offsets still stay in bounds.
SAE_HD int64_t num_slots(int64_t B, int64_t T, bool packed) {
  return packed ? num_chunks(T) + B : B * num_chunks(T);
}

SAE_HD int64_t first_slot(const ScanArgs& s, int64_t row, const RowSpan& sp) {
  return s.cu.ptr != nullptr ? sp.start / kChunk + row : row * num_chunks(s.T);
}

inline int pow2_at_least(int64_t x, int cap) {
  int p = 1;
  while (p < x && p < cap) p <<= 1;
  return p;
}

// Packed rows are planned for their mean length (the host never reads the offsets).
inline int64_t planned_row_chunks(int64_t B, int64_t T, bool packed) {
  return packed ? num_chunks(B > 0 ? T / B : T) : num_chunks(T);
}

inline Schedule row_schedule(int64_t B, int64_t T, int warps) {
  const int w = std::max(1, std::min(warps, kMaxRowWarps));
  return Schedule{ScheduleKind::RowPerBlock, w, std::min(B, kMaxGrid), 0, num_chunks(T), 0};
}

inline Schedule split_schedule(int64_t B, int64_t T, bool packed = false) {
  const int64_t n = num_chunks(T), units = num_slots(B, T, packed);
  return Schedule{ScheduleKind::SplitRow, kSplitWarps,
                  std::min((units + kSplitWarps - 1) / kSplitWarps, kMaxGrid), std::min(B, kMaxGrid),
                  n, units};
}

// RowPerBlock: blocks of the rows kernel resident per SM with W = 1, 2, 4, 8 warps per block
// (index log2 W). The CUDA launcher asks the runtime for the kernel it launches
// (cudaOccupancyMaxActiveBlocksPerMultiprocessor); the emulator, which has no kernel, uses
// modelled_row_occupancy. It only picks W, which never changes a bit.
struct RowOccupancy {
  int blocks_per_sm[4];
};

// What `regs` registers per thread allow on an sm_80 / sm_90 SM: 64K registers (allocated 8
// per thread at a time), 64 warps, 32 blocks.
inline RowOccupancy modelled_row_occupancy(int regs) {
  const int r = std::max(8, (regs + 7) / 8 * 8);
  RowOccupancy o{};
  for (int i = 0; i < 4; ++i) {
    const int w = 1 << i;
    o.blocks_per_sm[i] = std::max(1, std::min({65536 / (r * 32 * w), 64 / w, 32}));
  }
  return o;
}

// W in 1, 2, 4, 8 (at most the row's chunks rounded up to a power of two) minimising
// waves x rounds: a wave is as many rows as the SMs hold blocks at that W, a round is W
// chunks of a row. Ties go to fewer waves, whose last wave leaves fewer SMs short of warps.
// The chain of a row is one thread's, in chunk order, whatever W: bits never depend on it.
inline int row_warps(int64_t B, int64_t nchunks, int sm_count, const RowOccupancy& occ) {
  const int wmax = pow2_at_least(std::max<int64_t>(nchunks, 1), kMaxRowWarps);
  int best = 1;
  int64_t best_cost = -1, best_waves = 0;
  for (int i = 0, w = 1; w <= wmax; ++i, w <<= 1) {
    const int64_t per_wave = int64_t(std::max(occ.blocks_per_sm[i], 1)) * std::max(sm_count, 1);
    const int64_t waves = std::max<int64_t>(1, (B + per_wave - 1) / per_wave);
    const int64_t cost = waves * ((std::max<int64_t>(nchunks, 1) + w - 1) / w);
    if (best_cost < 0 || cost < best_cost || (cost == best_cost && waves < best_waves)) {
      best = w;
      best_cost = cost;
      best_waves = waves;
    }
  }
  return best;
}

// The host's choice, from the shape, the device's SM count and the rows kernel's occupancy
// only (never affects bits). Rows are split only when there are fewer rows than SMs (so
// whole rows cannot even give every SM one block) and they are long enough (>= 16 chunks)
// for three launches and a second read of the inputs to pay. Otherwise a block per row of
// row_warps() warps. Packed rows (T = N tokens in all) are judged by their mean length.
inline Schedule choose_schedule(int64_t B, int64_t T, int sm_count, const RowOccupancy& occ,
                                bool packed = false) {
  const int64_t n = planned_row_chunks(B, T, packed);
  if (B < sm_count && n >= kSplitMinChunks) return split_schedule(B, T, packed);
  return row_schedule(B, T, row_warps(B, n, sm_count, occ));
}

// Bytes of device workspace the schedule needs (SplitRow: per chunk slot its total map and
// its carry in, twice with a critic chain), allocated by the caller.
inline size_t scan_workspace_bytes(const Schedule& sc, bool use_double, bool critic = false) {
  if (sc.kind != ScheduleKind::SplitRow) return 0;
  return size_t((critic ? 6 : 3) * sc.slots) * (use_double ? 8 : 4);
}

template <typename acc_t, bool Adjoint>
SAE_HD acc_t initial_carry(const ScanArgs& s, int64_t row) {
  if (Adjoint || s.bootstrap.ptr == nullptr) return acc_t(0);
  return load_number<acc_t>(s.bootstrap.kind, s.bootstrap.ptr, row * s.bootstrap.sb);
}

template <typename acc_t, bool Adjoint>
SAE_HD void finish_row(const ScanArgs& s, int64_t row, acc_t carry) {
  if (Adjoint && s.row_out != nullptr) static_cast<acc_t*>(s.row_out)[row] = carry;
}

// What every thread of a row needs before its chunks: where its tokens are, its lambdas and
// its wide-load flags.
template <typename acc_t>
struct RowInfo {
  RowSpan span;
  RowLambdas<acc_t> lam;
  VecFlags vec;
  int64_t nchunks;
};

template <typename acc_t>
SAE_HD RowInfo<acc_t> row_info(const ScanArgs& s, const VecFlags& vec, int64_t row) {
  const RowSpan sp = row_span(s, row);
  return RowInfo<acc_t>{sp, row_lambdas<acc_t>(s, row), row_vec(vec, s, sp.start), num_chunks(sp.len)};
}

template <class L, typename acc_t>
SAE_HD typename L::Raw load_chunk(const ScanArgs& s, const RowInfo<acc_t>& ri, int64_t row,
                                  int64_t chunk, int lane) {
  const int64_t t0 = lane_t0(chunk, lane);
  return L::load(s, ri.vec, row, ri.span.start + t0, lane_count(ri.span.len, t0));
}

// Decodes, scans and replays chunk `chunk` of a row whose carry in is known.
template <class L, bool Adjoint, bool Critic, typename acc_t>
SAE_HD void replay_chunk(const ScanArgs& s, const RowInfo<acc_t>& ri, int64_t chunk, int lane,
                         const Tile<acc_t>& t, const ChunkMaps<acc_t>& m, Carry<acc_t> cin) {
  const int64_t t0 = lane_t0(chunk, lane);
  chunk_replay_store<Adjoint, Critic>(s, ri.vec.out, ri.span.out_offset + t0,
                                      lane_count(ri.span.len, t0), t, ri.lam.lam_critic, m, cin);
}

// RowPerBlock. Every thread of the block must call it (it synchronises the block). Rows
// have their own lengths (packed rows): every thread of the block reads the same row
// span, so the block's loops and barriers stay uniform.
template <class L, bool Adjoint, bool Critic, class Warp, class Block>
SAE_HD void scan_rows_per_block(Warp& warp, Block& blk, const ScanArgs& s, const VecFlags& vec) {
  using acc_t = typename L::acc;
  using Raw = typename L::Raw;
  // Two chunks in flight per warp for float32 work; float64 work (or a critic chain's
  // second set of maps) would need more than the 128 registers a thread may have at 2
  // blocks per SM, and would spill.
  constexpr bool kPrefetch = sizeof(acc_t) == 4 && !Critic;
  const int lane = warp.lane(), w = blk.warp_index(), W = blk.num_warps();
  const bool leader = w == 0 && lane == 0;
  Affine<acc_t>* totals = static_cast<Affine<acc_t>*>(blk.shared());
  Affine<acc_t>* ctotals = totals + kMaxRowWarps;
  acc_t* carry_in = reinterpret_cast<acc_t*>(ctotals + kMaxRowWarps);
  acc_t* ccarry_in = carry_in + kMaxRowWarps;
  const acc_t gamma = acc_t(s.p.gamma);
  for (int64_t row = blk.block_index(); row < s.B; row += blk.num_blocks()) {
    const RowInfo<acc_t> ri = row_info<acc_t>(s, vec, row);
    const int64_t nchunks = ri.nchunks;
    // used by the leader only
    acc_t carry = initial_carry<acc_t, Adjoint>(s, row), ccarry = carry;
    Raw next{};
    if (kPrefetch && w < nchunks)
      next = load_chunk<L>(s, ri, row, chunk_at<Adjoint>(nchunks, w), lane);
    for (int64_t base = 0; base < nchunks; base += W) {
      const int64_t pos = base + w;
      Raw cur{};
      if (kPrefetch) {
        cur = next;
        // The next round's loads go out before this round's scan and barriers.
        if (pos + W < nchunks)
          next = load_chunk<L>(s, ri, row, chunk_at<Adjoint>(nchunks, pos + W), lane);
      } else if (pos < nchunks) {
        cur = load_chunk<L>(s, ri, row, chunk_at<Adjoint>(nchunks, pos), lane);
      }
      Tile<acc_t> t;
      L::decode(s, cur, ri.lam, t);
      const ChunkMaps<acc_t> m = chunk_maps<Adjoint, Critic>(warp, t, gamma, ri.lam.lam_critic);
      if (lane == 0) {
        totals[w] = m.total;
        if (Critic) ctotals[w] = m.ctotal;
      }
      blk.sync();
      if (leader) {
        const int64_t nw = nchunks - base < W ? nchunks - base : W;
        for (int i = 0; i < nw; ++i) {
          carry_in[i] = carry;
          carry = apply(totals[i], carry);
          if (Critic) {
            ccarry_in[i] = ccarry;
            ccarry = apply(ctotals[i], ccarry);
          }
        }
      }
      blk.sync();
      if (pos < nchunks)
        replay_chunk<L, Adjoint, Critic>(s, ri, chunk_at<Adjoint>(nchunks, pos), lane, t, m,
                                         Carry<acc_t>{carry_in[w], Critic ? ccarry_in[w] : acc_t(0)});
    }
    if (leader) finish_row<acc_t, Adjoint>(s, row, carry);
  }
}

// SplitRow workspace: [slots] total.a, total.b, carry in, then (critic chain) the same for
// it; index chunk_slot.
template <typename acc_t>
struct SplitWorkspace {
  acc_t *ta, *tb, *cin, *cta, *ctb, *ccin;
  SAE_HD SplitWorkspace(void* ws, int64_t slots)
      : ta(static_cast<acc_t*>(ws)), tb(ta + slots), cin(ta + 2 * slots), cta(ta + 3 * slots),
        ctb(ta + 4 * slots), ccin(ta + 5 * slots) {}
};

// Packed rows: the row whose chunk occupies slot u (-1 if none; first_slot() is strictly
// increasing in the row, so the last row whose first slot is <= u).
SAE_HD int64_t slot_row(const ScanArgs& s, int64_t u) {
  int64_t lo = 0, hi = s.B - 1;
  const auto first = [&](int64_t b) {
    int64_t c = load_index(s.cu, b);
    c = c < 0 ? 0 : (c > s.T ? s.T : c);
    return c / kChunk + b;
  };
  if (s.B <= 0 || first(0) > u) return -1;
  while (lo < hi) {
    const int64_t mid = lo + (hi - lo + 1) / 2;
    if (first(mid) <= u) lo = mid;
    else hi = mid - 1;
  }
  return lo;
}

// One chunk of split pass 1 or 3.
template <class L, bool Adjoint, bool Replay, bool Critic, class Warp>
SAE_HD void split_chunk(Warp& warp, const ScanArgs& s, const RowInfo<typename L::acc>& ri,
                        const SplitWorkspace<typename L::acc>& sw, int64_t row, int64_t chunk,
                        int64_t u) {
  using acc_t = typename L::acc;
  const int lane = warp.lane();
  const typename L::Raw raw = load_chunk<L>(s, ri, row, chunk, lane);
  Tile<acc_t> t;
  L::decode(s, raw, ri.lam, t);
  const ChunkMaps<acc_t> m = chunk_maps<Adjoint, Critic>(warp, t, acc_t(s.p.gamma), ri.lam.lam_critic);
  if (Replay) {
    replay_chunk<L, Adjoint, Critic>(s, ri, chunk, lane, t, m,
                                     Carry<acc_t>{sw.cin[u], Critic ? sw.ccin[u] : acc_t(0)});
  } else if (lane == 0) {
    sw.ta[u] = m.total.a;
    sw.tb[u] = m.total.b;
    if (Critic) {
      sw.cta[u] = m.ctotal.a;
      sw.ctb[u] = m.ctotal.b;
    }
  }
}

// SplitRow pass 1 (Replay = false) and pass 3 (Replay = true): one warp per chunk,
// grid-stride over the batch's chunk slots. Warp v of the grid-stride order visits slot v in
// pass 1 and slot slots - 1 - v in pass 3: blocks start roughly in index order, so pass 3
// begins with the chunks pass 1 read last, the likeliest to be still in the L2. Every chunk
// replays from its own carry in, so the order changes no bit.
template <class L, bool Adjoint, bool Replay, bool Critic, class Warp, class Block>
SAE_HD void split_chunks(Warp& warp, Block& blk, const ScanArgs& s, const VecFlags& vec, void* ws) {
  using acc_t = typename L::acc;
  const bool packed = s.cu.ptr != nullptr;
  const int64_t slots = num_slots(s.B, s.T, packed);
  const SplitWorkspace<acc_t> sw(ws, slots);
  const int64_t u0 = blk.block_index() * blk.num_warps() + blk.warp_index();
  const int64_t stride = blk.num_blocks() * blk.num_warps();
  if (u0 >= slots) return;
  if (packed) {  // every lane finds the same row: the warp stays converged
    for (int64_t v = u0; v < slots; v += stride) {
      const int64_t u = Replay ? slots - 1 - v : v;
      const int64_t row = slot_row(s, u);
      if (row < 0) continue;
      const RowInfo<acc_t> ri = row_info<acc_t>(s, vec, row);
      const int64_t chunk = u - first_slot(s, row, ri.span);
      if (chunk >= ri.nchunks) continue;
      split_chunk<L, Adjoint, Replay, Critic>(warp, s, ri, sw, row, chunk, u);
    }
    return;
  }
  // Padded rows: u = row * nchunks + chunk; (row, chunk) step by the stride's quotient and
  // remainder (forwards in pass 1, backwards in pass 3) so the loop has no 64-bit division.
  const int64_t nchunks = num_chunks(s.T);
  const int64_t dq = stride / nchunks, dr = stride - dq * nchunks;
  const int64_t first = Replay ? slots - 1 - u0 : u0;
  int64_t row = first / nchunks, chunk = first - row * nchunks;
  for (int64_t v = u0; v < slots; v += stride) {
    const RowInfo<acc_t> ri = row_info<acc_t>(s, vec, row);
    split_chunk<L, Adjoint, Replay, Critic>(warp, s, ri, sw, row, chunk, row * nchunks + chunk);
    if (Replay) {
      row -= dq;
      chunk -= dr;
      if (chunk < 0) {
        chunk += nchunks;
        --row;
      }
    } else {
      row += dq;
      chunk += dr;
      if (chunk >= nchunks) {
        chunk -= nchunks;
        ++row;
      }
    }
  }
}

// SplitRow pass 2's shared memory: a batch of chunk totals (a, b) and the carries in the
// chain writes for them, twice with a critic chain.
template <typename acc_t, bool Critic>
constexpr size_t chain_shared_bytes() {
  return size_t(kChainBatch) * (Critic ? 6 : 3) * sizeof(acc_t);
}
constexpr size_t kChainSharedBytesMax = chain_shared_bytes<double, true>();

// SplitRow pass 2: a block of kChainThreads threads per row (grid-stride over rows); every
// thread must call it (it synchronises the block). The block reads a batch of the row's
// totals into shared memory, each thread kChainPerThread of them, adjacent threads adjacent
// slots (one coalesced read per batch); one thread chains the batch in processing order
// exactly as the RowPerBlock leader does, writing the carries in to shared memory; the block
// then stores them, coalesced. The next batch's loads are issued before the chain of the
// current one, so a row of any length waits for one L2 round trip, not one per batch.
template <typename acc_t, bool Adjoint, bool Critic, class Warp, class Block>
SAE_HD void split_chain_rows(Warp& warp, Block& blk, const ScanArgs& s, void* ws) {
  const int tid = blk.warp_index() * kWarpSize + warp.lane();
  const SplitWorkspace<acc_t> sw(ws, num_slots(s.B, s.T, s.cu.ptr != nullptr));
  acc_t* const ta = static_cast<acc_t*>(blk.shared());
  acc_t* const tb = ta + kChainBatch;
  acc_t* const cin = ta + 2 * kChainBatch;
  acc_t* const cta = ta + 3 * kChainBatch;  // Critic only
  acc_t* const ctb = ta + 4 * kChainBatch;
  acc_t* const ccin = ta + 5 * kChainBatch;
  for (int64_t row = blk.block_index(); row < s.B; row += blk.num_blocks()) {
    const RowSpan sp = row_span(s, row);
    const int64_t nchunks = num_chunks(sp.len), u0 = first_slot(s, row, sp);
    // this thread's k-th total of the batch at processing position `base`
    const auto pos_of = [&](int64_t base, int k) { return base + tid + int64_t(k) * kChainThreads; };
    acc_t ra[kChainPerThread], rb[kChainPerThread], rca[kChainPerThread], rcb[kChainPerThread];
    const auto fetch = [&](int64_t base) {
      SAE_UNROLL
      for (int k = 0; k < kChainPerThread; ++k) {
        const int64_t pos = pos_of(base, k);
        if (pos < nchunks) {
          const int64_t u = u0 + chunk_at<Adjoint>(nchunks, pos);
          ra[k] = sw.ta[u];
          rb[k] = sw.tb[u];
          if (Critic) {
            rca[k] = sw.cta[u];
            rcb[k] = sw.ctb[u];
          }
        }
      }
    };
    const acc_t init = initial_carry<acc_t, Adjoint>(s, row);
    Carry<acc_t> carry{init, init};  // the chaining thread's
    fetch(0);
    for (int64_t base = 0; base < nchunks; base += kChainBatch) {
      SAE_UNROLL
      for (int k = 0; k < kChainPerThread; ++k) {
        if (pos_of(base, k) < nchunks) {
          const int i = tid + k * kChainThreads;
          ta[i] = ra[k];
          tb[i] = rb[k];
          if (Critic) {
            cta[i] = rca[k];
            ctb[i] = rcb[k];
          }
        }
      }
      blk.sync();
      if (base + kChainBatch < nchunks) fetch(base + kChainBatch);
      if (tid == 0) {
        const int nb = nchunks - base < kChainBatch ? int(nchunks - base) : kChainBatch;
        for (int i = 0; i < nb; ++i) {
          cin[i] = carry.s;
          if (Critic) ccin[i] = carry.c;
          carry = carry_out<Critic>(Affine<acc_t>{ta[i], tb[i]},
                                    Critic ? Affine<acc_t>{cta[i], ctb[i]} : identity_map<acc_t>(), carry);
        }
      }
      blk.sync();
      SAE_UNROLL
      for (int k = 0; k < kChainPerThread; ++k) {
        const int64_t pos = pos_of(base, k);
        if (pos < nchunks) {
          const int i = tid + k * kChainThreads;
          const int64_t u = u0 + chunk_at<Adjoint>(nchunks, pos);
          sw.cin[u] = cin[i];
          if (Critic) sw.ccin[u] = ccin[i];
        }
      }
    }
    if (tid == 0) finish_row<acc_t, Adjoint>(s, row, carry.s);
  }
}

}  // namespace sae
