// Transparent huge pages for a large fresh CPU output, asked for per buffer (as numpy does
// for its arrays) rather than process-wide. A fresh 32 MiB output faults in 8192 4-KiB
// pages on its first touch, at ~1 us each on a VM; with the advice it is 16 2-MiB pages.
// Only the 2 MiB-aligned interior is advised: the buffer's edges may share pages with
// other allocations, whose backing is not ours to change. The advice is a hint: where THP
// is off, or the range is already backed, it changes nothing, and it never changes values.
#pragma once

#include <cstddef>
#include <cstdint>

#if defined(__linux__)
#include <sys/mman.h>
#endif

namespace sae {
namespace cpu {

// Below this a buffer is likely recycled by malloc from its heap (already faulted in) and
// too small for the advice to save more than it costs.
constexpr size_t kHugePageMinBytes = size_t(4) << 20;
constexpr uintptr_t kHugePageBytes = uintptr_t(2) << 20;

inline void advise_huge_pages(void* p, size_t n) {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  if (p == nullptr || n < kHugePageMinBytes) return;
  const uintptr_t b = (reinterpret_cast<uintptr_t>(p) + kHugePageBytes - 1) & ~(kHugePageBytes - 1);
  const uintptr_t e = (reinterpret_cast<uintptr_t>(p) + n) & ~(kHugePageBytes - 1);
  if (e > b) (void)madvise(reinterpret_cast<void*>(b), e - b, MADV_HUGEPAGE);  // a failure only loses the hint
#else
  (void)p;
  (void)n;
#endif
}

}  // namespace cpu
}  // namespace sae
