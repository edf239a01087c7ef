"""What this build of sae_ext is and whether its kernels can run here.

    python -m sae_ext.info
"""
from __future__ import annotations

import os
from typing import Any, Dict

import torch


def _arch_covers(arch_list: str, major: int, minor: int) -> bool:
    """Does a TORCH_CUDA_ARCH_LIST hold SASS for sm_{major}{minor}, or PTX a driver can JIT for it?"""
    for entry in arch_list.replace(",", ";").replace(" ", ";").split(";"):
        if not entry:
            continue
        ptx = entry.endswith("+PTX")
        a_major, a_minor = (int(x) for x in entry.replace("+PTX", "").split("."))
        if ptx and (a_major, a_minor) <= (major, minor):  # the driver JIT-compiles PTX upwards
            return True
        if a_major == major and a_minor <= minor:  # SASS runs on later minors of its major
            return True
    return False


def build_info() -> Dict[str, Any]:
    """A dict: what was built (versions, torch range, arch list, CUDA kernels), what runs
    here, and whether the two fit ("fits_torch", with "misfit_reason" when they do not).
    Reads only the build record, never the compiled library, so it also explains a build
    that cannot load here."""
    from ._build_info import BUILD
    from ._compat import incompatibility

    info: Dict[str, Any] = dict(BUILD)
    here = os.path.dirname(os.path.abspath(__file__))
    tree = os.path.dirname(here) if os.path.isfile(os.path.join(here, "..", "setup.py")) else None
    why_not = incompatibility(BUILD, torch.__version__, torch.version.cuda, tree)
    info["fits_torch"] = why_not is None
    info["misfit_reason"] = why_not
    info["runtime_torch_version"] = torch.__version__
    info["runtime_torch_cuda"] = torch.version.cuda
    info["cpu_threads"] = torch.get_num_threads()
    info["cpu_count"] = os.cpu_count()
    if why_not is not None:
        usable, why = False, "this build does not fit the installed torch"
    elif not BUILD["cuda_kernels"]:
        usable, why = False, "this is a CPU-only build"
    elif not torch.cuda.is_available():
        usable, why = False, "no CUDA device is visible to torch here"
    else:
        caps = [torch.cuda.get_device_capability(i) for i in range(torch.cuda.device_count())]
        missing = [f"sm_{a}{b}" for a, b in caps if not _arch_covers(BUILD["cuda_arch_list"], a, b)]
        usable = not missing
        why = ("kernels present for every visible GPU" if usable else
               f"no kernels for {', '.join(missing)} in arch list {BUILD['cuda_arch_list']}")
    info["cuda_usable"] = usable
    info["cuda_usable_reason"] = why
    return info


def main() -> int:
    info = build_info()
    lo, hi = info.get("torch_range") or ("?", "?")
    rows = [
        ("sae_ext version", info["version"]),
        ("built against torch", info["torch_version"]),
        ("loads into torch", f">={lo},<{hi}"),
        ("fits the installed torch", "yes" if info["fits_torch"] else "NO"),
        ("built with CUDA", info["cuda_toolkit"] or "no (CPU-only build)"),
        ("CUDA arch list", info["cuda_arch_list"] or "-"),
        ("CUDA kernels present", "yes" if info["cuda_kernels"] else "no"),
        ("testing library", "built" if info.get("testing_library") else "not built"),
        ("CUDA kernels usable here", f"{'yes' if info['cuda_usable'] else 'no'} ({info['cuda_usable_reason']})"),
        ("runtime torch", f"{info['runtime_torch_version']} (CUDA {info['runtime_torch_cuda'] or 'none'})"),
        ("CPU threads", f"{info['cpu_threads']} of {info['cpu_count']} cores"),
    ]
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"{k:<{width}}  {v}")
    if not info["fits_torch"]:
        print(f"\n{info['misfit_reason']}")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
