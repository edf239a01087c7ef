"""PPO on a toy verifiable task with long responses, comparing GAE and SAE advantages.

The task ("hit the target"): a prompt asks for a response of exactly L tokens (L uniform in
160..256) whose tokens "+" and "-" add up to a target k (uniform in -3..3); the other 14
tokens are filler words that change nothing. At 0.5% of positions (about one per response)
a tool's output ("<tool:+1>" or "<tool:-1>") is inserted instead of a policy token: it
counts towards the sum but is not an action (mask 0), like an observation in a multi-turn
rollout. The verifier gives reward 1 on the last action token iff the sum equals k, else 0:
a sparse reward at the end of a response hundreds of tokens long. A uniformly random policy
succeeds about 5% of the time.

The policy and the critic are small MLPs (two hidden layers of 64) that see the running sum
of the policy's own "+"/"-" minus k, the position, the tokens left, and the last 8 tokens --
tool outputs only while they are among those 8. The task has two stages: stop emitting
random "+"/"-" and say "+" or "-" |k| times (that alone succeeds about half the time, when
no tool output lands in the response or they cancel), then answer each tool output with the
opposite sign while it is visible, for a reward that comes ~100 tokens later. Once a tool
output has left the window the critic cannot know the true sum, so its values mid-response
are inaccurate, the regime SAE was proposed for.

PPO: clipped objective (0.2), 4 epochs x 4 minibatches per batch of 64 responses, Adam 3e-3,
advantages whitened over the batch, gamma = 1. Advantages come from
``torch.ops.sae.advantages`` inside a function compiled with
``torch.compile(fullgraph=True, dynamic=True)`` (one compile per (lam, lam_inner, p): Dynamo
specializes on Python floats; batch and length changes do not recompile):

* GAE lam = 1   (lam_inner = lam = 1: Monte-Carlo returns minus the critic)
* GAE lam = 0.95
* SAE p = 0.2, lam = 0.5 at segment starts, lam_inner = 1

    python examples/ppo_toy.py                      # 3 methods x 3 seeds x 100 iterations
    python examples/ppo_toy.py --init peaked --tag _peaked \
        --sample examples/data/sample_rollout.jsonl  # a "pretrained", peaked initial policy
    python examples/ppo_toy.py --methods "GAE λ=0.5" --tag _gae05   # a control
    python examples/ppo_toy.py --report examples/results/ppo_toy*.json   # combined figure

Writes ppo_toy{TAG}.png (success rate vs PPO iteration, mean and spread over seeds),
ppo_toy{TAG}.json and ppo_toy{TAG}.md in --out (default examples/results); with --sample, a
few responses of the first SAE run's final policy as JSON lines for examples/show_segments.py.
Runs on one CPU thread: about 7 minutes for the default on a busy 2-core machine.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

import sae_ext  # noqa: F401  (registers torch.ops.sae.*; masked_whiten)

HERE = os.path.dirname(os.path.abspath(__file__))
VOCAB = ["+", "-", "so", "we", "then", "get", "the", "ok", "now", "and", "is", "it", "to", "a",
         "of", "thus"]
TOOL = ["<tool:+1>", "<tool:-1>"]  # a tool's output: not an action of the policy (mask 0)
STEP = torch.tensor([1, -1] + [0] * (len(VOCAB) - 2) + [1, -1])
NONE = len(VOCAB) + len(TOOL)      # "no token yet"
T_MAX, L_MIN, K_MAX = 256, 160, 3
TOOL_RATE = 0.005 # chance per position that a tool's output shifts the sum instead of the policy
WINDOW = 8        # tool outputs are visible to the models only while among the last WINDOW tokens
DIFF_CLIP = 8
N_FEAT = (2 * DIFF_CLIP + 1) + 2 + 4 + NONE + 1

METHODS = {  # name: (lam, lam_inner, threshold)
    "GAE λ=1": (1.0, 1.0, 0.0),
    "GAE λ=0.95": (0.95, 0.95, 0.0),
    "SAE p=0.2 λ=0.5": (0.5, 1.0, 0.2),
}
EXTRA_METHODS = {  # for the diagnostics in docs/examples.md
    "GAE λ=0.5": (0.5, 0.5, 0.0),
}
PEAKED_WORD, PEAKED_BIAS = "the", 3.0


def features(own_diff, t, length, window):
    """[B, N_FEAT]: one-hot(sum of the policy's own "+"/"-" minus the target, clipped),
    position and tokens left, how many "+", "-", "<tool:+1>", "<tool:-1>" are among the last
    WINDOW tokens, and the last token (or NONE). Tool outputs that left the window are not
    seen: the models must act on them while they are visible, and the critic cannot know the
    true sum."""
    B = own_diff.shape[0]
    d = F.one_hot(own_diff.clamp(-DIFF_CLIP, DIFF_CLIP) + DIFF_CLIP, 2 * DIFF_CLIP + 1).float()
    scal = torch.stack([t.float() / T_MAX, (length - t).float() / T_MAX], -1)
    counts = torch.stack([(window == i).sum(1) for i in (0, 1, len(VOCAB), len(VOCAB) + 1)], -1).float() / 2
    last = F.one_hot(window[:, -1], NONE + 1).float()
    return torch.cat([d, scal.expand(B, -1), counts, last], -1)


def mlp(out_dim, hidden=64):
    return nn.Sequential(nn.Linear(N_FEAT, hidden), nn.Tanh(), nn.Linear(hidden, hidden), nn.Tanh(),
                         nn.Linear(hidden, out_dim))


@torch.no_grad()
def rollout(policy, critic, batch, gen):
    """Sample `batch` responses. Returns [B, T_MAX] tensors (features [B, T_MAX, N_FEAT])."""
    target = torch.randint(-K_MAX, K_MAX + 1, (batch,), generator=gen)
    length = torch.randint(L_MIN, T_MAX + 1, (batch,), generator=gen)
    window = torch.full((batch, WINDOW), NONE)
    own_diff = -target
    feats = torch.zeros(batch, T_MAX, N_FEAT)
    tokens = torch.zeros(batch, T_MAX, dtype=torch.long)
    logprobs = torch.zeros(batch, T_MAX)
    tool = torch.rand(batch, T_MAX, generator=gen) < TOOL_RATE
    tool_tok = len(VOCAB) + torch.randint(0, 2, (batch, T_MAX), generator=gen)
    for t in range(T_MAX):
        x = features(own_diff, torch.full((batch,), t), length, window)
        logp = F.log_softmax(policy(x), -1)
        a = torch.multinomial(logp.exp(), 1, generator=gen).squeeze(1)
        a = torch.where(tool[:, t], tool_tok[:, t], a)
        feats[:, t] = x
        tokens[:, t] = a
        logprobs[:, t] = torch.where(tool[:, t], 0.0, logp.gather(1, a.clamp(max=len(VOCAB) - 1)[:, None]).squeeze(1))
        window = torch.cat([window[:, 1:], a[:, None]], 1)
        own_diff = own_diff + torch.where(tool[:, t], 0, STEP[a])
    in_len = torch.arange(T_MAX)[None, :] < length[:, None]
    mask = in_len & ~tool
    tokens = torch.where(in_len, tokens, 0)
    logprobs = torch.where(mask, logprobs, 0.0)
    total = (STEP[tokens] * in_len).sum(1)
    success = (total == target).float()
    rewards = torch.zeros(batch, T_MAX)
    last_action = (mask * torch.arange(1, T_MAX + 1)).argmax(1)  # the verifier scores the last action
    rewards[torch.arange(batch), last_action] = success
    values = critic(feats).squeeze(-1) * mask
    return dict(feats=feats, tokens=tokens, logprobs=logprobs, mask=mask, rewards=rewards,
                values=values, target=target, length=length, success=success)


def advantage_fn(rewards, values, logprobs, mask, lam: float, lam_inner: float, threshold: float):
    """The compiled part: the fused op, then batch whitening over valid tokens."""
    adv, ret = torch.ops.sae.advantages(rewards, values, logprobs, mask, 1.0, lam, lam_inner, threshold)
    return sae_ext.masked_whiten(adv, mask), ret


def ppo_update(policy, critic, opt, batch, adv, ret, *, epochs=4, minibatches=4, clip=0.2,
               ent_coef=0.0, gen=None):
    B = adv.shape[0]
    for _ in range(epochs):
        perm = torch.randperm(B, generator=gen)
        for idx in perm.chunk(minibatches):
            m = batch["mask"][idx].float()
            n = m.sum()
            x = batch["feats"][idx]
            logp_all = F.log_softmax(policy(x), -1)
            tok = batch["tokens"][idx].clamp(max=len(VOCAB) - 1)  # tool positions: masked out
            logp = logp_all.gather(-1, tok[..., None]).squeeze(-1)
            ratio = torch.exp(logp - batch["logprobs"][idx])
            a = adv[idx]
            pg = -torch.min(ratio * a, ratio.clamp(1 - clip, 1 + clip) * a)
            ent = -(logp_all.exp() * logp_all).sum(-1)
            v = critic(x).squeeze(-1)
            loss = ((pg - ent_coef * ent) * m).sum() / n + 0.5 * (((v - ret[idx]) ** 2) * m).sum() / n
            opt.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(list(policy.parameters()) + list(critic.parameters()), 1.0)
            opt.step()


def train(method: str, seed: int, iters: int, batch: int, adv_fn, log_every: int = 0,
          sample_path: str | None = None, init: str = "uniform"):
    lam, lam_inner, threshold = {**METHODS, **EXTRA_METHODS}[method]
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    policy, critic = mlp(len(VOCAB)), mlp(1)
    if init == "peaked":  # a "pretrained" prior: one filler word has probability ~0.5 at first
        with torch.no_grad():
            policy[-1].bias[VOCAB.index(PEAKED_WORD)] += PEAKED_BIAS
    opt = torch.optim.Adam(list(policy.parameters()) + list(critic.parameters()), lr=3e-3)
    curve, seg_frac = [], []
    for it in range(iters):
        b = rollout(policy, critic, batch, gen)
        adv, ret = adv_fn(b["rewards"], b["values"], b["logprobs"], b["mask"], lam, lam_inner, threshold)
        curve.append(b["success"].mean().item())
        seg_frac.append(sae_ext.segment_boundaries(b["logprobs"], b["mask"], threshold=0.2).sum().item()
                        / b["mask"].sum().item())
        if log_every and (it % log_every == 0 or it == iters - 1):
            print(f"  [{method} seed {seed}] iter {it:4d} reward {curve[-1]:.3f} "
                  f"tokens with prob < 0.2: {100 * seg_frac[-1]:.1f}%", flush=True)
        ppo_update(policy, critic, opt, b, adv, ret, gen=gen)
    if sample_path:
        save_sample(policy, critic, sample_path, gen)
    return curve, seg_frac


def save_sample(policy, critic, path, gen, n=6):
    """A few responses of the trained policy as JSON lines (tokens, logprobs, values, reward)."""
    b = rollout(policy, critic, 64, gen)
    order = torch.argsort(b["success"], descending=True)
    rows = torch.cat([order[: n // 2], order[-(n - n // 2):]])  # some correct, some wrong
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        for i in rows.tolist():
            L = int(b["length"][i])
            f.write(json.dumps(dict(
                prompt=f"write exactly {L} tokens whose + and - add up to {int(b['target'][i])}",
                tokens=[(VOCAB + TOOL)[a] for a in b["tokens"][i, :L].tolist()],
                mask=[int(x) for x in b["mask"][i, :L].tolist()],
                logprobs=[round(x, 5) for x in b["logprobs"][i, :L].tolist()],
                values=[round(x, 5) for x in b["values"][i, :L].tolist()],
                reward=float(b["success"][i]))) + "\n")


def smooth(xs, k=10):
    out, acc = [], 0.0
    for i, x in enumerate(xs):
        acc += x
        if i >= k:
            acc -= xs[i - k]
        out.append(acc / min(i + 1, k))
    return out


REACH = 0.4  # "iterations to reach": first iteration whose 10-iteration average is >= REACH


def summarize(results):
    """(summary dict, markdown table) of a run's results."""
    rows = ["| method | final success (last 20 iters, mean ± sd over seeds) | per seed | "
            f"iterations until the 10-iter average ≥ {REACH} (per seed) | seconds per run |",
            "| --- | --- | --- | --- | --- |"]
    summary = {}
    for name, runs in results.items():
        finals = [sum(c[-20:]) / len(c[-20:]) for c in runs["curves"]]
        mean = sum(finals) / len(finals)
        sd = math.sqrt(sum((f - mean) ** 2 for f in finals) / max(1, len(finals) - 1))
        hit = [next((i for i, v in enumerate(smooth(c)) if v >= REACH), None) for c in runs["curves"]]
        summary[name] = dict(final_mean=mean, final_sd=sd, finals=finals, iters_to_reach=hit)
        rows.append(f"| {name} | {mean:.3f} ± {sd:.3f} | {', '.join(f'{f:.2f}' for f in finals)} | "
                    f"{', '.join('—' if h is None else str(h) for h in hit)} | "
                    f"{sum(runs['seconds']) / len(runs['seconds']):.0f} |")
    return summary, "\n".join(rows)


COLORS = {"GAE λ=1": "C0", "GAE λ=0.95": "C2", "SAE p=0.2 λ=0.5": "C3", "GAE λ=0.5": "C7"}


def plot(panels, path):
    """panels: [(title, results)]: one reward panel each, and one panel of segment starts."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, axes = plt.subplots(1, len(panels) + 1, figsize=(6.2 * (len(panels) + 1), 4.6))
    styles = ["-", "--", ":"]
    for k, (title, results) in enumerate(panels):
        ax = axes[k]
        for name, runs in results.items():
            col = COLORS.get(name)
            r = np.array([smooth(c) for c in runs["curves"]])
            x = np.arange(r.shape[1])
            ax.plot(x, r.mean(0), color=col, label=name, ls=":" if name not in METHODS else "-")
            ax.fill_between(x, r.min(0), r.max(0), color=col, alpha=.15)
            s = np.array(runs["seg_frac"]) * 100
            axes[-1].plot(x, s.mean(0), color=col, ls=styles[k % 3],
                          label=f"{name}, {title.split(':')[0]}" if len(panels) > 1 else name)
        ax.set_xlabel("PPO iteration (64 responses of 160-256 tokens each)")
        ax.set_ylabel("success rate (10-iteration moving average)")
        n = len(next(iter(results.values()))["curves"])
        ax.set_title(f"{title}\nmean of {n} seeds, band = min..max", fontsize=10)
        ax.legend(fontsize=8)
    axes[-1].set_xlabel("PPO iteration")
    axes[-1].set_ylabel("% of sampled tokens with probability < 0.2")
    axes[-1].set_title("segment starts at p = 0.2 (where SAE applies λ)", fontsize=10)
    axes[-1].set_yscale("log")
    axes[-1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


INIT_TITLES = {"uniform": "policy from scratch (near-uniform)",
               "peaked": "peaked initial policy (one filler word ~0.5)"}


def report(paths, out):
    """Combine saved runs (JSON files) into ppo_toy_summary.md / .png, grouped by init."""
    by_init, parts = {}, []
    for path in paths:
        with open(path) as f:
            d = json.load(f)
        init = d["config"].get("init", "uniform")
        by_init.setdefault(init, {}).update(d["results"])
        _, table = summarize(d["results"])
        c = d["config"]
        parts.append(f"### {os.path.basename(path)}: {INIT_TITLES[init]}\n\n{c['iters']} iterations x "
                     f"{c['batch']} responses, {c['seeds']} seeds, {d['total_seconds']:.0f} s in all on one "
                     f"CPU thread (shared machine), compile={c['compile']}.\n\n{table}\n")
    panels = [(f"{init}: {INIT_TITLES[init]}", res) for init, res in by_init.items()]
    plot(panels, os.path.join(out, "ppo_toy_summary.png"))
    text = "# PPO toy results\n\n" + "\n".join(parts)
    with open(os.path.join(out, "ppo_toy_summary.md"), "w") as f:
        f.write(text)
    print(text)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--iters", type=int, default=100)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--methods", nargs="*", default=list(METHODS), choices=list(METHODS) + list(EXTRA_METHODS))
    ap.add_argument("--init", choices=["uniform", "peaked"], default="uniform",
                    help="peaked: bias the initial policy towards one filler word (probability ~0.5), "
                         "like a pretrained model whose sampled tokens are mostly likely ones")
    ap.add_argument("--tag", default="", help="suffix for the result files")
    ap.add_argument("--compile", choices=["advantages", "none"], default="advantages")
    ap.add_argument("--out", default=os.path.join(HERE, "results"))
    ap.add_argument("--sample", default="",
                    help="write a few responses of the first SAE run's final policy here (JSON lines)")
    ap.add_argument("--log-every", type=int, default=25)
    ap.add_argument("--report", nargs="+", metavar="JSON",
                    help="no training: combine saved runs into ppo_toy_summary.md/.png")
    args = ap.parse_args(argv)
    if args.report:
        report(args.report, args.out)
        return
    torch.set_num_threads(1)
    t_start = time.time()
    adv_fn = advantage_fn
    if args.compile == "advantages":
        adv_fn = torch.compile(advantage_fn, fullgraph=True, dynamic=True)
    results = {}
    for name in args.methods:
        runs = dict(curves=[], seg_frac=[], seconds=[])
        for seed in range(args.seeds):
            t0 = time.time()
            sample = args.sample if (name.startswith("SAE") and seed == 0 and args.sample) else None
            c, s = train(name, seed, args.iters, args.batch, adv_fn, args.log_every, sample, args.init)
            runs["curves"].append(c)
            runs["seg_frac"].append(s)
            runs["seconds"].append(round(time.time() - t0, 1))
        results[name] = runs
    total = time.time() - t_start
    os.makedirs(args.out, exist_ok=True)
    summary, table = summarize(results)
    with open(os.path.join(args.out, f"ppo_toy{args.tag}.json"), "w") as f:
        json.dump(dict(config=vars(args), total_seconds=round(total, 1), summary=summary,
                       results=results), f)
    with open(os.path.join(args.out, f"ppo_toy{args.tag}.md"), "w") as f:
        f.write(f"# PPO toy results\n\nGenerated by `python examples/ppo_toy.py` "
                f"({args.iters} iterations x {args.batch} responses, {args.seeds} seeds, "
                f"{total:.0f} s in all on one CPU thread, compile={args.compile}, init={args.init}).\n\n{table}\n")
    print(table)
    plot([(INIT_TITLES[args.init], results)], os.path.join(args.out, f"ppo_toy{args.tag}.png"))
    print(f"total {total:.0f} s")


if __name__ == "__main__":
    main()
