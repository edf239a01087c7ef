"""The GPU benchmark's and the performance model's pieces that need no GPU (bench/gpu_model.py,
bench/cuda_bench.py): bytes per token, the schedule rule, the peak-bandwidth table, how many
input copies defeat the L2, and the model's own consistency."""
from __future__ import annotations

import sys
import types
from pathlib import Path

import pytest
import torch

BENCH = Path(__file__).resolve().parents[1] / "bench"
sys.path.insert(0, str(BENCH))
import cuda_bench  # noqa: E402
import gpu_model  # noqa: E402
import run as bench_run  # noqa: E402


@pytest.mark.parametrize("args,want", [
    (dict(values="float32"), (13, 8)),  # rewards, values, log-probs 4 + bool mask 1; two float32 outputs
    (dict(values="bfloat16"), (7, 8)),
    (dict(values="float16", mask="float16"), (8, 8)),
    (dict(values="float32", cut="bool"), (10, 8)),  # advantages_from_boundaries
    (dict(values="bfloat16", cut="float32"), (9, 8)),
    (dict(values="float64"), (25, 16)),  # float64 in, float64 out
    (dict(values="float32", cut="float64"), (17, 16)),
    (dict(values="float32", direction="adjoint"), (13, 8)),  # two float32 grads, log-probs, mask
    (dict(values="float32", cut="bfloat16", direction="adjoint", grads=1), (7, 8)),
    (dict(values="float32", cut="bool", direction="adjoint", grads=0), (2, 8)),
    (dict(values="float32", direction="boundaries"), (5, 1)),
])
def test_bytes_per_token(args, want):
    assert gpu_model.bytes_per_token(**args) == want


def test_bytes_per_token_names_a_bad_argument():
    with pytest.raises(ValueError, match="mask"):
        gpu_model.bytes_per_token(mask="float8")
    with pytest.raises(ValueError, match="direction"):
        gpu_model.bytes_per_token(direction="sideways")


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_the_benchmark_counts_the_bytes_the_model_counts(dtype):
    inp = bench_run.make_inputs(4, 300, getattr(torch, dtype), "cpu")
    nb = cuda_bench.op_bytes(inp)
    rd, wr = gpu_model.bytes_per_token(dtype, "bool")
    assert (nb["read"], nb["written"]) == (rd * 1200, wr * 1200)


@pytest.mark.parametrize("B,T,regs,kind,warps", [
    # 96 registers (the float32 rows kernel): 21, 10, 5, 2 blocks per SM at W = 1, 2, 4, 8
    (256, 8192, 96, "rows", 8),    # one wave at any W: fewest rounds
    (512, 16384, 96, "rows", 4),   # W = 8: 2 waves x 8 rounds, W = 4: 1 x 16; a tie goes to fewer waves
    (512, 16384, 72, "rows", 4),   # 72 (bfloat16): 3 blocks of 8 per SM, 396 rows a wave
    (4096, 1024, 96, "rows", 4),   # W = 1: 2 waves x 4 rounds, W = 4: 7 x 1
    (300_000, 9, 96, "rows", 1),   # one chunk
    (1, 3840, 96, "rows", 8),      # 15 chunks: too short to split
    (131, 4096, 96, "split", 8), (132, 4096, 96, "rows", 8),  # fewer rows than SMs, 16 chunks: split
    (32, 131072, 96, "split", 8), (8, 131072, 96, "split", 8), (1, 131072, 96, "split", 8),
])
def test_schedule_rule(B, T, regs, kind, warps):
    """The same cases as tests/cpp's row_warps case, which runs sae_schedule.h's rule."""
    sc = gpu_model.choose_schedule(B, T, 132, regs)
    assert (sc.kind, sc.warps) == (kind, warps)
    if kind == "split":
        assert sc.blocks == -(-B * sc.nchunks // 8) and sc.chain_blocks == B  # pass 2: a block per row
    else:
        assert sc.blocks == B


def test_packed_rows_are_planned_for_their_mean_length():
    sc = gpu_model.choose_schedule(32, 32 * 131072, 132, packed=True)
    assert (sc.kind, sc.nchunks, sc.slots) == ("split", 512, 32 * 512 + 32)
    assert gpu_model.choose_schedule(512, 512 * 16384, 132, 72, packed=True).warps == 4


def test_modelled_occupancy():
    assert gpu_model.modelled_row_occupancy(93) == [21, 10, 5, 2]
    assert gpu_model.modelled_row_occupancy(72) == [28, 14, 7, 3]
    assert gpu_model.modelled_row_occupancy(16) == [32, 32, 16, 8]  # warps and blocks bound it


@pytest.mark.parametrize("name,tbps", [
    ("NVIDIA H100 80GB HBM3", 3.35), ("NVIDIA H100 PCIe", 2.0), ("NVIDIA H100 NVL", 3.9), ("NVIDIA H200", 4.8),
    ("NVIDIA GH200 480GB", 4.0), ("NVIDIA A100-SXM4-40GB", 1.555), ("NVIDIA A100-SXM4-80GB", 2.039),
    ("NVIDIA A100 80GB PCIe", 1.935), ("NVIDIA L40S", 0.864), ("NVIDIA L4", 0.3), ("NVIDIA A10G", 0.6),
    ("NVIDIA A10", 0.6), ("Tesla T4", 0.32),
])
def test_known_peaks(name, tbps):
    bw, source = gpu_model.peak_hbm_bandwidth(name, 1, 1)
    assert bw == pytest.approx(tbps * 1e12) and source.startswith("table")


def test_unknown_device_peak_from_its_memory_clock_and_bus():
    bw, source = gpu_model.peak_hbm_bandwidth("NVIDIA RTX A6000", 8_001_000, 384)
    assert bw == pytest.approx(2 * 8.001e9 * 48) and "device's properties" in source
    assert gpu_model.peak_hbm_bandwidth("Some GPU")[0] is None


def test_model_device_for_the_modelled_ones_and_a_stand_in_for_the_rest():
    props = types.SimpleNamespace(multi_processor_count=114, clock_rate=1_755_000, regs_per_multiprocessor=65536,
                                  max_threads_per_multi_processor=2048)
    assert cuda_bench.model_device(props, "NVIDIA H100 80GB HBM3", 3.35e12, 50 << 20).name == "H100 SXM"
    assert cuda_bench.model_device(props, "NVIDIA H200", 4.8e12, 60 << 20).name == "H200"
    pcie = cuda_bench.model_device(props, "NVIDIA H100 PCIe", 2.0e12, 50 << 20)
    assert (pcie.sms, pcie.hbm, pcie.max_warps_per_sm) == (114, 2.0e12, 64)


def test_enough_input_copies_to_miss_the_l2():
    l2 = 60 << 20
    assert cuda_bench.copies_needed(2_752_512, l2) == 64  # 1 x 131072 float32: capped
    assert cuda_bench.copies_needed(44 << 20, l2) == 5  # 256 x 8192 float32
    assert cuda_bench.copies_needed(200 << 20, l2) == 1
    for fp in (1 << 20, 10 << 20, 30 << 20, 100 << 20):
        k = cuda_bench.copies_needed(fp, l2)
        assert k * fp >= 3 * l2 or k == cuda_bench.MAX_COPIES


def test_calls_per_repetition():
    assert cuda_bench.calls_per_repetition(10e-6, 2e-3) == 200
    assert cuda_bench.calls_per_repetition(1.0, 2e-3) == 1
    assert cuda_bench.calls_per_repetition(0.0) == 1000


def test_the_model_never_beats_its_own_ceiling_and_charges_the_split_its_second_read():
    a = gpu_model.Assumptions()
    for dev in gpu_model.DEVICES.values():
        for B, T in gpu_model.SHAPES + [(1, 8), (64, 64)]:
            for v in ("float32", "bfloat16"):
                m = gpu_model.model(B, T, dev, values=v)
                assert 0 < m["share"] <= a.eta + 1e-12, (dev.name, B, T, v)
                assert m["time_s"] >= m["host_s"] and m["time_s"] >= m["device_s"]
    h200 = gpu_model.DEVICES["H200"]
    # 64 x 131072 float32 (109 MB of inputs) is far from fitting the L2: the split reads its
    # inputs twice, the second time from HBM for all but what the L2 can still hold
    m = gpu_model.model(64, 131072, h200)
    rd, wr = gpu_model.bytes_per_token()
    inputs = 64 * 131072 * rd
    assert m["schedule"].startswith("split")
    hbm = inputs + 64 * 131072 * wr + inputs - a.l2_usable * h200.l2
    assert m["parts"]["pass1"] + m["parts"]["pass3"] >= hbm / (a.eta * h200.hbm) * 0.999
    # a tiny call is the host's: dispatch and one launch
    assert gpu_model.model(1, 8, h200)["limiter"].startswith("host")
    # what is built against the alternatives it replaced: each can only help
    for before in (dict(forward_replay=True), dict(thread_chain=True)):
        assert gpu_model.model(64, 131072, h200, a=gpu_model.Assumptions(**before))["time_s"] > m["time_s"]
    # the critic chain's second set of totals and carries doubles the split workspace
    crit = gpu_model.model(32, 131072, h200, critic=True)
    assert crit["workspace_bytes"] == 2 * gpu_model.model(32, 131072, h200)["workspace_bytes"] == 2 * 3 * 4 * 32 * 512


def test_the_model_table_prints_every_shape():
    out = gpu_model.table(gpu_model.rows(), markdown=True)
    for B, T in gpu_model.SHAPES:
        assert f"| {B} x {T} |" in out


def test_docs_quote_the_models_own_table():
    """docs/gpu.md's modelled table is `python bench/gpu_model.py --markdown`, verbatim."""
    doc = (BENCH.parent / "docs" / "gpu.md").read_text()
    assert gpu_model.table(gpu_model.rows(), markdown=True) in doc
