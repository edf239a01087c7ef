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
CHAIN_BATCH = 512  # pass 2: chunk totals per shared-memory batch (kChainBatch)
SPLIT_MIN_CHUNKS = 16


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
    chain_blocks: int  # split: pass 2's grid, a block per row
    nchunks: int  # chunks of a row (packed rows: of the mean row)
    slots: int = 0  # split: workspace chunk slots

    def describe(self) -> str:
        if self.kind == "rows":
            return f"row per block, {self.warps} warp{'s' if self.warps > 1 else ''}"
        return "split (3 passes)"


def modelled_row_occupancy(regs: int) -> List[int]:
    """Blocks per SM of the rows kernel at W = 1, 2, 4, 8 on an sm_80 / sm_90 SM (64K
    registers allocated 8 per thread at a time, 64 warps, 32 blocks): modelled_row_occupancy
    in csrc/cuda/sae_schedule.h; on a GPU the launcher asks the runtime instead."""
    r = max(8, -(-regs // 8) * 8)
    return [max(1, min(65536 // (r * 32 * w), 64 // w, 32)) for w in (1, 2, 4, 8)]


def row_warps(B: int, nchunks: int, sm_count: int, occupancy: List[int]) -> int:
    """The launcher's W (row_warps in sae_schedule.h): W in 1, 2, 4, 8, at most the row's
    chunks rounded up to a power of two, minimising waves x rounds; ties to fewer waves."""
    best, best_key = 1, None
    n = max(nchunks, 1)
    for i, w in enumerate((1, 2, 4, 8)):
        if w > _pow2_at_least(n, MAX_ROW_WARPS):
            break
        per_wave = max(occupancy[i], 1) * max(sm_count, 1)
        waves = max(1, -(-B // per_wave))
        key = (waves * -(-n // w), waves)
        if best_key is None or key < best_key:
            best, best_key = w, key
    return best


def choose_schedule(B: int, T: int, sm_count: int, regs: int = 96, packed: bool = False) -> Schedule:
    """choose_schedule in csrc/cuda/sae_schedule.h, for a rows kernel of `regs` registers per
    thread. packed: B rows of N = T tokens in all, planned for their mean length."""
    n = -(-(T // B if packed and B else T) // CHUNK)
    if B < sm_count and n >= SPLIT_MIN_CHUNKS:
        slots = -(-T // CHUNK) + B if packed else B * n
        return Schedule("split", SPLIT_WARPS, -(-slots // SPLIT_WARPS), B, n, slots)
    w = row_warps(B, n, sm_count, modelled_row_occupancy(regs))
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
    chain_batch_sync_cycles: int = 200  # pass 2: two __syncthreads and the staging per batch
    round_sync_cycles: int = 120  # RowPerBlock: two __syncthreads and the leader's W-step chain
    l2_reuse_full: float = 0.5  # pass 3 re-reads from L2 when the inputs fit in this share of it
    l2_usable: float = 0.7  # share of the L2 that still holds pass 1's latest inputs at pass 3
    # Alternatives to what is built (the defaults are the kernels as built):
    thread_chain: bool = False  # pass 2 one thread per row, 16 totals per L2 round trip (before)
    forward_replay: bool = False  # pass 3 in pass 1's order (before)
    warps_rule: str = "occupancy"  # rows W: "occupancy" (built), "pow2" (before), "fastest" (model's best)


# Registers per thread of the forward kernels (bool mask, log-probs of the values' dtype), as
# `cuobjdump -res-usage` reads them in sm_90 code compiled from the kernels' sources (branch
# h-cuda2 at 50bf27e, nvcc 13.0, -O3 -fmad=false; scripts/check_cuda_binary.py prints them
# for any build).
REGS_SM90 = {
    "float32": dict(rows=102, pass1=86, pass3=96),
    "bfloat16": dict(rows=80, pass1=72, pass3=95),
    "float16": dict(rows=92, pass1=76, pass3=96),
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


def _pow2_warps(B: int, nchunks: int, sm_count: int) -> int:
    """The W rule before the occupancy one: B x W >= 32 warps per SM, a power of two."""
    want = -(-(sm_count * 32) // max(B, 1))
    return min(_pow2_at_least(want, MAX_ROW_WARPS), _pow2_at_least(max(nchunks, 1), MAX_ROW_WARPS))


def model(B: int, T: int, dev: Device, values: str = "float32", mask: str = "bool",
          cut: Optional[str] = None, direction: str = "forward", a: Optional[Assumptions] = None,
          packed: bool = False, critic: bool = False) -> Dict:
    """Modelled time of one call (in a loop of calls, so host and device overlap).
    packed: the B rows of T tokens come packed (cu_seqlens), B x T tokens in all, all of one
    length (the model's best case: the launcher plans for the mean length and knows no
    other). critic: with a critic chain (forward only): a second set of chunk totals and
    carries in the split workspace; the kernels take the generic loaders (REGS_SM90's
    `critic` row, where read)."""
    a = a or Assumptions()
    if critic and direction != "forward":
        raise ValueError("model: a critic chain is forward only")
    rd, wr = bytes_per_token(values, mask, cut, direction)
    tokens = B * T
    useful = tokens * (rd + wr)
    kinds = REGS_SM90.get("critic" if critic else values, REGS_SM90["float32"])
    regs = (lambda k: a.regs if a.regs is not None else kinds[k])
    sc = choose_schedule(B, tokens if packed else T, dev.sms, regs("rows"), packed)
    acc = 8 if "float64" in (values, cut or values) else 4  # the workspace's element
    maps = 2 if critic else 1  # sets of chunk totals and carries
    inflight = CHUNK * rd  # a warp's next chunk of inputs is in flight while it scans the current
    parts: Dict[str, float] = {}
    if sc.kind == "rows":
        def rows_time(w):
            t, _, lim = _stream_time(dev, a, sc.blocks, w, useful, inflight, regs("rows"))
            bps, _ = _resident_warps(dev, w, a, regs("rows"))
            # with one block per SM nobody hides its barriers and its leader's chain
            exposed = 1.0 if min(bps, -(-sc.blocks // dev.sms)) == 1 else 0.0
            return t + exposed * -(-sc.nchunks // w) * a.round_sync_cycles / dev.clock, lim, t

        if a.warps_rule == "pow2":
            sc.warps = _pow2_warps(B, sc.nchunks, dev.sms)
        elif a.warps_rule == "fastest":
            sc.warps = min((w for w in (1, 2, 4, 8) if w <= _pow2_at_least(sc.nchunks, MAX_ROW_WARPS)),
                           key=lambda w: rows_time(w)[0])
        elif a.warps_rule != "occupancy":
            raise ValueError(f"model: unknown warps_rule {a.warps_rule!r}")
        parts["scan"], limiter, t = rows_time(sc.warps)
        parts["fixed"] = a.kernel_fixed
        if a.kernel_fixed >= 0.1 * (t + a.kernel_fixed):
            limiter += f"; {a.kernel_fixed * 1e6:.1f} us fixed in {(t + a.kernel_fixed) * 1e6:.1f}"
        launches = 1
    else:
        inputs = tokens * rd
        if a.forward_replay:  # same order: a cyclic walk over more than the L2 finds nothing left of it
            l2_hit = min(1.0, max(0.0, (dev.l2 - inputs) / (dev.l2 * (1 - a.l2_reuse_full))))
        else:  # reverse order: the chunks pass 1 read last are the ones still in the L2
            l2_hit = min(1.0, a.l2_usable * dev.l2 / inputs) if inputs else 1.0
        p1, _, lim1 = _stream_time(dev, a, sc.blocks, sc.warps, inputs + sc.slots * 2 * maps * acc, inflight,
                                   regs("pass1"))
        p3, _, lim3 = _stream_time(dev, a, sc.blocks, sc.warps,
                                   inputs * (1 - l2_hit) + tokens * wr + sc.slots * maps * acc, inflight,
                                   regs("pass3"))
        steps = sc.nchunks * a.chain_step_cycles / dev.clock
        if a.thread_chain:  # one thread per row waits one L2 round trip per 16 totals
            chain = steps + -(-sc.nchunks // 16) * a.l2_latency
        else:  # one L2 round trip for the first batch; later batches' loads fly during the chain
            batches = -(-sc.nchunks // CHAIN_BATCH)
            batch_steps = min(sc.nchunks, CHAIN_BATCH) * a.chain_step_cycles / dev.clock
            chain = (steps + batches * a.chain_batch_sync_cycles / dev.clock + a.l2_latency
                     + (batches - 1) * max(0.0, a.l2_latency - batch_steps))
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
                packed=packed, critic=critic, schedule=sc.describe(), blocks=sc.blocks, warps=sc.warps,
                bytes_per_token=rd + wr, workspace_bytes=sc.slots * 3 * maps * acc,
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


VARIANT_SHAPES = [(256, 8192), (32, 131072), (1, 131072)]


def variant_rows(devices=("H200",), a: Optional[Assumptions] = None) -> List[Dict]:
    """float32 rows packed (cu_seqlens) and with a critic chain, next to the padded ones."""
    return [model(B, T, DEVICES[d], a=a, packed=p, critic=c) for d in devices for (B, T) in VARIANT_SHAPES
            for p, c in ((False, False), (True, False), (False, True))]


def table(rs: List[Dict], markdown: bool = False, variants: bool = False) -> str:
    hdr = ["device", "B x T", "inputs", "schedule", "B/token", "modelled us", "GB/s", "share of peak",
           "target", "limited by"]
    if variants:
        hdr[2:3] = ["inputs", "layout", "split workspace"]
    body = []
    for r in rs:
        row = [r["device"], f"{r['B']} x {r['T']}", r["values"], r["schedule"], str(r["bytes_per_token"]),
               f"{r['time_s'] * 1e6:.1f}", f"{r['gbps']:.0f}", f"{r['share']:.0%}", target(r["B"], r["T"]),
               r["limiter"]]
        if variants:
            layout = ", ".join(x for x, on in (("packed", r["packed"]), ("critic chain", r["critic"])) if on)
            ws = f"{r['workspace_bytes'] / 2**20:.1f} MiB" if r["workspace_bytes"] else "-"
            row[3:3] = [layout or "padded", ws]
        body.append(row)
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
    ap.add_argument("--thread-chain", action="store_true",
                    help="alternative: pass 2 one thread per row, 16 totals per L2 round trip (the kernels before)")
    ap.add_argument("--forward-replay", action="store_true",
                    help="alternative: pass 3 replays in pass 1's order (the kernels before)")
    ap.add_argument("--warps-rule", choices=("occupancy", "pow2", "fastest"), default="occupancy",
                    help="rows W: occupancy (built: waves x rounds), pow2 (before: B x W >= 32 warps/SM), "
                         "fastest (the W this model finds fastest)")
    ap.add_argument("--variants", action="store_true",
                    help="also model packed rows and a critic chain (a second table)")
    args = ap.parse_args()
    a = Assumptions(regs=args.regs, thread_chain=args.thread_chain, forward_replay=args.forward_replay,
                    warps_rule=args.warps_rule)
    print(table(rows(a=a), markdown=args.markdown))
    if args.variants:
        print()
        print(table(variant_rows(a=a), markdown=args.markdown, variants=True))


if __name__ == "__main__":
    main()
