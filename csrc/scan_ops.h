// The scan ops' kernels, written once for every backend that registers them (CPU, CUDA, the
// emulated warp). Each checks its arguments and allocates its outputs through the shared
// prepare_* code, then hands the prepared scan to its backend, which supplies
//   struct Backend {
//     static constexpr DeviceType device;      // the inputs' expected device
//     static constexpr OpNames names;          // the op names its messages use
//     template <bool Adjoint> static void scan(const Prepared& pr, const Tensor& like);
//   };
// `like` is a tensor on the inputs' device (a backend that needs a device guard or a
// workspace takes them from it).
#pragma once

#include <optional>
#include <tuple>

#include "sae_checks.h"

namespace sae {

struct OpNames {
  const char* advantages;
  const char* advantages_out;
  const char* from_boundaries;
  const char* backward;
};

template <class Backend>
struct ScanOps {
  using OptDouble = std::optional<double>;

  static std::tuple<Tensor, Tensor> advantages(
      const Tensor& rewards, const Tensor& values, const OptTensor& logprobs,
      const OptTensor& mask, double gamma, double lam, double lam_inner, double threshold,
      const OptTensor& bootstrap, const OptTensor& lam_rows, const OptTensor& lam_inner_rows,
      OptDouble lam_critic, const OptTensor& lam_critic_rows, const OptTensor& cu_seqlens) {
    Prepared pr = prepare_forward(
        Backend::names.advantages, Backend::device, rewards, values, logprobs, true, mask, gamma,
        lam, lam_inner, threshold, bootstrap,
        variant_options(lam_rows, lam_inner_rows, lam_critic, lam_critic_rows, cu_seqlens));
    Backend::template scan<false>(pr, rewards);
    return {pr.out0, pr.out1};
  }

  static std::tuple<Tensor, Tensor> advantages_out(
      const Tensor& rewards, const Tensor& values, const OptTensor& logprobs,
      const OptTensor& mask, double gamma, double lam, double lam_inner, double threshold,
      const OptTensor& bootstrap, const OptTensor& lam_rows, const OptTensor& lam_inner_rows,
      OptDouble lam_critic, const OptTensor& lam_critic_rows, const OptTensor& cu_seqlens,
      Tensor out_advantages, Tensor out_returns) {
    Options o = variant_options(lam_rows, lam_inner_rows, lam_critic, lam_critic_rows, cu_seqlens);
    o.out_advantages = out_advantages;
    o.out_returns = out_returns;
    Prepared pr = prepare_forward(Backend::names.advantages_out, Backend::device, rewards, values,
                                  logprobs, true, mask, gamma, lam, lam_inner, threshold,
                                  bootstrap, o);
    Backend::template scan<false>(pr, rewards);
    return {out_advantages, out_returns};
  }

  static std::tuple<Tensor, Tensor> advantages_from_boundaries(
      const Tensor& rewards, const Tensor& values, const Tensor& boundaries,
      const OptTensor& mask, double gamma, double lam, double lam_inner,
      const OptTensor& bootstrap, const OptTensor& lam_rows, const OptTensor& lam_inner_rows,
      OptDouble lam_critic, const OptTensor& lam_critic_rows, const OptTensor& cu_seqlens) {
    Prepared pr = prepare_forward(
        Backend::names.from_boundaries, Backend::device, rewards, values, boundaries, false, mask,
        gamma, lam, lam_inner, 0.0, bootstrap,
        variant_options(lam_rows, lam_inner_rows, lam_critic, lam_critic_rows, cu_seqlens));
    Backend::template scan<false>(pr, rewards);
    return {pr.out0, pr.out1};
  }

  static std::tuple<Tensor, Tensor, Tensor> advantages_backward(
      const OptTensor& grad_advantages, const OptTensor& grad_returns, const Tensor& mask,
      const OptTensor& logprobs, const OptTensor& boundaries, double gamma, double lam,
      double lam_inner, double threshold, const OptTensor& lam_rows,
      const OptTensor& lam_inner_rows, const OptTensor& cu_seqlens) {
    Prepared pr = prepare_adjoint(
        Backend::names.backward, Backend::device, grad_advantages, grad_returns, mask, logprobs,
        boundaries, gamma, lam, lam_inner, threshold,
        variant_options(lam_rows, lam_inner_rows, std::nullopt, std::nullopt, cu_seqlens));
    Backend::template scan<true>(pr, mask);
    return {pr.out0, pr.out1, pr.row_out};
  }
};

}  // namespace sae
