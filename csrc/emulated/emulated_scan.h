// The CUDA launcher's whole schedule run on the host: the same loader choice, the same
// schedule choice (for an assumed SM count), the same per-block and per-pass source
// (cuda/sae_schedule.h), each block on emulated warps, blocks run one after another in a
// given or a shuffled order (on a GPU any order, or all at once, may happen; a correct
// schedule cannot tell). Torch-free: the op hooks (sae_emulated.cpp) and tests/cpp use it.
#pragma once

#include <algorithm>
#include <numeric>
#include <random>
#include <vector>

#include "../cuda/sae_schedule.h"
#include "warp_emulator.h"

namespace sae {
namespace emu {

struct ScanOptions {
  int sm_count = 132;        // an H100 / H200, for the schedule choice
  int row_regs = 96;         // registers per thread the rows kernel is assumed to hold (picks W)
  int force_schedule = -1;   // -1: choose as the CUDA launcher does; else a ScheduleKind
  int warps = 0;             // RowPerBlock with forced schedule: warps per block (0: chosen)
  int64_t max_blocks = 0;    // > 0: cap the grid (the kernels grid-stride over the rest)
  uint32_t order_seed = 0;   // 0: blocks in index order; else shuffled with this seed
  bool force_generic = false;
};

inline Schedule emulated_schedule(const ScanArgs& s, const ScanOptions& o) {
  const bool packed = s.cu.ptr != nullptr;
  Schedule sc = choose_schedule(s.B, s.T, o.sm_count, modelled_row_occupancy(o.row_regs), packed);
  if (o.force_schedule == int(ScheduleKind::SplitRow)) sc = split_schedule(s.B, s.T, packed);
  else if (o.force_schedule == int(ScheduleKind::RowPerBlock))
    sc = row_schedule(s.B, s.T, o.warps > 0 ? o.warps : sc.warps);
  if (o.max_blocks > 0) {
    sc.blocks = std::min(sc.blocks, o.max_blocks);
    sc.chain_blocks = std::min(sc.chain_blocks, o.max_blocks);
  }
  return sc;
}

inline std::vector<int64_t> block_order(int64_t n, uint32_t seed) {
  std::vector<int64_t> order(size_t(std::max<int64_t>(n, 0)));
  std::iota(order.begin(), order.end(), int64_t(0));
  if (seed != 0) {
    std::mt19937 rng(seed);
    std::shuffle(order.begin(), order.end(), rng);
  }
  return order;
}

template <class Fn>
void run_grid(int64_t blocks, int warps, uint32_t seed, Fn&& fn, size_t shared_bytes = kSharedBytes) {
  for (int64_t b : block_order(blocks, seed)) run_block(warps, b, blocks, shared_bytes, fn);
}

template <class L, bool Adjoint, bool Critic>
void emulate_schedule(const ScanArgs& s, bool use_double, const Schedule& sc, const VecFlags& vec,
                      const ScanOptions& o) {
  using acc_t = typename L::acc;
  if (sc.kind == ScheduleKind::RowPerBlock) {
    run_grid(sc.blocks, sc.warps, o.order_seed, [&](EmulatedWarp& w, EmulatedBlock& b) {
      scan_rows_per_block<L, Adjoint, Critic>(w, b, s, vec);
    });
    return;
  }
  std::vector<acc_t> ws(scan_workspace_bytes(sc, use_double, Critic) / sizeof(acc_t));
  run_grid(sc.blocks, sc.warps, o.order_seed, [&](EmulatedWarp& w, EmulatedBlock& b) {
    split_chunks<L, Adjoint, false, Critic>(w, b, s, vec, ws.data());
  });
  run_grid(sc.chain_blocks, kChainWarps, o.order_seed ? o.order_seed + 2 : 0,
           [&](EmulatedWarp& w, EmulatedBlock& b) {
             split_chain_rows<acc_t, Adjoint, Critic>(w, b, s, ws.data());
           },
           chain_shared_bytes<acc_t, Critic>());
  run_grid(sc.blocks, sc.warps, o.order_seed ? o.order_seed + 1 : 0,
           [&](EmulatedWarp& w, EmulatedBlock& b) {
             split_chunks<L, Adjoint, true, Critic>(w, b, s, vec, ws.data());
           });
}

// Runs the forward (Adjoint = false) or adjoint scan of `s` as the CUDA launcher would.
template <bool Adjoint>
void emulate_scan(const ScanArgs& s, bool use_double, const ScanOptions& o) {
  if (s.B == 0) return;
  const Schedule sc = emulated_schedule(s, o);
  const VecFlags vec = vec_flags(s, use_double ? 8 : 4);
  if constexpr (!Adjoint) {
    if (s.critic) {
      with_critic_loader(use_double, [&](auto loader) {
        emulate_schedule<decltype(loader), false, true>(s, use_double, sc, vec, o);
      });
      return;
    }
  }
  with_loader<Adjoint>(s, use_double, o.force_generic, [&](auto loader) {
    emulate_schedule<decltype(loader), Adjoint, false>(s, use_double, sc, vec, o);
  });
}

}  // namespace emu
}  // namespace sae
