// Every sae op schema, in one place. Kernels are registered per backend in their own
// files (cpu/, cuda/, emulated/); fake kernels and autograd are registered in Python.
// Python-free, so libtorch users link the same file (see CMakeLists.txt). The test hooks'
// schemas live in testing_schema.cpp, which only the testing library is built from.
//
// The forward ops share their trailing, optional arguments (docs/semantics.md, "Variants"):
//   lam_rows, lam_inner_rows  [B] per-row lam / lam_inner (the floats are then unused);
//   lam_critic(_rows)         returns from a second chain with lambda = lam_critic everywhere;
//   cu_seqlens                [B + 1] offsets of packed rows: every [B, T] input is then [N].
// An absent mask means every token is valid; absent logprobs, no segment cuts.
#include <torch/csrc/stable/library.h>

#define SAE_VARIANT_ARGS                                                          \
  "Tensor? lam_rows=None, Tensor? lam_inner_rows=None, float? lam_critic=None, " \
  "Tensor? lam_critic_rows=None, Tensor? cu_seqlens=None"
#define SAE_ADVANTAGES_ARGS                                                               \
  "Tensor rewards, Tensor values, Tensor? logprobs, Tensor? mask, float gamma, float lam, " \
  "float lam_inner, float threshold, Tensor? bootstrap=None, " SAE_VARIANT_ARGS

STABLE_TORCH_LIBRARY(sae, m) {
  // SAE advantages and returns, segments cut where logprobs < log(threshold) (fused, one pass).
  m.def("advantages(" SAE_ADVANTAGES_ARGS ") -> (Tensor advantages, Tensor returns)");
  // The same into preallocated outputs (a training loop's reused buffers).
  m.def("advantages.out(" SAE_ADVANTAGES_ARGS ", *, Tensor(a!) out_advantages, "
        "Tensor(b!) out_returns) -> (Tensor(a!), Tensor(b!))");
  // The same recursion with segment starts given by the caller as a bool tensor.
  m.def("advantages_from_boundaries(Tensor rewards, Tensor values, Tensor boundaries, "
        "Tensor? mask, float gamma, float lam, float lam_inner, Tensor? bootstrap=None, "
        SAE_VARIANT_ARGS ") -> (Tensor advantages, Tensor returns)");
  // Where segments start: mask != 0 and logprobs < log(threshold), as bool [B, T].
  m.def("segment_boundaries(Tensor logprobs, Tensor mask, float threshold) -> Tensor");
  // Adjoint of either advantages op without a critic chain: gradients into rewards, values
  // and bootstrap (no logprobs nor boundaries: no cuts).
  m.def("advantages_backward(Tensor? grad_advantages, Tensor? grad_returns, Tensor mask, "
        "Tensor? logprobs, Tensor? boundaries, float gamma, float lam, float lam_inner, "
        "float threshold, Tensor? lam_rows=None, Tensor? lam_inner_rows=None, "
        "Tensor? cu_seqlens=None) -> (Tensor grad_rewards, Tensor grad_values, "
        "Tensor grad_bootstrap)");
}
