// The CPU kernels' SIMD toolkit: W lanes of float or double as GCC/Clang vector extensions
// (portable across SSE2, AVX2 and NEON, exact lane-wise IEEE operations), unaligned loads
// and stores, in-register transposes and a cache-bypassing store.
#pragma once

#include <cstdint>
#include <cstring>

#if !defined(__GNUC__) && !defined(__clang__)
#error "sae_cpu.cpp uses GCC/Clang vector extensions"
#endif

#define SAE_INLINE inline __attribute__((always_inline))

// Every function that passes vectors by value is always_inline, so no call ever crosses
// the AVX2 / baseline boundary with one; GCC's ABI notes about that are noise here.
#pragma GCC diagnostic ignored "-Wpsabi"

#if defined(__x86_64__) || defined(__i386__)
#define SAE_X86 1
#define SAE_TARGET_WIDE __attribute__((target("avx2")))
#define SAE_OPAQUE(v) __asm__("" : "+x"(v))
#else
#define SAE_X86 0
#define SAE_TARGET_WIDE
#if defined(__aarch64__)
#define SAE_OPAQUE(v) __asm__("" : "+w"(v))
#else
#define SAE_OPAQUE(v) __asm__("" : "+m"(v))
#endif
#endif

namespace sae {
namespace cpu {

// ---------------------------------------------------------------------------------------
// W lanes of S (float or double) as a GCC/Clang vector, with the integer mask type that
// comparisons produce, and the operators forward_token / adjoint_token need.

template <typename S> struct IntOf;
template <> struct IntOf<float> { using type = int32_t; };
template <> struct IntOf<double> { using type = int64_t; };

// N lanes of T as a GCC/Clang vector (declared through a class template so that the
// attribute survives template instantiation).
template <typename T, int N>
struct VecType {
  typedef T type __attribute__((vector_size(sizeof(T) * N)));
};
template <typename T, int N>
using vec_t = typename VecType<T, N>::type;

template <typename S, int W>
struct Vec {
  typedef vec_t<S, W> raw;
  typedef typename IntOf<S>::type I;
  typedef vec_t<I, W> mask;
  raw v;
  SAE_INLINE Vec() = default;
  SAE_INLINE explicit Vec(S s) : v(raw{} + s) {}
  SAE_INLINE static Vec of(raw x) {
    Vec r;
    r.v = x;
    return r;
  }
  SAE_INLINE friend Vec operator+(Vec a, Vec b) { return of(a.v + b.v); }
  SAE_INLINE friend Vec operator-(Vec a, Vec b) { return of(a.v - b.v); }
  SAE_INLINE friend Vec operator*(Vec a, Vec b) { return of(a.v * b.v); }
};

template <typename To, typename From>
SAE_INLINE To vcast(const From& f) {  // bitwise reinterpretation of a vector
  static_assert(sizeof(To) == sizeof(From), "vcast size mismatch");
  To t;
  memcpy(&t, &f, sizeof(To));
  return t;
}

// Unaligned vector loads and stores. Written as vector assignments rather than memcpy:
// GCC's generic tuning copies a 32-byte memcpy between two memory locations as two 16-byte
// halves, and a 32-byte load of data just stored that way cannot be forwarded from the
// store buffer (it stalls until the stores reach L1).
template <typename R>
struct Unaligned {
  typedef R type __attribute__((aligned(1), may_alias));
};
template <typename R>
SAE_INLINE R loadu(const void* p) {
  return *static_cast<const typename Unaligned<R>::type*>(p);
}
template <typename R>
SAE_INLINE void storeu(void* p, R v) {
  *static_cast<typename Unaligned<R>::type*>(p) = v;
}

// In-register transposes: r[i][j] <- r[j][i]. Only lane moves, so exact for any data.
template <typename R>
SAE_INLINE void transpose8(R (&r)[8]) {  // 8 x 4-byte lanes
  R t[8], u[8];
  for (int i = 0; i < 4; ++i) {
    t[2 * i] = __builtin_shufflevector(r[2 * i], r[2 * i + 1], 0, 8, 1, 9, 4, 12, 5, 13);
    t[2 * i + 1] = __builtin_shufflevector(r[2 * i], r[2 * i + 1], 2, 10, 3, 11, 6, 14, 7, 15);
  }
  for (int h = 0; h < 2; ++h) {
    for (int i = 0; i < 2; ++i) {
      const R a = t[4 * h + i], b = t[4 * h + 2 + i];
      u[4 * h + 2 * i] = __builtin_shufflevector(a, b, 0, 1, 8, 9, 4, 5, 12, 13);
      u[4 * h + 2 * i + 1] = __builtin_shufflevector(a, b, 2, 3, 10, 11, 6, 7, 14, 15);
    }
  }
  for (int i = 0; i < 4; ++i) {
    r[i] = __builtin_shufflevector(u[i], u[4 + i], 0, 1, 2, 3, 8, 9, 10, 11);
    r[4 + i] = __builtin_shufflevector(u[i], u[4 + i], 4, 5, 6, 7, 12, 13, 14, 15);
  }
}

template <typename R>
SAE_INLINE void transpose4(R (&r)[4]) {  // 4 lanes of any width
  const R t0 = __builtin_shufflevector(r[0], r[1], 0, 4, 1, 5);
  const R t1 = __builtin_shufflevector(r[0], r[1], 2, 6, 3, 7);
  const R t2 = __builtin_shufflevector(r[2], r[3], 0, 4, 1, 5);
  const R t3 = __builtin_shufflevector(r[2], r[3], 2, 6, 3, 7);
  r[0] = __builtin_shufflevector(t0, t2, 0, 1, 4, 5);
  r[1] = __builtin_shufflevector(t0, t2, 2, 3, 6, 7);
  r[2] = __builtin_shufflevector(t1, t3, 0, 1, 4, 5);
  r[3] = __builtin_shufflevector(t1, t3, 2, 3, 6, 7);
}

template <typename R>
SAE_INLINE void transpose2(R (&r)[2]) {
  const R a = __builtin_shufflevector(r[0], r[1], 0, 2);
  const R b = __builtin_shufflevector(r[0], r[1], 1, 3);
  r[0] = a;
  r[1] = b;
}

template <int W, typename R>
SAE_INLINE void transpose(R (&r)[W]) {
  if constexpr (W == 8) transpose8(r);
  else if constexpr (W == 4) transpose4(r);
  else transpose2(r);
}

// A store that bypasses the caches (dst aligned to the vector). Inline assembly rather
// than intrinsics: the intrinsics are tied to a target and cannot be inlined through the
// target-neutral templates shared by the two builds.
template <typename S, typename R>
SAE_INLINE void store_stream(S* dst, R r) {
#if SAE_X86
  if constexpr (sizeof(R) == 32 && sizeof(S) == 4) __asm__("vmovntps %1, %0" : "=m"(*reinterpret_cast<R*>(dst)) : "x"(r));
  else if constexpr (sizeof(R) == 32) __asm__("vmovntpd %1, %0" : "=m"(*reinterpret_cast<R*>(dst)) : "x"(r));
  else if constexpr (sizeof(S) == 4) __asm__("movntps %1, %0" : "=m"(*reinterpret_cast<R*>(dst)) : "x"(r));
  else __asm__("movntpd %1, %0" : "=m"(*reinterpret_cast<R*>(dst)) : "x"(r));
#else
  storeu<R>(dst, r);
#endif
}

}  // namespace cpu
}  // namespace sae
