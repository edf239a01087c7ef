// Torch-free description of the kernels' inputs, shared by the CPU kernel, the CUDA
// kernel and the host-emulated warp. Everything here compiles for host and device.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>

#if defined(__CUDACC__)
#define SAE_HD __host__ __device__ __forceinline__
#else
#define SAE_HD inline
#endif

namespace sae {

// Storage kinds the kernels read. One-byte integers (bool, uint8, int8) share B8 because
// the only question ever asked of them is "nonzero?".
enum class Kind : int32_t { F32, F64, F16, BF16, B8, I16, I32, I64 };

SAE_HD int kind_size(Kind k) {
  switch (k) {
    case Kind::F64: case Kind::I64: return 8;
    case Kind::F32: case Kind::I32: return 4;
    case Kind::F16: case Kind::BF16: case Kind::I16: return 2;
    default: return 1;
  }
}

// A strided [B, T] view: element (b, t) lives at ptr + (b * sb + t * st) * size.
// A [B] vector is a Mat with st == 0. ptr == nullptr reads as all zeros.
struct Mat {
  const void* ptr;
  int64_t sb;
  int64_t st;
  Kind kind;
};

template <typename To, typename From>
SAE_HD To bit_cast(const From& from) {
  static_assert(sizeof(To) == sizeof(From), "bit_cast size mismatch");
  To to;
  memcpy(&to, &from, sizeof(To));
  return to;
}

// Exact conversions written out by hand so that host and device agree without either
// side's half-precision headers.
SAE_HD float bf16_bits_to_float(uint16_t h) { return bit_cast<float>(uint32_t(h) << 16); }

SAE_HD float f16_bits_to_float(uint16_t h) {
  const uint32_t sign = uint32_t(h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1fu;
  const uint32_t man = h & 0x3ffu;
  if (exp == 0) {  // zero or subnormal: man * 2^-24, exact in float
    const float mag = float(man) * 5.9604644775390625e-8f;
    return sign ? -mag : mag;
  }
  if (exp == 31) return bit_cast<float>(sign | 0x7f800000u | (man << 13));
  return bit_cast<float>(sign | ((exp + 112u) << 23) | (man << 13));
}

// Element i of a run of storage `kind`, converted exactly to acc_t. Only floating kinds
// are ever read as numbers (the launchers reject integer rewards/values).
template <typename acc_t>
SAE_HD acc_t load_number(Kind kind, const void* p, int64_t i) {
  switch (kind) {
    case Kind::F64: return acc_t(static_cast<const double*>(p)[i]);
    case Kind::F16: return acc_t(f16_bits_to_float(static_cast<const uint16_t*>(p)[i]));
    case Kind::BF16: return acc_t(bf16_bits_to_float(static_cast<const uint16_t*>(p)[i]));
    default: return acc_t(static_cast<const float*>(p)[i]);
  }
}

// mask[t] != 0 in the storage's own sense: -0.0 is zero, NaN is nonzero.
SAE_HD bool load_nonzero(Kind kind, const void* p, int64_t i) {
  switch (kind) {
    case Kind::B8: return static_cast<const uint8_t*>(p)[i] != 0;
    case Kind::I16: return static_cast<const int16_t*>(p)[i] != 0;
    case Kind::I32: return static_cast<const int32_t*>(p)[i] != 0;
    case Kind::I64: return static_cast<const int64_t*>(p)[i] != 0;
    case Kind::F64: return static_cast<const double*>(p)[i] != 0.0;
    default: return load_number<float>(kind, p, i) != 0.0f;
  }
}

// Hyperparameters as the kernels use them. The segmentation threshold log(p) is held
// twice: in float64 for float64 log-probs, and as the smallest float32 >= log(p) for all
// narrower ones, which decides every float32 log-prob exactly as the float64 test would.
// lam_critic is read only by a forward scan with ScanArgs::critic set.
struct Params {
  double gamma;
  double lam;
  double lam_inner;
  double log_p64;
  float log_p32;
  double lam_critic = 1.0;
};

// Host side: the kernels' Params for hyperparameters already checked to lie in [0, 1].
inline Params make_params(double gamma, double lam, double lam_inner, double threshold) {
  Params p{gamma, lam, lam_inner, std::log(threshold), 0.0f};  // log(0) = -inf: no cut
  float f = static_cast<float>(p.log_p64);
  if (static_cast<double>(f) < p.log_p64) f = std::nextafter(f, std::numeric_limits<float>::infinity());
  p.log_p32 = f;
  return p;
}

// Where token t's "starts a new segment" flag comes from: log-probs under a threshold, or
// a user-supplied bool tensor.
struct CutSource {
  Mat src;
  bool from_logprobs;
};

// Does token `i` of a run at `ptr` (of the cut source's kind) start a new segment?
SAE_HD bool is_cut(const CutSource& c, const Params& p, const void* ptr, int64_t i) {
  if (!c.from_logprobs) return load_nonzero(c.src.kind, ptr, i);
  if (c.src.kind == Kind::F64) return static_cast<const double*>(ptr)[i] < p.log_p64;
  return load_number<float>(c.src.kind, ptr, i) < p.log_p32;  // NaN: false
}

// Everything one row-scan needs, for the forward (advantages) and the adjoint pass.
//
// Rows come in one of two layouts:
//   padded: the Mats are [B, T] views; row b is tokens t = 0 .. T-1 at (b * sb + t * st),
//     outputs contiguous [B, T];
//   packed (cu.ptr != null, flash-attention's cu_seqlens): the inputs are 1-D [N], held as
//     Mats with sb == 0 and st the tensor's stride; row b is tokens cu[b] .. cu[b+1]-1, and
//     its outputs are the same positions of contiguous [N] outputs; T == N.
// row_span() gives every kernel both layouts in one form: row b's token t (0 <= t < len) is
// element (b, start + t) of each Mat, and its outputs are at out + out_offset + t.
struct ScanArgs {
  int64_t B, T;
  // One engine runs both passes, so the per-token tensors have pass-neutral names: x and y
  // are the first and second token operands of the pass's step in sae_step.h, out0 and out1
  // its first and second token outputs (contiguous [B, T] or [N]), row_out its per-row
  // output. Which tensor each one is, is said once: bind_forward / bind_adjoint below.
  Mat x, y;       // ptr may be null (the adjoint's absent gradients): zeros
  Mat mask;       // ptr null: every token of every row is valid
  CutSource cut;  // cut.src.ptr null: no token starts a segment (lam_inner everywhere)
  Mat bootstrap;  // forward only: [B] (st == 0); ptr null means 0
  void* out0;
  void* out1;
  void* row_out;  // may be null
  Params p;
  // Per-row hyperparameters, [B] vectors (st == 0) of any float kind; ptr null: the scalar
  // of Params for every row.
  Mat lam_rows{nullptr, 0, 0, Kind::F32};
  Mat lam_inner_rows{nullptr, 0, 0, Kind::F32};
  Mat lam_critic_rows{nullptr, 0, 0, Kind::F32};
  // Forward only: returns come from a second chain over the same tokens, in the same pass,
  // whose lambda_t is lam_critic at every valid token (no segments), same gamma, bootstrap
  // and mask: out1 = r_t + gamma * w_critic. out0 (advantages) is unchanged.
  bool critic = false;
  // [B + 1] row offsets, int32 or int64 (kind I32 / I64); ptr null: the padded layout.
  Mat cu{nullptr, 0, 0, Kind::I64};
};

// The tensors of each pass by name, and the one place that puts them into ScanArgs.
struct ForwardTensors {
  Mat rewards, values;
  void* advantages;
  void* returns;
};

struct AdjointTensors {
  Mat grad_advantages, grad_returns;  // ptr null: that gradient is zero
  void* grad_rewards;
  void* grad_values;
  void* grad_bootstrap;  // [B]; may be null
};

// forward_token(r, v, ...) -> (adv, ret); no per-row output.
inline void bind_forward(ScanArgs& s, const ForwardTensors& t) {
  s.x = t.rewards;
  s.y = t.values;
  s.out0 = t.advantages;
  s.out1 = t.returns;
  s.row_out = nullptr;
}

// adjoint_token(ga, gr, ...) -> (dr, dv); the carry after the last token is dLoss/dbootstrap.
inline void bind_adjoint(ScanArgs& s, const AdjointTensors& t) {
  s.x = t.grad_advantages;
  s.y = t.grad_returns;
  s.out0 = t.grad_rewards;
  s.out1 = t.grad_values;
  s.row_out = t.grad_bootstrap;
}

// Element i of an int32 / int64 index vector.
SAE_HD int64_t load_index(const Mat& m, int64_t i) {
  return m.kind == Kind::I32 ? int64_t(static_cast<const int32_t*>(m.ptr)[i * m.sb])
                             : static_cast<const int64_t*>(m.ptr)[i * m.sb];
}

// Row b's tokens: (b, start + t) of each Mat for 0 <= t < len; outputs at out_offset + t.
// Packed offsets are clamped into [0, T] and made non-decreasing, so that offsets which the
// launcher did not check (CUDA checks none on the device) can never address outside the
// tensors.
struct RowSpan {
  int64_t start, len, out_offset;
};

SAE_HD RowSpan row_span(const ScanArgs& s, int64_t row) {
  if (s.cu.ptr == nullptr) return RowSpan{0, s.T, row * s.T};
  int64_t b = load_index(s.cu, row), e = load_index(s.cu, row + 1);
  b = b < 0 ? 0 : (b > s.T ? s.T : b);
  e = e < b ? b : (e > s.T ? s.T : e);
  return RowSpan{b, e - b, b};
}

// Row b's lambdas: per-row values where given, else the call's scalars.
template <typename acc_t>
struct RowLambdas {
  acc_t lam, lam_inner, lam_critic;
};

template <typename acc_t>
SAE_HD acc_t row_value(const Mat& m, int64_t row, double scalar) {
  return m.ptr != nullptr ? load_number<acc_t>(m.kind, m.ptr, row * m.sb) : acc_t(scalar);
}

template <typename acc_t>
SAE_HD RowLambdas<acc_t> row_lambdas(const ScanArgs& s, int64_t row) {
  return RowLambdas<acc_t>{row_value<acc_t>(s.lam_rows, row, s.p.lam),
                           row_value<acc_t>(s.lam_inner_rows, row, s.p.lam_inner),
                           row_value<acc_t>(s.lam_critic_rows, row, s.p.lam_critic)};
}

}  // namespace sae
