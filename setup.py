"""Build sae-ext: the sae::* ops as one torch extension, `sae_ext._C`.

Environment variables (all optional):
  SAE_BUILD_CUDA        auto (default: when CUDA_HOME is found and torch has CUDA), 1 (force;
                        fails if no toolkit), 0 (CPU-only build)
  TORCH_CUDA_ARCH_LIST  CUDA architectures, default "8.0;9.0+PTX" (sm_80, sm_90 and PTX)
  MAX_JOBS              parallel compile jobs (torch's own variable)
  SAE_DEBUG             1 builds with -O0 -g
"""
import os
from pathlib import Path

import torch
from setuptools import find_packages, setup
from torch.utils import cpp_extension

ROOT = Path(__file__).parent


def cuda_wanted() -> bool:
    mode = os.environ.get("SAE_BUILD_CUDA", "auto").strip().lower()
    if mode in ("0", "false", "off", "no"):
        return False
    found = cpp_extension.CUDA_HOME is not None and torch.version.cuda is not None
    if mode in ("1", "true", "on", "yes"):
        if not found:
            raise RuntimeError(
                "SAE_BUILD_CUDA=1 but no CUDA build is possible: "
                f"CUDA_HOME={cpp_extension.CUDA_HOME!r}, torch.version.cuda={torch.version.cuda!r}. "
                "Set CUDA_HOME to the toolkit root and install a CUDA build of torch."
            )
        return True
    return found


def extensions():
    debug = os.environ.get("SAE_DEBUG", "0") == "1"
    opt = ["-O0", "-g"] if debug else ["-O3"]
    sources = [
        "csrc/torch_bindings.cpp",
        "csrc/python_module.cpp",
        "csrc/sae_checks.cpp",
        "csrc/cpu/sae_cpu.cpp",
        "csrc/emulated/sae_emulated.cpp",
    ]
    # fp-contract=off: no fused multiply-adds, so every row gets the same IEEE arithmetic
    # wherever the compiler vectorises or not.
    cxx = opt + ["-ffp-contract=off", "-fdiagnostics-color=always"]
    # py_limited_api: torch defines Py_LIMITED_API itself, so one abi3 wheel serves every
    # CPython it supports; our only Python code in C++ is the empty module in python_module.cpp.
    kwargs = dict(
        extra_compile_args={"cxx": cxx},
        py_limited_api=True,
    )
    if cuda_wanted():
        os.environ.setdefault("TORCH_CUDA_ARCH_LIST", "8.0;9.0+PTX")
        sources.append("csrc/cuda/sae_cuda.cu")
        kwargs["extra_compile_args"]["nvcc"] = opt + ["-lineinfo"]
        ext = cpp_extension.CUDAExtension("sae_ext._C", sources, **kwargs)
    else:
        ext = cpp_extension.CppExtension("sae_ext._C", sources, **kwargs)
    return [ext]


setup(
    name="sae-ext",
    version="0.1.0",
    description="Fused Segmental Advantage Estimation (and GAE) kernels for PPO, CPU and CUDA",
    long_description=(ROOT / "README.md").read_text() if (ROOT / "README.md").exists() else "",
    long_description_content_type="text/markdown",
    packages=find_packages(include=["sae_ext", "sae_ext.*"]),
    ext_modules=extensions(),
    install_requires=["torch>=2.4"],
    python_requires=">=3.10",
    cmdclass={"build_ext": cpp_extension.BuildExtension},
    options={"bdist_wheel": {"py_limited_api": "cp310"}},
)
