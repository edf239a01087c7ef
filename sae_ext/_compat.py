"""What a build of the extension is for, and whether it fits the torch that is installed.

Pure Python and import-free, so setup.py and scripts/build_wheel.py load this file too: the
wheel's local tag (+cu13, +cu12, +cpu) is computed here and nowhere else. Checked at import,
before the compiled library is loaded (loading a library into a torch it was not built for
fails with an unreadable undefined-symbol error, or worse, loads and misbehaves).

The library uses PyTorch's stable ABI only, so one build loads into every torch of
`build["torch_range"]` (from the oldest stable ABI it targets up to the next torch major);
what must still match is the CUDA major version of a CUDA build.
"""
from __future__ import annotations

from typing import Optional, Tuple


def _release(version: str) -> Tuple[int, ...]:
    """(2, 14, 1) from 2.14.1+cu130, 2.15.0a0+git1234, 2.13.0.dev20260101."""
    out = []
    for part in version.split("+")[0].split(".")[:3]:
        digits = ""
        for ch in part:
            if not ch.isdigit():
                break
            digits += ch
        out.append(int(digits or 0))
    return tuple(out)


def local_tag(torch_cuda: Optional[str]) -> str:
    """The wheel's local version tag for a torch build: cu13 for CUDA 13.x, cpu for none."""
    return f"cu{torch_cuda.split('.')[0]}" if torch_cuda else "cpu"


def torch_requirement(torch_target: str, torch_next_major: str) -> str:
    """The install_requires entry: every torch the stable-ABI build loads into."""
    return f"torch>={torch_target},<{torch_next_major}"


def _fix(source_tree: Optional[str]) -> str:
    """What to do about a mismatch. No sae-ext wheels are published, so: build from source."""
    if source_tree:
        return (f"Rebuild it against the installed torch, in the source tree {source_tree}: "
                "pip install --no-build-isolation -e .")
    return ("Build sae-ext from source against the installed torch (see README.md): "
            "pip install --no-build-isolation <path to the sae-ext source>")


def incompatibility(build: dict, torch_version: str, torch_cuda: Optional[str],
                    source_tree: Optional[str] = None) -> Optional[str]:
    """None if `build` (sae_ext/_build_info.py) fits the running torch, else why not (naming
    both sides) and the fix; `source_tree`: the checkout the package runs from, if it does
    (an editable or in-place build), else None (an installed wheel)."""
    # A build record from before the stable ABI (no range): it fits its own torch minor only.
    lo, hi = build.get("torch_range") or (
        ".".join(build["torch_version"].split("+")[0].split(".")[:2]),
        "{}.{}".format(*(_release(build["torch_version"])[:1] + (_release(build["torch_version"])[1] + 1,))))
    name = f"sae_ext {build['version']}"
    if not _release(lo) <= _release(torch_version) < _release(hi):
        return (f"{name} loads into torch >={lo},<{hi} (built against {build['torch_version']}), "
                f"but torch {torch_version} is installed. {_fix(source_tree)}")
    if build["cuda_kernels"]:
        if torch_cuda is None:
            return (f"{name} has CUDA {build['torch_cuda']} kernels, but the installed torch "
                    f"{torch_version} is a CPU-only build. {_fix(source_tree)}")
        if torch_cuda.split(".")[0] != build["torch_cuda"].split(".")[0]:
            return (f"{name} was built for CUDA {build['torch_cuda'].split('.')[0]}.x "
                    f"(CUDA {build['torch_cuda']}), but torch {torch_version} uses CUDA {torch_cuda}. "
                    f"{_fix(source_tree)}")
    return None
