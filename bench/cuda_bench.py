"""`bench/run.py --device cuda`: the op on a GPU, timed so that the figures mean something.

- Many calls per CUDA event pair (the host's dispatch overlaps the GPU's work, as in a
  training loop), and the same calls captured in a CUDA graph and replayed (device time
  alone, no host dispatch).
- Nothing is served from the L2: the calls of one timed repetition cycle over enough copies
  of the inputs that together they exceed 3x the L2, and the L2 is flushed (a buffer of
  2x its size written) before every repetition.
- GB/s counts the bytes one pass of the op must move (inputs read once, outputs written
  once: bench/gpu_model.py's bytes_per_token); the share is of the device's peak HBM
  bandwidth (gpu_model.PEAK_TBPS by device name, else memory clock x bus width).
- The same GPU runs the verl-style loop and TorchRL's GAE (bench/baselines.py, written
  device-generic) as baselines, and a device copy of the op's bytes as the floor.
"""
from __future__ import annotations

import json
import math
import re
import statistics
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import baselines  # noqa: E402
import gpu_model  # noqa: E402

SIZES = [(256, 8192), (512, 16384), (4096, 1024), (32, 131072), (8, 131072), (1, 131072)]
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
L2_COPIES = 3.0  # the inputs cycled through in one repetition exceed this many L2s
MAX_COPIES = 64
MIN_L2 = 64 * 2**20  # where the device does not say: larger than any current L2
DEVICE = "cuda"  # a dry run of the plumbing may point this elsewhere


# ---------------------------------------------------------------------------------------
# pieces that need no GPU (python_tests/test_bench_cuda.py checks them here)

def copies_needed(footprint: int, l2_bytes: int, factor: float = L2_COPIES, cap: int = MAX_COPIES) -> int:
    """How many copies of a call's inputs and outputs to cycle through so that one
    repetition touches more than `factor` L2s (each call then finds its data in HBM)."""
    if footprint <= 0:
        return 1
    return max(1, min(cap, math.ceil(factor * l2_bytes / footprint)))


def calls_per_repetition(est_call_s: float, target_s: float = 2e-3, lo: int = 1, hi: int = 1000) -> int:
    """Calls between one event pair: enough for the repetition to last ~target_s."""
    if est_call_s <= 0:
        return hi
    return max(lo, min(hi, int(target_s / est_call_s)))


def op_bytes(inp: Dict[str, torch.Tensor]) -> Dict[str, int]:
    """Bytes one pass of the op must move for these inputs: each input read once, the two
    float32 outputs written once (from the tensors themselves; agrees with gpu_model)."""
    B, T = inp["rewards"].shape
    read = sum(t.numel() * t.element_size() for t in inp.values())
    out = 8 if any(t.dtype == torch.float64 for t in inp.values()) else 4
    return dict(read=read, written=2 * B * T * out)


def summarize(times_s: Sequence[float]) -> Dict[str, float]:
    ts = sorted(times_s)
    return dict(median=statistics.median(ts), min=ts[0], max=ts[-1], n=len(ts))


def model_device(props, name: str, peak: Optional[float], l2: int) -> gpu_model.Device:
    """The performance model's view of this device (gpu_model.DEVICES where it is one of them)."""
    for key in ("H200", "H100 SXM"):
        if re.search(key.split()[0], name) and (key != "H100 SXM" or not re.search("PCIe|NVL", name)):
            return gpu_model.DEVICES[key]
    clock = (getattr(props, "clock_rate", 0) or 1.5e6) * 1e3
    return gpu_model.Device(name, int(props.multi_processor_count), peak or 1e12, l2, clock,
                            regs_per_sm=int(getattr(props, "regs_per_multiprocessor", 65536) or 65536),
                            max_warps_per_sm=int(getattr(props, "max_threads_per_multi_processor", 2048) or 2048) // 32)


def device_facts(props, name: str) -> Dict:
    """Peak bandwidth (and its source), L2 size, SM count from torch's device properties."""
    peak, source = gpu_model.peak_hbm_bandwidth(name, getattr(props, "memory_clock_rate", None),
                                                getattr(props, "memory_bus_width", None))
    l2 = int(getattr(props, "L2_cache_size", 0) or 0)
    return dict(name=name, sms=int(props.multi_processor_count), capability=f"{props.major}.{props.minor}",
                l2_bytes=l2 or None, l2_source="device" if l2 else f"unknown, {MIN_L2 >> 20} MiB assumed",
                peak_bytes_per_s=peak, peak_source=source, total_memory=int(props.total_memory))


# ---------------------------------------------------------------------------------------
# timing on the GPU

class L2Flusher:
    def __init__(self, l2_bytes: int):
        self.buf = torch.empty(max(2 * l2_bytes, MIN_L2), dtype=torch.uint8, device=DEVICE)
        self.k = 0

    def __call__(self):
        self.k = (self.k + 1) % 251
        self.buf.fill_(self.k)  # a write of 2x the L2 evicts whatever the last call left there


def time_eager(calls: Sequence[Callable[[], object]], n: int, reps: int, flush: L2Flusher) -> List[float]:
    """Seconds per call for each repetition: n calls (cycling over `calls`) between one
    event pair, the L2 flushed before each repetition."""
    pairs = []
    for _ in range(reps):
        flush()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for i in range(n):
            calls[i % len(calls)]()
        end.record()
        pairs.append((start, end))
    torch.cuda.synchronize()
    return [s.elapsed_time(e) / 1e3 / n for s, e in pairs]


def time_graph(calls: Sequence[Callable[[], object]], n: int, reps: int, flush: L2Flusher) -> List[float]:
    """The same n calls captured once in a CUDA graph; each repetition is one replay."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for c in calls[: min(len(calls), 3)]:
            c()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for i in range(n):
            calls[i % len(calls)]()
    graph.replay()
    torch.cuda.synchronize()
    pairs = []
    for _ in range(reps):
        flush()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        graph.replay()
        end.record()
        pairs.append((start, end))
    torch.cuda.synchronize()
    del graph
    return [s.elapsed_time(e) / 1e3 / n for s, e in pairs]


def one_call_s(fn: Callable[[], object]) -> float:
    fn()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    fn()
    torch.cuda.synchronize()
    return time.perf_counter() - t0


# ---------------------------------------------------------------------------------------
# the sweep

def run(sizes=None, quick: bool = False, out_dir: Optional[Path] = None, name: Optional[str] = None,
        make_inputs=None, modes=None, max_call_s: float = 60.0) -> Dict:
    import sae_ext

    assert torch.cuda.is_available(), "--device cuda: no CUDA device is available"
    sizes = sizes or SIZES
    reps = 5 if quick else 15
    target = 1e-3 if quick else 3e-3
    baseline_max_s = min(max_call_s, 3.0 if quick else max_call_s)
    props = torch.cuda.get_device_properties(0)
    dev = device_facts(props, torch.cuda.get_device_name(0))
    l2 = dev["l2_bytes"] or MIN_L2
    flush = L2Flusher(l2)
    peak = dev["peak_bytes_per_s"]
    mdev = model_device(props, dev["name"], peak, l2)
    print(f"device: {dev['name']} ({dev['sms']} SMs, sm_{dev['capability'].replace('.', '')}), "
          f"L2 {l2 / 2**20:.0f} MiB ({dev['l2_source']}), peak {peak / 1e12 if peak else float('nan'):.3g} TB/s "
          f"({dev['peak_source']})")
    base = {"verl_loop": baselines.verl_style}
    trl, why = baselines.torchrl_gae()
    skipped_all = {}
    if trl is None:
        skipped_all["torchrl_gae"] = why
    else:
        base["torchrl_gae"] = trl

    records = []
    for B, T in sizes:
        for dname, dtype in DTYPES.items():
            for mode, kw in modes.items():
                inp = make_inputs(B, T, dtype, DEVICE)
                nb = op_bytes(inp)
                moved = nb["read"] + nb["written"]
                k = copies_needed(moved, l2)
                if k * moved > 0.5 * torch.cuda.mem_get_info()[0]:
                    k = max(1, int(0.5 * torch.cuda.mem_get_info()[0] // moved))
                sets = [inp] + [{n: t.clone() for n, t in inp.items()} for _ in range(k - 1)]
                op_calls = [lambda s=s: sae_ext.advantages(**s, **kw) for s in sets]
                half = (moved + 1) // 2  # a copy of half the bytes reads and writes `moved` in all
                srcs = [torch.empty(half, dtype=torch.uint8, device=DEVICE) for _ in range(k)]
                dsts = [torch.empty_like(s) for s in srcs]
                copy_calls = [lambda s=s, d=d: d.copy_(s) for s, d in zip(srcs, dsts)]
                est = one_call_s(op_calls[0])
                n = calls_per_repetition(est, target)
                row = dict(B=B, T=T, tokens=B * T, dtype=dname, mode=mode, bytes_read=nb["read"],
                           bytes_written=nb["written"], copies=k, calls_per_rep=n, times={}, skipped=dict(skipped_all),
                           max_abs_diff={})
                row["model_bytes_per_token"] = sum(gpu_model.bytes_per_token(dname, "bool"))
                m = gpu_model.model(B, T, mdev, values=dname)
                row["modelled"] = dict(device=mdev.name, time_s=m["time_s"], share=m["share"], schedule=m["schedule"])
                row["times"]["op"] = summarize(time_eager(op_calls, n, reps, flush))
                try:
                    row["times"]["op_graph"] = summarize(time_graph(op_calls, n, reps, flush))
                except Exception as e:  # noqa: BLE001 - report, keep going
                    row["skipped"]["op_graph"] = f"failed: {type(e).__name__}: {e}"
                nc = calls_per_repetition(one_call_s(copy_calls[0]), target)
                row["times"]["copy"] = summarize(time_eager(copy_calls, nc, reps, flush))
                ref = sae_ext.advantages(**inp, **kw)
                for bname, fn in base.items():
                    call = (lambda fn=fn: fn(**inp, **kw))
                    small = {n_: t[:, : min(T, 128)].contiguous() for n_, t in inp.items()}
                    fn(**small, **kw)
                    torch.cuda.synchronize()
                    t0 = time.perf_counter()
                    fn(**small, **kw)
                    torch.cuda.synchronize()
                    est_b = (time.perf_counter() - t0) * T / min(T, 128)
                    if est_b > baseline_max_s:
                        row["skipped"][bname] = f"estimated {est_b:.1f} s per call (> {baseline_max_s:.0f} s)"
                        continue
                    try:
                        out = call()
                        valid = inp["mask"]
                        row["max_abs_diff"][bname] = max(
                            float(((out[0].float() - ref[0]).abs() * valid).max()),
                            float(((out[1].float() - ref[1]).abs() * valid).max()))
                        del out
                        row["times"][bname] = summarize(time_eager([call], 1, 1 if est_b > 1 else 3, flush))
                    except Exception as e:  # noqa: BLE001
                        row["skipped"][bname] = f"failed: {type(e).__name__}: {e}"
                for key, t in row["times"].items():
                    if key in ("op", "op_graph", "copy"):
                        t["gbps"] = moved / t["median"] / 1e9
                        t["share_of_peak"] = moved / t["median"] / peak if peak else None
                records.append(row)
                print(format_row(row), flush=True)
                del inp, sets, op_calls, srcs, dsts, copy_calls, ref
                torch.cuda.empty_cache()

    result = dict(device=dev, machine=dict(torch=torch.__version__, cuda=torch.version.cuda,
                                           sae_ext=sae_ext.__version__),
                  method=dict(reps=reps, target_rep_s=target, l2_copies=L2_COPIES, quick=quick,
                              baseline_max_s=baseline_max_s),
                  modes=modes, records=records, created=time.strftime("%Y-%m-%d %H:%M:%S %Z"))
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        stem = name or ("cuda-quick" if quick else "cuda")
        (out_dir / f"{stem}.json").write_text(json.dumps(result, indent=1))
        print("\n" + markdown_table(result))
        try:
            plot(result, out_dir / f"{stem}.png")
            print(f"\nwrote {out_dir / (stem + '.json')} and {out_dir / (stem + '.png')}")
        except ImportError as e:
            print(f"\nwrote {out_dir / (stem + '.json')} (no plot: {e})")
    return result


# ---------------------------------------------------------------------------------------
# report

def _us(t):
    if t is None:
        return "-"
    return f"{t * 1e6:.1f} us" if t < 1e-3 else f"{t * 1e3:.2f} ms" if t < 1 else f"{t:.2f} s"


def format_row(r: Dict) -> str:
    t = r["times"]
    op, g, c = t["op"], t.get("op_graph"), t["copy"]
    share = lambda x: "-" if not x or x.get("share_of_peak") is None else f"{x['share_of_peak']:.0%}"  # noqa: E731
    base = "  ".join(f"{b} {_us(t[b]['median'])} ({t[b]['median'] / op['median']:.0f}x)" for b in ("verl_loop", "torchrl_gae")
                     if b in t)
    return (f"{r['B']:>5} x {r['T']:<6} {r['dtype']:8} {r['mode']}: op {_us(op['median'])} "
            f"({op['gbps']:.0f} GB/s, {share(op)} of peak), graph {_us(g['median']) if g else '-'} ({share(g)}), "
            f"copy {_us(c['median'])} ({share(c)})  {base}")


def markdown_table(res: Dict) -> str:
    lines = ["| B x T | inputs | mode | op | GB/s | share of peak | graph replay | share | copy | copy share "
             "| modelled share | verl loop (x op) | TorchRL GAE (x op) |", "|" + "---|" * 13]
    for r in res["records"]:
        t = r["times"]
        op, g, c = t["op"], t.get("op_graph"), t["copy"]
        sh = lambda x: "-" if not x or x.get("share_of_peak") is None else f"{x['share_of_peak']:.0%}"  # noqa: E731
        bl = [f"{_us(t[b]['median'])} ({t[b]['median'] / op['median']:.0f}x)" if b in t else "skipped"
              for b in ("verl_loop", "torchrl_gae")]
        lines.append(f"| {r['B']} x {r['T']} | {r['dtype']} | {r['mode']} | {_us(op['median'])} | {op['gbps']:.0f} | "
                     f"{sh(op)} | {_us(g['median']) if g else '-'} | {sh(g)} | {_us(c['median'])} | {sh(c)} | "
                     f"{r['modelled']['share']:.0%} ({r['modelled']['device']}) | " + " | ".join(bl) + " |")
    return "\n".join(lines)


def plot(res: Dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(13, 5))
    labels = sorted({(r["B"], r["T"]) for r in res["records"]}, key=lambda s: s[0] * s[1])
    x = range(len(labels))
    for ax, mode in zip(axes, res["modes"]):
        for j, (dname, key, style) in enumerate([(d, k, s) for d in DTYPES for k, s in
                                                 (("op", "o-"), ("op_graph", "s--"), ("copy", "x:"))]):
            ys = []
            for B, T in labels:
                r = next((r for r in res["records"] if (r["B"], r["T"]) == (B, T) and r["dtype"] == dname
                          and r["mode"] == mode), None)
                v = r["times"].get(key) if r else None
                ys.append(100 * v["share_of_peak"] if v and v.get("share_of_peak") is not None else float("nan"))
            ax.plot(list(x), ys, style, label=f"{key} ({dname})", color=f"C{j}")
        for dname, style in zip(DTYPES, ("-", "--")):
            ys = [next((100 * r["modelled"]["share"] for r in res["records"] if (r["B"], r["T"]) == s
                        and r["dtype"] == dname and r["mode"] == mode), float("nan")) for s in labels]
            ax.plot(list(x), ys, style, color="0.6", lw=1, label=f"modelled ({dname})")
        ax.set_xticks(list(x))
        ax.set_xticklabels([f"{B}x{T}" for B, T in labels], rotation=30, fontsize=8)
        ax.set_ylim(0, 100)
        ax.set_ylabel("share of peak HBM bandwidth (%)")
        ax.set_title(f"{mode.upper()} mode")
        ax.grid(True, alpha=0.3)
    axes[0].legend(fontsize=7)
    d = res["device"]
    fig.suptitle(f"torch.ops.sae.advantages on {d['name']} (peak {d['peak_source']}), L2 flushed, "
                 f"torch {res['machine']['torch']}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
