// Long rows split into chunks, so that few rows still fill every thread's vector lanes.
//
// Each token's step is an affine map of the carried value (sae_step.h), so a chunk of a row
// is one map, s_out = A * s_in + B. A split row is scanned in three phases: every chunk's
// map is composed on its own (the chunks are lanes of the scan, across threads); the
// carries entering the chunks are chained through the maps, one multiply-add per chunk,
// in the direction of the scan; and every chunk is scanned again from its carry, writing
// the outputs. Whether a row is split and where its chunks start depends on its length
// alone (chunk k starts at token k * kSplitChunk), never on the batch or the threads, so a
// row's bits are the same alone or in a batch, on any number of threads and either vector
// build. The chained carries differ from a plain sequential scan's by rounding only (a few
// ulps of the carry: the maps are products of factors in [0, 1]).
#pragma once

#include <cstdint>
#include <vector>

#include "scan_engine.h"

namespace sae {
namespace cpu {

// Rows of at least kSplitMinLen tokens are split. Splitting scans every token twice (once to
// compose, once to replay), which costs ~1.7x when the rows alone already fill the lanes of
// every thread (64 x 32768, 2 threads: 3.15 against 1.81 ms) and gains where they do not
// (1 x 131072: 0.14 against 0.37 ms). Since the choice may depend on the length alone, the
// threshold sits where batches are small in practice: 64 K tokens per row.
constexpr int64_t kSplitMinLen = int64_t(1) << 16;
constexpr int64_t kSplitChunk = 2048;  // tokens per chunk; a multiple of kTile
static_assert(kSplitChunk % kTile == 0, "chunks hold whole tiles");

SAE_INLINE bool row_is_split(int64_t len) { return len >= kSplitMinLen; }

// The chunks of one row, first to last, with writes_u on the last; each holds the row's
// entering carry (its bootstrap) until chain_carries() gives it its own.
inline void append_chunks(std::vector<Seg>& out, const Seg& row) {
  for (int64_t t0 = 0; t0 < row.len; t0 += kSplitChunk) {
    const int64_t n = std::min(kSplitChunk, row.len - t0);
    out.push_back(Seg{row.row, row.start + t0, n, row.out_offset + t0, row.init, row.init,
                       t0 + n == row.len});
  }
}

// The carries leaving a chunk, from those entering it and its map c[0 .. 4). The chained
// walk (chained_walk.h) steps its carries with this too, so that they are the same bits.
template <typename S>
SAE_INLINE void carry_through(const double* c, S& s, S& sc) {
  s = S(c[0]) * s + S(c[1]);
  sc = S(c[2]) * sc + S(c[3]);
}

// Phase 2 for the chunks chunks[b .. e) of one row, given their maps comp[4 * i ..]: the
// forward enters the last chunk with the row's bootstrap and walks to the first, the
// adjoint enters the first with 0 and walks to the last.
template <typename S>
void chain_carries(Seg* chunks, const double* comp, int64_t b, int64_t e, bool adjoint) {
  S s = S(chunks[b].init), sc = S(chunks[b].init_c);
  for (int64_t j = 0; j < e - b; ++j) {
    const int64_t i = adjoint ? b + j : e - 1 - j;
    chunks[i].init = s, chunks[i].init_c = sc;
    carry_through<S>(comp + 4 * i, s, sc);
  }
}

}  // namespace cpu
}  // namespace sae
