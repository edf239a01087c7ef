// How a chunk's inputs reach a lane's registers. A loader has a Raw type (what is in
// flight: raw words) and turns it into a Tile (sae_warp.h) when the chunk is scanned:
//   SpecLoader<acc, V, M, C>: storage kinds fixed at compile time (values V for both
//     rewards and values, or both gradients; mask M; cut source C; M or C may be kAbsent,
//     the call has no such tensor and nothing is read for it), every load of a chunk
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
  bool x, y, mask, cut, out;  // ScanArgs x, y, mask, cut, and both outputs
};

inline bool run_aligned(const void* ptr, int64_t row_stride, int64_t st, int elem_size) {
  const int64_t align = kPerLane * elem_size >= 16 ? 16 : kPerLane * elem_size;
  return ptr != nullptr && st == 1 && reinterpret_cast<uintptr_t>(ptr) % 16 == 0 &&
         (row_stride * elem_size) % align == 0;
}

// Packed rows (cu_seqlens) share one 1-D tensor, so the inputs' and outputs' flags say only
// that the tensor is contiguous and aligned; row_vec() then keeps them for the rows whose
// first token starts an aligned run.
inline VecFlags vec_flags(const ScanArgs& s, int acc_size) {
  const auto ok = [](const Mat& m) { return run_aligned(m.ptr, m.sb, m.st, kind_size(m.kind)); };
  const int64_t out_row = s.cu.ptr != nullptr ? 0 : s.T;
  return VecFlags{ok(s.x), ok(s.y), ok(s.mask), ok(s.cut.src),
                  run_aligned(s.out0, out_row, 1, acc_size) && run_aligned(s.out1, out_row, 1, acc_size)};
}

// The flags for row `row` starting at token `start` of the tensors: a run of kPerLane
// elements of any kind is aligned iff the tensor is and start is a multiple of kPerLane.
SAE_HD VecFlags row_vec(const VecFlags& v, const ScanArgs& s, int64_t start) {
  if (s.cu.ptr == nullptr || start % kPerLane == 0) return v;
  return VecFlags{false, false, false, false, false};
}

// What a loader holds for an absent tensor: nothing.
struct NoRun {};

template <Kind K>
using RunOrNone = std::conditional_t<K == kAbsent, NoRun, Run<K>>;

template <Kind K>
SAE_HD RunOrNone<K> load_run_or_none(const Mat& m, int64_t row, int64_t t0, int n, bool vec) {
  if constexpr (K == kAbsent) return NoRun{};
  else return load_run<K>(m, row, t0, n, vec);
}

template <typename acc_t, Kind V, Kind M, Kind C>
struct SpecLoader {
  using acc = acc_t;
  struct Raw {
    Run<V> x, y;
    RunOrNone<M> m;
    RunOrNone<C> c;
    int n;  // tokens present: with a mask, missing ones read as masked anyway
  };
  static SAE_HD Raw load(const ScanArgs& s, const VecFlags& vec, int64_t row, int64_t t0, int n) {
    return Raw{load_run<V>(s.x, row, t0, n, vec.x), load_run<V>(s.y, row, t0, n, vec.y),
               load_run_or_none<M>(s.mask, row, t0, n, vec.mask),
               load_run_or_none<C>(s.cut.src, row, t0, n, vec.cut), n};
  }
  static SAE_HD void decode(const ScanArgs& s, const Raw& r, const RowLambdas<acc_t>& rl,
                            Tile<acc_t>& t) {
    SAE_UNROLL
    for (int k = 0; k < kPerLane; ++k) {
      t.x[k] = run_value<acc_t>(r.x, k);
      t.y[k] = run_value<acc_t>(r.y, k);
      bool valid, cut;
      if constexpr (M == kAbsent) valid = k < r.n;
      else valid = run_nonzero(r.m, k);
      if constexpr (C == kAbsent) cut = false;
      else cut = run_cut(r.c, k, s.p, C != Kind::B8);
      t.lam[k] = lambda_or_invalid<acc_t>(valid, cut, rl);
    }
  }
  // Does this loader read these tensors? (A null gradient reads as zeros whatever its kind.)
  static bool matches(const ScanArgs& s) {
    const bool mask_ok = M == kAbsent ? s.mask.ptr == nullptr
                                      : s.mask.ptr != nullptr && s.mask.kind == M;
    const bool cut_ok = C == kAbsent ? s.cut.src.ptr == nullptr
                                     : s.cut.src.ptr != nullptr && s.cut.src.kind == C &&
                                           s.cut.from_logprobs == (C != Kind::B8);
    return (s.x.ptr == nullptr || s.x.kind == V) && (s.y.ptr == nullptr || s.y.kind == V) &&
           mask_ok && cut_ok;
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
  struct Raw {
    acc_t x[kPerLane], y[kPerLane];
    uint32_t valid, cut;  // bit k: token k is valid / starts a segment
  };
  static SAE_HD Raw load(const ScanArgs& s, const VecFlags& vec, int64_t row, int64_t t0, int n) {
    Raw r;
    detail::load_numbers_any(s.x, row, t0, n, vec.x, r.x);
    detail::load_numbers_any(s.y, row, t0, n, vec.y, r.y);
    // Absent tensors: one test per chunk, outside the element loops.
    r.valid = s.mask.ptr != nullptr
                  ? detail::load_flags_any(s.mask, row, t0, n, vec.mask, s.p, false, false)
                  : (n > 0 ? (1u << n) - 1u : 0u);
    r.cut = s.cut.src.ptr != nullptr
                ? detail::load_flags_any(s.cut.src, row, t0, n, vec.cut, s.p, true, s.cut.from_logprobs)
                : 0u;
    return r;
  }
  static SAE_HD void decode(const ScanArgs&, const Raw& r, const RowLambdas<acc_t>& rl,
                            Tile<acc_t>& t) {
    SAE_UNROLL
    for (int k = 0; k < kPerLane; ++k) {
      t.x[k] = r.x[k];
      t.y[k] = r.y[k];
      t.lam[k] = lambda_or_invalid<acc_t>((r.valid >> k) & 1u, (r.cut >> k) & 1u, rl);
    }
  }
  static bool matches(const ScanArgs&) { return true; }
};

// The specialised combinations: the storage kinds RL code actually passes.
template <class... L>
struct LoaderList {};

// kAbsent columns: GAE without log-probs (no cut source) and packed rows without a mask.
using ForwardFloatLoaders = LoaderList<
    SpecLoader<float, Kind::F32, Kind::B8, Kind::F32>, SpecLoader<float, Kind::F32, Kind::F32, Kind::F32>,
    SpecLoader<float, Kind::F32, Kind::B8, Kind::B8>, SpecLoader<float, Kind::F32, Kind::F32, Kind::B8>,
    SpecLoader<float, Kind::F32, Kind::B8, kAbsent>, SpecLoader<float, Kind::F32, kAbsent, Kind::F32>,
    SpecLoader<float, Kind::F32, kAbsent, kAbsent>,
    SpecLoader<float, Kind::BF16, Kind::B8, Kind::BF16>, SpecLoader<float, Kind::BF16, Kind::BF16, Kind::BF16>,
    SpecLoader<float, Kind::BF16, Kind::B8, Kind::B8>, SpecLoader<float, Kind::BF16, Kind::BF16, Kind::B8>,
    SpecLoader<float, Kind::BF16, Kind::B8, kAbsent>, SpecLoader<float, Kind::BF16, kAbsent, Kind::BF16>,
    SpecLoader<float, Kind::BF16, kAbsent, kAbsent>,
    SpecLoader<float, Kind::F16, Kind::B8, Kind::F16>, SpecLoader<float, Kind::F16, Kind::F16, Kind::F16>,
    SpecLoader<float, Kind::F16, Kind::B8, Kind::B8>, SpecLoader<float, Kind::F16, Kind::F16, Kind::B8>>;
using ForwardDoubleLoaders = LoaderList<
    SpecLoader<double, Kind::F64, Kind::B8, Kind::F64>, SpecLoader<double, Kind::F64, Kind::F64, Kind::F64>,
    SpecLoader<double, Kind::F64, Kind::B8, Kind::B8>, SpecLoader<double, Kind::F64, Kind::F64, Kind::B8>,
    SpecLoader<double, Kind::F64, Kind::B8, kAbsent>>;
// Gradients arrive in the outputs' dtype (float32 / float64); the cut source is whatever the
// forward pass was given.
using AdjointFloatLoaders = LoaderList<
    SpecLoader<float, Kind::F32, Kind::B8, Kind::F32>, SpecLoader<float, Kind::F32, Kind::F32, Kind::F32>,
    SpecLoader<float, Kind::F32, Kind::B8, Kind::BF16>, SpecLoader<float, Kind::F32, Kind::B8, Kind::F16>,
    SpecLoader<float, Kind::F32, Kind::B8, Kind::B8>, SpecLoader<float, Kind::F32, Kind::B8, kAbsent>>;
using AdjointDoubleLoaders = LoaderList<
    SpecLoader<double, Kind::F64, Kind::B8, Kind::F64>, SpecLoader<double, Kind::F64, Kind::B8, Kind::B8>,
    SpecLoader<double, Kind::F64, Kind::B8, kAbsent>>;

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

// The forward scan with a critic chain (ScanArgs::critic) runs on the generic loaders only:
// it is the rarer call, and every specialised loader would cost three more kernels.
template <class F>
void with_critic_loader(bool use_double, F&& f) {
  if (use_double) f(GenericLoader<double>{});
  else f(GenericLoader<float>{});
}

}  // namespace sae
