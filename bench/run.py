#!/usr/bin/env python
"""Benchmark sweep: torch.ops.sae.advantages against Python-loop baselines and a copy floor.

    python bench/run.py [--quick] [--device cpu|cuda] [--out bench/results]

Prints a table and writes results/<name>.json and results/<name>.png (time vs tokens,
log-log). See bench/README.md for what each column means. Not part of the unit tests.
--device cuda runs bench/cuda_bench.py's sweep (its own timing method; see its docstring).
"""
from __future__ import annotations

import argparse
import gc
import json
import math
import os
import platform
import sys
import time
from pathlib import Path

import torch
from torch.utils import benchmark as tb

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import baselines  # noqa: E402

import sae_ext  # noqa: E402  (registers torch.ops.sae.*)

SIZES = [(8, 1024), (64, 4096), (256, 8192), (512, 16384), (1, 131072)]
QUICK_SIZES = [(8, 1024), (64, 4096), (256, 8192)]
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
MODES = {
    "sae": dict(gamma=1.0, lam=0.5, lam_inner=1.0, threshold=0.2),
    "gae": dict(gamma=1.0, lam=0.95, lam_inner=0.95, threshold=0.2),
}
MAX_CALL_S = 60.0  # a baseline whose single call is estimated longer is skipped
ROUNDS = 5  # the op and the floors are timed in this many interleaved rounds


# ---------------------------------------------------------------------------------------
# progress bar: tqdm when installed, else a plain text bar

class _TextBar:
    def __init__(self, total, desc=""):
        self.total, self.n, self.desc, self.post = total, 0, desc, ""
        self._draw()

    def _draw(self):
        w = 30
        k = int(w * self.n / max(1, self.total))
        sys.stderr.write(f"\r{self.desc} [{'#' * k}{'.' * (w - k)}] {self.n}/{self.total} {self.post[:60]:60s}")
        sys.stderr.flush()

    def set_postfix_str(self, s):
        self.post = s
        self._draw()

    def update(self, k=1):
        self.n += k
        self._draw()

    def close(self):
        sys.stderr.write("\n")


def progress(total, desc):
    try:
        from tqdm import tqdm
        return tqdm(total=total, desc=desc, dynamic_ncols=True, leave=True)
    except ImportError:
        return _TextBar(total, desc)


# ---------------------------------------------------------------------------------------
# inputs and byte counts

def make_inputs(B, T, dtype, device, seed=0):
    """RLVR-like rows: a valid prefix of random length (trailing padding), the reward on
    the last valid token, values ~ N(0.5, 0.2), log-probs mostly near 0 with a few
    low-probability tokens (about 4% below log 0.2)."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(max(1, T // 2), T + 1, (B,), generator=g)
    mask = torch.arange(T).unsqueeze(0) < lengths.unsqueeze(1)
    rewards = torch.zeros(B, T)
    rewards[torch.arange(B), lengths - 1] = torch.randint(0, 2, (B,), generator=g).float()
    values = 0.5 + 0.2 * torch.randn(B, T, generator=g)
    logprobs = -torch.empty(B, T).exponential_(2.0, generator=g)
    to = dict(device=device, dtype=dtype)
    return dict(rewards=rewards.to(**to), values=values.to(**to), logprobs=logprobs.to(**to),
                mask=mask.to(device))


def bytes_moved(inp, B, T):
    read = sum(t.numel() * t.element_size() for t in inp.values())
    written = 2 * B * T * 4  # advantages and returns, float32
    return read, written


# ---------------------------------------------------------------------------------------
# timing

def sync(device):
    if device == "cuda":
        torch.cuda.synchronize()


def time_call(fn, device, min_run_time, slow=False):
    """Median seconds per call. CPU: torch.utils.benchmark blocked_autorange (with the
    current thread count; Timer's default is 1). CUDA: events around a warmed-up call."""
    if device == "cuda":
        for _ in range(3):
            fn()
        torch.cuda.synchronize()
        times = []
        for _ in range(1 if slow else 20):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end) / 1e3)
        times.sort()
        return times[len(times) // 2]
    timer = tb.Timer(stmt="fn()", globals={"fn": fn}, num_threads=torch.get_num_threads())
    if slow:  # one call already takes long (> 1 s): time a single call
        return timer.timeit(1).median
    return timer.blocked_autorange(min_run_time=min_run_time).median


def time_cuda_graph(op, inp, kw):
    """Replay of a CUDA graph holding one op call (small sizes: launch overhead)."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(3):
            op(**inp, **kw)
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        op(**inp, **kw)
    return time_call(graph.replay, "cuda", 0)


def estimate_seconds(fn, inp, B, T, device, t_small):
    """Time one call on the first t_small tokens of each row and scale by T / t_small
    (the Python loops cost per step; numba per token)."""
    ts = min(T, t_small)
    small = {k: v[:, :ts].contiguous() for k, v in inp.items()}
    fn(**small)  # warm-up (numba compiles here)
    sync(device)
    t0 = time.perf_counter()
    fn(**small)
    sync(device)
    return (time.perf_counter() - t0) * T / ts


# ---------------------------------------------------------------------------------------
# memory: peak allocation inside our op beyond its outputs

def op_alloc_extra_bytes(inp, kw):
    """Bytes our op allocates through torch's allocator beyond its two outputs: every
    allocation inside the call, from torch.profiler's memory accounting (temporaries freed
    before returning would still be counted)."""
    from torch.profiler import ProfilerActivity, profile

    B, T = inp["rewards"].shape
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        outs = sae_ext.advantages(**inp, **kw)
    allocated = sum(max(0, e.self_cpu_memory_usage) for e in prof.events())
    del outs
    return allocated - 2 * B * T * 4


def op_rss_extra_bytes(B, T):
    """Peak resident memory our op adds beyond its outputs, measured in a fresh process
    after one small warm-up call (code pages, thread pool) and with free heap memory handed
    back (so that the outputs' pages are new): the high-water mark (VmHWM, reset through
    /proc/self/clear_refs) during one call, minus the resident size before it and the
    outputs' bytes. This also sees malloc'd and page-touching temporaries; stack buffers
    of a few tens of KiB per thread are within the noise. None where /proc is missing."""
    import subprocess
    code = (
        "import gc, json, sys, torch; sys.path.insert(0, %r); import run; import sae_ext\n"
        "sae_ext.advantages(**run.make_inputs(64, 256, torch.float32, 'cpu'), **run.MODES['sae'])  # code, threads\n"
        "inp = run.make_inputs(%d, %d, torch.float32, 'cpu', seed=1); gc.collect()\n"
        "import ctypes; ctypes.CDLL('libc.so.6').malloc_trim(0)  # no free memory left resident\n"
        "st = lambda k: int([l for l in open('/proc/self/status') if l.startswith(k)][0].split()[1]) * 1024\n"
        "open('/proc/self/clear_refs', 'w').write('5'); before = st('VmRSS:')\n"
        "out = sae_ext.advantages(**inp, **run.MODES['sae'])\n"
        "print(json.dumps(st('VmHWM:') - before - 2 * %d * %d * 4))\n" % (str(HERE), B, T, B, T))
    try:
        res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
        return int(res.stdout.strip().splitlines()[-1])
    except Exception:  # noqa: BLE001 - not Linux, or the probe failed: no number
        return None


# ---------------------------------------------------------------------------------------
# machine

def machine_info(device):
    info = dict(python=platform.python_version(), torch=torch.__version__, platform=platform.platform(),
                threads=torch.get_num_threads(), device=device)
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
    except OSError:
        info["cpu"] = platform.processor()
    info["cpus"] = os.cpu_count()
    so = Path(sae_ext._C.__file__)
    info["sae_ext"] = str(so)
    # at::parallel_for only runs in parallel when the extension was built with -fopenmp
    info["sae_ext_openmp"] = b"libgomp" in so.read_bytes()
    if device == "cuda":
        info["gpu"] = torch.cuda.get_device_name()
    try:  # numpy asks for transparent huge pages on arrays >= 4 MiB (the numba baselines' outputs)
        from numpy._core.multiarray import _get_madvise_hugepage
        info["numpy_madvise_hugepage"] = bool(_get_madvise_hugepage())
    except Exception:  # noqa: BLE001
        info["numpy_madvise_hugepage"] = None
    info["torch_thp_alloc"] = os.environ.get("THP_MEM_ALLOC_ENABLE") == "1"
    for mod in ("numba", "torchrl", "numpy"):
        try:
            info[mod] = __import__(mod).__version__
        except Exception:  # noqa: BLE001
            info[mod] = None
    return info


# ---------------------------------------------------------------------------------------
# the sweep

def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="3 sizes, short timings (about a minute)")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--out", default=str(HERE / "results"), help="folder for the JSON and the PNG")
    ap.add_argument("--name", default=None, help="file name stem (default: <device>[-quick])")
    ap.add_argument("--sizes", default=None, help="comma-separated BxT list instead of the default sweep")
    ap.add_argument("--report", default=None, metavar="JSON",
                    help="print the table of an earlier run and redraw its plot, then exit")
    ap.add_argument("--markdown", action="store_true", help="with --report: print a Markdown table")
    args = ap.parse_args()
    if args.report:
        res = json.loads(Path(args.report).read_text())
        if isinstance(res.get("device"), dict):  # a --device cuda run (bench/cuda_bench.py)
            import cuda_bench
            print(cuda_bench.markdown_table(res))
            cuda_bench.plot(res, Path(args.report).with_suffix(".png"))
            return
        if args.markdown:
            print(markdown_table(res))
            return
        print_report(res)
        plot(res, Path(args.report).with_suffix(".png"))
        return
    device = args.device
    if device == "cuda" and not torch.cuda.is_available():
        sys.exit("--device cuda: no CUDA device is available")
    sizes = QUICK_SIZES if args.quick else SIZES
    if args.sizes:
        sizes = [tuple(int(x) for x in s.lower().split("x")) for s in args.sizes.split(",")]
    if device == "cuda":  # its own method: many calls per event pair, L2 flushed, share of peak
        import cuda_bench
        cuda_bench.run(sizes=[tuple(s) for s in sizes] if args.sizes else None, quick=args.quick,
                       out_dir=Path(args.out), name=args.name, make_inputs=make_inputs, modes=MODES,
                       max_call_s=MAX_CALL_S)
        return
    min_run = 0.05 if args.quick else 0.3

    methods = {"op": lambda **a: sae_ext.advantages(**a)}
    skip_all = {}
    methods["verl_loop"] = baselines.verl_style
    methods["openrlhf_loop"] = baselines.openrlhf_style
    trl, why = baselines.torchrl_gae()
    if trl is None:
        skip_all["torchrl_gae"] = why
    else:
        methods["torchrl_gae"] = trl
    nb_serial, nb_par, why = baselines.numba_loops()
    if nb_serial is None:
        skip_all["numba_serial"] = skip_all["numba_prange"] = why
    elif device != "cpu":
        skip_all["numba_serial"] = skip_all["numba_prange"] = "numba baselines run on CPU tensors only"
    else:
        import numba
        numba.set_num_threads(torch.get_num_threads())
        methods["numba_serial"] = nb_serial
        methods["numba_prange"] = nb_par
    for name, why in skip_all.items():
        print(f"skipping {name}: {why}")

    info = machine_info(device)
    if not info["sae_ext_openmp"]:
        print("note: sae_ext was built without OpenMP, so the op runs on one thread whatever "
              "torch.get_num_threads() says (rebuild with this repository's setup.py, which adds -fopenmp)")

    configs = [(B, T, d, m) for (B, T) in sizes for d in DTYPES for m in MODES]
    bar = progress(len(configs) * (len(methods) + 2) + len(sizes) * 2, "bench")
    records = []
    for B, T, dname, mode in configs:
        kw = MODES[mode]
        inp = make_inputs(B, T, DTYPES[dname], device)
        read, written = bytes_moved(inp, B, T)
        floors = {
            # one copy moving the op's bytes: (read + written) / 2 read once and written once
            "floor_copy": torch.empty((read + written) // 2, dtype=torch.uint8, device=device),
            # the yardstick: a copy of the bytes the op reads
            "copy_read": torch.empty(read, dtype=torch.uint8, device=device),
        }
        ref = sae_ext.advantages(**inp, **kw)
        row = dict(B=B, T=T, tokens=B * T, dtype=dname, mode=mode, bytes_read=read, bytes_written=written,
                   times={}, skipped=dict(skip_all), max_abs_diff={})
        # The op and the floors are timed in interleaved rounds and each gets the median of
        # its round medians, so that their ratio is not skewed when the load from other
        # jobs on a shared machine changes between one measurement and the next.
        fast = {name: buf.clone for name, buf in floors.items()}
        fast["op"] = lambda: methods["op"](**inp, **kw)
        rounds = {name: [] for name in fast}
        for i in range(ROUNDS):
            bar.set_postfix_str(f"{B}x{T} {dname} {mode} op and floors, round {i + 1}/{ROUNDS}")
            for name, fn in fast.items():
                rounds[name].append(time_call(fn, device, min_run / ROUNDS))
        for name, ts in rounds.items():
            row["times"][name] = sorted(ts)[len(ts) // 2]
        row["rounds"] = rounds
        bar.update(len(floors))
        for name, fn in methods.items():
            if name == "op":
                bar.update()
                continue
            bar.set_postfix_str(f"{B}x{T} {dname} {mode} {name}")
            call = (lambda fn=fn: fn(**inp, **kw))
            slow = False
            est = estimate_seconds(lambda **a: fn(**a, **kw), inp, B, T, device,
                                   1024 if name.startswith("numba") else 128)
            need = 12 * B * T * 4  # generous: the loops' temporaries and stacked lists
            avail = _available_memory(device)
            if est > MAX_CALL_S:
                row["skipped"][name] = f"estimated {est:.0f} s per call (> {MAX_CALL_S:.0f} s)"
                bar.update()
                continue
            if avail is not None and need > 0.5 * avail:
                row["skipped"][name] = f"needs ~{need / 2**30:.1f} GiB, {avail / 2**30:.1f} GiB free"
                bar.update()
                continue
            slow = est > 1.0
            try:
                out = call()
                sync(device)
                valid = inp["mask"]
                row["max_abs_diff"][name] = max(
                    float(((out[0].float() - ref[0]).abs() * valid).max()),
                    float(((out[1].float() - ref[1]).abs() * valid).max()))
                del out
                row["times"][name] = time_call(call, device, min_run, slow=slow)
            except Exception as e:  # noqa: BLE001 - report, keep going
                row["skipped"][name] = f"failed: {type(e).__name__}: {e}"
            bar.update()
        if device == "cuda" and B * T <= 64 * 4096:
            try:
                row["times"]["op_cuda_graph"] = time_cuda_graph(sae_ext.advantages, inp, kw)
            except Exception as e:  # noqa: BLE001 - e.g. the op is not capturable
                row["skipped"]["op_cuda_graph"] = f"failed: {type(e).__name__}: {e}"
        records.append(row)
        del inp, floors, ref
        gc.collect()

    # thread scaling of our op (CPU): float32, SAE mode
    scaling = []
    if device == "cpu":
        nthreads = torch.get_num_threads()
        for B, T in sizes:
            inp = make_inputs(B, T, torch.float32, device)
            entry = dict(B=B, T=T)
            for th in sorted({1, min(2, nthreads), nthreads}):
                torch.set_num_threads(th)
                bar.set_postfix_str(f"threads {th} {B}x{T}")
                entry[f"threads_{th}"] = time_call(lambda: sae_ext.advantages(**inp, **MODES["sae"]), device, min_run)
            torch.set_num_threads(nthreads)
            scaling.append(entry)
            bar.update(2)
            del inp
    else:
        bar.update(2 * len(sizes))
    bar.close()

    mem = None
    if device == "cpu":
        mB, mT = (64, 4096) if args.quick else (256, 8192)
        inp = make_inputs(mB, mT, torch.float32, device, seed=1)
        alloc_extra = op_alloc_extra_bytes(inp, MODES["sae"])
        rss_extra = op_rss_extra_bytes(mB, mT)
        mem = dict(B=mB, T=mT, allocator_extra_bytes=alloc_extra, rss_extra_bytes=rss_extra,
                   output_bytes=2 * mB * mT * 4)
        del inp

    result = dict(machine=info, quick=args.quick, max_call_s=MAX_CALL_S, modes=MODES,
                  methods=list(methods) + list(skip_all), records=records, thread_scaling=scaling,
                  op_memory=mem, created=time.strftime("%Y-%m-%d %H:%M:%S %Z"))
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = args.name or (device + ("-quick" if args.quick else ""))
    (out_dir / f"{stem}.json").write_text(json.dumps(result, indent=1))
    print_report(result)
    try:
        plot(result, out_dir / f"{stem}.png")
        print(f"\nwrote {out_dir / (stem + '.json')} and {out_dir / (stem + '.png')}")
    except ImportError as e:
        print(f"\nwrote {out_dir / (stem + '.json')} (no plot: {e})")


def _available_memory(device):
    if device == "cuda":
        free, _ = torch.cuda.mem_get_info()
        return free
    try:
        import psutil
        return psutil.virtual_memory().available
    except ImportError:
        return None


# ---------------------------------------------------------------------------------------
# report

BASELINES = ["verl_loop", "openrlhf_loop", "torchrl_gae", "numba_serial", "numba_prange"]


def _ms(s):
    return "-" if s is None else (f"{s * 1e3:.3g}" if s * 1e3 < 100 else f"{s * 1e3:.0f}")


def print_report(res):
    m = res["machine"]
    print(f"\nmachine: {m.get('cpu')} ({m['cpus']} cpus, torch threads {m['threads']}), torch {m['torch']}, "
          f"python {m['python']}, device {m['device']}" + (f" ({m['gpu']})" if m.get("gpu") else "")
          + f"; sae_ext OpenMP: {m['sae_ext_openmp']}")
    print("times are medians in ms; floor = clone of (read+written)/2 bytes, copy(read) = clone of the bytes "
          "read; x op = baseline time / op time")
    hdr = (f"{'B x T':>10} {'dtype':8} {'mode':4} | {'op':>7} {'floor':>7} {'op/floor':>8} {'copy(rd)':>8} "
           f"{'op/copy':>7} {'GB/s':>6} |" + "".join(f" {b[:13]:>13}" for b in BASELINES))
    print(hdr)
    print("-" * len(hdr))
    for r in res["records"]:
        t = r["times"]
        op = t.get("op")
        cells = []
        for b in BASELINES:
            if b in t and op:
                cells.append(f"{_ms(t[b])} ({t[b] / op:.0f}x)" if t[b] / op >= 10 else f"{_ms(t[b])} ({t[b] / op:.1f}x)")
            else:
                cells.append("skip")
        gbps = (r["bytes_read"] + r["bytes_written"]) / op / 1e9 if op else 0
        print(f"{r['B']:>4} x {r['T']:<5} {r['dtype']:8} {r['mode']:4} | {_ms(op):>7} {_ms(t['floor_copy']):>7} "
              f"{op / t['floor_copy']:8.2f} {_ms(t['copy_read']):>8} {op / t['copy_read']:7.2f} {gbps:6.1f} |"
              + "".join(f" {c:>13}" for c in cells))
    skipped = {(r["B"], r["T"], k, v) for r in res["records"] for k, v in r["skipped"].items()}
    if skipped:
        print("\nskipped:")
        seen = set()
        for B, T, k, v in sorted(skipped):
            key = (k, v) if k in {"torchrl_gae", "numba_serial", "numba_prange"} and "estimated" not in v else (B, T, k, v)
            if key in seen:
                continue
            seen.add(key)
            print(f"  {k}: {v}" if len(key) == 2 else f"  {k} at {B}x{T}: {v}")
    worst = max((d, k, r["B"], r["T"], r["dtype"], r["mode"]) for r in res["records"]
                for k, d in r["max_abs_diff"].items() if k != "op")
    print(f"\nbaselines agree with the op: largest |difference| on valid tokens {worst[0]:.2e} "
          f"({worst[1]}, {worst[2]}x{worst[3]} {worst[4]} {worst[5]})")
    if res["thread_scaling"]:
        print("\nour op, float32 SAE, ms by thread count:")
        for e in res["thread_scaling"]:
            ths = sorted(int(k.split("_")[1]) for k in e if k.startswith("threads_"))
            print(f"  {e['B']:>4} x {e['T']:<6}" + "".join(f"  {th} thr {_ms(e[f'threads_{th}']):>6}" for th in ths)
                  + (f"  speedup {e[f'threads_{ths[0]}'] / e[f'threads_{ths[-1]}']:.2f}x" if len(ths) > 1 else ""))
    if res["op_memory"]:
        mm = res["op_memory"]
        rss = "n/a" if mm["rss_extra_bytes"] is None else f"{mm['rss_extra_bytes'] / 2**20:+.2f} MiB"
        print(f"\nour op's memory beyond its outputs ({mm['output_bytes'] / 2**20:.0f} MiB) at {mm['B']}x{mm['T']}: "
              f"allocated through torch {mm['allocator_extra_bytes'] / 2**20:+.2f} MiB, peak RSS {rss}")


def markdown_table(res):
    """The report's main table as Markdown (for bench/README.md)."""
    names = [b for b in BASELINES if any(b in r["times"] for r in res["records"])]
    lines = ["| B x T | inputs | mode | op ms | floor ms | op / floor | copy(rd) ms | op / copy(rd) | GB/s | "
             + " | ".join(f"{b} ms (x op)" for b in names) + " |",
             "|" + "---|" * (9 + len(names))]
    for r in res["records"]:
        t = r["times"]
        op = t["op"]
        gbps = (r["bytes_read"] + r["bytes_written"]) / op / 1e9
        cells = [(f"{_ms(t[b])} ({t[b] / op:.0f}x)" if t[b] / op >= 100 else f"{_ms(t[b])} ({t[b] / op:.3g}x)")
                 if b in t else "skipped" for b in names]
        lines.append(f"| {r['B']} x {r['T']} | {r['dtype']} | {r['mode']} | {_ms(op)} | {_ms(t['floor_copy'])} | "
                     f"{op / t['floor_copy']:.2f} | {_ms(t['copy_read'])} | {op / t['copy_read']:.2f} | {gbps:.1f} | "
                     + " | ".join(cells) + " |")
    if res["thread_scaling"]:
        lines += ["", "Our op, float32 SAE, by thread count (ms): " + "; ".join(
            f"{e['B']}x{e['T']}: " + ", ".join(f"{k.split('_')[1]} thr {_ms(v)}" for k, v in e.items()
                                              if k.startswith("threads_")) for e in res["thread_scaling"]) + "."]
    if res["op_memory"]:
        mm = res["op_memory"]
        rss = "n/a" if mm["rss_extra_bytes"] is None else f"{mm['rss_extra_bytes'] / 2**10:+.0f} KiB"
        lines += ["", f"Op memory beyond its {mm['output_bytes'] / 2**20:.0f} MiB of outputs at {mm['B']}x{mm['T']}: "
                      f"allocated through torch {mm['allocator_extra_bytes']:+d} bytes, peak RSS {rss}."]
    return "\n".join(lines)


def plot(res, path):
    import matplotlib.pyplot as plt

    fig = figure(res)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def figure(res):
    """The plot of a run's records (a matplotlib Figure)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    names = ["op", "floor_copy"] + BASELINES
    dtypes = [("float32", "-"), ("bfloat16", "--")]
    seen, single_row = set(), False
    fig, axes = plt.subplots(1, 2, figsize=(13, 5.6), sharey=True)
    for ax, mode in zip(axes, ["sae", "gae"]):
        for dname, style in dtypes:
            recs = sorted((r for r in res["records"] if r["mode"] == mode and r["dtype"] == dname),
                          key=lambda r: r["tokens"])
            for i, name in enumerate(names):
                # batched sizes as lines; single-row sizes (latency-bound) as lone crosses
                pts = [(r["tokens"], r["times"][name]) for r in recs if name in r["times"] and r["B"] > 1]
                if pts:
                    x, y = zip(*pts)
                    ax.plot(x, [v * 1e3 for v in y], style, marker="o", ms=3, color=f"C{i}")
                    seen.add(name)
                for r in recs:
                    if r["B"] == 1 and name in r["times"]:
                        ax.plot([r["tokens"]], [r["times"][name] * 1e3], marker="x", ms=6, color=f"C{i}")
                        seen.add(name)
                        single_row = True
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("tokens (B x T)")
        ax.set_title(f"{mode.upper()} mode" + (" (lam=0.5, lam_inner=1, p=0.2)" if mode == "sae" else " (lam=0.95)"))
        ax.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel("median time per call (ms)")
    # One legend below both panels, so that it covers no curve: a colour per method, a line
    # style per dtype, and the single-row marker only when the run has a single-row size.
    handles = [Line2D([], [], color=f"C{i}", marker="o", ms=3, label=name)
               for i, name in enumerate(names) if name in seen]
    handles += [Line2D([], [], color="0.3", ls=style, label=dname) for dname, style in dtypes]
    if single_row:
        handles.append(Line2D([], [], color="0.3", marker="x", ls="none",
                              label="a single row (B = 1), latency-bound"))
    fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 6), fontsize=8,
               frameon=False)
    m = res["machine"]
    fig.suptitle(f"torch.ops.sae.advantages vs baselines - {m.get('cpu')}, {m['threads']} threads, "
                 f"torch {m['torch']} ({m['device']})", fontsize=10)
    fig.tight_layout(rect=(0, 0.1, 1, 1))
    return fig


if __name__ == "__main__":
    main()
