// A lane's run of kPerLane consecutive tokens of one tensor, held as raw 32-bit words in
// registers. The storage kind is a template parameter, so every index below is a
// compile-time constant after unrolling and nothing ever lands on the stack: a contiguous,
// aligned run is read with 128-bit (or 64-bit for one-byte kinds) read-only loads straight
// into the words; a ragged tail, an unaligned or strided run with predicated scalar loads
// that leave missing tokens zero. Loading and decoding are apart so that the loads of a
// chunk can be issued long before its values are needed (the next chunk's loads stay in
// flight while the current one is scanned).
#pragma once

#include "../sae_elem.h"

#if defined(__CUDACC__)
#define SAE_UNROLL _Pragma("unroll")
#else
#define SAE_UNROLL
#endif

namespace sae {

constexpr int kWarpSize = 32;
constexpr int kPerLane = 8;
constexpr int64_t kChunk = int64_t(kWarpSize) * kPerLane;

constexpr int kind_bytes(Kind k) {
  return (k == Kind::F64 || k == Kind::I64) ? 8
         : (k == Kind::F32 || k == Kind::I32) ? 4
         : (k == Kind::F16 || k == Kind::BF16 || k == Kind::I16) ? 2
                                                                   : 1;
}

// A loader's stand-in kind for a tensor the call does not have (no mask: every token valid;
// no cut source: no token starts a segment), so that its absence is decided at compile time
// and nothing is loaded for it.
constexpr Kind kAbsent = static_cast<Kind>(-1);

template <Kind K>
struct Run {
  static constexpr int kSize = kind_bytes(K);
  static constexpr int kBytes = kPerLane * kSize;
  static constexpr int kWords = kBytes / 4;
  uint32_t w[kWords];
};

namespace detail {

template <int Bytes, int N>
SAE_HD void vector_load(const void* p, uint32_t (&w)[N]) {
  static_assert(Bytes == 4 * N, "words must hold the run");
#if defined(__CUDA_ARCH__)
  if constexpr (Bytes == 8) {
    const uint2 q = __ldg(static_cast<const uint2*>(p));
    w[0] = q.x;
    w[1] = q.y;
  } else {
    SAE_UNROLL
    for (int i = 0; i < Bytes / 16; ++i) {
      const uint4 q = __ldg(static_cast<const uint4*>(p) + i);
      w[4 * i] = q.x;
      w[4 * i + 1] = q.y;
      w[4 * i + 2] = q.z;
      w[4 * i + 3] = q.w;
    }
  }
#else
  std::memcpy(w, p, Bytes);
#endif
}

template <int Size>
SAE_HD uint64_t scalar_load(const char* p) {
#if defined(__CUDA_ARCH__)
  if constexpr (Size == 1) return __ldg(reinterpret_cast<const unsigned char*>(p));
  else if constexpr (Size == 2) return __ldg(reinterpret_cast<const unsigned short*>(p));
  else if constexpr (Size == 4) return __ldg(reinterpret_cast<const unsigned int*>(p));
  else return __ldg(reinterpret_cast<const unsigned long long*>(p));
#else
  if constexpr (Size == 1) { uint8_t x; std::memcpy(&x, p, 1); return x; }
  else if constexpr (Size == 2) { uint16_t x; std::memcpy(&x, p, 2); return x; }
  else if constexpr (Size == 4) { uint32_t x; std::memcpy(&x, p, 4); return x; }
  else { uint64_t x; std::memcpy(&x, p, 8); return x; }
#endif
}

}  // namespace detail

// Bits of element k (little-endian packing, as memory lays the run out).
template <Kind K>
SAE_HD uint64_t run_bits(const Run<K>& r, int k) {
  constexpr int S = Run<K>::kSize;
  if constexpr (S == 1) return (r.w[k >> 2] >> (8 * (k & 3))) & 0xffu;
  else if constexpr (S == 2) return (r.w[k >> 1] >> (16 * (k & 1))) & 0xffffu;
  else if constexpr (S == 4) return r.w[k];
  else return uint64_t(r.w[2 * k]) | (uint64_t(r.w[2 * k + 1]) << 32);
}

template <Kind K>
SAE_HD void run_insert(Run<K>& r, int k, uint64_t bits) {
  constexpr int S = Run<K>::kSize;
  if constexpr (S == 1) r.w[k >> 2] |= uint32_t(bits) << (8 * (k & 3));
  else if constexpr (S == 2) r.w[k >> 1] |= uint32_t(bits) << (16 * (k & 1));
  else if constexpr (S == 4) r.w[k] = uint32_t(bits);
  else {
    r.w[2 * k] = uint32_t(bits);
    r.w[2 * k + 1] = uint32_t(bits >> 32);
  }
}

// Tokens t0 .. t0+n-1 of row `row` of m (n <= kPerLane; the rest read as zero, and so does
// a null tensor). `vec`: the host found every full run of this tensor contiguous and
// aligned for the wide load.
template <Kind K>
SAE_HD Run<K> load_run(const Mat& m, int64_t row, int64_t t0, int n, bool vec) {
  Run<K> r;
  SAE_UNROLL
  for (int i = 0; i < Run<K>::kWords; ++i) r.w[i] = 0;
  if (m.ptr == nullptr || n <= 0) return r;
  constexpr int S = Run<K>::kSize;
  const char* base = static_cast<const char*>(m.ptr) + (row * m.sb + t0 * m.st) * int64_t(S);
  if (vec && n == kPerLane) {
    detail::vector_load<Run<K>::kBytes>(base, r.w);
    return r;
  }
  const int64_t step = m.st * int64_t(S);
  SAE_UNROLL
  for (int k = 0; k < kPerLane; ++k)
    if (k < n) run_insert(r, k, detail::scalar_load<S>(base + k * step));
  return r;
}

// Element k as a number, converted exactly (only floating kinds are numbers here).
template <typename acc_t, Kind K>
SAE_HD acc_t run_value(const Run<K>& r, int k) {
  const uint64_t b = run_bits(r, k);
  if constexpr (K == Kind::F64) return acc_t(bit_cast<double>(b));
  else if constexpr (K == Kind::F32) return acc_t(bit_cast<float>(uint32_t(b)));
  else if constexpr (K == Kind::F16) return acc_t(f16_bits_to_float(uint16_t(b)));
  else if constexpr (K == Kind::BF16) return acc_t(bf16_bits_to_float(uint16_t(b)));
  else return acc_t(0);  // integer kinds are never read as numbers (the launchers reject them)
}

// Element k != 0 in its storage's own sense (-0.0 is zero, NaN is not), as load_nonzero.
template <Kind K>
SAE_HD bool run_nonzero(const Run<K>& r, int k) {
  const uint64_t b = run_bits(r, k);
  if constexpr (K == Kind::F64) return (b & 0x7fffffffffffffffull) != 0;
  else if constexpr (K == Kind::F32) return (b & 0x7fffffffull) != 0;
  else if constexpr (K == Kind::F16 || K == Kind::BF16) return (b & 0x7fffull) != 0;
  else return b != 0;
}

// Does token k start a segment? As is_cut: log-prob under the threshold, or a true flag.
template <Kind K>
SAE_HD bool run_cut(const Run<K>& r, int k, const Params& p, bool from_logprobs) {
  if constexpr (K == Kind::F64) {
    return from_logprobs ? run_value<double>(r, k) < p.log_p64 : run_nonzero(r, k);
  } else if constexpr (K == Kind::F32 || K == Kind::F16 || K == Kind::BF16) {
    return from_logprobs ? run_value<float>(r, k) < p.log_p32 : run_nonzero(r, k);
  } else {
    return run_nonzero(r, k);
  }
}

// Writes x[0..n) to a contiguous acc_t output at element `at`; full runs with typed 128-bit
// streaming stores when `vec` (outputs are written once and not read again by this kernel).
template <typename acc_t>
SAE_HD void store_run(void* out, int64_t at, int n, bool vec, const acc_t (&x)[kPerLane]) {
  if (n <= 0) return;
  acc_t* p = static_cast<acc_t*>(out) + at;
#if defined(__CUDA_ARCH__)
  if (vec && n == kPerLane) {
    if constexpr (sizeof(acc_t) == 4) {
      __stcs(reinterpret_cast<float4*>(p), make_float4(x[0], x[1], x[2], x[3]));
      __stcs(reinterpret_cast<float4*>(p) + 1, make_float4(x[4], x[5], x[6], x[7]));
    } else {
      SAE_UNROLL
      for (int i = 0; i < kPerLane / 2; ++i)
        __stcs(reinterpret_cast<double2*>(p) + i, make_double2(x[2 * i], x[2 * i + 1]));
    }
    return;
  }
#else
  (void)vec;
#endif
  SAE_UNROLL
  for (int k = 0; k < kPerLane; ++k)
    if (k < n) p[k] = x[k];
}

}  // namespace sae
