// CPU kernels. The recursion is a serial dependency chain per row, so a row alone runs at
// the latency of a few dependent float ops per token. To reach memory speed each thread
// walks rows side by side, one SIMD lane per row (W lanes per vector, NV vectors per group
// so that their dependency chains overlap), and each group tile by tile: inputs of any
// dtype and stride are read row-contiguously and converted into small stack buffers,
// transposed in registers for the recursion, and the results are transposed back and
// written out a tile row at a time (see "The scan" below). No heap temporaries are made.
//
// Rows never interact and every lane runs the same IEEE operations (sae_step.h, built with
// -ffp-contract=off), so results are bitwise the same whatever the number of threads, the
// vector width picked at run time (AVX2 or baseline), or where a row lands in a group.
//
// This file: ONE table of the ISA variants of the scan (each a build of scan_engine.h's
// templates for one vector width and target, compiled in builds_*.cpp), the choice among
// them at run time, and the split of the rows over torch's threads. Threads come from
// torch::stable::parallel_for: a call through the stable C shim into libtorch's own
// at::parallel_for, so the rows share torch's intra-op thread pool (torch.get_num_threads())
// whatever this file is built with.
#include "dispatch.h"

#include <torch/csrc/stable/ops.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "scan_builds.h"
#include "split_rows.h"

namespace sae {
namespace cpu {
namespace {

bool cpu_has_avx2() {
#if SAE_X86
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx2") != 0;
#else
  return false;
#endif
}

bool always() { return true; }

// One ISA variant: its name (as SAE_CPU_VECTOR spells it), vector size, whether this CPU
// runs it, and its builds of the scan, float32 then float64 (scan_builds.h).
struct IsaVariant {
  const char* name;
  int vector_bytes;
  bool (*available)();
  const ScanBuilds* builds[2];
};

// In order of preference: the first one available is used.
const IsaVariant kIsaVariants[] = {
    {"avx2", 32, &cpu_has_avx2, {&kWideFloat, &kWideDouble}},
    {"base", 16, &always, {&kBaseFloat, &kBaseDouble}},
};

// The preferred available variant, or the one SAE_CPU_VECTOR names if it is available.
const IsaVariant& isa() {
  static const IsaVariant& chosen = []() -> const IsaVariant& {
    const char* env = std::getenv("SAE_CPU_VECTOR");
    if (env != nullptr) {
      for (const IsaVariant& v : kIsaVariants)
        if (std::strcmp(env, v.name) == 0 && v.available()) return v;
    }
    for (const IsaVariant& v : kIsaVariants)
      if (v.available()) return v;
    return kIsaVariants[sizeof(kIsaVariants) / sizeof(kIsaVariants[0]) - 1];
  }();
  return chosen;
}

// n items (rows or segments) of about item_tokens tokens each, in groups of W * nv over
// torch's threads, with enough tokens per task that thread start-up is amortised.
// Two vector chains per group hide the recursion's latency; one when that would leave a
// thread without items (n items, W lanes a vector).
int vectors_per_group(int64_t n, int64_t W) {
  return n >= kNV * W * int64_t(torch::stable::get_num_threads()) ? kNV : 1;
}

template <typename S>
void run_groups(const IsaVariant& v, const ScanArgs& a, Pass pass, bool compose, const Work& wk,
                int64_t n, int64_t item_tokens) {
  const int64_t W = v.vector_bytes / int64_t(sizeof(S));
  const int nv = vectors_per_group(n, W);
  const ScanFn scan = v.builds[sizeof(S) == 8]->scan[nv == kNV][int(pass)][compose];
  const int64_t G = W * nv;
  const int64_t ngroups = (n + G - 1) / G;
  const int64_t grain = std::max<int64_t>(1, 65536 / std::max<int64_t>(1, G * item_tokens));
  if (wk.order == nullptr) {
    torch::stable::parallel_for(0, ngroups, grain, [&](int64_t gb, int64_t ge) {
      scan(a, wk, gb * G, std::min(n, ge * G));
    });
    return;
  }
  // Rows sorted longest first: parallel_for hands each thread a contiguous range of tasks, so
  // task i runs group zigzag(i) (longest, shortest, second longest, ...) and every range
  // holds long and short groups alike instead of the first thread getting all the long ones.
  torch::stable::parallel_for(0, ngroups, grain, [&](int64_t gb, int64_t ge) {
    for (int64_t i = gb; i < ge; ++i) {
      const int64_t g = (i % 2 == 0) ? i / 2 : ngroups - 1 - i / 2;
      scan(a, wk, g * G, std::min(n, (g + 1) * G));
    }
  });
}

// Whether a call's nsplit split rows take the chained walk rather than the three phases:
// when they fill at least half of every thread's vector (W lanes). The walk reads each
// token once, the three phases twice, so half-full lanes in one pass still beat full lanes
// in two; with fewer rows the three phases' chunks keep more threads and lanes busy.
// Measured with out= at 1 / 2 threads, float32 (ms, walk against three phases):
// 8 x 131072 1.35 / 2.41 and 1.26 / 1.57; 4 x 131072 0.94 / 1.19 and 0.96 / 0.84;
// 2 x 131072 at 2 threads 0.70 / 0.40. Both give the same bits (chained_walk.h), so the
// rule may depend on the batch and the threads.
bool use_chained_walk(int64_t nsplit, int64_t W, int64_t threads) {
  return nsplit >= 2 && 2 * nsplit >= W * threads;
}

// The split rows first[0 .. nsplit] describes (Work::first), a lane each, over the threads.
template <typename S>
void run_chained(const IsaVariant& v, const ScanArgs& a, Pass pass, const Work& wk, int64_t nsplit) {
  const int64_t W = v.vector_bytes / int64_t(sizeof(S));
  const int nv = vectors_per_group(nsplit, W);
  const ScanFn walk = v.builds[sizeof(S) == 8]->chained[nv == kNV][int(pass)];
  const int64_t G = W * nv;
  torch::stable::parallel_for(0, (nsplit + G - 1) / G, 1, [&](int64_t gb, int64_t ge) {
    walk(a, wk, gb * G, std::min(nsplit, ge * G));
  });
}

template <typename S, bool Adjoint>
void scan_all_rows_as(const ScanArgs& a) {
  const IsaVariant& v = isa();
  const bool packed = a.cu.ptr != nullptr;
  const Pass pass = Adjoint ? Pass::Adjoint : a.critic ? Pass::Critic : Pass::Forward;
  // Packed rows of different lengths: a group runs as long as its longest row, so rows are
  // grouped in order of length (longest first), which makes the time scale with N rather
  // than with B * max_len. Ties keep their order, so the grouping is deterministic (the
  // results would not depend on it anyway: each lane is its row's own recursion).
  std::vector<int64_t> order;
  bool any_split = !packed && row_is_split(a.T);
  if (packed) {
    order.resize(size_t(a.B));
    std::vector<int64_t> len(size_t(a.B));
    for (int64_t b = 0; b < a.B; ++b) {
      order[size_t(b)] = b, len[size_t(b)] = row_span(a, b).len;
      any_split = any_split || row_is_split(len[size_t(b)]);
    }
    std::stable_sort(order.begin(), order.end(),
                     [&](int64_t x, int64_t y) { return len[size_t(x)] > len[size_t(y)]; });
  }
  const int64_t* ord = packed ? order.data() : nullptr;
  if (!any_split) {
    // Packed: rows of N / B tokens on average.
    const int64_t row_tokens = packed ? std::max<int64_t>(1, a.T / std::max<int64_t>(1, a.B)) : a.T;
    run_groups<S>(v, a, pass, false, Work{ord, nullptr, nullptr}, a.B, row_tokens);
    return;
  }
  // Long rows as chunks (split_rows.h): segs holds every split row's chunks, row by row,
  // then the rows left whole.
  std::vector<Seg> segs;
  std::vector<int64_t> first{0};  // split row i's chunks: segs[first[i] .. first[i + 1])
  std::vector<Seg> whole;
  for (int64_t i = 0; i < a.B; ++i) {
    const Seg row = whole_row<S>(a, ord != nullptr ? ord[i] : i, Adjoint);
    if (!row_is_split(row.len)) {
      whole.push_back(row);
      continue;
    }
    append_chunks(segs, row);
    first.push_back(int64_t(segs.size()));
  }
  // Scans items (whole rows, or chunks whose carries are chained), writing their outputs.
  const int64_t tokens = packed ? a.T : a.B * a.T;
  auto write = [&](const std::vector<Seg>& items) {
    if (items.empty()) return;
    run_groups<S>(v, a, pass, false, Work{nullptr, items.data(), nullptr}, int64_t(items.size()),
                  std::max<int64_t>(1, tokens / int64_t(items.size())));
  };
  const int64_t nsplit = int64_t(first.size()) - 1;
  const int64_t W = v.vector_bytes / int64_t(sizeof(S));
  if (use_chained_walk(nsplit, W, int64_t(torch::stable::get_num_threads()))) {
    run_chained<S>(v, a, pass, Work{nullptr, segs.data(), nullptr, first.data()}, nsplit);
    write(whole);
    return;
  }
  const int64_t nchunks = int64_t(segs.size());
  std::vector<double> comp(size_t(4 * nchunks));
  run_groups<S>(v, a, pass, true, Work{nullptr, segs.data(), comp.data()}, nchunks, kSplitChunk);
  for (size_t r = 0; r + 1 < first.size(); ++r) {
    chain_carries<S>(segs.data(), comp.data(), first[r], first[r + 1], Adjoint);
  }
  segs.insert(segs.end(), whole.begin(), whole.end());
  write(segs);
}

}  // namespace

template <bool Adjoint>
void scan_all_rows(const ScanArgs& a, bool use_double) {
  if (a.B == 0 || a.T == 0) {
    if (Adjoint && a.B > 0) {  // no tokens: dLoss/dbootstrap is 0
      if (use_double) std::fill_n(static_cast<double*>(a.row_out), a.B, 0.0);
      else std::fill_n(static_cast<float*>(a.row_out), a.B, 0.0f);
    }
    return;
  }
  if (use_double) scan_all_rows_as<double, Adjoint>(a);
  else scan_all_rows_as<float, Adjoint>(a);
}

template void scan_all_rows<false>(const ScanArgs&, bool);
template void scan_all_rows<true>(const ScanArgs&, bool);

const char* isa_name() { return isa().name; }

}  // namespace cpu
}  // namespace sae
