// The chained walk: split rows in one pass over memory, when they are many.
//
// The three phases of split_rows.h read every token twice from memory (compose, then
// replay), which pays where the split rows are too few to fill the lanes of every thread
// but costs where they already fill them (8 x 131072, 1 thread: 2.55 against 1.68 ms for
// the plain scan). Then the chained walk gives each lane one split row and walks its
// chunks in the order of the scan (forward: last chunk to first; adjoint: first to last,
// as chain_carries does). For each chunk, in one pass over its staged tiles, scan_group
// (scan_engine.h, Compose and Write) both composes the chunk's map from 0, exactly as
// phase 1 does, and replays the chunk from the carry entering it, exactly as phase 3 does;
// the carry entering the next chunk is then stepped through the map with carry_through(),
// exactly as chain_carries does. Every carry, map and output is so the same bits as the
// three phases', and which of the two runs a batch (dispatch.cpp) cannot change its bits.
#pragma once

#include <algorithm>
#include <cstdint>

#include "scan_engine.h"
#include "split_rows.h"

namespace sae {
namespace cpu {

// Split rows begin .. end-1 of wk (their chunks wk.segs[wk.first[i] .. wk.first[i + 1]),
// each holding its row's entering carry as append_chunks() left it), in groups of NV * W.
template <typename S, int W, int NV, Pass M>
SAE_INLINE void walk_chained(const ScanArgs& a, const Work& wk, int64_t begin, int64_t end) {
  constexpr bool Adjoint = M == Pass::Adjoint;
  constexpr int G = NV * W;
  const Consts<S, W> cs(a.p);
  const Layout layout = layout_of(a);
  const bool stream = stream_outputs(a, int64_t(sizeof(S)));
  for (int64_t i0 = begin; i0 < end; i0 += G) {
    const int nrows = int(std::min<int64_t>(G, end - i0));
    S s[G], sc[G];  // each row's carries entering its next chunk
    int64_t nck[G], steps = 0;
    for (int g = 0; g < nrows; ++g) {
      const Seg& c0 = wk.segs[wk.first[i0 + g]];
      s[g] = S(c0.init), sc[g] = S(c0.init_c);  // as chain_carries starts
      nck[g] = wk.first[i0 + g + 1] - wk.first[i0 + g];
      steps = std::max(steps, nck[g]);
    }
    // Step j: each row's j-th chunk in scan order. Packed rows of the group may have fewer
    // chunks; those that have run out leave the group (the others keep their lanes' bits:
    // lanes never interact).
    for (int64_t j = 0; j < steps; ++j) {
      Seg cur[G];
      int lane[G], n = 0;
      for (int g = 0; g < nrows; ++g) {
        if (j >= nck[g]) continue;
        cur[n] = wk.segs[wk.first[i0 + g] + (Adjoint ? j : nck[g] - 1 - j)];
        cur[n].init = s[g], cur[n].init_c = sc[g];
        lane[n++] = g;
      }
      double comp[4 * G];
      if (n == 1) scan_one_row<S, W, M, true, true>(a, cs, layout, stream, cur[0], comp);
      else scan_group<S, W, NV, M, true, true>(a, cs, layout, stream, cur, n, comp);
      for (int k = 0; k < n; ++k) carry_through<S>(comp + 4 * k, s[lane[k]], sc[lane[k]]);
    }
  }
  fence_streaming_stores(stream);
}

}  // namespace cpu
}  // namespace sae
