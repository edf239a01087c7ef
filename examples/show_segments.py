"""Segment viewer: where SAE cuts a response, and each token's SAE and GAE advantage.

    python examples/show_segments.py ROLLOUT.jsonl [--html out.html] [--p 0.2 --lam 0.5]
                                     [--gae-lam 0.95] [--gamma 1] [--rows 0,2] [--table]
                                     [--no-color | --color]

ROLLOUT.jsonl holds one response per line, as JSON with
  tokens    list of strings (the response's tokens, as text)
  logprobs  list of floats: log-probability of each token under the policy that sampled it
  values    list of floats: the critic's value before each token
  reward    float: the verifiable reward, put on the last valid token
  mask      optional list of 0/1: 0 for tokens that are not actions (tool output, padding)
  prompt    optional string, shown as a heading
examples/data/sample_rollout.jsonl (written by examples/ppo_toy.py) is such a file.

In a colour terminal each token's background shows its advantage (green positive, red
negative; the scale is the largest |advantage| of the response, SAE and GAE alike), "▍"
marks a token that starts a new segment (probability below p), and grey tokens are masked.
Without colour (output to a pipe or a file, NO_COLOR set, or --no-color) each token is
followed by its advantage, `token(+0.123)`, a segment start is marked "|" and a masked token
is shown as `[token]`; --color forces colour (e.g. into `less -R`). --table adds one line per
token with the numbers. --html writes a standalone page with the same, a chart per response,
and the numbers in each token's tooltip.
"""
from __future__ import annotations

import argparse
import html
import json
import math
import os
import sys

import torch

import sae_ext

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_SAMPLE = os.path.join(HERE, "data", "sample_rollout.jsonl")


def load(path):
    rows = []
    with open(path) as f:
        for n, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            r = json.loads(line)
            for key in ("tokens", "logprobs", "values", "reward"):
                if key not in r:
                    raise ValueError(f"{path}:{n}: missing field {key!r}")
            T = len(r["tokens"])
            for key in ("logprobs", "values") + (("mask",) if "mask" in r else ()):
                if len(r[key]) != T:
                    raise ValueError(f"{path}:{n}: {key} has {len(r[key])} entries, tokens has {T}")
            rows.append(r)
    return rows


def compute(rows, *, p, lam, gae_lam, gamma=1.0):
    """Pads the responses into [B, T] tensors and runs the ops. Returns a list of dicts per
    response with lists: prob, value, boundary, sae, gae, mask."""
    B, T = len(rows), max((len(r["tokens"]) for r in rows), default=0)
    lp = torch.zeros(B, T, dtype=torch.float64)
    v = torch.zeros(B, T, dtype=torch.float64)
    r_ = torch.zeros(B, T, dtype=torch.float64)
    m = torch.zeros(B, T, dtype=torch.bool)
    for i, r in enumerate(rows):
        n = len(r["tokens"])
        lp[i, :n] = torch.tensor(r["logprobs"], dtype=torch.float64)
        v[i, :n] = torch.tensor(r["values"], dtype=torch.float64)
        m[i, :n] = torch.tensor([bool(x) for x in r["mask"]]) if "mask" in r else True
        valid = m[i].nonzero()
        if len(valid):
            r_[i, valid[-1, 0]] = float(r["reward"])
    sae, _ = sae_ext.advantages(r_, v, lp, m, lam=lam, gamma=gamma, lam_inner=1.0, threshold=p)
    gae, _ = sae_ext.gae(r_, v, m, gamma=gamma, lam=gae_lam)
    starts = sae_ext.segment_boundaries(lp, m, threshold=p)
    out = []
    for i, r in enumerate(rows):
        n = len(r["tokens"])
        out.append(dict(prob=lp[i, :n].exp().tolist(), value=v[i, :n].tolist(),
                        boundary=starts[i, :n].tolist(), sae=sae[i, :n].tolist(),
                        gae=gae[i, :n].tolist(), mask=m[i, :n].tolist()))
    return out


def _rgb(a, scale):
    """White -> green for a > 0, white -> red for a < 0, by sqrt(|a| / scale)."""
    x = 0.0 if scale <= 0 else min(1.0, math.sqrt(abs(a) / scale))
    if a >= 0:
        return (int(255 - 155 * x), int(255 - 55 * x), int(255 - 155 * x))
    return (int(255 - 35 * x), int(255 - 175 * x), int(255 - 175 * x))


def _scale(c):
    return max([abs(x) for x in c["sae"] + c["gae"]] + [1e-12])


def segments(c):
    """[(start, end)] of each segment over valid tokens (end exclusive, masked tokens inside)."""
    starts = [t for t, (b, ok) in enumerate(zip(c["boundary"], c["mask"])) if ok and (b or t == 0)]
    first_valid = next((t for t, ok in enumerate(c["mask"]) if ok), None)
    if first_valid is not None and first_valid not in starts:
        starts = sorted(starts + [first_valid])
    return [(s, e) for s, e in zip(starts, starts[1:] + [len(c["mask"])])]


# ----------------------------------------------------------------------------- terminal
def use_color(args, out):
    """--no-color, then --color, then NO_COLOR (set and not empty: https://no-color.org),
    then whether `out` is a terminal."""
    if args.no_color:
        return False
    if args.color:
        return True
    if os.environ.get("NO_COLOR"):
        return False
    return bool(getattr(out, "isatty", lambda: False)())


def terminal(rows, comp, args, out=None):
    out = out or sys.stdout
    color = use_color(args, out)

    def paint(text, a, scale, ok):
        if not color:  # the number the colour would have shown, to 3 significant digits of the scale
            dec = max(3, 2 - math.floor(math.log10(scale))) if scale > 0 else 3
            return f"{text}({a:+.{dec}f})" if ok else f"[{text}]"
        if not ok:
            return f"\x1b[90m{text}\x1b[0m"
        r, g, b = _rgb(a, scale)
        return f"\x1b[48;2;{r};{g};{b}m\x1b[38;2;0;0;0m{text}\x1b[0m"

    mark = "\x1b[1;35m▍\x1b[0m" if color else "|"
    for i, (r, c) in zip(args.rows, ((rows[k], comp[k]) for k in args.rows)):
        n = len(r["tokens"])
        segs = segments(c)
        nb = sum(1 for b, ok in zip(c["boundary"], c["mask"]) if b and ok)
        print(f"\n=== response {i}: reward {float(r['reward']):g}, {n} tokens "
              f"({sum(c['mask'])} actions), {nb} segment starts at p={args.p:g}"
              + (f" -- {r['prompt']}" if r.get("prompt") else ""), file=out)
        scale = _scale(c)
        for name, key in ((f"SAE (λ={args.lam:g} at starts, 1 inside)", "sae"),
                          (f"GAE (λ={args.gae_lam:g})", "gae")):
            print(f"--- {name}; " + (f"colour scale ±{scale:.3g}" if color else
                                         "each token's advantage in brackets, [masked]"), file=out)
            parts = []
            for t, tok in enumerate(r["tokens"]):
                s = (mark if c["boundary"][t] and c["mask"][t] else "") + paint(
                    tok.replace("\n", "\\n"), c[key][t], scale, c["mask"][t])
                parts.append(s)
            print(" ".join(parts), file=out)
        print(f"--- segments: start token (its probability), valid tokens, SAE advantage of the start, "
              f"mean GAE advantage over the segment", file=out)
        for k, (s, e) in enumerate(segs):
            valid = [t for t in range(s, e) if c["mask"][t]]
            mg = sum(c["gae"][t] for t in valid) / max(1, len(valid))
            print(f"  #{k:<3d} t={s:<4d} {r['tokens'][s]!r:<12} p={c['prob'][s]:.3f}  len {len(valid):<4d} "
                  f"A_SAE {c['sae'][s]:+.4f}  mean A_GAE {mg:+.4f}", file=out)
        if args.table:
            print(f"{'t':>4} {'token':<12} {'prob':>7} {'value':>8} {'A_SAE':>9} {'A_GAE':>9}", file=out)
            for t, tok in enumerate(r["tokens"]):
                flag = "" if c["mask"][t] else "  (masked)"
                flag += "  <- segment start" if c["boundary"][t] and c["mask"][t] else ""
                print(f"{t:>4} {tok!r:<12} {c['prob'][t]:>7.4f} {c['value'][t]:>8.4f} "
                      f"{c['sae'][t]:>+9.4f} {c['gae'][t]:>+9.4f}{flag}", file=out)


# ----------------------------------------------------------------------------- html
CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:24px;color:#222;max-width:1200px}
h1{font-size:20px} h2{font-size:16px;margin:28px 0 6px} .meta{color:#555;font-size:13px}
.stream{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:12.5px;line-height:2.0;
  border:1px solid #ddd;border-radius:6px;padding:6px 8px;margin:4px 0 10px}
.lbl{display:inline-block;width:100%;font:600 12px system-ui,sans-serif;color:#444;margin-bottom:2px}
.t{padding:2px 2px;margin:0 1px;border-radius:3px;white-space:pre}
.b{border-left:3px solid #b0179a;margin-left:4px;padding-left:3px}
.m{color:#aaa;background:repeating-linear-gradient(45deg,#f3f3f3,#f3f3f3 3px,#e7e7e7 3px,#e7e7e7 6px)}
.legend span{display:inline-block;padding:2px 8px;margin-right:6px;border-radius:3px;font-size:12px}
svg{border:1px solid #ddd;border-radius:6px;background:#fff}
"""


def _chart(c, width=1100, height=150):
    n = len(c["sae"])
    if n == 0:
        return ""
    shown = [v for key in ("sae", "gae", "value") for v, ok in zip(c[key], c["mask"]) if ok]
    lo, hi = min(shown + [0.0]), max(shown + [0.0])
    hi, lo = (hi + 0.05 * (hi - lo) + 1e-9), (lo - 0.05 * (hi - lo) - 1e-9)
    x = lambda t: 40 + (width - 50) * (t + 0.5) / n  # noqa: E731
    y = lambda v: 8 + (height - 24) * (hi - v) / (hi - lo)  # noqa: E731
    parts = [f'<svg width="{width}" height="{height}" viewBox="0 0 {width} {height}">']
    parts.append(f'<line x1="40" x2="{width - 10}" y1="{y(0):.1f}" y2="{y(0):.1f}" stroke="#999" stroke-width="0.7"/>')
    for t, (b, ok) in enumerate(zip(c["boundary"], c["mask"])):
        if b and ok:
            parts.append(f'<line x1="{x(t):.1f}" x2="{x(t):.1f}" y1="4" y2="{height - 14}" '
                         f'stroke="#b0179a" stroke-width="1" stroke-dasharray="3,2" opacity="0.6"/>')
        if not ok:
            parts.append(f'<rect x="{x(t) - (width - 50) / n / 2:.1f}" y="4" width="{(width - 50) / n:.2f}" '
                         f'height="{height - 18}" fill="#eee"/>')
    for key, col, w in (("value", "#888", 1.2), ("gae", "#1f77b4", 1.4), ("sae", "#d62728", 1.6)):
        pts = " ".join(f"{x(t):.1f},{y(v):.1f}" for t, v in enumerate(c[key]) if c["mask"][t])
        parts.append(f'<polyline points="{pts}" fill="none" stroke="{col}" stroke-width="{w}"/>')
    for v in (lo, 0.0, hi):
        parts.append(f'<text x="36" y="{y(v) + 4:.1f}" font-size="10" text-anchor="end" fill="#666">{v:.2f}</text>')
    parts.append(f'<text x="{width - 12}" y="{height - 2}" font-size="10" text-anchor="end" fill="#666">'
                 f'token index (0..{n - 1}); grey: critic value; red: SAE advantage; blue: GAE advantage '
                 f'(valid tokens); dashed: segment starts; shaded: masked</text>')
    parts.append("</svg>")
    return "".join(parts)


def to_html(rows, comp, args, src):
    h = [f"<!doctype html><html><head><meta charset='utf-8'><title>SAE segments: {html.escape(src)}</title>"
         f"<style>{CSS}</style></head><body>"]
    h.append(f"<h1>Segments and advantages &mdash; {html.escape(os.path.basename(src))}</h1>")
    h.append(f"<p class='meta'>SAE: λ = {args.lam:g} where a segment starts (a token with probability "
             f"&lt; p = {args.p:g}), 1 inside a segment; GAE: λ = {args.gae_lam:g} everywhere; γ = {args.gamma:g}. "
             f"Token background: advantage (green &gt; 0, red &lt; 0, the same scale for SAE and GAE of a "
             f"response); <span class=b>&#8203;</span>a purple bar: the token starts a segment; "
             f"hatched: masked (not an action). Hover a token for its numbers.</p>")
    for i in args.rows:
        r, c = rows[i], comp[i]
        scale = _scale(c)
        nb = sum(1 for b, ok in zip(c["boundary"], c["mask"]) if b and ok)
        h.append(f"<h2>Response {i}: reward {float(r['reward']):g}, {len(r['tokens'])} tokens, "
                 f"{nb} segment starts</h2>")
        if r.get("prompt"):
            h.append(f"<div class='meta'>prompt: {html.escape(str(r['prompt']))}</div>")
        h.append(_chart(c))
        for name, key in (("SAE advantage", "sae"), ("GAE advantage", "gae")):
            h.append(f"<div class='stream'><span class='lbl'>{name} (colour scale ±{scale:.3g})</span>")
            for t, tok in enumerate(r["tokens"]):
                tip = (f"t={t} p={c['prob'][t]:.4f} V={c['value'][t]:.4f} "
                       f"A_SAE={c['sae'][t]:+.4f} A_GAE={c['gae'][t]:+.4f}"
                       + (" (segment start)" if c["boundary"][t] and c["mask"][t] else "")
                       + ("" if c["mask"][t] else " (masked)"))
                cls = "t" + (" b" if c["boundary"][t] and c["mask"][t] else "") + ("" if c["mask"][t] else " m")
                style = "" if not c["mask"][t] else "background:rgb(%d,%d,%d)" % _rgb(c[key][t], scale)
                h.append(f"<span class='{cls}' style='{style}' title='{html.escape(tip, quote=True)}'>"
                         f"{html.escape(tok)}</span> ")
            h.append("</div>")
    h.append("</body></html>")
    return "".join(h)


def parse_rows(spec, n):
    if spec is None:
        return list(range(n))
    rows = [int(x) for x in spec.split(",") if x.strip()]
    for k in rows:
        if not 0 <= k < n:
            raise SystemExit(f"--rows: {k} is out of range (the file has {n} responses)")
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("rollout", nargs="?", default=DEFAULT_SAMPLE,
                    help="JSON lines file (default: examples/data/sample_rollout.jsonl)")
    ap.add_argument("--html", help="also write a standalone HTML page here")
    ap.add_argument("--p", type=float, default=0.2, help="segment threshold p (default 0.2)")
    ap.add_argument("--lam", type=float, default=0.5, help="SAE λ at segment starts (default 0.5)")
    ap.add_argument("--gae-lam", type=float, default=0.95, help="GAE λ for comparison (default 0.95)")
    ap.add_argument("--gamma", type=float, default=1.0)
    ap.add_argument("--rows", help="comma-separated response indices to show (default: all)")
    ap.add_argument("--table", action="store_true", help="one line per token with the numbers")
    ap.add_argument("--no-color", action="store_true",
                    help="plain text with each token's advantage (the default when the output is "
                         "not a terminal or NO_COLOR is set)")
    ap.add_argument("--color", action="store_true", help="colour even into a pipe or a file")
    args = ap.parse_args(argv)
    rows = load(args.rollout)
    args.rows = parse_rows(args.rows, len(rows))
    comp = compute(rows, p=args.p, lam=args.lam, gae_lam=args.gae_lam, gamma=args.gamma)
    try:
        terminal(rows, comp, args)
    except BrokenPipeError:  # `| head`: stop quietly, as other command-line tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return
    if args.html:
        with open(args.html, "w", encoding="utf-8") as f:
            f.write(to_html(rows, comp, args, args.rollout))
        print(f"\nwrote {args.html}")


if __name__ == "__main__":
    main()
