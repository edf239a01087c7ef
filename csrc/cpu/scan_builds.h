// The compiled builds of the scan: scan_engine.h's row scan (scan_rows) and chained walk
// (walk_chained) for one ISA and one accumulation type each, and the table dispatch.cpp
// picks them from. Each (ISA, type) pair is its own translation unit (builds_<isa>_<type>.cpp):
// the templates inline everything into one function per (vectors, pass, compose), and
// compiling all 36 of them in one file took 6 minutes on one core while the other core of a
// 2-core build sat idle. Split four ways they build side by side, with the CUDA kernels or
// each other.
#pragma once

#include <cstdint>

#include "../sae_elem.h"
#include "chained_walk.h"
#include "scan_engine.h"

namespace sae {
namespace cpu {

using ScanFn = void (*)(const ScanArgs&, const Work&, int64_t, int64_t);

// One ISA's builds for one accumulation type.
struct ScanBuilds {
  ScanFn scan[2][3][2];  // row scan [NV == kNV][pass][compose]
  ScanFn chained[2][3];  // chained walk of split rows [NV == kNV][pass]
};

// 32-byte vectors for AVX2 machines, 16-byte vectors (SSE2, NEON) for everything else. Same
// lanes, same operations, same results.
extern const ScanBuilds kWideFloat, kWideDouble, kBaseFloat, kBaseDouble;

// What the builds_*.cpp files instantiate. The target attribute is on these wrappers, so
// every build is compiled with the same flags and only the wide ones may use AVX2.
template <typename S, int NV, Pass M, bool Compose>
SAE_TARGET_WIDE void scan_rows_wide(const ScanArgs& a, const Work& wk, int64_t begin, int64_t end) {
  scan_rows<S, 32 / sizeof(S), NV, M, Compose>(a, wk, begin, end);
}

template <typename S, int NV, Pass M, bool Compose>
void scan_rows_base(const ScanArgs& a, const Work& wk, int64_t begin, int64_t end) {
  scan_rows<S, 16 / sizeof(S), NV, M, Compose>(a, wk, begin, end);
}

template <typename S, int NV, Pass M>
SAE_TARGET_WIDE void walk_chained_wide(const ScanArgs& a, const Work& wk, int64_t begin, int64_t end) {
  walk_chained<S, 32 / sizeof(S), NV, M>(a, wk, begin, end);
}

template <typename S, int NV, Pass M>
void walk_chained_base(const ScanArgs& a, const Work& wk, int64_t begin, int64_t end) {
  walk_chained<S, 16 / sizeof(S), NV, M>(a, wk, begin, end);
}

// A ScanBuilds of the wrappers `scan` and `walk` for type S.
#define SAE_SCAN_PASS(fn, S, NV, M) {&fn<S, NV, M, false>, &fn<S, NV, M, true>}
#define SAE_SCAN_PASSES(fn, S, NV) \
  {SAE_SCAN_PASS(fn, S, NV, Pass::Forward), SAE_SCAN_PASS(fn, S, NV, Pass::Critic), SAE_SCAN_PASS(fn, S, NV, Pass::Adjoint)}
#define SAE_WALK_PASSES(fn, S, NV) {&fn<S, NV, Pass::Forward>, &fn<S, NV, Pass::Critic>, &fn<S, NV, Pass::Adjoint>}
#define SAE_SCAN_BUILDS(scan, walk, S)                          \
  ScanBuilds {                                                  \
    {SAE_SCAN_PASSES(scan, S, 1), SAE_SCAN_PASSES(scan, S, kNV)}, \
    {SAE_WALK_PASSES(walk, S, 1), SAE_WALK_PASSES(walk, S, kNV)} \
  }

}  // namespace cpu
}  // namespace sae
