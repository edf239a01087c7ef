"""sae_ext.integrations.areal against AReaL's own code: a loop written from AReaL main
(areal-project/AReaL cbff54d, gae.py/lambda_fn.py; see _framework_sources.py), and the
``areal`` 1.0.4 package's ``PPOActor._compute_advantages`` where it is installed
(scripts/install_frameworks_for_tests.sh; skipped otherwise, saying why)."""
import types

import pytest
import torch

from _framework_sources import (DEVICES, areal_batch, areal_relative_position,
                                areal_token_level_gae, device_or_skip,
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
                            f"{exc}); install with scripts/install_frameworks_for_tests.sh")


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
