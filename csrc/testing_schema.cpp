// Schemas of the test hooks, in the sae namespace as a fragment so that tests call them as
// torch.ops.sae._warp_* beside the product's ops. Built only into the testing library
// (sae_ext/_testing*.so, see build_config.py), which wheels leave out and
// python_tests/conftest.py loads; the product's schemas are in torch_bindings.cpp, whose
// arguments (variants included) these take in the same order.
#include <torch/csrc/stable/library.h>

#define SAE_EMU_VARIANT_ARGS                                                      \
  "Tensor? lam_rows=None, Tensor? lam_inner_rows=None, float? lam_critic=None, " \
  "Tensor? lam_critic_rows=None, Tensor? cu_seqlens=None"

STABLE_TORCH_LIBRARY_FRAGMENT(sae, m) {
  // Test hooks: the CUDA kernels' whole schedule run on CPU tensors with emulated warps.
  m.def("_warp_emulated_advantages(Tensor rewards, Tensor values, Tensor? logprobs, Tensor? mask, "
        "float gamma, float lam, float lam_inner, float threshold, Tensor? bootstrap=None, "
        SAE_EMU_VARIANT_ARGS ") -> (Tensor advantages, Tensor returns)");
  m.def("_warp_emulated_advantages_from_boundaries(Tensor rewards, Tensor values, "
        "Tensor boundaries, Tensor? mask, float gamma, float lam, float lam_inner, "
        "Tensor? bootstrap=None, " SAE_EMU_VARIANT_ARGS ") -> (Tensor advantages, Tensor returns)");
  // The CUDA adjoint kernels, emulated likewise.
  m.def("_warp_emulated_advantages_backward(Tensor? grad_advantages, Tensor? grad_returns, "
        "Tensor mask, Tensor? logprobs, Tensor? boundaries, float gamma, float lam, "
        "float lam_inner, float threshold, Tensor? lam_rows=None, Tensor? lam_inner_rows=None, "
        "Tensor? cu_seqlens=None) -> (Tensor, Tensor, Tensor)");
}
