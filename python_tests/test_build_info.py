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
from sae_ext._compat import _release, incompatibility, local_tag

from conftest import make_rollout


def test_build_info_describes_this_build():
    info = sae_ext.info.build_info()
    assert info["version"] == sae_ext.__version__
    assert info["runtime_torch_version"] == torch.__version__
    assert info["fits_torch"] and info["misfit_reason"] is None
    lo, hi = info["torch_range"]
    assert _release(lo) <= _release(torch.__version__) < _release(hi)
    # One build per CUDA major (stable ABI): the tag names no torch minor.
    tag = sae_ext.__version__.split("+")[1]
    if info["cuda_kernels"]:
        assert tag == "cu" + torch.version.cuda.split(".")[0] and info["cuda_arch_list"]
    else:
        assert tag == "cpu" and not info["cuda_usable"]
    if not torch.cuda.is_available():
        assert not info["cuda_usable"] and info["cuda_usable_reason"]


def test_build_info_needs_no_separate_import():
    code = "import sae_ext; print(sae_ext.info.build_info()['version'])"
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    assert out.stdout.strip() == sae_ext.__version__


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
    b = {"version": "0.1.0+cu13", "torch_version": "2.14.1+cu130", "torch_range": ["2.10", "3"],
         "torch_cuda": "13.0", "cuda_toolkit": "13.0", "cuda_arch_list": "8.0;9.0+PTX",
         "cuda_kernels": True}
    b.update(kw)
    return b


def test_local_tag_is_the_cuda_major_only():
    assert local_tag("13.0") == "cu13" and local_tag("13.2") == "cu13" and local_tag("12.8") == "cu12"
    assert local_tag(None) == "cpu"


def test_compatibility_rules():
    # Every torch of the range, any CUDA minor of the build's major.
    for version, cuda in (("2.10.0+cu130", "13.0"), ("2.13.0+cu130", "13.0"), ("2.14.1", "13.2"),
                          ("2.99.0a0+git1234", "13.0")):
        assert incompatibility(_build(), version, cuda) is None, version
    msg = incompatibility(_build(), "2.9.1+cu130", "13.0")
    assert "2.9.1+cu130" in msg and ">=2.10,<3" in msg and "from source" in msg
    msg = incompatibility(_build(), "3.0.0+cu130", "13.0")
    assert "3.0.0+cu130" in msg and ">=2.10,<3" in msg
    msg = incompatibility(_build(), "2.14.1+cpu", None)
    assert "CPU-only" in msg and "2.14.1+cpu" in msg and "CUDA 13.0" in msg
    msg = incompatibility(_build(), "2.14.1+cu128", "12.8")
    assert "13.x" in msg and "12.8" in msg
    cpu = _build(version="0.1.0+cpu", torch_cuda=None, cuda_toolkit=None, cuda_arch_list=None,
                 cuda_kernels=False)
    assert incompatibility(cpu, "2.13.0+cu130", "13.0") is None  # a CPU build runs on any torch in range
    # No wheel is published: the fix is a build from source, -e in a source tree.
    for tree in (None, "/src/sae-ext"):
        msg = incompatibility(_build(), "2.9.0", None, tree)
        assert "sae-ext==" not in msg and "pip install --no-build-isolation" in msg
        assert ("-e ." in msg) == (tree is not None) and (tree is None or tree in msg)


def _copy_with_build(tmp_path, **build):
    """A copy of the package (out of any source tree) whose build record says `build`."""
    pkg = tmp_path / "sae_ext"
    shutil.copytree(sae_ext.__path__[0], pkg, ignore=shutil.ignore_patterns("__pycache__"))
    (pkg / "_build_info.py").write_text(f"BUILD = {dict(BUILD, **build)!r}\n")
    return tmp_path


def test_import_against_another_torch_fails_with_the_fix(tmp_path):
    """A copy of the package whose build record says another torch range refuses to import."""
    cwd = _copy_with_build(tmp_path, torch_version="2.20.0+cu130", torch_range=["2.20", "3"],
                           version="0.1.0+cu13")
    proc = subprocess.run([sys.executable, "-c", "import sae_ext"], cwd=cwd, capture_output=True, text=True)
    assert proc.returncode != 0
    assert "ImportError" in proc.stderr and ">=2.20,<3" in proc.stderr and torch.__version__ in proc.stderr
    assert "from source" in proc.stderr and "sae-ext==" not in proc.stderr


def test_info_command_explains_a_build_that_does_not_fit(tmp_path):
    cwd = _copy_with_build(tmp_path, torch_version="2.20.0+cu130", torch_range=["2.20", "3"],
                           version="0.1.0+cu13")
    proc = subprocess.run([sys.executable, "-m", "sae_ext.info"], cwd=cwd, capture_output=True, text=True)
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    for needle in ("0.1.0+cu13", "2.20.0+cu130", torch.__version__, "fits the installed torch  NO",
                   ">=2.20,<3"):
        assert needle in proc.stdout


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


def test_kernels_name_the_argument_on_another_device():
    """The C++ kernels themselves (called past the fakes): a tensor on another device than the
    kernel's, or than `rewards`, is named, in the same words as the meta path's."""
    r, v, lp, m, bs = make_rollout(2, 5)
    cpu = torch._C.DispatchKey.CPU
    op = torch.ops.sae.advantages.default
    want = r"sae.advantages: `bootstrap` is on meta but `rewards` is on cpu; all tensors must be on one device"
    with pytest.raises(RuntimeError, match=want):
        op._op_dk(cpu, r, v, lp, m, 1.0, 0.5, 1.0, 0.2, bs.to("meta"))
    with pytest.raises(RuntimeError, match=want.replace("meta", "@").replace("cpu", "meta").replace("@", "cpu")):
        op(r.to("meta"), v.to("meta"), lp.to("meta"), m.to("meta"), 1.0, 0.5, 1.0, 0.2, bs)  # the fake
    with pytest.raises(RuntimeError, match="`values` is on meta but `rewards` is on cpu"):
        op._op_dk(cpu, r, v.to("meta"), lp, m, 1.0, 0.5, 1.0, 0.2, bs)
    with pytest.raises(RuntimeError, match="`rewards` is on meta, but this kernel needs tensors on the CPU"):
        op._op_dk(cpu, r.to("meta"), v.to("meta"), lp.to("meta"), m.to("meta"), 1.0, 0.5, 1.0, 0.2, None)
    bw = torch.ops.sae.advantages_backward.default
    with pytest.raises(RuntimeError, match="`logprobs` is on meta but `mask` is on cpu"):
        bw._op_dk(cpu, r, v, m, lp.to("meta"), None, 1.0, 0.5, 1.0, 0.2)
