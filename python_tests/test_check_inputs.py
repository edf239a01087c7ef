"""sae_ext.check_inputs: the value mistakes the ops accept silently."""
from __future__ import annotations

import pytest
import torch

import sae_ext

from conftest import make_rollout


def _batch():
    r, v, lp, m, bs = make_rollout(6, 40)
    m[0, 5:9] = False  # a hole: what sits under it is not checked
    return r, v, lp, m, bs


def test_a_good_batch_passes():
    r, v, lp, m, bs = _batch()
    assert sae_ext.check_inputs(r, v, lp, m, bootstrap=bs) is None


def test_probabilities_passed_as_logprobs_are_caught():
    r, v, lp, m, _ = _batch()
    with pytest.raises(ValueError, match=r"`logprobs` is above 0.001 on \d+ of \d+ valid tokens.*"
                                         r"look like probabilities"):
        sae_ext.check_inputs(r, v, lp.exp(), m)
    # ...which is what makes SAE quietly Monte Carlo: the op accepts them and cuts nowhere
    assert not sae_ext.segment_boundaries(lp.exp(), m).any()


def test_one_positive_logprob_is_enough_and_the_tolerance_is_respected():
    r, v, lp, m, _ = _batch()
    lp = lp.clone()
    lp[2, 3] = 1e-4  # rounding noise of an inference engine: accepted
    sae_ext.check_inputs(r, v, lp, m)
    lp[2, 3] = 0.5
    with pytest.raises(ValueError, match=r"on 1 of \d+ valid tokens \(largest 0.5\)"):
        sae_ext.check_inputs(r, v, lp, m)
    sae_ext.check_inputs(r, v, lp, m, max_logprob=1.0)


def test_masked_positions_are_not_checked():
    r, v, lp, m, _ = _batch()
    lp, r, v = lp.clone(), r.clone(), v.clone()
    lp[0, 5:9] = 0.7  # OpenRLHF and TRL put dummies (e.g. 1.0) on masked positions
    r[0, 6] = float("nan")
    v[0, 7] = float("inf")
    sae_ext.check_inputs(r, v, lp, m)


@pytest.mark.parametrize("arg, value, phrase", [
    ("logprobs", float("nan"), "`logprobs` is NaN on 1 of"),
    ("rewards", float("nan"), "`rewards` is NaN or infinite on 1 of"),
    ("values", float("inf"), "`values` is NaN or infinite on 1 of"),
    ("bootstrap", float("nan"), "`bootstrap` is NaN or infinite in 1 of 6 rows"),
])
def test_nan_and_inf_on_valid_tokens(arg, value, phrase):
    r, v, lp, m, bs = _batch()
    args = dict(rewards=r.clone(), values=v.clone(), logprobs=lp.clone(), bootstrap=bs.clone())
    if arg == "bootstrap":
        args[arg][4] = value
    else:
        args[arg][0, 0] = value
    with pytest.raises(ValueError) as ei:
        sae_ext.check_inputs(args["rewards"], args["values"], args["logprobs"], m,
                             bootstrap=args["bootstrap"])
    assert phrase in str(ei.value)


def test_warn_instead_of_raise():
    r, v, lp, m, _ = _batch()
    with pytest.warns(UserWarning, match="look like probabilities"):
        sae_ext.check_inputs(r, v, lp.exp(), m, warn=True)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float64])
def test_other_dtypes(dtype):
    r, v, lp, m, _ = make_rollout(4, 16, dtype=dtype)
    sae_ext.check_inputs(r, v, lp, m)
    with pytest.raises(ValueError, match="look like probabilities"):
        sae_ext.check_inputs(r, v, lp.exp(), m)


def test_shapes_are_checked_by_the_ops_rules():
    r, v, lp, m, _ = _batch()
    with pytest.raises(RuntimeError, match=r"sae_ext.check_inputs: `mask` must have the shape of "
                                           r"`rewards` \[6, 40\], got \[6, 39\]"):
        sae_ext.check_inputs(r, v, lp, m[:, 1:])
