"""What the build says about itself, and the import-time check against the installed torch."""
from __future__ import annotations

import shutil
import subprocess
import sys

import pytest
import torch

import sae_ext
import sae_ext.info
from sae_ext._build_info import BUILD
from sae_ext._compat import incompatibility, wheel_for

from conftest import make_rollout


def test_build_info_describes_this_build():
    info = sae_ext.info.build_info()
    assert info["version"] == sae_ext.__version__
    assert info["torch_version"].split("+")[0].rsplit(".", 1)[0] == torch.__version__.split("+")[0].rsplit(".", 1)[0]
    assert info["runtime_torch_version"] == torch.__version__
    tag = sae_ext.__version__.split("+")[1]
    assert tag.endswith("torch" + ".".join(torch.__version__.split(".")[:2]))
    if info["cuda_kernels"]:
        assert tag.startswith("cu" + torch.version.cuda.replace(".", "")) and info["cuda_arch_list"]
    else:
        assert tag.startswith("cpu") and not info["cuda_usable"]
    if not torch.cuda.is_available():
        assert not info["cuda_usable"] and info["cuda_usable_reason"]


def test_info_command_prints_the_build():
    out = subprocess.run([sys.executable, "-m", "sae_ext.info"], check=True, capture_output=True, text=True).stdout
    for needle in (sae_ext.__version__, torch.__version__, "CUDA kernels usable here", "CPU threads"):
        assert needle in out


@pytest.mark.parametrize("arch_list,cap,ok", [
    ("8.0;9.0+PTX", (8, 0), True), ("8.0;9.0+PTX", (8, 6), True), ("8.0;9.0+PTX", (9, 0), True),
    ("8.0;9.0+PTX", (10, 0), True), ("8.0;9.0+PTX", (7, 5), False), ("8.0;9.0", (10, 0), False),
    ("8.6", (8, 0), False), ("8.0 8.6", (8, 9), True),
])
def test_arch_coverage(arch_list, cap, ok):
    assert sae_ext.info._arch_covers(arch_list, *cap) is ok


def _build(**kw):
    b = {"version": "0.1.0+cu130torch2.14", "torch_version": "2.14.1+cu130", "torch_cuda": "13.0",
         "cuda_toolkit": "13.0", "cuda_arch_list": "8.0;9.0+PTX", "cuda_kernels": True}
    b.update(kw)
    return b


def test_compatibility_rules():
    assert incompatibility(_build(), "2.14.0+cu130", "13.0") is None
    assert incompatibility(_build(), "2.14.1", "13.2") is None
    msg = incompatibility(_build(), "2.13.0+cpu", None)
    assert "2.14.1+cu130" in msg and "2.13.0+cpu" in msg and "sae-ext==0.1.0+cputorch2.13" in msg
    msg = incompatibility(_build(), "2.14.1+cpu", None)
    assert "CPU-only" in msg and "sae-ext==0.1.0+cputorch2.14" in msg
    msg = incompatibility(_build(), "2.14.1+cu128", "12.8")
    assert "CUDA 13.0" in msg and "12.8" in msg and "sae-ext==0.1.0+cu128torch2.14" in msg
    cpu = _build(version="0.1.0+cputorch2.14", torch_cuda=None, cuda_toolkit=None, cuda_arch_list=None,
                 cuda_kernels=False)
    assert incompatibility(cpu, "2.14.1+cu130", "13.0") is None  # a CPU build runs on any 2.14
    assert wheel_for("2.10.0+cu128", "12.8", "0.1.0") == "sae-ext==0.1.0+cu128torch2.10"


def test_import_against_another_torch_fails_with_the_fix(tmp_path):
    """A copy of the package whose build record says another torch refuses to import."""
    pkg = tmp_path / "sae_ext"
    shutil.copytree(sae_ext.__path__[0], pkg, ignore=shutil.ignore_patterns("__pycache__"))
    other = dict(BUILD, torch_version="2.10.0+cu128", version="0.1.0+cu128torch2.10")
    (pkg / "_build_info.py").write_text(f"BUILD = {other!r}\n")
    proc = subprocess.run([sys.executable, "-c", "import sae_ext"], cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode != 0
    assert "ImportError" in proc.stderr and "2.10.0+cu128" in proc.stderr and torch.__version__ in proc.stderr
    assert "sae-ext==0.1.0+" in proc.stderr


def test_cuda_dispatch_without_a_gpu_gives_a_clear_error():
    """Call the ops' CUDA kernels directly (no GPU needed): a CPU-only build says it has no
    CUDA kernels; a CUDA build's launcher says the tensors are not on a CUDA device."""
    r, v, lp, m, bs = make_rollout(2, 5)
    op = torch.ops.sae.advantages.default
    expected = "CUDA device" if BUILD["cuda_kernels"] else "no CUDA kernels"
    with pytest.raises(RuntimeError, match=expected):
        op._op_dk(torch._C.DispatchKey.CUDA, r, v, lp, m, 1.0, 0.5, 1.0, 0.2, bs)
    with pytest.raises(RuntimeError, match=expected):
        torch.ops.sae.segment_boundaries.default._op_dk(torch._C.DispatchKey.CUDA, lp, m, 0.2)
