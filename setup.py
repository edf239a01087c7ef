"""Build sae-ext: the sae::* ops as one torch extension, `sae_ext._C`, plus (source builds)
the test hooks as `sae_ext._testing`, a library python_tests/conftest.py loads.

Environment variables (all optional):
  SAE_BUILD_CUDA        auto (default: when a CUDA toolkit is found and torch has CUDA), 1
                        (force; fails if no toolkit), 0 (CPU-only build). The toolkit is
                        CUDA_HOME, else the one the nvcc on PATH belongs to; when that nvcc is
                        a wrapper script or link, the root it runs from.
  TORCH_CUDA_ARCH_LIST  CUDA architectures, default "8.0;9.0+PTX" (sm_80, sm_90 and PTX);
                        scripts/build_wheel.py sets a wider list per CUDA version
  SAE_BUILD_TESTING     1 (default) also builds sae_ext/_testing (the emulated-warp test
                        hooks); 0 leaves it out, as scripts/build_wheel.py does for wheels
  MAX_JOBS              parallel compile jobs (torch's own variable); default: the CPU count,
                        capped at one job per 3 GiB of available memory (an nvcc job with
                        torch's headers peaks near 2-3 GiB)
  SAE_DEBUG             1 builds with -O0 -g

Sources and flags come from csrc/build_config.json, which CMakeLists.txt reads too. The
library uses PyTorch's stable ABI only (TORCH_TARGET_VERSION = the config's torch_target),
so one build loads into every torch from that version to the next major: the version's
local tag names only what must match, the CUDA major (0.1.0+cu13, 0.1.0+cpu; computed in
sae_ext/_compat.py). What was built is written to sae_ext/_build_info.py, which the package
checks at import.
"""
import importlib.util
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).parent
BASE_VERSION = "0.1.0"
DEFAULT_ARCH_LIST = "8.0;9.0+PTX"
CONFIG = json.loads((ROOT / "csrc" / "build_config.json").read_text())


def _load_compat():
    """sae_ext/_compat.py by path: importing the sae_ext package would load the library."""
    spec = importlib.util.spec_from_file_location("_sae_compat", ROOT / "sae_ext" / "_compat.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


compat = _load_compat()


def flag(name: str, default: str) -> str:
    return os.environ.get(name, default).strip().lower()


def is_off(value: str) -> bool:
    return value in ("0", "false", "off", "no")


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
    """The nvcc on PATH's grandparent directory is wrong when that nvcc is a wrapper script or
    a link from outside the toolkit: the kernels then compile but the CUDA runtime cannot be
    linked. A toolkit root holds include/cuda_runtime.h; when the guess does not, ask its
    nvcc where its toolkit is (the TOP line of `nvcc --dryrun`)."""
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
        print(f"setup.py: {guess} is not a CUDA toolkit (no include/cuda_runtime.h); "
              f"using {top}, where its nvcc runs from")
        return top
    return guess


def find_cuda_home():
    """CUDA_HOME, else the toolkit of the nvcc on PATH. Decided before torch's cpp_extension
    is imported and handed to it through CUDA_HOME, so no torch global needs patching."""
    if os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH"):
        return resolve_cuda_home(os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH"))
    nvcc = shutil.which("nvcc")
    return resolve_cuda_home(os.path.dirname(os.path.dirname(os.path.realpath(nvcc)))) if nvcc else None


CUDA_HOME = None if is_off(flag("SAE_BUILD_CUDA", "auto")) else find_cuda_home()
if CUDA_HOME is not None:
    os.environ["CUDA_HOME"] = CUDA_HOME

import torch  # noqa: E402
from setuptools import find_packages, setup  # noqa: E402
from torch.utils import cpp_extension  # noqa: E402


def cuda_wanted() -> bool:
    mode = flag("SAE_BUILD_CUDA", "auto")
    if is_off(mode):
        return False
    found = has_cuda_runtime(CUDA_HOME) and torch.version.cuda is not None
    if mode in ("1", "true", "on", "yes"):
        if not found:
            raise RuntimeError(
                "SAE_BUILD_CUDA=1 but no CUDA build is possible: "
                f"CUDA_HOME={CUDA_HOME!r} (a toolkit root holds include/cuda_runtime.h), "
                f"torch.version.cuda={torch.version.cuda!r}. "
                "Set CUDA_HOME to the toolkit root and install a CUDA build of torch.")
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


def target_version_define() -> str:
    """-DTORCH_TARGET_VERSION=0x020a000000000000 for torch_target 2.10 (stable/version.h's encoding)."""
    major, minor = (int(x) for x in CONFIG["torch_target"].split("."))
    return f"-DTORCH_TARGET_VERSION=0x{(major << 56) | (minor << 48):016x}"


def write_build_info(with_cuda: bool, with_testing: bool, toolkit, arch_list) -> str:
    version = f"{BASE_VERSION}+{compat.local_tag(torch.version.cuda if with_cuda else None)}"
    info = {
        "version": version,
        "torch_version": torch.__version__,
        "torch_range": [CONFIG["torch_target"], CONFIG["torch_next_major"]],
        "torch_cuda": torch.version.cuda if with_cuda else None,
        "cuda_toolkit": toolkit,
        "cuda_arch_list": arch_list,
        "cuda_kernels": with_cuda,
        "testing_library": with_testing,
    }
    (ROOT / "sae_ext" / "_build_info.py").write_text(
        "# Written by setup.py when the extension is built; not tracked by git.\n"
        f"BUILD = {info!r}\n")
    return version


def extensions(with_cuda: bool, with_testing: bool):
    debug = os.environ.get("SAE_DEBUG", "0") == "1"
    define = [target_version_define()]
    cxx = CONFIG["cxx_debug_flags" if debug else "cxx_flags"] + define
    nvcc = CONFIG["nvcc_debug_flags" if debug else "nvcc_flags"] + define
    # py_limited_api: one abi3 wheel serves every CPython; it also keeps torch from linking
    # libtorch_python, which the stable ABI does not need.
    kwargs = dict(extra_compile_args={"cxx": cxx}, py_limited_api=True)
    sources = CONFIG["library"] + CONFIG["python_module"]
    if with_cuda:
        ext = cpp_extension.CUDAExtension("sae_ext._C", sources + CONFIG["cuda"],
                                          **dict(kwargs, extra_compile_args={"cxx": cxx, "nvcc": nvcc}))
    else:
        ext = cpp_extension.CppExtension("sae_ext._C", sources + CONFIG["no_cuda"], **kwargs)
    exts = [ext]
    if with_testing:
        # A plain shared library (no module init): conftest.py loads it with torch.ops.load_library.
        exts.append(cpp_extension.CppExtension("sae_ext._testing", CONFIG["testing"], **kwargs))
    return exts


def default_jobs() -> int:
    try:
        pages = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        by_memory = max(1, pages // (3 * 2**30))
    except (ValueError, OSError, AttributeError):
        by_memory = 1
    return max(1, min(os.cpu_count() or 1, by_memory))


os.environ.setdefault("MAX_JOBS", str(default_jobs()))
WITH_CUDA = cuda_wanted()
WITH_TESTING = not is_off(flag("SAE_BUILD_TESTING", "1"))
if WITH_CUDA:
    ARCH_LIST = os.environ.setdefault("TORCH_CUDA_ARCH_LIST", DEFAULT_ARCH_LIST)
    VERSION = write_build_info(True, WITH_TESTING, check_toolkit(CUDA_HOME), ARCH_LIST)
else:
    VERSION = write_build_info(False, WITH_TESTING, None, None)
print(f"setup.py: building sae_ext {VERSION} ({'CUDA ' + torch.version.cuda if WITH_CUDA else 'CPU-only'}"
      f"{', with the testing library' if WITH_TESTING else ''}); the C++ build takes a few minutes")


setup(
    name="sae-ext",
    version=VERSION,
    description="Fused Segmental Advantage Estimation (and GAE) kernels for PPO, CPU and CUDA",
    long_description=(ROOT / "README.md").read_text() if (ROOT / "README.md").exists() else "",
    long_description_content_type="text/markdown",
    packages=find_packages(include=["sae_ext", "sae_ext.*"]),
    ext_modules=extensions(WITH_CUDA, WITH_TESTING),
    install_requires=[compat.torch_requirement(CONFIG["torch_target"], CONFIG["torch_next_major"])],
    python_requires=">=3.10",
    cmdclass={"build_ext": cpp_extension.BuildExtension},
    options={"bdist_wheel": {"py_limited_api": "cp310"}},
)
