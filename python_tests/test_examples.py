"""Fast checks of examples/: the correlation study's exact ground truth against brute-force
enumeration, that its advantages come from the op, the segment viewer on the shipped sample,
and a PPO smoke run (with the compiled advantage function)."""
from __future__ import annotations

import io
import itertools
import json
import math
import os
import sys
from contextlib import redirect_stdout

import numpy as np
import pytest
import torch

import sae_ext

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "examples"))

import correlation_study as cs  # noqa: E402
import ppo_toy  # noqa: E402
import show_segments  # noqa: E402

SAMPLE = os.path.join(ROOT, "examples", "data", "sample_rollout.jsonl")


def _tiny_env(seed):
    return cs.make_env(seed=seed, vocab=3, levels=3, t_max=5, t_min=2, fork_rate=0.5, eos_hazard=0.3)


def _enumerate(env):
    """Every complete response of the tiny process: {token tuple: (probability, reward)}."""
    T, V = env.t_max, env.pi.shape[-1]
    out = {}
    for n in range(1, T + 1):
        for seq in itertools.product(range(V), repeat=n):
            if any(a == cs.EOS for a in seq[:-1]):
                continue
            if n < T and seq[-1] != cs.EOS:
                continue  # not complete: it goes on
            prob, s = 1.0, env.start
            for t, a in enumerate(seq):
                prob *= env.pi[t, s, a]
                s = env.nxt[t, s, a]
            if prob > 0:
                out[seq] = (prob, env.reward[s])
    return out


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_exact_values_match_brute_force_enumeration(seed):
    env = _tiny_env(seed)
    Vs, Q = cs.exact_values(env)
    full = _enumerate(env)
    assert math.isclose(sum(p for p, _ in full.values()), 1.0, rel_tol=1e-12)

    def cond_value(prefix):  # E[R | prefix] by summing over the responses that extend it
        hits = [(p, r) for seq, (p, r) in full.items() if seq[:len(prefix)] == prefix]
        mass = sum(p for p, _ in hits)
        return sum(p * r for p, r in hits) / mass, mass

    assert math.isclose(cond_value(())[0], Vs[0, env.start], abs_tol=1e-12)
    checked = 0
    for n in range(env.t_max):
        for prefix in itertools.product(range(1, env.pi.shape[-1]), repeat=n):  # no EOS inside
            v, mass = cond_value(prefix)
            if mass == 0:
                continue
            s = env.start
            for t, a in enumerate(prefix):
                s = env.nxt[t, s, a]
            assert math.isclose(v, Vs[n, s], abs_tol=1e-12)
            for a in range(env.pi.shape[-1]):
                if env.pi[n, s, a] == 0:
                    continue
                q = cond_value(prefix + (a,))[0] if (a != cs.EOS and n + 1 < env.t_max) else None
                if q is None:  # the response ends with this token
                    s_end = s if a == cs.EOS else env.nxt[n, s, a]
                    q = env.reward[s_end]
                assert math.isclose(q, Q[n, s, a], abs_tol=1e-12)
                checked += 1
    assert checked > 20


def test_sampler_follows_the_policy_table():
    env = _tiny_env(1)
    Vs, _ = cs.exact_values(env)
    n = 20000
    roll = cs.sample(env, n, np.random.default_rng(0))
    rate = roll["rewards"].sum(1).mean()
    assert abs(rate - Vs[0, env.start]) < 4 * math.sqrt(0.25 / n)
    first = np.bincount(roll["tokens"][:, 0], minlength=env.pi.shape[-1]) / n
    np.testing.assert_allclose(first, env.pi[0, env.start], atol=4 * math.sqrt(0.25 / n))
    # the per-token V* and A* of sampled responses are the DP's
    t = np.arange(env.t_max)[None, :].repeat(n, 0)
    m = roll["mask"]
    np.testing.assert_allclose(roll["vstar"][m], Vs[t[m], roll["level"][m]])


def test_sampled_ground_truth_and_what_the_op_makes_of_it():
    """With the exact critic, GAE lam=0 from the op is A* exactly, and SAE with lam=0 is the
    sum of A* from each token to the end of its segment."""
    env = cs.make_env(seed=5, t_max=64, t_min=32, eos_hazard=0.1)
    roll = cs.sample(env, 64, np.random.default_rng(0))
    m = roll["mask"]
    assert (roll["lengths"] >= 32).all() and (m.sum(1) == roll["lengths"]).all()
    assert set(np.unique(roll["rewards"].sum(1))) <= {0.0, 1.0}
    exact = roll["vstar"]
    gae0 = cs.estimate(roll, exact, 0.0, 0.0, 0.0).double().numpy()
    np.testing.assert_allclose(gae0[m], roll["astar"][m], atol=1e-5)
    assert cs.pearson(gae0, roll["astar"], m) > 0.999999
    p = 0.2
    sae0 = cs.estimate(roll, exact, 0.0, 1.0, p).double().numpy()
    starts = m & (roll["logprobs"] < sae_ext.reference.log_threshold(p))
    want = np.zeros_like(sae0)
    for b in range(m.shape[0]):
        acc = 0.0
        for t in reversed(range(int(roll["lengths"][b]))):
            acc += roll["astar"][b, t]
            want[b, t] = acc
            if starts[b, t]:
                acc = 0.0
    np.testing.assert_allclose(sae0, want, atol=1e-5)


def test_study_advantages_come_from_the_op():
    env = cs.make_env(seed=1, t_max=40, t_min=20)
    rng = np.random.default_rng(0)
    roll = cs.sample(env, 16, rng)
    values = cs.noisy_critic(roll, 0.2, 0.9, rng)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        adv = cs.estimate(roll, values, 0.5, 1.0, 0.2)
    assert any(e.name == "sae::advantages" for e in prof.events())
    f32 = lambda x: torch.tensor(x, dtype=torch.float32)  # noqa: E731
    want, _ = sae_ext.reference.advantages(f32(roll["rewards"]), f32(values), f32(roll["logprobs"]),
                                           torch.tensor(roll["mask"]), 1.0, 0.5, 1.0, 0.2)
    torch.testing.assert_close(adv.double(), want, atol=1e-5, rtol=1e-5)
    res = cs.run_study(env, 1, 16, specs=[dict(name="n", kind="noisy", sigma=0.1, rho=0.5),
                                          dict(name="l", kind="learned", feats="full", n=8)],
                       meths=[("GAE lam=0", 0.0, 0.0, 0.0), ("SAE p=0.2 lam=0", 0.0, 1.0, 0.2)])
    assert set(res["corr"]) == {"n", "l"} and all(-1 <= v["GAE lam=0"]["mean"] <= 1 for v in res["corr"].values())


def test_sample_rollout_is_shipped_and_well_formed():
    rows = show_segments.load(SAMPLE)
    assert len(rows) >= 2
    assert {r["reward"] for r in rows} <= {0.0, 1.0}
    for r in rows:
        assert len(r["tokens"]) >= 100
        assert all(lp <= 0 for lp in r["logprobs"])
        assert len(r["mask"]) == len(r["tokens"])


def test_viewer_renders_the_sample(tmp_path):
    out_html = tmp_path / "seg.html"
    buf = io.StringIO()
    with redirect_stdout(buf):
        show_segments.main([SAMPLE, "--html", str(out_html), "--rows", "0,1", "--color"])
    text = buf.getvalue()
    assert "\x1b[48;2;" in text and "=== response 0" in text and "=== response 1" in text
    page = out_html.read_text(encoding="utf-8")
    rows = show_segments.load(SAMPLE)
    assert page.count("<svg") == 2
    assert page.count("<span class='t") == 2 * (len(rows[0]["tokens"]) + len(rows[1]["tokens"]))
    buf = io.StringIO()
    with redirect_stdout(buf):
        show_segments.main([SAMPLE, "--no-color", "--rows", "0", "--table"])
    assert "\x1b[" not in buf.getvalue() and "A_SAE" in buf.getvalue()


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def _render(argv, out, monkeypatch, no_color=None):
    if no_color is None:
        monkeypatch.delenv("NO_COLOR", raising=False)
    else:
        monkeypatch.setenv("NO_COLOR", no_color)
    monkeypatch.setattr(sys, "stdout", out)
    show_segments.main(argv)
    return out.getvalue()


@pytest.mark.parametrize("out, argv, no_color, coloured", [
    (_Terminal, [], None, True),
    (_Terminal, ["--no-color"], None, False),
    (_Terminal, [], "1", False),
    (_Terminal, [], "", True),  # no-color.org: an empty NO_COLOR does not count
    (io.StringIO, [], None, False),  # a pipe or a file
    (io.StringIO, ["--color"], None, True),
    (io.StringIO, ["--color"], "1", True),  # an explicit flag wins
], ids=["tty", "tty-no-color-flag", "tty-NO_COLOR", "tty-empty-NO_COLOR", "pipe", "pipe-color",
        "pipe-color-NO_COLOR"])
def test_viewer_colours_only_a_terminal(out, argv, no_color, coloured, monkeypatch):
    text = _render([SAMPLE, "--rows", "0", *argv], out(), monkeypatch, no_color)
    assert ("\x1b[" in text) == coloured


def test_viewer_plain_output_keeps_every_advantage(tmp_path, monkeypatch):
    """Without colour each token carries its SAE (and GAE) advantage; masked ones are bracketed."""
    probs = [0.9, 0.1, 0.95, 0.99, 0.05, 0.8, 1.0, 1.0]
    path = tmp_path / "we.jsonl"
    path.write_text(json.dumps(dict(tokens=list("abcdefgh"), logprobs=[math.log(p) for p in probs],
                                    values=[0.5, 0.4, 0.6, 0.6, 0.3, 0.7, 0, 0], reward=1.0,
                                    mask=[1] * 6 + [0, 0])) + "\n")
    text = _render([str(path), "--gae-lam", "0.5"], io.StringIO(), monkeypatch)
    lines = text.splitlines()
    sae = lines[lines.index(next(x for x in lines if x.startswith("--- SAE"))) + 1]
    gae = lines[lines.index(next(x for x in lines if x.startswith("--- GAE"))) + 1]
    assert sae == "a(+0.025) |b(+0.250) c(+0.050) d(+0.050) |e(+0.700) f(+0.300) [g] [h]"
    assert gae == "a(-0.003) |b(+0.194) c(-0.013) d(-0.025) |e(+0.550) f(+0.300) [g] [h]"


def test_viewer_numbers_are_the_worked_example(tmp_path):
    probs = [0.9, 0.1, 0.95, 0.99, 0.05, 0.8, 1.0, 1.0]
    path = tmp_path / "we.jsonl"
    path.write_text(json.dumps(dict(tokens=list("abcdefgh"), logprobs=[math.log(p) for p in probs],
                                    values=[0.5, 0.4, 0.6, 0.6, 0.3, 0.7, 0, 0], reward=1.0,
                                    mask=[1] * 6 + [0, 0])) + "\n")
    (c,) = show_segments.compute(show_segments.load(str(path)), p=0.2, lam=0.5, gae_lam=0.5)
    np.testing.assert_allclose(c["sae"], [0.025, 0.25, 0.05, 0.05, 0.7, 0.3, 0, 0], atol=1e-12)
    np.testing.assert_allclose(c["gae"], [-0.003125, 0.19375, -0.0125, -0.025, 0.55, 0.3, 0, 0], atol=1e-12)
    assert c["boundary"] == [False, True, False, False, True, False, False, False]
    assert show_segments.segments(c) == [(0, 1), (1, 4), (4, 8)]


def test_ppo_smoke_and_compiled_advantages():
    torch.set_num_threads(1)
    curve, seg = ppo_toy.train("SAE p=0.2 λ=0.5", seed=0, iters=2, batch=8, adv_fn=ppo_toy.advantage_fn)
    assert len(curve) == 2 and all(0 <= c <= 1 for c in curve) and all(0 <= s <= 1 for s in seg)
    policy, critic = ppo_toy.mlp(len(ppo_toy.VOCAB)), ppo_toy.mlp(1)
    b = ppo_toy.rollout(policy, critic, 6, torch.Generator().manual_seed(0))
    m = b["mask"]
    assert (~m).any(dim=1).all()  # padding or tool outputs in every row
    assert torch.equal(b["rewards"].sum(1), b["success"])
    torch._dynamo.reset()
    compiled = torch.compile(ppo_toy.advantage_fn, fullgraph=True, dynamic=True)
    for B in (6, 3):  # two shapes, one compile
        args = (b["rewards"][:B], b["values"][:B], b["logprobs"][:B], m[:B], 0.5, 1.0, 0.2)
        for got, want in zip(compiled(*args), ppo_toy.advantage_fn(*args)):
            torch.testing.assert_close(got, want)
