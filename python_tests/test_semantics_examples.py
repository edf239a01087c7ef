"""docs/semantics.md's worked examples of the variants (per-row λ, lam_critic), read from the
doc's own tables, against sae_ext.reference (float64) and the op (float32 and float64), and
the packed layout of the same rows. Editing a number in the doc without the other numbers
following makes these fail."""
import math
import os
import re

import pytest
import torch

import sae_ext
from sae_ext import reference

DOC = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs",
                   "semantics.md")
GAMMA, LAM_INNER, THRESHOLD, ALPHA = 1.0, 1.0, 0.2, 0.5
LAM_CRITIC = [0.5, 1.0]


def _section(title):
    text = open(DOC, encoding="utf-8").read()
    start = text.index(f"### {title}\n")
    end = text.find("\n#", start + 1)
    return text[start:end if end >= 0 else len(text)]


def _cell(s):
    s = s.strip().replace("\u2212", "-")  # the doc writes minus signs as U+2212
    if s in ("T", "F"):
        return s == "T"
    return float(s)


def _table(title):
    """{row label without its parenthesis: [cells]} of the first table under ``title``."""
    rows = {}
    for line in _section(title).splitlines():
        if not line.startswith("| ") or line.startswith("| ---") or line.startswith("| t |"):
            continue
        label, *cells = [c.strip() for c in line.strip().strip("|").split("|")]
        rows[re.sub(r"\s+\(.*\)$", "", label)] = [_cell(c) for c in cells]
    assert rows, f"no table under '{title}' in {DOC}"
    return rows


def _two_rows(tab, name, dtype=torch.float64):
    return torch.tensor([tab[f"{name}, row 0"], tab[f"{name}, row 1"]], dtype=dtype)


def _inputs(dtype=torch.float64):
    tab = _table("Worked example: per-row λ")
    logprob = torch.tensor(tab["prob = exp(logprob)"], dtype=torch.float64).log()
    value = torch.tensor(tab["value"], dtype=torch.float64)
    rewards = _two_rows(tab, "reward").to(dtype)
    values = torch.stack([value, value]).to(dtype)
    logprobs = torch.stack([logprob, logprob]).to(dtype)
    mask = _two_rows(tab, "mask").bool()
    return tab, rewards, values, logprobs, mask


def test_the_tables_boundaries_and_lambdas():
    tab, _, _, logprobs, mask = _inputs()
    expected = torch.tensor([tab["boundary, row 0"], tab["boundary, row 1"]])
    assert torch.equal(reference.segment_boundaries(logprobs, mask, THRESHOLD), expected)
    assert torch.equal(sae_ext.segment_boundaries(logprobs.float(), mask, threshold=THRESHOLD),
                       expected)
    # the text: row 0 has 4 valid tokens (λ = 0.5), row 1 has 2 (α·l = 1: clamped to 0)
    torch.testing.assert_close(reference.length_adaptive_lam(mask, ALPHA),
                               torch.tensor([0.5, 0.0], dtype=torch.float64), atol=0, rtol=0)
    torch.testing.assert_close(sae_ext.length_adaptive_lam(mask, alpha=ALPHA),
                               torch.tensor([0.5, 0.0]), atol=0, rtol=0)


def test_length_adaptive_lam_clamp_as_stated():
    # α = 0.05: rows of up to 20 tokens get 0; 100 tokens give 1 - 1/5; nothing reaches 1.
    lengths = [0, 1, 20, 21, 100, 10_000]
    mask = torch.zeros(len(lengths), max(lengths), dtype=torch.bool)
    for b, n in enumerate(lengths):
        mask[b, :n] = True
    expected = [0.0, 0.0, 0.0, 1 - 1 / 1.05, 0.8, 1 - 1 / 500]
    got = sae_ext.length_adaptive_lam(mask)
    torch.testing.assert_close(got, torch.tensor(expected), atol=1e-7, rtol=0)
    assert got.dtype == torch.float32 and bool((got < 1).all())
    torch.testing.assert_close(reference.length_adaptive_lam(mask, 0.05),
                               torch.tensor(expected, dtype=torch.float64), atol=1e-15, rtol=0)


@pytest.mark.parametrize("impl", ["reference", "op_float32", "op_float64"])
def test_per_row_lam_example(impl):
    tab, r, v, lp, m = _inputs(torch.float32 if impl == "op_float32" else torch.float64)
    lam = torch.tensor([0.5, 0.0], dtype=r.dtype)
    if impl == "reference":
        adv, ret = reference.advantages(r, v, lp, m, GAMMA, lam, LAM_INNER, THRESHOLD)
    else:
        adv, ret = sae_ext.advantages(r, v, lp, m, lam=lam, gamma=GAMMA, lam_inner=LAM_INNER,
                                      threshold=THRESHOLD)
    atol = 1e-6 if impl == "op_float32" else 1e-12
    torch.testing.assert_close(adv.double(), _two_rows(tab, "advantage"), atol=atol, rtol=0)
    torch.testing.assert_close(ret.double(), _two_rows(tab, "return"), atol=atol, rtol=0)


def test_per_row_lam_differs_from_the_batch_lam_as_the_text_says():
    # "where the batch's λ = 0.5 would have given 0.2"
    _, r, v, lp, m = _inputs()
    adv, _ = reference.advantages(r, v, lp, m, GAMMA, 0.5, LAM_INNER, THRESHOLD)
    assert math.isclose(float(adv[1, 0]), 0.2, abs_tol=1e-12)


@pytest.mark.parametrize("impl", ["reference", "op_float32", "op_float64"])
def test_lam_critic_example(impl):
    tab, r, v, lp, m = _inputs(torch.float32 if impl == "op_float32" else torch.float64)
    crit = _table("Worked example: `lam_critic`")
    lam = torch.tensor([0.5, 0.0], dtype=r.dtype)
    lam_c = torch.tensor(LAM_CRITIC, dtype=r.dtype)
    if impl == "reference":
        adv, ret = reference.advantages(r, v, lp, m, GAMMA, lam, LAM_INNER, THRESHOLD,
                                        lam_critic=lam_c)
        adv_c, _ = reference.gae(r, v, m, GAMMA, lam_c)
        torch.testing.assert_close(adv_c, _two_rows(crit, "critic advantage"), atol=1e-12,
                                   rtol=0)
    else:
        adv, ret = sae_ext.advantages(r, v, lp, m, lam=lam, gamma=GAMMA, lam_inner=LAM_INNER,
                                      threshold=THRESHOLD, lam_critic=lam_c)
    atol = 1e-6 if impl == "op_float32" else 1e-12
    torch.testing.assert_close(adv.double(), _two_rows(tab, "advantage"), atol=atol, rtol=0)
    torch.testing.assert_close(ret.double(), _two_rows(crit, "return"), atol=atol, rtol=0)
    # R = A^c + V on the valid tokens, 0 elsewhere
    torch.testing.assert_close(_two_rows(crit, "return"),
                               torch.where(m, _two_rows(crit, "critic advantage")
                                           + torch.tensor(tab["value"], dtype=torch.float64),
                                           0.0), atol=1e-12, rtol=0)


def test_lam_critic_one_is_the_monte_carlo_return():
    _, r, v, lp, m = _inputs(torch.float32)
    _, ret = sae_ext.advantages(r, v, lp, m, lam=0.5, lam_critic=1.0)
    mc = torch.flip(torch.cumsum(torch.flip(r.double(), [1]), 1), [1])
    torch.testing.assert_close(ret.double(), torch.where(m, mc, 0.0), atol=1e-6, rtol=0)


def test_packed_rows_as_the_text_says():
    tab, r, v, lp, m = _inputs(torch.float32)
    cu = torch.tensor([0, 4, 6])
    keep = m.flatten()
    adv, ret = sae_ext.advantages_varlen(r.flatten()[keep], v.flatten()[keep],
                                         lp.flatten()[keep], cu, lam=torch.tensor([0.5, 0.0]),
                                         lam_inner=LAM_INNER, threshold=THRESHOLD)
    want = _two_rows(tab, "advantage").flatten()[keep]
    torch.testing.assert_close(adv.double(), want, atol=1e-6, rtol=0)
    torch.testing.assert_close(ret.double(), _two_rows(tab, "return").flatten()[keep],
                               atol=1e-6, rtol=0)
