// How a chunk's inputs reach a lane's registers. A loader has a Raw type (what is in
// flight: raw words) and turns it into a Tile (sae_warp.h) when the chunk is scanned:
//   SpecLoader<acc, V, M, C>: storage kinds fixed at compile time (values V for both
//     rewards and values, or both gradients; mask M; cut source C), every load of a chunk
//     issued by load() before any value is used;
//   GenericLoader<acc>: kinds read at run time, one switch per tensor per chunk outside
//     the unrolled element loops (so it, too, keeps everything in registers).
// with_loader() picks one on the host, once per launch, for every backend that runs the
// scan (CUDA kernels and the emulator alike).
#pragma once

#include <cstdint>
#include <type_traits>

#include "sae_warp.h"

namespace sae {

// Which tensors may be read (and written) with wide loads: unit stride along T, and every
// run of kPerLane elements starting 16-byte aligned (8 for one-byte kinds). Decided once per
// launch on the host.
struct VecFlags {
  bool a, b, mask, cut, out;
};

inline bool run_aligned(const void* ptr, int64_t row_stride, int64_t st, int elem_size) {
  const int64_t align = kPerLane * elem_size >= 16 ? 16 : kPerLane * elem_size;
  return ptr != nullptr && st == 1 && reinterpret_cast<uintptr_t>(ptr) % 16 == 0 &&
         (row_stride * elem_size) % align == 0;
}

inline VecFlags vec_flags(const ScanArgs& s, int acc_size) {
  const auto ok = [](const Mat& m) { return run_aligned(m.ptr, m.sb, m.st, kind_size(m.kind)); };
  return VecFlags{ok(s.a), ok(s.b), ok(s.mask), ok(s.cut.src),
                  run_aligned(s.out0, s.T, 1, acc_size) && run_aligned(s.out1, s.T, 1, acc_size)};
}

template <typename acc_t, Kind V, Kind M, Kind C>
struct SpecLoader {
  using acc = acc_t;
  struct Raw {
    Run<V> a, b;
    Run<M> m;
    Run<C> c;
  };
  static SAE_HD Raw load(const ScanArgs& s, const VecFlags& vec, int64_t row, int64_t t0, int n) {
    return Raw{load_run<V>(s.a, row, t0, n, vec.a), load_run<V>(s.b, row, t0, n, vec.b),
               load_run<M>(s.mask, row, t0, n, vec.mask),
               load_run<C>(s.cut.src, row, t0, n, vec.cut)};
  }
  // Missing tokens were loaded as zeros, so their mask reads false: no count is needed here.
  static SAE_HD void decode(const ScanArgs& s, const Raw& r, Tile<acc_t>& t) {
    SAE_UNROLL
    for (int k = 0; k < kPerLane; ++k) {
      t.x[k] = run_value<acc_t>(r.a, k);
      t.y[k] = run_value<acc_t>(r.b, k);
      t.lam[k] = lambda_or_invalid<acc_t>(run_nonzero(r.m, k),
                                          run_cut(r.c, k, s.p, C != Kind::B8), s.p);
    }
  }
  // Does this loader read these tensors? (A null gradient reads as zeros whatever its kind.)
  static bool matches(const ScanArgs& s) {
    return (s.a.ptr == nullptr || s.a.kind == V) && (s.b.ptr == nullptr || s.b.kind == V) &&
           s.mask.kind == M && s.cut.src.kind == C && (s.cut.from_logprobs == (C != Kind::B8));
  }
};

namespace detail {

template <typename acc_t>
SAE_HD void load_numbers_any(const Mat& m, int64_t row, int64_t t0, int n, bool vec,
                             acc_t (&x)[kPerLane]) {
#define SAE_NUMBERS_CASE(K)                                   \
  case K: {                                                   \
    const Run<K> r = load_run<K>(m, row, t0, n, vec);         \
    SAE_UNROLL                                                \
    for (int k = 0; k < kPerLane; ++k) x[k] = run_value<acc_t>(r, k); \
    return;                                                   \
  }
  switch (m.kind) {
    SAE_NUMBERS_CASE(Kind::F64)
    SAE_NUMBERS_CASE(Kind::F16)
    SAE_NUMBERS_CASE(Kind::BF16)
    default: SAE_NUMBERS_CASE(Kind::F32)
  }
#undef SAE_NUMBERS_CASE
}

// valid[k] (mask nonzero) and cut[k] packed as bits, so the switch writes scalars only.
SAE_HD uint32_t load_flags_any(const Mat& m, int64_t row, int64_t t0, int n, bool vec,
                               const Params& p, bool as_cut, bool from_logprobs) {
#define SAE_FLAGS_CASE(K)                                                              \
  case K: {                                                                            \
    const Run<K> r = load_run<K>(m, row, t0, n, vec);                                  \
    uint32_t bits = 0;                                                                 \
    SAE_UNROLL                                                                         \
    for (int k = 0; k < kPerLane; ++k)                                                 \
      bits |= uint32_t(as_cut ? run_cut(r, k, p, from_logprobs) : run_nonzero(r, k)) << k; \
    return bits;                                                                       \
  }
  switch (m.kind) {
    SAE_FLAGS_CASE(Kind::F64)
    SAE_FLAGS_CASE(Kind::F32)
    SAE_FLAGS_CASE(Kind::F16)
    SAE_FLAGS_CASE(Kind::BF16)
    SAE_FLAGS_CASE(Kind::I16)
    SAE_FLAGS_CASE(Kind::I32)
    SAE_FLAGS_CASE(Kind::I64)
    default: SAE_FLAGS_CASE(Kind::B8)
  }
#undef SAE_FLAGS_CASE
}

}  // namespace detail

template <typename acc_t>
struct GenericLoader {
  using acc = acc_t;
  using Raw = Tile<acc_t>;
  static SAE_HD Raw load(const ScanArgs& s, const VecFlags& vec, int64_t row, int64_t t0, int n) {
    Raw t;
    detail::load_numbers_any(s.a, row, t0, n, vec.a, t.x);
    detail::load_numbers_any(s.b, row, t0, n, vec.b, t.y);
    const uint32_t valid = detail::load_flags_any(s.mask, row, t0, n, vec.mask, s.p, false, false);
    const uint32_t cut =
        detail::load_flags_any(s.cut.src, row, t0, n, vec.cut, s.p, true, s.cut.from_logprobs);
    SAE_UNROLL
    for (int k = 0; k < kPerLane; ++k)
      t.lam[k] = lambda_or_invalid<acc_t>((valid >> k) & 1u, (cut >> k) & 1u, s.p);
    return t;
  }
  static SAE_HD void decode(const ScanArgs&, const Raw& r, Tile<acc_t>& t) { t = r; }
  static bool matches(const ScanArgs&) { return true; }
};

// The specialised combinations: the storage kinds RL code actually passes.
template <class... L>
struct LoaderList {};

using ForwardFloatLoaders = LoaderList<
    SpecLoader<float, Kind::F32, Kind::B8, Kind::F32>, SpecLoader<float, Kind::F32, Kind::F32, Kind::F32>,
    SpecLoader<float, Kind::F32, Kind::B8, Kind::B8>, SpecLoader<float, Kind::F32, Kind::F32, Kind::B8>,
    SpecLoader<float, Kind::BF16, Kind::B8, Kind::BF16>, SpecLoader<float, Kind::BF16, Kind::BF16, Kind::BF16>,
    SpecLoader<float, Kind::BF16, Kind::B8, Kind::B8>, SpecLoader<float, Kind::BF16, Kind::BF16, Kind::B8>,
    SpecLoader<float, Kind::F16, Kind::B8, Kind::F16>, SpecLoader<float, Kind::F16, Kind::F16, Kind::F16>,
    SpecLoader<float, Kind::F16, Kind::B8, Kind::B8>, SpecLoader<float, Kind::F16, Kind::F16, Kind::B8>>;
using ForwardDoubleLoaders = LoaderList<
    SpecLoader<double, Kind::F64, Kind::B8, Kind::F64>, SpecLoader<double, Kind::F64, Kind::F64, Kind::F64>,
    SpecLoader<double, Kind::F64, Kind::B8, Kind::B8>, SpecLoader<double, Kind::F64, Kind::F64, Kind::B8>>;
// Gradients arrive in the outputs' dtype (float32 / float64); the cut source is whatever the
// forward pass was given.
using AdjointFloatLoaders = LoaderList<
    SpecLoader<float, Kind::F32, Kind::B8, Kind::F32>, SpecLoader<float, Kind::F32, Kind::F32, Kind::F32>,
    SpecLoader<float, Kind::F32, Kind::B8, Kind::BF16>, SpecLoader<float, Kind::F32, Kind::B8, Kind::F16>,
    SpecLoader<float, Kind::F32, Kind::B8, Kind::B8>>;
using AdjointDoubleLoaders = LoaderList<
    SpecLoader<double, Kind::F64, Kind::B8, Kind::F64>, SpecLoader<double, Kind::F64, Kind::B8, Kind::B8>>;

namespace detail {

template <class F>
bool try_loaders(LoaderList<>, const ScanArgs&, F&) {
  return false;
}

template <class L, class... Rest, class F>
bool try_loaders(LoaderList<L, Rest...>, const ScanArgs& s, F& f) {
  if (L::matches(s)) {
    f(L{});
    return true;
  }
  return try_loaders(LoaderList<Rest...>{}, s, f);
}

}  // namespace detail

// Calls f(Loader{}) with the loader for these arguments: specialised where one matches,
// else the generic one. force_generic: tests compare the two bit for bit.
template <bool Adjoint, class F>
void with_loader(const ScanArgs& s, bool use_double, bool force_generic, F&& f) {
  if (use_double) {
    using List = std::conditional_t<Adjoint, AdjointDoubleLoaders, ForwardDoubleLoaders>;
    if (force_generic || !detail::try_loaders(List{}, s, f)) f(GenericLoader<double>{});
  } else {
    using List = std::conditional_t<Adjoint, AdjointFloatLoaders, ForwardFloatLoaders>;
    if (force_generic || !detail::try_loaders(List{}, s, f)) f(GenericLoader<float>{});
  }
}

}  // namespace sae
