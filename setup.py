"""Build sae-ext: the sae::* ops as one torch extension, `sae_ext._C`.

Environment variables (all optional):
  SAE_BUILD_CUDA        auto (default: when a CUDA toolkit is found and torch has CUDA), 1
                        (force; fails if no toolkit), 0 (CPU-only build). The toolkit is
                        CUDA_HOME, else torch's guess from the nvcc on PATH; when that is not a
                        toolkit root (a wrapper script or link), the root nvcc runs from.
  TORCH_CUDA_ARCH_LIST  CUDA architectures, default "8.0;9.0+PTX" (sm_80, sm_90 and PTX);
                        scripts/build_wheel.py sets a wider list per CUDA version
  MAX_JOBS              parallel compile jobs (torch's own variable); default: the CPU count,
                        capped at one job per 3 GiB of available memory (an nvcc job with
                        torch's headers peaks near 2-3 GiB)
  SAE_DEBUG             1 builds with -O0 -g

The version carries a local tag saying what the build is for, e.g. 0.1.0+cu130torch2.14 or
0.1.0+cputorch2.14, and the torch requirement is pinned to the torch minor built against.
What was built is also written to sae_ext/_build_info.py, which the package checks at import.
"""
import os
import re
import subprocess
import sys
from pathlib import Path

import torch
from setuptools import find_packages, setup
from torch.utils import cpp_extension

ROOT = Path(__file__).parent
BASE_VERSION = "0.1.0"
DEFAULT_ARCH_LIST = "8.0;9.0+PTX"


def torch_minor() -> str:
    return ".".join(torch.__version__.split("+")[0].split(".")[:2])


def nvcc_release(cuda_home: str) -> str:
    out = subprocess.run([os.path.join(cuda_home, "bin", "nvcc"), "--version"], check=True,
                         capture_output=True, text=True).stdout
    m = re.search(r"release (\d+\.\d+)", out)
    if not m:
        raise RuntimeError(f"cannot read the CUDA version from nvcc --version:\n{out}")
    return m.group(1)


def has_cuda_runtime(root) -> bool:
    return root is not None and os.path.isfile(os.path.join(root, "include", "cuda_runtime.h"))


def resolve_cuda_home(guess):
    """torch takes CUDA_HOME from the environment, else from the nvcc on PATH (that file's
    grandparent directory), which is wrong when that nvcc is a wrapper script or a link from
    outside the toolkit: the kernels then compile but the CUDA runtime cannot be linked. A
    toolkit root holds include/cuda_runtime.h; when the guess does not, ask its nvcc where
    its toolkit is (the TOP line of `nvcc --dryrun`)."""
    if guess is None or has_cuda_runtime(guess):
        return guess
    try:
        res = subprocess.run([os.path.join(guess, "bin", "nvcc"), "--dryrun", "-x", "cu", "-c",
                              os.devnull, "-o", os.devnull], capture_output=True, text=True, timeout=120)
        m = re.search(r"^#\$ TOP=(.+)$", res.stderr + res.stdout, re.M)
    except (OSError, subprocess.SubprocessError):
        m = None
    top = os.path.normpath(m.group(1).strip()) if m else None
    if has_cuda_runtime(top):
        print(f"setup.py: CUDA_HOME={guess} is not a CUDA toolkit (no include/cuda_runtime.h); "
              f"using {top}, where its nvcc runs from")
        return top
    return guess


# Before anything asks cpp_extension for a CUDA path (it reads this module global).
cpp_extension.CUDA_HOME = resolve_cuda_home(cpp_extension.CUDA_HOME)
if cpp_extension.CUDA_HOME is not None:
    os.environ["CUDA_HOME"] = cpp_extension.CUDA_HOME


def cuda_wanted() -> bool:
    mode = os.environ.get("SAE_BUILD_CUDA", "auto").strip().lower()
    if mode in ("0", "false", "off", "no"):
        return False
    found = has_cuda_runtime(cpp_extension.CUDA_HOME) and torch.version.cuda is not None
    if mode in ("1", "true", "on", "yes"):
        if not found:
            raise RuntimeError(
                "SAE_BUILD_CUDA=1 but no CUDA build is possible: "
                f"CUDA_HOME={cpp_extension.CUDA_HOME!r} (a toolkit root holds include/cuda_runtime.h), "
                f"torch.version.cuda={torch.version.cuda!r}. "
                "Set CUDA_HOME to the toolkit root and install a CUDA build of torch."
            )
        return True
    return found


def check_toolkit(cuda_home: str) -> str:
    """The toolkit's major version must be torch's, or the kernels link against the wrong runtime."""
    toolkit = nvcc_release(cuda_home)
    if toolkit.split(".")[0] != torch.version.cuda.split(".")[0]:
        raise RuntimeError(
            f"CUDA toolkit {toolkit} (CUDA_HOME={cuda_home}) does not match torch {torch.__version__}, "
            f"built for CUDA {torch.version.cuda}: use a CUDA {torch.version.cuda.split('.')[0]}.x toolkit "
            "or a torch built for this toolkit.")
    return toolkit


def write_build_info(with_cuda: bool, toolkit, arch_list) -> str:
    tag = f"cu{torch.version.cuda.replace('.', '')}" if with_cuda else "cpu"
    version = f"{BASE_VERSION}+{tag}torch{torch_minor()}"
    info = {
        "version": version,
        "torch_version": torch.__version__,
        "torch_cuda": torch.version.cuda if with_cuda else None,
        "cuda_toolkit": toolkit,
        "cuda_arch_list": arch_list,
        "cuda_kernels": with_cuda,
    }
    (ROOT / "sae_ext" / "_build_info.py").write_text(
        "# Written by setup.py when the extension is built; not tracked by git.\n"
        f"BUILD = {info!r}\n")
    return version


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
    link = []
    # at::parallel_for is a header template whose OpenMP backend compiles to a serial loop
    # unless the including file is built with OpenMP: without -fopenmp the CPU kernels
    # would run on one thread whatever torch.get_num_threads() says. libgomp.so.1 is the
    # runtime torch itself loads, so the two share one thread pool.
    if sys.platform.startswith("linux"):
        cxx.append("-fopenmp")
        link.append("-fopenmp")
    # py_limited_api: torch defines Py_LIMITED_API itself, so one abi3 wheel serves every
    # CPython it supports; our only Python code in C++ is the empty module in python_module.cpp.
    kwargs = dict(
        extra_compile_args={"cxx": cxx},
        extra_link_args=link,
        py_limited_api=True,
    )
    if WITH_CUDA:
        sources.append("csrc/cuda/sae_cuda.cu")
        kwargs["extra_compile_args"]["nvcc"] = opt + ["-lineinfo", "-fmad=false"]
        ext = cpp_extension.CUDAExtension("sae_ext._C", sources, **kwargs)
    else:
        sources.append("csrc/cuda_missing.cpp")
        ext = cpp_extension.CppExtension("sae_ext._C", sources, **kwargs)
    return [ext]


def default_jobs() -> int:
    try:
        pages = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        by_memory = max(1, pages // (3 * 2**30))
    except (ValueError, OSError, AttributeError):
        by_memory = 1
    return max(1, min(os.cpu_count() or 1, by_memory))


os.environ.setdefault("MAX_JOBS", str(default_jobs()))
WITH_CUDA = cuda_wanted()
if WITH_CUDA:
    os.environ.setdefault("TORCH_CUDA_ARCH_LIST", DEFAULT_ARCH_LIST)
    VERSION = write_build_info(True, check_toolkit(cpp_extension.CUDA_HOME),
                               os.environ["TORCH_CUDA_ARCH_LIST"])
else:
    VERSION = write_build_info(False, None, None)
TORCH_MINOR = torch_minor()
NEXT_MINOR = f"{TORCH_MINOR.split('.')[0]}.{int(TORCH_MINOR.split('.')[1]) + 1}"


setup(
    name="sae-ext",
    version=VERSION,
    description="Fused Segmental Advantage Estimation (and GAE) kernels for PPO, CPU and CUDA",
    long_description=(ROOT / "README.md").read_text() if (ROOT / "README.md").exists() else "",
    long_description_content_type="text/markdown",
    packages=find_packages(include=["sae_ext", "sae_ext.*"]),
    ext_modules=extensions(),
    install_requires=[f"torch>={TORCH_MINOR},<{NEXT_MINOR}"],
    python_requires=">=3.10",
    cmdclass={"build_ext": cpp_extension.BuildExtension},
    options={"bdist_wheel": {"py_limited_api": "cp310"}},
)
