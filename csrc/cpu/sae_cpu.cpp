// CPU kernels. The recursion is a serial dependency chain per row, so a row alone runs at
// the latency of a few dependent float ops per token. To reach memory speed each thread
// walks kRows rows side by side (independent chains the core overlaps), and inputs of any
// dtype and stride are first converted tile by tile into small on-stack buffers, which
// keeps the hot loop free of dtype switches without copying a tensor on the heap.
// Rows never interact and the arithmetic per row is fixed, so results are bitwise the
// same whatever the number of threads.
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <torch/library.h>

#include <algorithm>
#include <tuple>

#include "../sae_checks.h"
#include "../sae_step.h"

namespace sae {
namespace {

constexpr int64_t kRows = 8;
constexpr int64_t kTile = 128;

// Converts n elements at stride st into dst at stride ds.
template <typename T, typename D, typename Conv>
void convert_run(const T* p, int64_t st, int64_t n, D* dst, int64_t ds, Conv conv) {
  if (st == 1 && ds == 1) {
    for (int64_t k = 0; k < n; ++k) dst[k] = D(conv(p[k]));
  } else {
    for (int64_t k = 0; k < n; ++k) dst[k * ds] = D(conv(p[k * st]));
  }
}

// dst[k * ds] = element (row, t0 + k) of m as acc_t; a null m reads as zeros.
template <typename acc_t>
void stage_numbers(const Mat& m, int64_t row, int64_t t0, int64_t n, acc_t* dst, int64_t ds) {
  if (m.ptr == nullptr) {
    for (int64_t k = 0; k < n; ++k) dst[k * ds] = acc_t(0);
    return;
  }
  const int64_t off = row * m.sb + t0 * m.st;
  const auto id = [](auto x) { return x; };
  switch (m.kind) {
    case Kind::F64:
      return convert_run(static_cast<const double*>(m.ptr) + off, m.st, n, dst, ds, id);
    case Kind::F16:
      return convert_run(static_cast<const uint16_t*>(m.ptr) + off, m.st, n, dst, ds,
                         f16_bits_to_float);
    case Kind::BF16:
      return convert_run(static_cast<const uint16_t*>(m.ptr) + off, m.st, n, dst, ds,
                         bf16_bits_to_float);
    default:
      return convert_run(static_cast<const float*>(m.ptr) + off, m.st, n, dst, ds, id);
  }
}

// dst[k] = (element (row, t0 + k) of m != 0), in the storage's own sense.
void stage_nonzero(const Mat& m, int64_t row, int64_t t0, int64_t n, uint8_t* dst) {
  const int64_t off = row * m.sb + t0 * m.st;
  const auto nz = [](auto x) { return x != 0; };
  const auto nz16 = [](uint16_t x) { return (x & 0x7fffu) != 0; };  // f16 / bf16: -0 is 0
  switch (m.kind) {
    case Kind::B8: return convert_run(static_cast<const uint8_t*>(m.ptr) + off, m.st, n, dst, 1, nz);
    case Kind::I16: return convert_run(static_cast<const int16_t*>(m.ptr) + off, m.st, n, dst, 1, nz);
    case Kind::I32: return convert_run(static_cast<const int32_t*>(m.ptr) + off, m.st, n, dst, 1, nz);
    case Kind::I64: return convert_run(static_cast<const int64_t*>(m.ptr) + off, m.st, n, dst, 1, nz);
    case Kind::F64: return convert_run(static_cast<const double*>(m.ptr) + off, m.st, n, dst, 1, nz);
    case Kind::F32: return convert_run(static_cast<const float*>(m.ptr) + off, m.st, n, dst, 1, nz);
    default: return convert_run(static_cast<const uint16_t*>(m.ptr) + off, m.st, n, dst, 1, nz16);
  }
}

// dst[k] = token (row, t0 + k) starts a new segment (before masking).
void stage_cut(const CutSource& c, const Params& p, int64_t row, int64_t t0, int64_t n,
               uint8_t* dst) {
  if (!c.from_logprobs) return stage_nonzero(c.src, row, t0, n, dst);
  const Mat& m = c.src;
  const int64_t off = row * m.sb + t0 * m.st;
  const float thr = p.log_p32;
  switch (m.kind) {
    case Kind::F64: {
      const double thr64 = p.log_p64;
      return convert_run(static_cast<const double*>(m.ptr) + off, m.st, n, dst, 1,
                         [thr64](double x) { return x < thr64; });
    }
    case Kind::F16:
      return convert_run(static_cast<const uint16_t*>(m.ptr) + off, m.st, n, dst, 1,
                         [thr](uint16_t x) { return f16_bits_to_float(x) < thr; });
    case Kind::BF16:
      return convert_run(static_cast<const uint16_t*>(m.ptr) + off, m.st, n, dst, 1,
                         [thr](uint16_t x) { return bf16_bits_to_float(x) < thr; });
    default:
      return convert_run(static_cast<const float*>(m.ptr) + off, m.st, n, dst, 1,
                         [thr](float x) { return x < thr; });
  }
}

// A tile of kTile tokens of kRows rows, stored token-major ([k][g]) so that the scan's
// inner loop runs across rows with SIMD.
template <typename acc_t>
struct Tile {
  acc_t x[kTile][kRows];
  acc_t y[kTile][kRows];
  acc_t lam[kTile][kRows];  // lambda_t for valid tokens, -1 for masked ones
  acc_t o0[kTile][kRows];
  acc_t o1[kTile][kRows];
  uint8_t valid[kTile];
  uint8_t cut[kTile];
};

template <typename acc_t>
void stage_tile(const ScanArgs& a, int64_t row0, int64_t nrows, int64_t t0, int64_t n,
                Tile<acc_t>& tile) {
  // Indexed by 2 * valid + cut: a lookup instead of a data-dependent branch.
  const acc_t choice[4] = {acc_t(-1), acc_t(-1), acc_t(a.p.lam_inner), acc_t(a.p.lam)};
  for (int64_t g = 0; g < kRows; ++g) {
    if (g >= nrows) {  // padding rows of a short last group: all masked
      for (int64_t k = 0; k < n; ++k) tile.x[k][g] = tile.y[k][g] = 0, tile.lam[k][g] = -1;
      continue;
    }
    const int64_t row = row0 + g;
    stage_numbers(a.a, row, t0, n, &tile.x[0][g], kRows);
    stage_numbers(a.b, row, t0, n, &tile.y[0][g], kRows);
    stage_nonzero(a.mask, row, t0, n, tile.valid);
    stage_cut(a.cut, a.p, row, t0, n, tile.cut);
    for (int64_t k = 0; k < n; ++k)
      tile.lam[k][g] = choice[2 * tile.valid[k] + tile.cut[k]];
  }
}

// Rows are walked tile by tile, backwards for the forward pass, and each tile touches
// 4 inputs x kRows rows: more streams, in a stranger order, than the hardware prefetcher
// follows. So the next tile's lines are requested while this one is computed.
void prefetch_run(const Mat& m, int64_t row, int64_t t0, int64_t n) {
  if (m.ptr == nullptr || m.st != 1) return;
  const int size = kind_size(m.kind);
  const char* p = static_cast<const char*>(m.ptr) + (row * m.sb + t0) * size;
  for (int64_t off = 0; off < n * size; off += 64) __builtin_prefetch(p + off, 0, 1);
}

void prefetch_out(void* base, int64_t row, int64_t T, int64_t t0, int64_t n, int size) {
  char* p = static_cast<char*>(base) + (row * T + t0) * size;
  for (int64_t off = 0; off < n * size; off += 64) __builtin_prefetch(p + off, 1, 1);
}

void prefetch_tile(const ScanArgs& a, int64_t row0, int64_t nrows, int64_t t0, int64_t n,
                   int out_size) {
  for (int64_t g = 0; g < nrows; ++g) {
    prefetch_run(a.a, row0 + g, t0, n);
    prefetch_run(a.b, row0 + g, t0, n);
    prefetch_run(a.mask, row0 + g, t0, n);
    prefetch_run(a.cut.src, row0 + g, t0, n);
    prefetch_out(a.out0, row0 + g, a.T, t0, n, out_size);
    prefetch_out(a.out1, row0 + g, a.T, t0, n, out_size);
  }
}

// One group of up to kRows rows. Forward runs t = T-1 .. 0 carrying w; the adjoint runs
// t = 0 .. T-1 carrying u (see sae_step.h).
template <typename acc_t, bool Adjoint>
void scan_group(const ScanArgs& a, int64_t row0, int64_t nrows) {
  Tile<acc_t> tile;
  const int64_t T = a.T;
  const acc_t gamma = acc_t(a.p.gamma);
  acc_t carry[kRows];
  for (int64_t g = 0; g < kRows; ++g) {
    carry[g] = (!Adjoint && g < nrows && a.bootstrap.ptr != nullptr)
                   ? load_number<acc_t>(a.bootstrap.kind, a.bootstrap.ptr,
                                        (row0 + g) * a.bootstrap.sb)
                   : acc_t(0);
  }
  const int64_t ntiles = (T + kTile - 1) / kTile;
  for (int64_t i = 0; i < ntiles; ++i) {
    const int64_t t0 = (Adjoint ? i : ntiles - 1 - i) * kTile;
    const int64_t n = std::min(kTile, T - t0);
    if (i + 1 < ntiles) {
      const int64_t t0_next = (Adjoint ? i + 1 : ntiles - 2 - i) * kTile;
      prefetch_tile(a, row0, nrows, t0_next, std::min(kTile, T - t0_next), sizeof(acc_t));
    }
    stage_tile(a, row0, nrows, t0, n, tile);
    for (int64_t j = 0; j < n; ++j) {
      const int64_t k = Adjoint ? j : n - 1 - j;
      for (int64_t g = 0; g < kRows; ++g) {  // fixed trip count: vectorised across rows
        const acc_t lam_t = tile.lam[k][g];
        const bool ok = lam_t >= acc_t(0);
        acc_t s = carry[g], o0, o1;
        if (Adjoint) adjoint_token(tile.x[k][g], tile.y[k][g], lam_t, gamma, s, o0, o1);
        else forward_token(tile.x[k][g], tile.y[k][g], lam_t, gamma, s, o0, o1);
        tile.o0[k][g] = ok ? o0 : acc_t(0);
        tile.o1[k][g] = ok ? o1 : acc_t(0);
        carry[g] = ok ? s : carry[g];
      }
    }
    for (int64_t g = 0; g < nrows; ++g) {
      acc_t* out0 = static_cast<acc_t*>(a.out0) + (row0 + g) * T + t0;
      acc_t* out1 = static_cast<acc_t*>(a.out1) + (row0 + g) * T + t0;
      for (int64_t k = 0; k < n; ++k) out0[k] = tile.o0[k][g];
      for (int64_t k = 0; k < n; ++k) out1[k] = tile.o1[k][g];
    }
  }
  if (Adjoint) {
    for (int64_t g = 0; g < nrows; ++g) static_cast<acc_t*>(a.out2)[row0 + g] = carry[g];
  }
}

template <bool Adjoint>
void scan_all_rows(const ScanArgs& a, bool use_double) {
  if (a.B == 0) return;
  const int64_t ngroups = (a.B + kRows - 1) / kRows;
  // Enough tokens per task that thread start-up is amortised.
  const int64_t grain = std::max<int64_t>(1, 32768 / std::max<int64_t>(1, kRows * a.T));
  at::parallel_for(0, ngroups, grain, [&](int64_t begin, int64_t end) {
    for (int64_t grp = begin; grp < end; ++grp) {
      const int64_t row0 = grp * kRows;
      const int64_t nrows = std::min(kRows, a.B - row0);
      if (use_double) scan_group<double, Adjoint>(a, row0, nrows);
      else scan_group<float, Adjoint>(a, row0, nrows);
    }
  });
}

std::tuple<at::Tensor, at::Tensor> advantages_cpu(
    const at::Tensor& rewards, const at::Tensor& values, const at::Tensor& logprobs,
    const at::Tensor& mask, double gamma, double lam, double lam_inner, double threshold,
    const c10::optional<at::Tensor>& bootstrap) {
  Prepared pr = prepare_forward("sae.advantages", rewards, values, logprobs, true, mask, gamma,
                                lam, lam_inner, threshold, bootstrap);
  scan_all_rows<false>(pr.args, pr.use_double);
  return {pr.out0, pr.out1};
}

std::tuple<at::Tensor, at::Tensor> advantages_from_boundaries_cpu(
    const at::Tensor& rewards, const at::Tensor& values, const at::Tensor& boundaries,
    const at::Tensor& mask, double gamma, double lam, double lam_inner,
    const c10::optional<at::Tensor>& bootstrap) {
  Prepared pr = prepare_forward("sae.advantages_from_boundaries", rewards, values, boundaries,
                                false, mask, gamma, lam, lam_inner, 0.0, bootstrap);
  scan_all_rows<false>(pr.args, pr.use_double);
  return {pr.out0, pr.out1};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> advantages_backward_cpu(
    const c10::optional<at::Tensor>& grad_advantages, const c10::optional<at::Tensor>& grad_returns,
    const at::Tensor& mask, const c10::optional<at::Tensor>& logprobs,
    const c10::optional<at::Tensor>& boundaries, double gamma, double lam, double lam_inner,
    double threshold) {
  Prepared pr = prepare_adjoint("sae.advantages_backward", grad_advantages, grad_returns, mask,
                                logprobs, boundaries, gamma, lam, lam_inner, threshold);
  scan_all_rows<true>(pr.args, pr.use_double);
  return {pr.out0, pr.out1, pr.out2};
}

at::Tensor segment_boundaries_cpu(const at::Tensor& logprobs, const at::Tensor& mask,
                                  double threshold) {
  CutSource cut;
  Mat mask_mat;
  Params p;
  at::Tensor out = prepare_boundaries("sae.segment_boundaries", logprobs, mask, threshold, cut,
                                      mask_mat, p);
  const int64_t B = out.size(0), T = out.size(1);
  bool* dst = out.data_ptr<bool>();
  at::parallel_for(0, B, std::max<int64_t>(1, 32768 / std::max<int64_t>(1, T)),
                   [&](int64_t begin, int64_t end) {
                     uint8_t valid[kTile], is_cut[kTile];
                     for (int64_t row = begin; row < end; ++row) {
                       for (int64_t t0 = 0; t0 < T; t0 += kTile) {
                         const int64_t n = std::min(kTile, T - t0);
                         stage_nonzero(mask_mat, row, t0, n, valid);
                         stage_cut(cut, p, row, t0, n, is_cut);
                         for (int64_t k = 0; k < n; ++k) dst[row * T + t0 + k] = valid[k] && is_cut[k];
                       }
                     }
                   });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(sae, CPU, m) {
  m.impl("advantages", &advantages_cpu);
  m.impl("advantages_from_boundaries", &advantages_from_boundaries_cpu);
  m.impl("advantages_backward", &advantages_backward_cpu);
  m.impl("segment_boundaries", &segment_boundaries_cpu);
}

}  // namespace sae
