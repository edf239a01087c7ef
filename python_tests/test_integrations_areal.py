"""sae_ext.integrations.areal against AReaL's own code: loops written from AReaL main
(areal-project/AReaL cbff54d, gae.py/lambda_fn.py; see _framework_sources.py), the
``areal`` 1.0.4 package's ``PPOActor._compute_advantages`` where it is installed
(scripts/install_frameworks_for_tests.sh; skipped otherwise, saying why), and for turn-level
GAE, which no PyPI release has yet, AReaL's ``_compute_turn_level_gae`` from an installed
package that has it or from the checkout that AREAL_SOURCE names."""
import importlib.util
import os
import sys
import types

import pytest
import torch

import sae_ext
from _framework_sources import (DEVICES, areal_batch, areal_relative_position,
                                areal_token_level_gae, areal_turn_batch, areal_turn_counts,
                                areal_turn_level_gae, device_or_skip,
                                vapo_length_adaptive_loop)
from _integrations_common import ATOL, MASK_DTYPES, sae_oracle
from sae_ext.integrations import areal as sae_areal


def _try_areal_actor():
    try:
        from areal.trainer.ppo import actor
        from areal.utils.data import KLEstimator
        return actor, KLEstimator, None
    except Exception as exc:  # not installed, or a dependency missing
        return None, None, (f"areal.trainer.ppo.actor not importable ({type(exc).__name__}: "
                            f"{exc}); run `bash scripts/test_frameworks.sh`, which installs "
                            "areal into a side environment and runs these tests")


areal_actor, KLEstimator, _areal_err = _try_areal_actor()
needs_areal = pytest.mark.skipif(areal_actor is None, reason=str(_areal_err))


def _on(x, dev):
    return x.to(dev)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("mask_dtype", MASK_DTYPES)
@pytest.mark.parametrize("holes", [False, True])
@pytest.mark.parametrize("gamma,lam", [(1.0, 0.95), (0.99, 0.9), (1.0, 1.0)])
def test_gae_equals_areal_on_loss_tokens(device, mask_dtype, holes, gamma, lam):
    dev = device_or_skip(device)
    r, v, _, m, no_eos = areal_batch(seed=3 + holes, holes=holes)
    ref_adv, ref_ret = areal_token_level_gae(r, v, m, no_eos, gamma, lam)
    adv, ret = sae_areal.compute_token_level_gae(_on(r, dev), _on(v, dev),
                                                 _on(m, dev).to(mask_dtype), _on(no_eos, dev),
                                                 gamma, lam)
    valid = m.bool()
    torch.testing.assert_close(adv.cpu().double()[valid], ref_adv[valid], atol=ATOL, rtol=0)
    torch.testing.assert_close(ret.cpu().double()[valid], ref_ret[valid], atol=ATOL, rtol=0)
    assert (adv.cpu()[~valid] == 0).all() and (ret.cpu()[~valid] == 0).all()


def test_truncated_rows_bootstrap_from_the_last_value():
    r, v, _, m, no_eos = areal_batch(seed=5, truncated=(0, 1, 2))
    assert no_eos[:3].all() and not no_eos[3:].any()
    adv, _ = sae_areal.compute_token_level_gae(r, v, m, no_eos, 1.0, 0.9)
    ref, _ = areal_token_level_gae(r, v, m, no_eos, 1.0, 0.9)
    not_boot, _ = areal_token_level_gae(r, v, m, torch.zeros_like(no_eos), 1.0, 0.9)
    valid = m.bool()
    torch.testing.assert_close(adv.double()[valid], ref[valid], atol=ATOL, rtol=0)
    # the bootstrap changes the truncated rows (and only them)
    assert not torch.allclose(ref[:3][valid[:3]], not_boot[:3][valid[:3]])
    torch.testing.assert_close(ref[3:], not_boot[3:])


def test_last_position_is_never_a_step():
    r, v, _, m, no_eos = areal_batch(seed=6)
    m[:, -1] = 1  # AReaL's loop never reads it
    adv, _ = sae_areal.compute_token_level_gae(r, v, m, no_eos, 1.0, 0.9)
    ref, _ = areal_token_level_gae(r, v, m, no_eos, 1.0, 0.9)
    valid = m.bool()
    valid[:, -1] = False
    torch.testing.assert_close(adv.double()[valid], ref[valid], atol=ATOL, rtol=0)
    assert (adv[:, -1] == 0).all()


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("holes", [False, True])
def test_sae_with_equal_lambdas_is_areals_gae(device, holes):
    dev = device_or_skip(device)
    r, v, lp, m, no_eos = areal_batch(seed=7, holes=holes)
    ref_adv, ref_ret = areal_token_level_gae(r, v, m, no_eos, 0.99, 0.9)
    adv, ret = sae_areal.compute_token_level_sae(*(_on(x, dev) for x in (r, v, m, no_eos, lp)),
                                                 0.99, 0.9, lam_inner=0.9)
    valid = m.bool()
    torch.testing.assert_close(adv.cpu().double()[valid], ref_adv[valid], atol=ATOL, rtol=0)
    torch.testing.assert_close(ret.cpu().double()[valid], ref_ret[valid], atol=ATOL, rtol=0)


@pytest.mark.parametrize("holes", [False, True])
def test_sae_in_areal_conventions(holes):
    r, v, lp, m, no_eos = areal_batch(seed=8, holes=holes)
    steps = m.clone()
    steps[:, -1] = 0
    boot = v[:, -1].double() * no_eos.double()
    ref_adv, ref_ret = sae_oracle(r, v, lp, steps, steps, 1.0, 0.5, 1.0, 0.2, bootstrap=boot)
    adv, ret = sae_areal.compute_token_level_sae(r, v, m, no_eos, lp, 1.0, 0.5)
    torch.testing.assert_close(adv.double(), ref_adv, atol=ATOL, rtol=0)
    torch.testing.assert_close(ret.double(), ref_ret, atol=ATOL, rtol=0)


def test_relative_position_lam_equals_areals():
    _, _, _, m, _ = areal_batch(seed=9)
    m[1] = 0
    m[2] = 0
    m[2, 4] = 1  # one token
    for q in (0.5, 0.9, 1.0):
        torch.testing.assert_close(sae_areal.relative_position_lam(m, q).double(),
                                   areal_relative_position(m, q), atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="q must"):
        sae_areal.relative_position_lam(m, 0.0)


def test_bad_shapes_are_named():
    r, v, _, m, no_eos = areal_batch(seed=10)
    with pytest.raises(ValueError, match="seq_no_eos_mask"):
        sae_areal.compute_token_level_gae(r, v, m, no_eos[:2], 1.0, 0.9)
    with pytest.raises(ValueError, match="at least 2"):
        sae_areal.compute_token_level_gae(r[:, :1], v[:, :1], m[:, :1], no_eos, 1.0, 0.9)


# ------------------------------------------------------------------------------------------
# Per-sample λ (switch on with the ops' per-row λ)
# ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("holes", [False, True])
def test_per_sample_lam_equals_areal(device, holes):
    dev = device_or_skip(device)
    r, v, lp, m, no_eos = areal_batch(seed=11, holes=holes)
    for lam in (vapo_length_adaptive_loop(m, 0.05), areal_relative_position(m, 0.3)):
        ref_adv, ref_ret = areal_token_level_gae(r, v, m, no_eos, 1.0, lam)
        adv, ret = sae_areal.compute_token_level_gae(*(_on(x, dev) for x in (r, v, m, no_eos)),
                                                     1.0, _on(lam.float(), dev))
        valid = m.bool()
        torch.testing.assert_close(adv.cpu().double()[valid], ref_adv[valid], atol=ATOL, rtol=0)
        torch.testing.assert_close(ret.cpu().double()[valid], ref_ret[valid], atol=ATOL, rtol=0)
        sae_adv, _ = sae_areal.compute_token_level_sae(
            *(_on(x, dev) for x in (r, v, m, no_eos, lp)), 1.0, _on(lam.float(), dev),
            lam_inner=0.9)
        steps = m.clone()
        steps[:, -1] = 0
        boot = v[:, -1].double() * no_eos.double()
        exp, _ = sae_oracle(r, v, lp, steps, steps, 1.0, lam, 0.9, 0.2, bootstrap=boot)
        torch.testing.assert_close(sae_adv.cpu().double(), exp, atol=ATOL, rtol=0)


def test_vapo_lam_equals_areals():
    _, _, _, m, _ = areal_batch(seed=12)
    m[1] = 0
    for alpha in (0.05, 1.0, 3.0):
        torch.testing.assert_close(sae_areal.vapo_length_adaptive_lam(m, alpha).double(),
                                   vapo_length_adaptive_loop(m, alpha), atol=1e-6, rtol=0)


# ------------------------------------------------------------------------------------------
# Against the areal package (1.0.4): the loop inside PPOActor._compute_advantages
# ------------------------------------------------------------------------------------------

def _actor(gamma, lam, kl_ctl):
    """A PPOActor with just the attributes _compute_advantages reads (no engine)."""
    actor = areal_actor.PPOActor.__new__(areal_actor.PPOActor)
    actor.config = types.SimpleNamespace(overlong_reward_penalty=False, use_decoupled_loss=True,
                                         recompute_logprob=False)
    actor.reward_bias, actor.reward_scaling, actor.reward_clip = 0.0, 1.0, 1e9
    actor.reward_norm, actor.adv_norm = None, None
    actor.kl_ctl, actor.kl_estimator = kl_ctl, KLEstimator("k1")
    actor.discount, actor.gae_lambda = gamma, lam
    actor.mask_no_eos_with_zero = False
    return actor


def _areal_data(B=6, T=40, *, seed, holes):
    g = torch.Generator().manual_seed(seed)
    attn = torch.zeros(B, T, dtype=torch.bool)
    gen = torch.zeros(B, T, dtype=torch.bool)
    for b in range(B):
        prompt = int(torch.randint(2, 6, (1,), generator=g))
        seqlen = T if b % 3 == 0 else int(torch.randint(prompt + 2, T, (1,), generator=g))
        attn[b, :seqlen] = True
        gen[b, prompt:seqlen] = True
        if holes and seqlen - prompt > 8:
            s = prompt + 3
            gen[b, s:s + 3] = False  # tool output inside the trajectory
    return {
        "input_ids": torch.zeros(B, T, dtype=torch.long),
        "attention_mask": attn,
        "loss_mask": gen.long(),
        "logprobs": -torch.rand(B, T, generator=g) * 3,
        "ref_logp": -torch.rand(B, T, generator=g) * 3,
        "values": torch.randn(B, T, generator=g),
        "rewards": torch.randint(0, 2, (B,), generator=g).float(),
    }


@needs_areal
@pytest.mark.parametrize("holes", [False, True])
@pytest.mark.parametrize("gamma,lam,kl_ctl", [(1.0, 0.95, 0.0), (0.99, 0.9, 0.1)])
def test_gae_equals_the_areal_package(holes, gamma, lam, kl_ctl):
    data = _areal_data(seed=20 + holes, holes=holes)
    values = data["values"].clone()
    seq_no_eos = data["attention_mask"].sum(-1) == data["attention_mask"].shape[1]
    out = _actor(gamma, lam, kl_ctl)._compute_advantages(data)
    loss_mask = out["loss_mask"]  # rolled by AReaL
    adv, ret = sae_areal.compute_token_level_gae(out["tot_rewards"], values, loss_mask.bool(),
                                                 seq_no_eos, gamma, lam)
    valid = loss_mask.bool()
    assert valid.any() and seq_no_eos.any()
    torch.testing.assert_close(adv[valid], out["advantages"][valid], atol=ATOL, rtol=0)
    torch.testing.assert_close(ret[valid], out["returns"][valid], atol=ATOL, rtol=0)
    # SAE on AReaL's rolled old_logp, with equal lambdas: AReaL's numbers again
    sae_adv, _ = sae_areal.compute_token_level_sae(out["tot_rewards"], values, loss_mask,
                                                   seq_no_eos, out["logprobs"], gamma, lam,
                                                   lam_inner=lam)
    torch.testing.assert_close(sae_adv[valid], out["advantages"][valid], atol=ATOL, rtol=0)


# ------------------------------------------------------------------------------------------
# Turn-level GAE (gae_timestep_unit="turn"), against a loop written from AReaL main cbff54d
# and against AReaL's own _compute_turn_level_gae where one can be loaded
# ------------------------------------------------------------------------------------------

def _try_areal_turn_gae():
    """AReaL's _compute_turn_level_gae: from the installed package when it has one (the PyPI
    release, 1.0.4, does not: turn-level GAE came to AReaL main after v2.0.0), else from the
    AReaL checkout that AREAL_SOURCE names, its areal/trainer/ppo/gae.py loaded by path (it
    imports only torch and a TypedDict of lambda_fn.py, stubbed while it loads)."""
    try:
        from areal.trainer.ppo.gae import _compute_turn_level_gae
        return _compute_turn_level_gae, None
    except Exception as exc:
        err = f"areal.trainer.ppo.gae._compute_turn_level_gae not importable ({type(exc).__name__})"
    src = os.environ.get("AREAL_SOURCE")
    if not src:
        return None, err + "; set AREAL_SOURCE to an AReaL checkout (main at cbff54d or later)"
    path = os.path.join(src, "areal", "trainer", "ppo", "gae.py")
    name = "areal.trainer.ppo.lambda_fn"
    saved = sys.modules.get(name)
    stub = types.ModuleType(name)
    stub.GAELambdaContext = dict
    sys.modules[name] = stub
    try:
        spec = importlib.util.spec_from_file_location("_areal_source_gae", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        if saved is None:
            del sys.modules[name]
        else:
            sys.modules[name] = saved
    return module._compute_turn_level_gae, None


areal_turn_gae, _areal_turn_err = _try_areal_turn_gae()
needs_areal_turn = pytest.mark.skipif(areal_turn_gae is None, reason=str(_areal_turn_err))


def _assert_turn_close(got, ref):
    for g, r in zip(got, ref):
        torch.testing.assert_close(g.cpu().double(), r.double().cpu(), atol=ATOL, rtol=0)


TURN_CASES = [dict(), dict(holes=True), dict(id_gaps=True), dict(max_turns=1),
              dict(holes=True, id_gaps=True, max_turns=6)]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("mask_dtype", MASK_DTYPES)
@pytest.mark.parametrize("case", TURN_CASES, ids=lambda c: "-".join(c) or "plain")
@pytest.mark.parametrize("gamma,lam", [(1.0, 0.95), (0.99, 0.9), (0.9, 0.0)])
def test_turn_gae_equals_areal_everywhere(device, mask_dtype, case, gamma, lam):
    """Every position (AReaL's: times loss_mask, the values as return off it), several turns
    per row, tool output between turns, trailing padding, truncated rows 0 and 2."""
    dev = device_or_skip(device)
    r, v, m, ids, no_eos = areal_turn_batch(seed=30 + len(case), **case)
    m[4] = 0  # a row without a turn
    ref = areal_turn_level_gae(r, v, m, ids, no_eos, gamma, lam)
    got = sae_areal.compute_turn_level_gae(*(_on(x, dev) for x in (r, v, m.to(mask_dtype), ids,
                                                                     no_eos)), gamma, lam)
    assert got[0].device.type == dev.type
    _assert_turn_close(got, ref)
    assert (got[0].cpu()[4] == 0).all() and torch.equal(got[1].cpu()[4], v[4])


def test_turn_batch_has_what_the_cases_need():
    """The batches above hold several turns, tool gaps, holes inside turns and truncated rows."""
    r, v, m, ids, no_eos = areal_turn_batch(seed=31, holes=True)
    counts = areal_turn_counts(m, ids)
    assert counts.max() >= 3 and no_eos[0] and no_eos[2] and not no_eos[1]
    assert m[0, -2] == 1 and m[:, -1].eq(0).all()  # truncated: the last turn reaches T - 2
    inside = (ids >= 0) & (m == 0)  # positions of a turn off the mask (holes)
    assert inside.any()


def test_one_turn_is_the_sum_of_its_rewards_plus_the_bootstrap():
    """One turn per row: A = Σ rewards on the mask + γ·bootstrap − V(first position), on
    every position of the turn, whatever λ."""
    r, v, m, ids, no_eos = areal_turn_batch(seed=32, max_turns=1)
    assert areal_turn_counts(m, ids).eq(1).all()
    gamma = 0.9
    for lam in (0.0, 0.7):
        adv, ret = sae_areal.compute_turn_level_gae(r, v, m, ids, no_eos, gamma, lam)
        for b in range(m.shape[0]):
            pos = torch.nonzero(m[b]).flatten()
            exp = (r[b, pos].double().sum() + gamma * v[b, -1].double() * no_eos[b]
                   - v[b, pos[0]].double())
            torch.testing.assert_close(adv[b, pos].double(), exp.expand(len(pos)), atol=ATOL,
                                       rtol=0)
            torch.testing.assert_close(ret[b, pos].double(),
                                       (exp + v[b, pos[0]]).expand(len(pos)), atol=ATOL, rtol=0)


def test_turn_truncated_rows_bootstrap_from_the_last_value():
    r, v, m, ids, no_eos = areal_turn_batch(seed=33, truncated=(0, 1, 3))
    got = sae_areal.compute_turn_level_gae(r, v, m, ids, no_eos, 1.0, 0.9)
    _assert_turn_close(got, areal_turn_level_gae(r, v, m, ids, no_eos, 1.0, 0.9))
    not_boot, _ = sae_areal.compute_turn_level_gae(r, v, m, ids, torch.zeros_like(no_eos),
                                                   1.0, 0.9)
    valid = m.bool()
    diff = (got[0] - not_boot).abs()
    assert (diff[[0, 1, 3]][valid[[0, 1, 3]]] > 0).all()  # every turn of a truncated row
    assert (diff[[2, 4, 5]] == 0).all()


def test_every_token_its_own_turn_is_token_level_gae():
    """With one turn per loss position the turn recursion is AReaL's token-level one."""
    r, v, _, m, no_eos = areal_batch(seed=34, holes=True)
    ids = torch.where(m.bool(), torch.arange(m.shape[1]).expand_as(m), -1)
    adv, ret = sae_areal.compute_turn_level_gae(r, v, m, ids, no_eos, 0.99, 0.9)
    tok_adv, tok_ret = sae_areal.compute_token_level_gae(r, v, m, no_eos, 0.99, 0.9)
    valid = m.bool()
    torch.testing.assert_close(adv[valid], tok_adv[valid], atol=ATOL, rtol=0)
    torch.testing.assert_close(ret[valid], tok_ret[valid], atol=ATOL, rtol=0)


def test_turn_gae_at_gamma_one_is_sae_with_turn_boundaries():
    """The docstring's statement: γ = 1, each turn's first position a boundary, λ_inner = 1:
    the SAE advantage on a turn's first position is the turn's advantage."""
    r, v, m, ids, no_eos = areal_turn_batch(seed=35, holes=True, id_gaps=True, max_turns=5)
    adv, _ = sae_areal.compute_turn_level_gae(r, v, m, ids, no_eos, 1.0, 0.8)
    valid = m.bool()
    seen = torch.cummax(torch.where(valid, ids, -1), dim=1).values  # largest id up to t
    before = torch.cat([torch.full_like(seen[:, :1], -1), seen[:, :-1]], dim=1)
    first = valid & (ids > before)
    boot = v[:, -1] * no_eos
    sae_adv, _ = sae_ext.advantages_from_boundaries(r, v, first, m, gamma=1.0, lam=0.8,
                                                    lam_inner=1.0, bootstrap=boot)
    assert first.sum() == areal_turn_counts(m, ids).sum()
    torch.testing.assert_close(sae_adv[first], adv[first], atol=ATOL, rtol=0)


@pytest.mark.parametrize("device", DEVICES)
def test_turn_per_sample_lam_equals_areal(device):
    """AReaL's λ functions in turn mode read each row's number of turns."""
    dev = device_or_skip(device)
    r, v, m, ids, no_eos = areal_turn_batch(seed=36, holes=True, id_gaps=True, max_turns=6)
    m[5] = 0
    counts = areal_turn_counts(m, ids)
    assert len(set(counts.tolist())) >= 3
    assert torch.equal(sae_areal.turn_counts(_on(m, dev), _on(ids, dev)).cpu(), counts)
    per_turn = (torch.arange(counts.max())[None] < counts[:, None]).float()  # L_b = counts
    for alpha in (0.3, 1.0):
        torch.testing.assert_close(
            sae_areal.vapo_length_adaptive_lam(_on(m, dev), alpha, turn_ids=_on(ids, dev))
            .cpu().double(), vapo_length_adaptive_loop(per_turn, alpha), atol=1e-6, rtol=0)
    for q in (0.3, 1.0):
        torch.testing.assert_close(
            sae_areal.relative_position_lam(_on(m, dev), q, turn_ids=_on(ids, dev))
            .cpu().double(), areal_relative_position(per_turn, q), atol=1e-6, rtol=0)
    for lam in (vapo_length_adaptive_loop(per_turn, 0.3), areal_relative_position(per_turn, 0.3)):
        assert len(set(lam.tolist())) >= 2
        got = sae_areal.compute_turn_level_gae(*(_on(x, dev) for x in (r, v, m, ids, no_eos)),
                                               0.95, _on(lam.float(), dev))
        _assert_turn_close(got, areal_turn_level_gae(r, v, m, ids, no_eos, 0.95, lam.float()))


def test_turn_gae_takes_the_keywords_areals_actor_passes():
    """PPOActor._compute_advantages (cbff54d) calls it by keyword."""
    r, v, m, ids, no_eos = areal_turn_batch(seed=37)
    got = sae_areal.compute_turn_level_gae(rewards=r, values=v, loss_mask=m, turn_ids=ids,
                                           seq_no_eos_mask=no_eos, discount=1.0,
                                           gae_lambda=0.95)
    _assert_turn_close(got, areal_turn_level_gae(r, v, m, ids, no_eos, 1.0, 0.95))


def test_turn_bad_inputs_are_named():
    r, v, m, ids, no_eos = areal_turn_batch(seed=38)
    call = sae_areal.compute_turn_level_gae
    with pytest.raises(ValueError, match="`turn_ids` must have the shape"):
        call(r, v, m, ids[:, 1:], no_eos, 1.0, 0.9)
    with pytest.raises(ValueError, match="`turn_ids` must have an integer dtype"):
        call(r, v, m, ids.float(), no_eos, 1.0, 0.9)
    with pytest.raises(ValueError, match="`values` must have the shape"):
        call(r, v[:, 1:], m, ids, no_eos, 1.0, 0.9)
    with pytest.raises(ValueError, match="seq_no_eos_mask"):
        call(r, v, m, ids, no_eos[1:], 1.0, 0.9)
    pos = int(torch.nonzero(m[1]).flatten()[0])
    for value, match in ((-1, ">= 0"), (m.shape[1], "< T="), ):
        bad = ids.clone()
        bad[1, pos] = value
        with pytest.raises(ValueError, match=match):
            call(r, v, m, bad, no_eos, 1.0, 0.9)
    bad = ids.clone()
    last = int(torch.nonzero(m[0]).flatten()[-1])
    bad[0, last] = 0
    bad[0, :last][m[0, :last].bool()] = torch.clamp_min(bad[0, :last][m[0, :last].bool()], 1)
    with pytest.raises(ValueError, match="non-decreasing"):
        call(r, v, m, bad, no_eos, 1.0, 0.9)
    # off the mask the ids are not read (AReaL's rule): any value there is fine
    odd = torch.where(m.bool(), ids, torch.randint(-9, 999, ids.shape))
    _assert_turn_close(call(r, v, m, odd, no_eos, 1.0, 0.9),
                       areal_turn_level_gae(r, v, m, ids, no_eos, 1.0, 0.9))


@needs_areal_turn
@pytest.mark.parametrize("case", TURN_CASES, ids=lambda c: "-".join(c) or "plain")
def test_turn_gae_equals_areals_own_function(case):
    for seed in range(3):
        r, v, m, ids, no_eos = areal_turn_batch(seed=40 + seed, **case)
        lam = 0.9 if seed == 0 else torch.rand(m.shape[0], generator=torch.Generator()
                                               .manual_seed(seed))
        ref = areal_turn_gae(r, v, m, ids.int(), no_eos, 0.97, lam)
        _assert_turn_close(sae_areal.compute_turn_level_gae(r, v, m, ids.int(), no_eos, 0.97,
                                                            lam), ref)
