// Argument checking and output allocation shared by every backend's launcher, so that the
// CPU, CUDA and emulated-warp paths accept and reject exactly the same inputs with the same
// messages (the Python fakes in sae_ext/_registrations.py word them the same way).
//
// Written against PyTorch's stable ABI (torch/csrc/stable, torch/headeronly) only, so one
// build loads into every torch from TORCH_TARGET_VERSION on (see build_config.py).
#pragma once

#include <torch/csrc/stable/ops.h>
#include <torch/csrc/stable/tensor.h>
#include <torch/headeronly/core/DeviceType.h>
#include <torch/headeronly/core/ScalarType.h>

#include <optional>
#include <sstream>
#include <stdexcept>
#include <string>

#include "sae_elem.h"

namespace sae {

using Tensor = torch::stable::Tensor;
using OptTensor = std::optional<torch::stable::Tensor>;
using DeviceType = torch::headeronly::DeviceType;

// A std::runtime_error (Python: RuntimeError) whose text is exactly the arguments. Not
// STD_TORCH_CHECK: that one prefixes the C++ function, file and line, and these messages
// must read the same as the Python fakes' on the meta path.
template <typename... Args>
[[noreturn]] void fail(const Args&... args) {
  std::ostringstream os;
  (os << ... << args);
  throw std::runtime_error(os.str());
}
#define SAE_CHECK(cond, ...) \
  do {                       \
    if (!(cond)) ::sae::fail(__VA_ARGS__); \
  } while (0)

struct Prepared {
  ScanArgs args;
  Tensor out0, out1, row_out;  // ScanArgs' out0, out1, row_out
  bool use_double = false;
};

// The arguments of the estimator variants (issue 12) and of the out= overloads, all
// optional; a default-constructed Options is a plain call.
struct Options {
  OptTensor lam_rows, lam_inner_rows;   // [B] per-row lam / lam_inner, any float dtype
  std::optional<double> lam_critic;     // forward only: returns from a critic chain
  OptTensor lam_critic_rows;            // forward only: [B] per-row lam_critic
  OptTensor cu_seqlens;                 // [B + 1] int32/int64: packed 1-D [N] inputs
  OptTensor out_advantages, out_returns;  // forward only: preallocated outputs (out= overloads)
};

// The variants' trailing schema arguments (csrc/torch_bindings.cpp), in schema order, as
// every backend's wrapper receives them.
inline Options variant_options(const OptTensor& lam_rows, const OptTensor& lam_inner_rows,
                               const std::optional<double>& lam_critic,
                               const OptTensor& lam_critic_rows, const OptTensor& cu_seqlens) {
  Options o;
  o.lam_rows = lam_rows;
  o.lam_inner_rows = lam_inner_rows;
  o.lam_critic = lam_critic;
  o.lam_critic_rows = lam_critic_rows;
  o.cu_seqlens = cu_seqlens;
  return o;
}

// Every prepare_* takes the device type of the kernel that runs (CPU for the CPU and
// emulated kernels, CUDA for the CUDA ones): the first tensor must be on it, and every
// other tensor on that tensor's device, each failure naming the argument.

// Forward: advantages and returns. `cut` is either log-probs (cut_is_logprobs) compared
// against log(threshold), or a bool boundaries tensor; absent: no cuts. `mask` absent: every
// token valid.
Prepared prepare_forward(const char* op, DeviceType device, const Tensor& rewards,
                         const Tensor& values, const OptTensor& cut, bool cut_is_logprobs,
                         const OptTensor& mask, double gamma, double lam, double lam_inner,
                         double threshold, const OptTensor& bootstrap,
                         const Options& opt = Options{});

// Adjoint of the forward pass (never with a critic chain). At most one of logprobs /
// boundaries is given (none: no cuts).
Prepared prepare_adjoint(const char* op, DeviceType device, const OptTensor& grad_advantages,
                         const OptTensor& grad_returns, const Tensor& mask,
                         const OptTensor& logprobs, const OptTensor& boundaries, double gamma,
                         double lam, double lam_inner, double threshold,
                         const Options& opt = Options{});

// Segmentation: checks and the threshold pair; returns the bool output to fill.
Tensor prepare_boundaries(const char* op, DeviceType device, const Tensor& logprobs,
                          const Tensor& mask, double threshold, CutSource& cut, Mat& mask_mat,
                          Params& p);

Mat as_mat(const Tensor& t);

}  // namespace sae
