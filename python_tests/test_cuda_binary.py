"""scripts/check_cuda_binary.py: its parser on fixture text shaped like cuobjdump's output (no
nvcc, no GPU), its verdicts, and, where cuobjdump is installed, that it reads the real build."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

import sae_ext.info

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "check_cuda_binary.py"
_spec = importlib.util.spec_from_file_location("check_cuda_binary", SCRIPT)
cb = importlib.util.module_from_spec(_spec)
sys.modules["check_cuda_binary"] = cb  # dataclasses look their module up by name
_spec.loader.exec_module(cb)

SCAN_F32 = "_ZN3sae12_GLOBAL__N_116scan_rows_kernelIfLb1EEEvNS_8ScanArgsE"
SCAN_GENERIC = "_ZN3sae4cuda11rows_kernelINS_13GenericLoaderIfEELb0EEEvNS_8ScanArgsENS_8VecFlagsE"
BOUNDARIES = "_ZN3sae12_GLOBAL__N_117boundaries_kernelENS_9CutSourceE"


def res_usage(stack_f32_sm90=0, local_generic=0):
    return f"""
Fatbin elf code:
================
arch = sm_80
code version = [1,8]
identifier = csrc/cuda/sae_cuda.cu

Resource usage:
 Common:
  GLOBAL:28 CONSTANT[4]:224
 Function {SCAN_F32}:
  REG:64 STACK:0 SHARED:0 LOCAL:0 CONSTANT[2]:576 CONSTANT[0]:605 TEXTURE:0 SURFACE:0 SAMPLER:0
 Function {SCAN_GENERIC}:
  REG:72 STACK:0 SHARED:0 LOCAL:0 CONSTANT[0]:605 TEXTURE:0 SURFACE:0 SAMPLER:0

Fatbin elf code:
================
arch = sm_90
code version = [1,8]

Resource usage:
 Common:
  GLOBAL:28 CONSTANT[4]:224
 Function {SCAN_F32}:
  REG:64 STACK:{stack_f32_sm90} SHARED:0 LOCAL:0 CONSTANT[2]:576 CONSTANT[0]:781 TEXTURE:0 SURFACE:0 SAMPLER:0
 Function {SCAN_GENERIC}:
  REG:72 STACK:0 SHARED:0 LOCAL:{local_generic} CONSTANT[0]:781 TEXTURE:0 SURFACE:0 SAMPLER:0
 Function {BOUNDARIES}:
  REG:26 STACK:0 SHARED:0 LOCAL:0 CONSTANT[2]:88 CONSTANT[0]:664 TEXTURE:0 SURFACE:0 SAMPLER:0

Fatbin ptx code:
================
arch = sm_90
"""


def sass(f32_load="LDG.E.128.CONSTANT", f32_extra=""):
    return f"""
Fatbin elf code:
================
arch = sm_90

	code for sm_90
		Function : {SCAN_F32}
	.headerflags	@"EF_CUDA_SM90 EF_CUDA_VIRTUAL_SM(EF_CUDA_SM90)"
        /*0000*/                   LDC R1, c[0x0][0x28] ;                                /* 0x00000a00ff017b82 */
                                                                                         /* 0x000e220000000800 */
        /*0800*/                   {f32_load} R12, desc[UR12][R2.64] ;                    /* 0x0000000c020c7981 */
        /*08a0*/               @P0 {f32_load} R16, desc[UR12][R2.64+0x30] ;               /* 0x0000300c02100981 */
        /*08b0*/                   LDG.E.U8 R20, desc[UR12][R4.64] ;                     /* 0x0000000c020c7981 */
{f32_extra}
        /*0900*/                   STG.E.128 desc[UR12][R6.64], R8 ;                     /* 0x0000000c020c7981 */
        /*0910*/                   EXIT ;                                                /* 0x000000000000794d */
		..........

		Function : {SCAN_GENERIC}
        /*0000*/                   LDG.E R12, desc[UR12][R2.64] ;                        /* 0x0000000c020c7981 */
        /*0010*/              @!P1 LDG.E.U16 R13, desc[UR12][R2.64] ;                    /* 0x0000000c020c7981 */
		..........

		Function : {BOUNDARIES}
        /*0000*/                   LDG.E R12, desc[UR12][R2.64] ;                        /* 0x0000000c020c7981 */
		..........
"""


def kernels(**kw):
    usage_kw = {k: kw.pop(k) for k in ("stack_f32_sm90", "local_generic") if k in kw}
    return {k.mangled: k for k in cb.build_kernels(res_usage(**usage_kw), sass(**kw))}


def test_parses_every_kernel_per_arch_and_counts_opcodes():
    ks = kernels()
    assert set(ks) == {SCAN_F32, SCAN_GENERIC, BOUNDARIES}
    f32 = ks[SCAN_F32]
    assert set(f32.usage) == {"sm_80", "sm_90"} and f32.usage["sm_90"]["REG"] == 64
    assert ks[BOUNDARIES].usage.keys() == {"sm_90"}
    # the predicated @P0 load counts too; the byte load is not a wide one
    assert (f32.ldg, f32.ldg128, f32.stg128, f32.local_insts) == (3, 2, 1, 0)
    assert (ks[SCAN_GENERIC].ldg, ks[SCAN_GENERIC].ldg128) == (2, 0)


def test_a_clean_build_passes_and_the_generic_kernel_may_load_narrowly():
    assert cb.judge(list(kernels().values())) == []


def test_stack_and_local_memory_fail_naming_the_kernel_and_arch():
    problems = cb.judge(list(kernels(stack_f32_sm90=208, local_generic=16).values()))
    assert len(problems) == 2
    assert any("scan_rows_kernel" in p and "sm_90" in p and "STACK:208" in p for p in problems)
    # the generic kernel is excused from the 128-bit rule, never from the stack rule
    assert any("rows_kernel<sae::GenericLoader<float>" in p and "LOCAL:16" in p for p in problems)


def test_spill_instructions_fail_even_when_the_resource_usage_reads_zero():
    extra = ("        /*08c0*/                   STL.128 [R1+0x10], R12 ;   /* 0x0 */\n"
             "        /*08d0*/              @!P2 LDL.LU R3, [R1+0x4] ;     /* 0x0 */")
    problems = cb.judge(list(kernels(f32_extra=extra).values()))
    assert problems == [p for p in problems if "scan_rows_kernel" in p] and len(problems) == 1
    assert "2 local-memory instructions" in problems[0]


@pytest.mark.parametrize("narrow", ["LDG.E.64", "LDG.E", "LD.E.128"])
def test_a_scan_kernel_without_128_bit_global_loads_fails(narrow):
    problems = cb.judge(list(kernels(f32_load=narrow).values()))
    assert len(problems) == 1 and "scan_rows_kernel" in problems[0] and "128-bit" in problems[0]


def test_opcode_kinds():
    assert cb.opcode_kind("LDG.E.128.CONSTANT")[2]
    assert cb.opcode_kind("LDG.E.ENL2.256")[2]  # Blackwell's 256-bit loads count as wide
    assert not cb.opcode_kind("LDG.E.64")[2]
    assert cb.opcode_kind("LDL.LU")[0] and cb.opcode_kind("STL.128")[0]
    assert not cb.opcode_kind("LDS.128")[0] and not cb.opcode_kind("LDS.128")[2]  # shared memory is fine


def test_a_cpu_only_build_has_nothing_to_check(tmp_path, capsys):
    (tmp_path / "_C.abi3.so").write_bytes(b"\x7fELF not really")
    (tmp_path / "_build_info.py").write_text("BUILD = {'cuda_kernels': False, 'cuda_arch_list': ''}\n")
    assert cb.main([str(tmp_path / "_C.abi3.so")]) == 0
    assert "no CUDA kernels in this build" in capsys.readouterr().out


def test_a_binary_without_device_code_fails_when_the_build_info_promises_kernels(tmp_path):
    if cb.find_tool("cuobjdump") is None:
        pytest.skip("no cuobjdump here")
    (tmp_path / "_C.abi3.so").write_bytes(b"\x7fELF not really")
    (tmp_path / "_build_info.py").write_text("BUILD = {'cuda_kernels': True, 'cuda_arch_list': '9.0'}\n")
    assert cb.main([str(tmp_path / "_C.abi3.so")]) == 1


def test_reads_the_real_build():
    """The parser against the installed cuobjdump's real output: every kernel of this build is
    found with resource usage for every SASS arch of its arch list, and with sm_90 SASS."""
    info = sae_ext.info.build_info()
    if not info["cuda_kernels"] or cb.find_tool("cuobjdump") is None:
        pytest.skip("a CPU-only build, or no cuobjdump here")
    import os
    import subprocess
    so = cb.default_binary()
    cuobjdump = cb.find_tool("cuobjdump")
    nvdisasm = cb.find_tool("nvdisasm", near=cuobjdump)
    if nvdisasm is None:
        pytest.skip("no nvdisasm here")
    env = dict(os.environ, PATH=os.path.dirname(nvdisasm) + os.pathsep + os.environ.get("PATH", ""))
    run = lambda *a: subprocess.run([cuobjdump, *a, so], capture_output=True, text=True, env=env).stdout  # noqa: E731
    ks = cb.build_kernels(run("-res-usage"), run("-sass", "-arch", "sm_90"))
    archs = {"sm_" + e.replace("+PTX", "").replace(".", "") for e in info["cuda_arch_list"].split(";") if e}
    assert ks and all(archs <= set(k.usage) and k.has_sass for k in ks), [(k.name, list(k.usage)) for k in ks]
    assert sum(k.ldg for k in ks) > 0, "no global loads parsed at all"
