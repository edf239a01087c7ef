// Every sae op schema, in one place. Kernels are registered per backend in their own
// files (cpu/, cuda/, emulated/); fake kernels and autograd are registered in Python.
// Python-free, so libtorch users link the same file (see CMakeLists.txt). The test hooks'
// schemas live in testing_schema.cpp, which only the testing library is built from.
#include <torch/csrc/stable/library.h>

STABLE_TORCH_LIBRARY(sae, m) {
  // SAE advantages and returns, segments cut where logprobs < log(threshold) (fused, one pass).
  m.def("advantages(Tensor rewards, Tensor values, Tensor logprobs, Tensor mask, float gamma, "
        "float lam, float lam_inner, float threshold, Tensor? bootstrap=None) "
        "-> (Tensor advantages, Tensor returns)");
  // The same recursion with segment starts given by the caller as a bool [B, T] tensor.
  m.def("advantages_from_boundaries(Tensor rewards, Tensor values, Tensor boundaries, "
        "Tensor mask, float gamma, float lam, float lam_inner, Tensor? bootstrap=None) "
        "-> (Tensor advantages, Tensor returns)");
  // Where segments start: mask != 0 and logprobs < log(threshold), as bool [B, T].
  m.def("segment_boundaries(Tensor logprobs, Tensor mask, float threshold) -> Tensor");
  // Adjoint of either advantages op: gradients into rewards, values and bootstrap.
  m.def("advantages_backward(Tensor? grad_advantages, Tensor? grad_returns, Tensor mask, "
        "Tensor? logprobs, Tensor? boundaries, float gamma, float lam, float lam_inner, "
        "float threshold) -> (Tensor grad_rewards, Tensor grad_values, Tensor grad_bootstrap)");
}
