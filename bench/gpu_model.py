#!/usr/bin/env python
"""The CUDA kernels' performance model (MODELLED, not measured) and the numbers the GPU
benchmark needs: bytes moved per token, the schedule the launcher picks, known HBM peaks.

    python bench/gpu_model.py              # the model's table for H100 SXM and H200
    python bench/gpu_model.py --markdown   # the same as Markdown (docs/gpu.md)

Torch-free and GPU-free, so that python_tests can check it here. docs/gpu.md explains every
constant below and what the model leaves out.
"""
from __future__ import annotations

import argparse
import re
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

# ---------------------------------------------------------------------------------------
# storage

DTYPE_BYTES = {"float64": 8, "float32": 4, "bfloat16": 2, "float16": 2, "bool": 1, "uint8": 1,
               "int8": 1, "int16": 2, "int32": 4, "int64": 8}
CHUNK = 256  # tokens per warp step: 32 lanes x 8 (csrc/cuda/sae_warp.h kChunk)


def bytes_per_token(values: str = "float32", mask: str = "bool", cut: Optional[str] = None,
                    direction: str = "forward", grads: int = 2) -> Tuple[int, int]:
    """(bytes read, bytes written) per token by one pass of the op over the data.

    forward: rewards and values (`values` dtype), the cut source (`cut`: a float dtype for
    log-probs, default the values' dtype; "bool" for boundaries), the mask; writes
    advantages and returns (float32, or float64 when any float input is float64).
    adjoint: `grads` gradient tensors (0-2, in the outputs' dtype), mask and cut source;
    writes grad_rewards and grad_values. The op always reads the cut source, also in GAE
    mode (lam == lam_inner), where it cannot change a bit: sae_ext.gae passes the values
    as the cut, a second load of the same addresses that the L2 (usually the L1) serves.
    segmentation (direction="boundaries"): log-probs and mask in, bool out. Per-row
    scalars (bootstrap, grad_bootstrap) are left out: < 1 byte per token for T >= 8."""
    cut = cut or values
    for name, d in (("values", values), ("mask", mask), ("cut", cut)):
        if d not in DTYPE_BYTES:
            raise ValueError(f"bytes_per_token: unknown dtype {d!r} for `{name}`")
    if direction == "boundaries":
        return DTYPE_BYTES[cut] + DTYPE_BYTES[mask], 1
    wide = "float64" in (values, cut) if direction == "forward" else values == "float64"
    out = 8 if wide else 4
    if direction == "forward":
        return 2 * DTYPE_BYTES[values] + DTYPE_BYTES[cut] + DTYPE_BYTES[mask], 2 * out
    if direction == "adjoint":
        if not 0 <= grads <= 2:
            raise ValueError("bytes_per_token: `grads` must be 0, 1 or 2")
        return grads * out + DTYPE_BYTES[cut] + DTYPE_BYTES[mask], 2 * out
    raise ValueError(f"bytes_per_token: `direction` must be forward, adjoint or boundaries, got {direction!r}")


# ---------------------------------------------------------------------------------------
# the launcher's schedule (mirrors choose_schedule in csrc/cuda/sae_schedule.h)

MAX_ROW_WARPS = 8
SPLIT_WARPS = 8
CHAIN_THREADS = 128
TARGET_WARPS_PER_SM = 32
SPLIT_MIN_CHUNKS = 16
CHAIN_BATCH = 16  # pass 2 loads this many chunk totals, then chains them


def _pow2_at_least(x: int, cap: int) -> int:
    p = 1
    while p < x and p < cap:
        p <<= 1
    return p


@dataclass
class Schedule:
    kind: str  # "rows" (a block per row) or "split" (three passes)
    warps: int  # warps per block (rows: per row; split: passes 1 and 3)
    blocks: int
    chain_blocks: int
    nchunks: int

    def describe(self) -> str:
        if self.kind == "rows":
            return f"row per block, {self.warps} warp{'s' if self.warps > 1 else ''}"
        return "split (3 passes)"


def choose_schedule(B: int, T: int, sm_count: int) -> Schedule:
    n = -(-T // CHUNK)
    if B < sm_count and n >= SPLIT_MIN_CHUNKS:
        units = B * n
        return Schedule("split", SPLIT_WARPS, -(-units // SPLIT_WARPS), -(-B // CHAIN_THREADS), n)
    want = -(-(sm_count * TARGET_WARPS_PER_SM) // max(B, 1))
    w = min(_pow2_at_least(want, MAX_ROW_WARPS), _pow2_at_least(max(n, 1), MAX_ROW_WARPS))
    return Schedule("rows", w, B, 0, n)


# ---------------------------------------------------------------------------------------
# devices

@dataclass
class Device:
    name: str
    sms: int
    hbm: float  # bytes/s, the vendor's peak
    l2: int  # bytes
    clock: float  # Hz, SM boost clock
    regs_per_sm: int = 65536
    max_warps_per_sm: int = 64
    max_blocks_per_sm: int = 32


DEVICES = {
    "H100 SXM": Device("H100 SXM", 132, 3.35e12, 50 * 2**20, 1.98e9),
    "H200": Device("H200", 132, 4.8e12, 60 * 2**20, 1.98e9),  # torch reports 60 MB of L2 there
}

# Known peak HBM/GDDR bandwidths (TB/s, vendor figures) by torch.cuda.get_device_name();
# the first pattern that matches wins, so the specific ones come first.
PEAK_TBPS = [
    (r"GH200.*144G|GH200.*HBM3e", 4.9), (r"GH200", 4.0),
    (r"H200", 4.8), (r"H100.*NVL", 3.9), (r"H100.*PCIe", 2.0), (r"H100|H800", 3.35),
    (r"B300|GB300", 8.0), (r"B200|GB200", 8.0),
    (r"A100.*80GB.*PCIe|A100 80GB PCIe", 1.935), (r"A100.*80GB", 2.039), (r"A100", 1.555),
    (r"A800.*80GB", 2.039), (r"A30\b", 0.933), (r"A10G", 0.6), (r"A10\b", 0.6),
    (r"L40S|L40\b", 0.864), (r"L4\b", 0.3), (r"RTX PRO 6000", 1.792), (r"RTX 6000 Ada", 0.96),
    (r"RTX 5090", 1.792), (r"RTX 4090", 1.008), (r"RTX 3090", 0.936), (r"V100", 0.9), (r"T4\b", 0.32),
]


def peak_hbm_bandwidth(name: str, memory_clock_khz: Optional[int] = None,
                       bus_width_bits: Optional[int] = None) -> Tuple[Optional[float], str]:
    """(bytes/s, where the figure comes from) for a device: the table of known peaks by
    name, else 2 (double data rate) x memory clock x bus width from the device's
    properties, else (None, reason)."""
    for pattern, tbps in PEAK_TBPS:
        if re.search(pattern, name, re.I):
            return tbps * 1e12, f"table ({pattern!r}: {tbps} TB/s)"
    if memory_clock_khz and bus_width_bits:
        bw = 2 * memory_clock_khz * 1e3 * bus_width_bits / 8
        return bw, f"2 x {memory_clock_khz / 1e6:.3f} GHz x {bus_width_bits} bit from the device's properties"
    return None, f"unknown device {name!r} and no memory clock / bus width to compute it from"


# ---------------------------------------------------------------------------------------
# the model

@dataclass
class Assumptions:
    eta: float = 0.90  # share of peak a streaming kernel reaches with enough bytes in flight
    hbm_latency: float = 700e-9  # loaded HBM round trip (600-800 ns on H100/H200)
    l2_latency: float = 250e-9  # pass 2's loads hit the L2 (pass 1 just wrote them)
    kernel_fixed: float = 1.5e-6  # per kernel: start, the first round trip, the last stores' drain
    host_op: float = 5e-6  # per call on the host: dispatcher, checks, output allocation
    host_launch: float = 2.5e-6  # per kernel launch on the host (3-5 us is common in eager code)
    regs: Optional[int] = None  # registers per thread of every scan kernel; None: REGS_SM90
    chain_step_cycles: int = 8  # carry = a * c + b without FMA: dependent FMUL then FADD
    round_sync_cycles: int = 120  # RowPerBlock: two __syncthreads and the leader's W-step chain
    l2_reuse_full: float = 0.5  # pass 3 re-reads from L2 when the inputs fit in this share of it
    chain_batch: int = CHAIN_BATCH  # pass 2 waits one L2 round trip per this many chunks
    reverse_replay: bool = False  # pass 3 walks the chunks in pass 1's reverse order (L2 reuse)
    l2_usable: float = 0.7  # share of the L2 that still holds pass 1's latest inputs at pass 3
    best_warps: bool = False  # row per block: the W in 1, 2, 4, 8 the model finds fastest


# Registers per thread of the forward kernels (bool mask, log-probs of the values' dtype), as
# `cuobjdump -res-usage` reads them in sm_90 code compiled from the kernels' sources (branch
# h-cuda at 3fa6556, nvcc 13.0, -O3 -fmad=false; scripts/check_cuda_binary.py prints them
# for any build).
REGS_SM90 = {
    "float32": dict(rows=93, pass1=78, pass3=93),
    "bfloat16": dict(rows=72, pass1=64, pass3=90),
    "float16": dict(rows=80, pass1=70, pass3=96),
}


def regs_for(values: str, kernel: str, a: "Assumptions") -> int:
    if a.regs is not None:
        return a.regs
    return REGS_SM90.get(values, REGS_SM90["float32"])[kernel]


def _resident_warps(dev: Device, warps_per_block: int, a: Assumptions, regs: int = 64) -> Tuple[int, int]:
    """(blocks, warps) resident per SM for a block of `warps_per_block` warps, each thread
    holding `regs` registers (allocated 8 at a time)."""
    regs = -(-regs // 8) * 8
    by_regs = dev.regs_per_sm // (regs * 32 * warps_per_block)
    by_warps = dev.max_warps_per_sm // warps_per_block
    blocks = max(1, min(by_regs, by_warps, dev.max_blocks_per_sm))
    return blocks, blocks * warps_per_block


def _stream_time(dev: Device, a: Assumptions, blocks: int, warps_per_block: int, nbytes: float,
                 inflight_per_warp: float, regs: int) -> Tuple[float, float, str]:
    """Seconds to move nbytes with `blocks` blocks, wave by wave: each wave's bandwidth is the
    lesser of eta x peak and Little's law (bytes in flight / latency) over its SMs."""
    bps, _ = _resident_warps(dev, warps_per_block, a, regs)
    per_wave = dev.sms * bps
    waves = max(1, -(-blocks // per_wave))
    t, limiter = 0.0, "HBM bandwidth"
    for w in range(waves):
        in_wave = min(per_wave, blocks - w * per_wave)
        sms = min(dev.sms, in_wave)
        warps_per_sm = -(-in_wave // sms) * warps_per_block
        little = sms * warps_per_sm * inflight_per_warp / a.hbm_latency
        bw = min(a.eta * dev.hbm, little)
        if little < a.eta * dev.hbm:
            limiter = f"bytes in flight ({warps_per_sm} warps/SM on {sms} SMs)"
        t += nbytes * in_wave / blocks / bw
    return t, nbytes / t if t else 0.0, limiter


def model(B: int, T: int, dev: Device, values: str = "float32", mask: str = "bool",
          cut: Optional[str] = None, direction: str = "forward", a: Optional[Assumptions] = None) -> Dict:
    """Modelled time of one call (in a loop of calls, so host and device overlap)."""
    a = a or Assumptions()
    rd, wr = bytes_per_token(values, mask, cut, direction)
    tokens = B * T
    useful = tokens * (rd + wr)
    sc = choose_schedule(B, T, dev.sms)
    inflight = CHUNK * rd  # a warp's next chunk of inputs is in flight while it scans the current
    parts: Dict[str, float] = {}
    if sc.kind == "rows":
        regs = regs_for(values, "rows", a)

        def rows_time(w):
            t, _, lim = _stream_time(dev, a, sc.blocks, w, useful, inflight, regs)
            bps, _ = _resident_warps(dev, w, a, regs)
            # with one block per SM nobody hides its barriers and its leader's chain
            exposed = 1.0 if min(bps, -(-sc.blocks // dev.sms)) == 1 else 0.0
            return t + exposed * -(-sc.nchunks // w) * a.round_sync_cycles / dev.clock, lim, t

        if a.best_warps:  # what a rule that knows the occupancy would pick
            sc.warps = min((w for w in (1, 2, 4, 8) if w <= _pow2_at_least(sc.nchunks, MAX_ROW_WARPS)),
                           key=lambda w: rows_time(w)[0])
        parts["scan"], limiter, t = rows_time(sc.warps)
        parts["fixed"] = a.kernel_fixed
        if a.kernel_fixed >= 0.1 * (t + a.kernel_fixed):
            limiter += f"; {a.kernel_fixed * 1e6:.1f} us fixed in {(t + a.kernel_fixed) * 1e6:.1f}"
        launches = 1
    else:
        inputs = tokens * rd
        if a.reverse_replay:  # the chunks pass 1 read last are the ones still in the L2
            l2_hit = min(1.0, a.l2_usable * dev.l2 / inputs) if inputs else 1.0
        else:  # same order: a cyclic walk over more than the L2 finds nothing left of it
            l2_hit = min(1.0, max(0.0, (dev.l2 - inputs) / (dev.l2 * (1 - a.l2_reuse_full))))
        p1, _, lim1 = _stream_time(dev, a, sc.blocks, sc.warps, inputs + B * sc.nchunks * 8, inflight,
                                   regs_for(values, "pass1", a))
        p3, _, lim3 = _stream_time(dev, a, sc.blocks, sc.warps,
                                   inputs * (1 - l2_hit) + tokens * wr + B * sc.nchunks * 4, inflight,
                                   regs_for(values, "pass3", a))
        chain = (sc.nchunks * a.chain_step_cycles / dev.clock
                 + -(-sc.nchunks // a.chain_batch) * a.l2_latency)
        parts.update(pass1=p1, pass2=chain, pass3=p3, fixed=3 * a.kernel_fixed)
        total = sum(parts.values())
        why = []
        if l2_hit < 0.99:
            why.append("inputs read twice" + (f" (pass 3 ~{l2_hit:.0%} from L2)" if l2_hit > 0 else ""))
        if chain >= 0.2 * total:
            why.insert(0 if chain >= max(p1, p3) else len(why), f"pass 2's chain of {sc.nchunks}")
        if l2_hit >= 0.99:
            why.append("pass 3 from L2")
        if parts["fixed"] >= 0.2 * total:
            why.append("3 launches")
        limiter = ", ".join(why)
        launches = 3
    device = sum(parts.values())
    host = a.host_op + launches * a.host_launch + (1e-6 if sc.kind == "split" else 0.0)
    t = max(device, host)
    if host > device:
        limiter = "host: dispatch and launches"
    return dict(B=B, T=T, device=dev.name, values=values, mask=mask, direction=direction,
                schedule=sc.describe(), blocks=sc.blocks, warps=sc.warps, bytes_per_token=rd + wr,
                device_s=device, host_s=host, time_s=t, parts=parts, gbps=useful / t / 1e9,
                share=useful / t / dev.hbm, limiter=limiter)


SHAPES = [(256, 8192), (512, 16384), (4096, 1024), (32, 131072), (8, 131072), (1, 131072)]


def target(B: int, T: int) -> str:
    if (B, T) == (32, 131072):  # the issue's own figure for it, though it has 4M tokens
        return ">= 50%"
    if B >= 256 or B * T >= 4 * 2**20:
        return ">= 80%"
    if B == 1:
        return "~10 us, launch-bound"
    return "-"


def rows(devices=("H100 SXM", "H200"), dtypes=("float32", "bfloat16"), a: Optional[Assumptions] = None) -> List[Dict]:
    return [model(B, T, DEVICES[d], values=v, a=a) for d in devices for (B, T) in SHAPES for v in dtypes]


def table(rs: List[Dict], markdown: bool = False) -> str:
    hdr = ["device", "B x T", "inputs", "schedule", "B/token", "modelled us", "GB/s", "share of peak",
           "target", "limited by"]
    body = [[r["device"], f"{r['B']} x {r['T']}", r["values"], r["schedule"], str(r["bytes_per_token"]),
             f"{r['time_s'] * 1e6:.1f}", f"{r['gbps']:.0f}", f"{r['share']:.0%}", target(r["B"], r["T"]),
             r["limiter"]] for r in rs]
    if markdown:
        return "\n".join(["| " + " | ".join(hdr) + " |", "|" + "---|" * len(hdr)]
                         + ["| " + " | ".join(c) + " |" for c in body])
    w = [max(len(x[i]) for x in [hdr] + body) for i in range(len(hdr))]
    return "\n".join("  ".join(c.ljust(w[i]) for i, c in enumerate(x)).rstrip() for x in [hdr] + body)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--markdown", action="store_true")
    ap.add_argument("--regs", type=int, default=None,
                    help="registers per thread of every scan kernel (default: REGS_SM90, per kernel)")
    ap.add_argument("--chain-batch", type=int, default=CHAIN_BATCH,
                    help="chunks per L2 round trip in pass 2 (the launcher's is 16)")
    ap.add_argument("--reverse-replay", action="store_true",
                    help="pass 3 replays the chunks in pass 1's reverse order (not what the launcher does)")
    ap.add_argument("--best-warps", action="store_true",
                    help="row per block: the warps per block the model finds fastest (not the launcher's rule)")
    args = ap.parse_args()
    a = Assumptions(regs=args.regs, chain_batch=args.chain_batch, reverse_replay=args.reverse_replay,
                    best_warps=args.best_warps)
    print(table(rows(a=a), markdown=args.markdown))


if __name__ == "__main__":
    main()
