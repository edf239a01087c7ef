"""Is this build of the extension usable with the torch that is installed? Checked at
import, before the compiled library is loaded (loading a library built against another
torch fails with an unreadable undefined-symbol error, or worse, loads and misbehaves)."""
from __future__ import annotations

from typing import Optional


def _minor(version: str) -> str:
    return ".".join(version.split("+")[0].split(".")[:2])


def wheel_for(torch_version: str, torch_cuda: Optional[str], base_version: str) -> str:
    """The sae-ext wheel that fits a torch build, e.g. sae-ext==0.1.0+cu130torch2.14."""
    tag = f"cu{torch_cuda.replace('.', '')}" if torch_cuda else "cpu"
    return f"sae-ext=={base_version}+{tag}torch{_minor(torch_version)}"


def incompatibility(build: dict, torch_version: str, torch_cuda: Optional[str]) -> Optional[str]:
    """None if `build` (sae_ext/_build_info.py) fits the running torch, else why not and what
    to install instead."""
    built = build["torch_version"]
    base = build["version"].split("+")[0]
    fix = (f"Install the wheel built for it ({wheel_for(torch_version, torch_cuda, base)}) or rebuild "
           "from source against it: pip install --no-build-isolation .")
    if _minor(built) != _minor(torch_version):
        return (f"sae_ext {build['version']} was built for torch {built}, but torch {torch_version} is "
                f"installed. {fix}")
    if build["cuda_kernels"]:
        if torch_cuda is None:
            return (f"sae_ext {build['version']} has CUDA {build['torch_cuda']} kernels, but the installed "
                    f"torch {torch_version} is a CPU-only build. {fix}")
        if torch_cuda.split(".")[0] != build["torch_cuda"].split(".")[0]:
            return (f"sae_ext {build['version']} was built for CUDA {build['torch_cuda']}, but torch "
                    f"{torch_version} uses CUDA {torch_cuda}. {fix}")
    return None
