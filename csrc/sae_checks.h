// Argument checking and output allocation shared by every backend's launcher, so that the
// CPU, CUDA and emulated-warp paths accept and reject exactly the same inputs.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Optional.h>

#include <tuple>

#include "sae_elem.h"

namespace sae {

struct Prepared {
  ScanArgs args;
  at::Tensor out0, out1, out2;
  bool use_double = false;
};

// Forward: advantages and returns. `cut` is either log-probs (cut_is_logprobs) compared
// against log(threshold), or a bool boundaries tensor.
Prepared prepare_forward(const char* op, const at::Tensor& rewards, const at::Tensor& values,
                         const at::Tensor& cut, bool cut_is_logprobs, const at::Tensor& mask,
                         double gamma, double lam, double lam_inner, double threshold,
                         const c10::optional<at::Tensor>& bootstrap);

// Adjoint of the forward pass. Exactly one of logprobs / boundaries is given.
Prepared prepare_adjoint(const char* op, const c10::optional<at::Tensor>& grad_advantages,
                         const c10::optional<at::Tensor>& grad_returns, const at::Tensor& mask,
                         const c10::optional<at::Tensor>& logprobs,
                         const c10::optional<at::Tensor>& boundaries, double gamma, double lam,
                         double lam_inner, double threshold);

// Segmentation: checks and the threshold pair; returns the bool output to fill.
at::Tensor prepare_boundaries(const char* op, const at::Tensor& logprobs, const at::Tensor& mask,
                              double threshold, CutSource& cut, Mat& mask_mat, Params& p);

Mat as_mat(const at::Tensor& t);

}  // namespace sae
