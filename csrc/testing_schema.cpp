// Schemas of the test hooks, in the sae namespace as a fragment so that tests call them as
// torch.ops.sae._warp_* beside the product's ops. Built only into the testing library
// (sae_ext/_testing*.so, see build_config.py), which wheels leave out and
// python_tests/conftest.py loads; the product's schemas are in torch_bindings.cpp.
#include <torch/csrc/stable/library.h>

STABLE_TORCH_LIBRARY_FRAGMENT(sae, m) {
  // Test hook: the CUDA kernel's per-warp algorithm run on CPU tensors with an emulated warp.
  m.def("_warp_emulated_advantages(Tensor rewards, Tensor values, Tensor logprobs, Tensor mask, "
        "float gamma, float lam, float lam_inner, float threshold, Tensor? bootstrap=None) "
        "-> (Tensor advantages, Tensor returns)");
  // Test hook: the CUDA adjoint kernel's per-warp algorithm, emulated likewise.
  m.def("_warp_emulated_advantages_backward(Tensor? grad_advantages, Tensor? grad_returns, "
        "Tensor mask, Tensor? logprobs, Tensor? boundaries, float gamma, float lam, "
        "float lam_inner, float threshold) -> (Tensor, Tensor, Tensor)");
}
