#!/usr/bin/env python3
"""Build one sae-ext wheel for a CUDA major version (or CPU), then smoke-test it.

    python scripts/build_wheel.py --torch 2.14.1 --cuda 13.0            # toolkit: CUDA_HOME or the system's
    python scripts/build_wheel.py --torch 2.14.1 --cuda 13.0 --toolkit pypi   # nvcc from PyPI
    python scripts/build_wheel.py --torch 2.14.1 --cpu
    python scripts/build_wheel.py --torch 2.14.1 --cpu --test-torch 2.13.0 --test-torch 2.14.1

It builds in a fresh virtual environment holding only that torch, from a copy of the files
git tracks, into dist/, without the testing library (SAE_BUILD_TESTING=0). The library uses
PyTorch's stable ABI only, so the wheel loads into every torch of the range it declares
(csrc/build_config.json): it is abi3 (every CPython >= 3.10) and tagged by CUDA major only,
e.g. sae_ext-0.1.0+cu13, sae_ext-0.1.0+cpu (the tag is computed in sae_ext/_compat.py).
Then, for each --test-torch (default: --torch), it installs the wheel into a fresh
environment with that torch, prints `python -m sae_ext.info` and runs the CPU test suite
against it, less the tests of the emulated warp, whose library wheels leave out (unless
--no-test).

Where the CUDA toolkit comes from (--toolkit):
  auto    CUDA_HOME if set, else the system's (/usr/local/cuda-X.Y, or the nvcc on PATH)
  system  the system's only
  pypi    PyPI's nvidia-cuda-nvcc X.Y.* installed into the build environment (CUDA 13.x
          packages ship the whole nvcc driver; the CUDA 12 `-cu12` ones ship only ptxas and
          nvvm, so CUDA 12.x needs a real toolkit, e.g. a CUDA devel container)
  PATH    that directory
The toolkit's major version must equal that of the torch build's CUDA.
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _load_compat():
    """sae_ext/_compat.py by path (importing sae_ext would load a built library)."""
    import importlib.util
    spec = importlib.util.spec_from_file_location("_sae_compat", ROOT / "sae_ext" / "_compat.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


# SASS for every datacenter and consumer generation the toolkit supports from Ampere on,
# plus PTX of the newest so later GPUs can JIT. sm_80/86/89/90 everywhere; CUDA 12.8 added
# Blackwell (sm_100, sm_120). Older GPUs (sm_70, sm_75) are left out: CUDA 13 dropped
# sm_70 and bf16 needs sm_80 to be worth running on.
def arch_list(cuda: str) -> str:
    major, minor = (int(x) for x in cuda.split(".")[:2])
    if major >= 13 or (major == 12 and minor >= 8):
        return "8.0;8.6;8.9;9.0;10.0;12.0+PTX"
    if major == 12:
        return "8.0;8.6;8.9;9.0+PTX"
    raise SystemExit(f"CUDA {cuda}: only CUDA 12.x and 13.x are supported")


def run(cmd, **kw):
    print("+", " ".join(str(c) for c in cmd), flush=True)
    return subprocess.run([str(c) for c in cmd], check=True, **kw)


def make_venv(path: Path, torch_version: str, extra=(), system_torch: bool = False) -> Path:
    """A virtual environment holding that torch and nothing of sae-ext. One made earlier for
    the same torch is reused (minus any sae-ext installed in it): installing torch is the
    slow part, and it is the same torch. system_torch: see this interpreter's packages
    (its torch must be torch_version) instead of installing torch."""
    py = path / "bin" / "python"
    if system_torch:
        if py.exists():
            shutil.rmtree(path)
        run([sys.executable, "-m", "venv", "--system-site-packages", path])
        have = subprocess.run([str(py), "-c", "import torch; print(torch.__version__)"], check=True,
                              capture_output=True, text=True).stdout.strip()
        if have.split("+")[0] != torch_version:
            raise SystemExit(f"--use-installed-torch: this Python's torch is {have}, not {torch_version}")
        run([py, "-m", "pip", "install", "-q", "wheel", "setuptools>=64", "ninja"])
        return py
    if py.exists():
        have = subprocess.run([str(py), "-c", "import torch; print(torch.__version__)"],
                              capture_output=True, text=True).stdout.strip()
        if have.split("+")[0] == torch_version:
            run([py, "-m", "pip", "uninstall", "-q", "-y", "sae-ext"])
            if extra:
                run([py, "-m", "pip", "install", "-q", *extra])
            return py
        shutil.rmtree(path)
    run([sys.executable, "-m", "venv", path])
    run([py, "-m", "pip", "install", "-q", "--upgrade", "pip"])
    run([py, "-m", "pip", "install", "-q", f"torch=={torch_version}", "setuptools>=64", "wheel", "ninja",
         *extra])
    return py


def torch_cuda(py: Path) -> str | None:
    out = subprocess.run([str(py), "-c", "import torch; print(torch.version.cuda)"], check=True,
                         capture_output=True, text=True).stdout.strip()
    return None if out == "None" else out


def nvcc_release(cuda_home: Path) -> str:
    out = subprocess.run([str(cuda_home / "bin" / "nvcc"), "--version"], check=True, capture_output=True,
                         text=True).stdout
    return re.search(r"release (\d+\.\d+)", out).group(1)


def system_toolkit(cuda: str) -> Path | None:
    for cand in (Path(f"/usr/local/cuda-{cuda}"), Path("/usr/local/cuda")):
        if (cand / "bin" / "nvcc").exists():
            return cand
    nvcc = shutil.which("nvcc")
    if nvcc:
        text = Path(nvcc).read_text(errors="ignore") if Path(nvcc).stat().st_size < 4096 else ""
        m = re.search(r"(/\S+)/bin/nvcc", text)  # a wrapper script exec'ing the real nvcc
        return Path(m.group(1)) if m else Path(nvcc).resolve().parent.parent
    return None


def pypi_toolkit(py: Path, cuda: str) -> Path:
    """nvcc X.Y from PyPI into the build environment; its CUDA root is nvidia/cuXX."""
    major, minor = cuda.split(".")[:2]
    if int(major) < 13:
        raise SystemExit("PyPI's CUDA 12 nvcc packages ship no nvcc driver; use a CUDA 12 toolkit "
                         "(e.g. a CUDA devel container) with --toolkit PATH or CUDA_HOME")
    # nvcc's own pieces (front-end headers, cicc in nvvm) are separate wheels whose pins
    # admit newer releases; a newer cicc writes PTX this ptxas rejects, so pin them all.
    same = f"=={major}.{minor}.*"
    run([py, "-m", "pip", "install", "-q", "nvidia-cuda-nvcc" + same, "nvidia-nvvm" + same,
         "nvidia-cuda-crt" + same, "nvidia-cuda-runtime" + same, f"nvidia-cuda-cccl=={major}.*"])
    root = subprocess.run([str(py), "-c", f"import nvidia, os; print(os.path.join(nvidia.__path__[0], 'cu{major}'))"],
                          check=True, capture_output=True, text=True).stdout.strip()
    home = Path(root)
    lib = home / "lib"
    if not (lib / "libcudart.so").exists():  # the runtime wheel ships only the versioned name
        versioned = sorted(lib.glob("libcudart.so.*"))
        if versioned:
            (lib / "libcudart.so").symlink_to(versioned[0].name)
    return home


def check_sass(py: Path, wheel: Path, archs: str, cuda_major: str) -> None:
    """cuobjdump (PyPI's nvidia-cuda-cuobjdump) must find SASS for every arch in the list in
    the wheel's library, and PTX where the list says +PTX."""
    run([py, "-m", "pip", "install", "-q", f"nvidia-cuda-cuobjdump=={cuda_major}.*"])
    tool = subprocess.run([str(py), "-c", "import nvidia, glob, os; print((glob.glob(os.path.join("
                           "nvidia.__path__[0], '**', 'bin', 'cuobjdump'), recursive=True) or [''])[0])"],
                          check=True, capture_output=True, text=True).stdout.strip()
    if not tool:
        raise SystemExit("cuobjdump not found in nvidia-cuda-cuobjdump")
    with tempfile.TemporaryDirectory() as tmp:
        run([py, "-m", "zipfile", "-e", wheel, tmp])
        so = next(Path(tmp).glob("sae_ext/_C*.so"))
        elf = subprocess.run([tool, "--list-elf", str(so)], check=True, capture_output=True, text=True).stdout
        ptx = subprocess.run([tool, "--list-ptx", str(so)], check=True, capture_output=True, text=True).stdout
    print(elf + ptx)
    have_sass = set(re.findall(r"\.sm_(\d+a?)\.cubin", elf))
    have_ptx = set(re.findall(r"\.sm_(\d+a?)\.ptx", ptx))
    for entry in archs.split(";"):
        want = entry.replace("+PTX", "").replace(".", "")
        if want not in have_sass:
            raise SystemExit(f"no SASS for sm_{want} in {so.name}")
        if entry.endswith("+PTX") and want not in have_ptx:
            raise SystemExit(f"no PTX for sm_{want} in {so.name}")
    print(f"cuobjdump: SASS for sm_{', sm_'.join(sorted(have_sass))}; PTX for sm_{', sm_'.join(sorted(have_ptx))}")


def copy_sources(dst: Path) -> None:
    files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, check=True, capture_output=True).stdout
    for rel in filter(None, files.decode().split("\0")):
        src = ROOT / rel
        if src.is_file():
            (dst / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst / rel)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--torch", required=True, help="torch version to build against, e.g. 2.14.1")
    kind = ap.add_mutually_exclusive_group(required=True)
    kind.add_argument("--cuda", help="CUDA version of that torch build, e.g. 13.0")
    kind.add_argument("--cpu", action="store_true", help="a CPU-only wheel")
    ap.add_argument("--toolkit", default="auto", help="auto | system | pypi | PATH (see above)")
    ap.add_argument("--arch-list", help="override TORCH_CUDA_ARCH_LIST")
    ap.add_argument("--nvcc-version", help="with --toolkit pypi: the nvcc X.Y to fetch (default: --cuda)")
    ap.add_argument("--out", default=str(ROOT / "dist"))
    ap.add_argument("--work", default=str(ROOT / "build" / "wheels"), help="where the environments go")
    ap.add_argument("--jobs", type=int, default=int(os.environ.get("MAX_JOBS", "2")))
    ap.add_argument("--no-test", action="store_true", help="skip the smoke test in a fresh environment")
    ap.add_argument("--use-installed-torch", action="store_true",
                    help="build against this Python's torch (must be --torch) instead of installing it")
    ap.add_argument("--test-torch", action="append", metavar="VERSION",
                    help="a torch to test the wheel beside (repeatable; default: --torch)")
    ap.add_argument("--test-wheel", metavar="WHEEL", help="test this wheel, built earlier, instead of building")
    args = ap.parse_args()
    if args.test_wheel:
        test_wheel(Path(args.test_wheel).resolve(), args.test_torch or [args.torch], Path(args.work))
        return

    label = _load_compat().local_tag(None if args.cpu else args.cuda)
    work = Path(args.work) / f"torch{args.torch}"
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    py = make_venv(work / "build-env", args.torch, system_torch=args.use_installed_torch)
    env = dict(os.environ, MAX_JOBS=str(args.jobs), SAE_BUILD_TESTING="0")
    env.pop("PYTHONPATH", None)
    if args.cpu:
        env["SAE_BUILD_CUDA"] = "0"
    else:
        built_for = torch_cuda(py)
        if built_for is None or built_for.split(".")[0] != args.cuda.split(".")[0]:
            raise SystemExit(f"torch=={args.torch} from the index is built for CUDA {built_for}, not {args.cuda}")
        if args.toolkit == "pypi":
            home = pypi_toolkit(py, args.nvcc_version or args.cuda)
        elif args.toolkit == "system":
            home = system_toolkit(args.cuda)
        elif args.toolkit == "auto":
            home = Path(os.environ["CUDA_HOME"]) if os.environ.get("CUDA_HOME") else system_toolkit(args.cuda)
        else:
            home = Path(args.toolkit)
        if home is None or not (home / "bin" / "nvcc").exists():
            raise SystemExit(f"no CUDA toolkit found (--toolkit {args.toolkit})")
        release = nvcc_release(home)
        if release.split(".")[0] != args.cuda.split(".")[0]:
            raise SystemExit(f"toolkit {home} is CUDA {release}; torch {args.torch} needs CUDA {args.cuda.split('.')[0]}.x")
        print(f"toolkit: {home} (CUDA {release}); torch {args.torch} built for CUDA {built_for}")
        env.update(CUDA_HOME=str(home), SAE_BUILD_CUDA="1",
                   TORCH_CUDA_ARCH_LIST=args.arch_list or arch_list(args.cuda),
                   PATH=f"{home / 'bin'}:{env['PATH']}")
    t_env = time.time() - t0

    with tempfile.TemporaryDirectory(prefix="sae-wheel-") as src:
        copy_sources(Path(src))
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        before = set(out.glob("*.whl"))
        t1 = time.time()
        run([py, "-m", "pip", "wheel", "--no-build-isolation", "--no-deps", "-w", out, src], env=env)
        t_build = time.time() - t1
    wheels = sorted(set(out.glob("*.whl")) - before) or sorted(out.glob(f"*+{label}-*.whl"))
    wheel = wheels[-1]
    print(f"\nbuilt {wheel.name}: {wheel.stat().st_size / 2**20:.1f} MiB in {t_build:.0f} s "
          f"(environment {t_env:.0f} s)")
    if not args.cpu:
        check_sass(py, wheel, env["TORCH_CUDA_ARCH_LIST"], args.cuda.split(".")[0])

    if not args.no_test:
        test_wheel(wheel, args.test_torch or [args.torch], Path(args.work))


def test_wheel(wheel: Path, torches, work: Path) -> None:
    """Install `wheel` beside each torch in a fresh environment, print its info, run the CPU
    suite (less the emulated-warp tests: their library is not in wheels)."""
    for test_torch in torches:
        tpy = make_venv(work / f"torch{test_torch}" / "test-env", test_torch,
                        extra=("pytest", "hypothesis", "numpy"))
        run([tpy, "-m", "pip", "install", "-q", "--no-deps", wheel])
        with tempfile.TemporaryDirectory() as cwd:  # away from the source tree's sae_ext/
            tenv = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
            run([tpy, "-m", "sae_ext.info"], cwd=cwd, env=tenv)
            run([tpy, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-k", "not emulated",
                 ROOT / "python_tests"], cwd=cwd, env=tenv)
        print(f"\n{wheel.name}: installed beside torch {test_torch} in a fresh environment, "
              "info printed, CPU tests passed")


if __name__ == "__main__":
    main()
