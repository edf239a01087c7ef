"""The quickstart prints enough to check its advantages: recomputing them with the float64
reference from the printed inputs alone gives the printed outputs."""
from __future__ import annotations

import io
import math
import sys
from contextlib import redirect_stdout

import torch

from sae_ext import quickstart, reference


def _tables(text):
    """{response: {row label: [cells]}} from the printed tables."""
    out, cur = {}, None
    for line in text.splitlines():
        if line.startswith("response "):
            cur = out.setdefault(int(line.split()[1]), {})
        elif cur is not None and line.startswith("  ") and line[2:17].strip():
            cur[line[2:17].strip()] = line[17:].split()
    return out


def test_printed_inputs_reproduce_the_printed_advantages(monkeypatch):
    monkeypatch.setattr(sys, "argv", ["quickstart"])
    buf = io.StringIO()
    with redirect_stdout(buf):
        quickstart.main()
    tables = _tables(buf.getvalue())
    assert sorted(tables) == [0, 1, 2]
    for b, t in tables.items():
        row = lambda k: torch.tensor([[float(x) for x in t[k]]], dtype=torch.float64)  # noqa: E731
        mask = torch.tensor([[c != "-" for c in t["segment start"]]])
        probs = row("probability")
        logprobs = torch.where(probs > 0, probs.clamp_min(1e-300).log(), -math.inf)
        adv, ret = reference.advantages(row("reward r"), row("value V"), logprobs, mask,
                                        1.0, 0.5, 1.0, 0.2)
        # printed to 3 decimals, so the recomputation from rounded inputs agrees to ~1e-3
        torch.testing.assert_close(adv, row("SAE advantage"), atol=2e-3, rtol=0)
        torch.testing.assert_close(ret, row("SAE return"), atol=2e-3, rtol=0)
        gae, _ = reference.advantages(row("reward r"), row("value V"), logprobs, mask,
                                      1.0, 0.95, 0.95, 0.2)
        torch.testing.assert_close(gae, row("GAE advantage"), atol=5e-3, rtol=0)
        starts = reference.segment_boundaries(logprobs, mask, 0.2)
        assert [c == "|" for c in t["segment start"]] == starts[0].tolist()
    assert "look like probabilities" in buf.getvalue()
