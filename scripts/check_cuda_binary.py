#!/usr/bin/env python
"""Read the built extension's device code and fail when a kernel is far from the hardware.

    python scripts/check_cuda_binary.py [path/to/_C.abi3.so] [--json OUT.json]

With no path it checks the `_C` of the `sae_ext` that Python imports. It runs `cuobjdump
-res-usage` (every arch in the fat binary) and `cuobjdump -sass -arch sm_90`, prints a table
per kernel, and exits 1, naming each offending kernel, when

- a kernel has a stack frame or local memory (STACK or LOCAL > 0 in the resource usage, or
  STL/LDL instructions in its sm_90 SASS): that is data spilled out of registers, a round
  trip through the L1/L2 for every value that should have stayed in a register;
- a scan kernel (a kernel whose name matches --scan-kernels) has no 128-bit global load in
  its sm_90 SASS (LDG.E.128, LDG.E.128.CONSTANT, ...): its inputs are not being read with
  the widest loads the hardware has. Kernels matching --scalar-ok are exempt from this
  (the kernels with the generic runtime-kind loader, and the carry pass, which reads one
  (a, b) pair per chunk, load narrowly by design), never from the stack rule.

cuobjdump comes from CUDA_HOME/bin, the PATH, or the PyPI packages `nvidia-cuda-cuobjdump`
and `nvidia-cuda-nvdisasm` (its -sass needs nvdisasm; `pip install nvidia-cuda-cuobjdump
nvidia-cuda-nvdisasm` where the toolkit has neither). A CPU-only build (its build info says
cuda_kernels is False) has nothing to check: the script says so and exits 0.
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from typing import Dict, Iterable, List, Optional, Tuple

# A kernel is a scan kernel when its demangled name matches this (case-insensitive); the
# default covers the forward/adjoint scan kernels of every schedule (row per block, the
# split passes).
DEFAULT_SCAN_KERNELS = r"rows_kernel|split_kernel|scan"
# ... and is excused from the 128-bit rule when it also matches this (scalar by design).
# The generic loader (storage kinds read at run time, any strides) and the split schedule's
# carry pass (one (a, b) pair per chunk) are excused; neither may spill.
DEFAULT_SCALAR_OK = r"GenericLoader|chain"
DEFAULT_SASS_ARCH = "sm_90"
SASS_ARCH = DEFAULT_SASS_ARCH  # the arch main() reads SASS for (--arch)
# csrc/sae_elem.h's Kind enum, for reading the loaders' template arguments in the table
KIND_NAMES = {"0": "F32", "1": "F64", "2": "F16", "3": "BF16", "4": "B8", "5": "I16", "6": "I32", "7": "I64"}


@dataclass
class Kernel:
    mangled: str
    name: str = ""  # demangled where c++filt is available
    # from -res-usage, per arch ("sm_80" -> {"REG": 48, "STACK": 0, ...})
    usage: Dict[str, Dict[str, int]] = field(default_factory=dict)
    # from the sm_90 SASS: opcode counts we judge by
    local_insts: int = 0  # STL/LDL (and LDL.LU, STL.128, ...)
    ldg128: int = 0  # global loads of 128 bits or more
    ldg: int = 0  # all global loads
    stg128: int = 0
    generic_ld_st: int = 0  # LD/ST through generic addresses (information only)
    has_sass: bool = False


# ---------------------------------------------------------------------------------------
# parsing cuobjdump's text (pure functions: the tests feed them fixture text)

_ARCH_RE = re.compile(r"^arch\s*=\s*(sm_\d+[a-z]?)\s*$")
_FUNC_USAGE_RE = re.compile(r"^\s*Function\s+(\S+?):\s*$")
_FIELD_RE = re.compile(r"([A-Z]+(?:\[\d+\])?):(\d+)")
_SASS_FUNC_RE = re.compile(r"^\s*Function\s*:\s*(\S+)\s*$")
# "/*0800*/   @!P0 LDG.E.128 R12, desc[UR12][R2.64] ;"  -> opcode LDG.E.128
_INST_RE = re.compile(r"^\s*/\*[0-9a-f]{4,}\*/\s+(?:@!?U?P[T0-9]\s+)?([A-Z][A-Z0-9_.]*)")


def parse_res_usage(text: str) -> Dict[str, Dict[str, Dict[str, int]]]:
    """{mangled kernel: {arch: {field: value}}} from `cuobjdump -res-usage` output."""
    out: Dict[str, Dict[str, Dict[str, int]]] = {}
    arch, func = None, None
    for line in text.splitlines():
        m = _ARCH_RE.match(line.strip())
        if m:
            arch, func = m.group(1), None
            continue
        m = _FUNC_USAGE_RE.match(line)
        if m:
            func = m.group(1)
            continue
        if func is not None and "REG:" in line:
            fields = {k: int(v) for k, v in _FIELD_RE.findall(line)}
            out.setdefault(func, {})[arch or "?"] = fields
            func = None
    return out


def opcode_kind(op: str) -> Tuple[bool, bool, bool, bool, bool]:
    """(is local STL/LDL, is a global load, is a >=128-bit global load, is a >=128-bit
    global store, is a generic LD/ST) for one SASS opcode such as 'LDG.E.128.CONSTANT'."""
    parts = op.split(".")
    base, mods = parts[0], set(parts[1:])
    wide = bool(mods & {"128", "256"})
    return (base in ("STL", "LDL"), base == "LDG", base == "LDG" and wide,
            base == "STG" and wide, base in ("LD", "ST"))


def parse_sass(text: str) -> Dict[str, Dict[str, int]]:
    """{mangled kernel: counts} from `cuobjdump -sass -arch sm_90` output."""
    out: Dict[str, Dict[str, int]] = {}
    cur: Optional[Dict[str, int]] = None
    for line in text.splitlines():
        m = _SASS_FUNC_RE.match(line)
        if m:
            cur = out.setdefault(m.group(1), dict(local_insts=0, ldg=0, ldg128=0, stg128=0, generic_ld_st=0))
            continue
        if line.startswith("Fatbin"):
            cur = None
            continue
        if cur is None:
            continue
        m = _INST_RE.match(line)
        if not m:
            continue
        local, ldg, ldg128, stg128, generic = opcode_kind(m.group(1))
        cur["local_insts"] += local
        cur["ldg"] += ldg
        cur["ldg128"] += ldg128
        cur["stg128"] += stg128
        cur["generic_ld_st"] += generic
    return out


def demangle(names: Iterable[str]) -> Dict[str, str]:
    """mangled -> demangled through c++filt when it is installed, else identity."""
    names = list(names)
    filt = shutil.which("c++filt") or shutil.which("llvm-cxxfilt")
    if not filt or not names:
        return {n: n for n in names}
    try:
        res = subprocess.run([filt], input="\n".join(names) + "\n", capture_output=True, text=True, timeout=60)
        lines = res.stdout.splitlines()
        if res.returncode == 0 and len(lines) == len(names):
            return dict(zip(names, lines))
    except (OSError, subprocess.SubprocessError):
        pass
    return {n: n for n in names}


def build_kernels(usage_text: str, sass_text: str) -> List[Kernel]:
    usage = parse_res_usage(usage_text)
    sass = parse_sass(sass_text)
    names = demangle(sorted(set(usage) | set(sass)))
    kernels = []
    for mangled in sorted(names, key=lambda n: names[n]):
        k = Kernel(mangled=mangled, name=names[mangled], usage=usage.get(mangled, {}))
        if mangled in sass:
            k.has_sass = True
            for key, v in sass[mangled].items():
                setattr(k, key, v)
        kernels.append(k)
    return kernels


def judge(kernels: List[Kernel], scan_re: str = DEFAULT_SCAN_KERNELS,
          scalar_ok_re: str = DEFAULT_SCALAR_OK) -> List[str]:
    """One message per problem; empty when every kernel passes."""
    problems = []
    scan, scalar_ok = re.compile(scan_re, re.I), re.compile(scalar_ok_re, re.I)
    if not kernels:
        problems.append("no kernels found in the device code")
    for k in kernels:
        for arch, f in sorted(k.usage.items()):
            if f.get("STACK", 0) or f.get("LOCAL", 0):
                problems.append(f"{k.name}: {arch} has STACK:{f.get('STACK', 0)} LOCAL:{f.get('LOCAL', 0)} "
                                "bytes (data spilled out of registers)")
        if k.local_insts:
            problems.append(f"{k.name}: {k.local_insts} local-memory instructions (STL/LDL) in its {SASS_ARCH} SASS")
        if scan.search(k.name) and not scalar_ok.search(k.name):
            if not k.has_sass:
                problems.append(f"{k.name}: a scan kernel with no {SASS_ARCH} SASS in the binary")
            elif k.ldg128 == 0:
                problems.append(f"{k.name}: a scan kernel whose {SASS_ARCH} SASS has no 128-bit global load "
                                f"({k.ldg} narrower ones)")
    return problems


def table(kernels: List[Kernel], scan_re: str = DEFAULT_SCAN_KERNELS, scalar_ok_re: str = DEFAULT_SCALAR_OK) -> str:
    scan, scalar_ok = re.compile(scan_re, re.I), re.compile(scalar_ok_re, re.I)
    archs = sorted({a for k in kernels for a in k.usage})
    hdr = (["kernel", "role"] + [f"{a} REG/STACK/LOCAL" for a in archs]
           + [f"{SASS_ARCH} STL+LDL", "LDG", "LDG>=128b", "STG>=128b", "LD/ST generic"])
    rows = []
    for k in kernels:
        short = re.sub(r"\((?:[^()]|\([^()]*\))*\)$", "", k.name)  # the argument list says nothing new
        short = re.sub(r"\(sae::Kind\)(\d)", lambda m: KIND_NAMES.get(m.group(1), m.group(0)), short)
        role = ("scan" if scan.search(k.name) and not scalar_ok.search(k.name)
                else "scan, scalar ok" if scan.search(k.name) else "other")
        cells = [short, role]
        for a in archs:
            f = k.usage.get(a)
            cells.append("-" if f is None else f"{f.get('REG', 0)}/{f.get('STACK', 0)}/{f.get('LOCAL', 0)}")
        cells += [str(x) if k.has_sass else "-" for x in (k.local_insts, k.ldg, k.ldg128, k.stg128, k.generic_ld_st)]
        rows.append(cells)
    width = [max(len(r[i]) for r in [hdr] + rows) for i in range(len(hdr))]
    fmt = lambda r: "  ".join(c.ljust(width[i]) for i, c in enumerate(r)).rstrip()  # noqa: E731
    return "\n".join([fmt(hdr), "  ".join("-" * w for w in width)] + [fmt(r) for r in rows])


# ---------------------------------------------------------------------------------------
# finding the tools and the binary

def _site_bins(tool: str) -> List[str]:
    """The tool inside PyPI's CUDA packages (nvidia/cu13/bin, nvidia/cuda_cuobjdump/bin, ...)
    and, last, the copy that triton ships."""
    found = []
    try:
        import nvidia  # namespace package of NVIDIA's wheels
        for root in list(getattr(nvidia, "__path__", [])):
            found += sorted(glob.glob(os.path.join(root, "*", "bin", tool)))
    except ImportError:
        pass
    try:
        import importlib.util
        spec = importlib.util.find_spec("triton")
        if spec and spec.submodule_search_locations:
            for root in spec.submodule_search_locations:
                found += glob.glob(os.path.join(root, "backends", "nvidia", "bin", tool))
    except (ImportError, ValueError):
        pass
    return [f for f in found if os.access(f, os.X_OK)]


def find_tool(tool: str, near: Optional[str] = None) -> Optional[str]:
    cands = []
    if near:
        cands.append(os.path.join(os.path.dirname(near), tool))
    if os.environ.get("CUDA_HOME"):
        cands.append(os.path.join(os.environ["CUDA_HOME"], "bin", tool))
    cands.append(shutil.which(tool) or "")
    cands += _site_bins(tool)
    for c in cands:
        if c and os.path.isfile(c) and os.access(c, os.X_OK):
            return c
    return None


def read_build_info(so_path: str) -> Optional[dict]:
    """The BUILD dict of the _build_info.py next to the binary (without importing torch)."""
    path = os.path.join(os.path.dirname(os.path.abspath(so_path)), "_build_info.py")
    if not os.path.isfile(path):
        return None
    scope: dict = {}
    try:
        exec(compile(open(path).read(), path, "exec"), scope)  # a generated file of literals
    except Exception:  # noqa: BLE001 - unreadable build info counts as none
        return None
    return scope.get("BUILD")


def default_binary() -> str:
    import sae_ext  # noqa: F401  (the imported package's _C)
    import sae_ext._C as c
    return c.__file__


def run_tool(cmd: List[str], env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("binary", nargs="?", help="the extension (.so); default: the imported sae_ext's _C")
    ap.add_argument("--scan-kernels", default=DEFAULT_SCAN_KERNELS, metavar="REGEX",
                    help=f"kernels that must load with 128-bit instructions (default {DEFAULT_SCAN_KERNELS!r})")
    ap.add_argument("--scalar-ok", default=DEFAULT_SCALAR_OK, metavar="REGEX",
                    help=f"scan kernels excused from the 128-bit rule (default {DEFAULT_SCALAR_OK!r})")
    ap.add_argument("--json", metavar="PATH", help="also write the per-kernel figures and the verdict here")
    ap.add_argument("--arch", default=DEFAULT_SASS_ARCH, metavar="sm_XY",
                    help=f"the SASS to read instructions from (default {DEFAULT_SASS_ARCH}; e.g. sm_80 for an "
                         "A100-only build)")
    args = ap.parse_args(argv)
    globals()["SASS_ARCH"] = args.arch  # the messages and the table name it

    so = args.binary or default_binary()
    if not os.path.isfile(so):
        print(f"check_cuda_binary: no such file: {so}", file=sys.stderr)
        return 1
    info = read_build_info(so)
    print(f"binary: {so}")
    if info is not None and not info.get("cuda_kernels", True):
        print("no CUDA kernels in this build (its build info says cuda_kernels is False): nothing to check")
        return 0

    cuobjdump = find_tool("cuobjdump")
    if cuobjdump is None:
        print("check_cuda_binary: cuobjdump not found (CUDA_HOME/bin, PATH, or `pip install "
              "nvidia-cuda-cuobjdump nvidia-cuda-nvdisasm`)", file=sys.stderr)
        return 1
    nvdisasm = find_tool("nvdisasm", near=cuobjdump)
    env = dict(os.environ)
    if nvdisasm:  # cuobjdump -sass runs nvdisasm from the PATH
        env["PATH"] = os.path.dirname(nvdisasm) + os.pathsep + env.get("PATH", "")
    print(f"cuobjdump: {cuobjdump}\nnvdisasm: {nvdisasm or '(not found)'}")

    usage = run_tool([cuobjdump, "-res-usage", so], env)
    if usage.returncode != 0 or "Function" not in usage.stdout:
        msg = (usage.stderr or usage.stdout).strip()
        if "does not contain device code" in msg and info is None:
            msg += " (and no build info next to it says whether it should)"
        print(f"check_cuda_binary: no kernels read from {so}: {msg}", file=sys.stderr)
        return 1
    sass = run_tool([cuobjdump, "-sass", "-arch", args.arch, so], env)
    if sass.returncode != 0 or "Function" not in sass.stdout:
        why = (sass.stderr or sass.stdout).strip() or "the binary holds no code for that arch"
        print(f"check_cuda_binary: no {args.arch} SASS read from {so}: {why}",
              file=sys.stderr)
        return 1

    kernels = build_kernels(usage.stdout, sass.stdout)
    print()
    print(table(kernels, args.scan_kernels, args.scalar_ok))
    problems = judge(kernels, args.scan_kernels, args.scalar_ok)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(dict(binary=so, kernels=[asdict(k) for k in kernels], problems=problems,
                           passed=not problems), f, indent=1)
    print()
    if problems:
        print(f"FAIL: {len(problems)} problem(s) in {len(kernels)} kernels:")
        for p in problems:
            print(f"  - {p}")
        return 1
    print(f"OK: {len(kernels)} kernels, none with stack or local memory; every scan kernel "
          f"loads with 128-bit instructions in its {SASS_ARCH} SASS")
    return 0


if __name__ == "__main__":
    sys.exit(main())
