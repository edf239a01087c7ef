"""sae_ext.integrations.nemo_rl against loops written from NeMo-RL v0.7.0's
GeneralizedAdvantageEstimator (NVIDIA-NeMo/RL 81aa43dd; see _framework_sources.py). NeMo-RL is
not installable from PyPI, so there is no package test."""
import types

import pytest
import torch

from _framework_sources import (DEVICES, device_or_skip, nemo_rl_compute_advantage,
                                nemo_rl_token_level_rewards)
from _integrations_common import ATOL, MASK_DTYPES, random_batch, sae_oracle
from sae_ext.integrations import nemo_rl as sae_nemo


LOSS_CONFIG = types.SimpleNamespace(use_kl_in_reward=False, reference_policy_kl_penalty=0.0,
                                    reference_policy_kl_type="k3")


def _config(**kw):
    base = {"gae_lambda": 0.95, "gae_gamma": 1.0, "normalize_advantages": False,
            "gae_lambda_value": None, "gae_lambda_policy": None, "length_adaptive_alpha": 0}
    base.update(kw)
    return base


def _inputs(seed, holes, B=6, T=40):
    # NeMo-RL's mask spans the whole sequence: a masked prompt first, then the response.
    _, v, lp, m = random_batch(B, T, seed=seed, holes=holes, prefix=5, padding_rewards=False)
    rewards = torch.randint(0, 2, (B,), generator=torch.Generator().manual_seed(seed)).float()
    return rewards, v, lp, m


def _check(adv, ret, ref_adv, ref_ret, m):
    valid = m.bool()
    torch.testing.assert_close(adv.cpu().double()[valid], ref_adv[valid], atol=ATOL, rtol=0)
    torch.testing.assert_close(ret.cpu().double()[valid], ref_ret[valid], atol=ATOL, rtol=0)
    assert (adv.cpu()[~valid] == 0).all()


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("mask_dtype", MASK_DTYPES)
@pytest.mark.parametrize("holes", [False, True])
@pytest.mark.parametrize("gamma,lam,normalize", [(1.0, 0.95, False), (0.99, 0.9, True),
                                                 (1.0, 1.0, True)])
def test_gae_equals_nemo_rl(device, mask_dtype, holes, gamma, lam, normalize):
    dev = device_or_skip(device)
    rewards, v, _, m = _inputs(3 + holes, holes)
    cfg = _config(gae_lambda=lam, gae_gamma=gamma, normalize_advantages=normalize)
    ref_adv, ref_ret = nemo_rl_compute_advantage(cfg, rewards, m, v)
    est = sae_nemo.GeneralizedAdvantageEstimator(cfg, LOSS_CONFIG)
    adv, ret = est.compute_advantage(prompt_ids=None, rewards=rewards.to(dev),
                                     mask=m.to(dev).to(mask_dtype), values=v.to(dev))
    _check(adv, ret, ref_adv, ref_ret, m)


def test_reward_lands_on_the_last_mask_position():
    rewards, _, _, m = _inputs(4, holes=True)
    est = sae_nemo.GeneralizedAdvantageEstimator(_config(), LOSS_CONFIG)
    got = est._build_token_level_rewards(rewards, m.bool(), None, None)
    torch.testing.assert_close(got.double(), nemo_rl_token_level_rewards(rewards, m))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("holes", [False, True])
def test_sae_with_equal_lambdas_is_nemo_rls_gae(device, holes):
    dev = device_or_skip(device)
    rewards, v, lp, m = _inputs(5, holes)
    cfg = _config(gae_lambda=0.9, gae_gamma=0.99, normalize_advantages=True)
    ref_adv, ref_ret = nemo_rl_compute_advantage(cfg, rewards, m, v)
    est = sae_nemo.GeneralizedAdvantageEstimator(dict(cfg, sae=True, sae_lam_inner=0.9),
                                                 LOSS_CONFIG)
    adv, ret = est.compute_advantage(None, rewards.to(dev), m.to(dev), v.to(dev),
                                     logprobs=lp.to(dev))
    _check(adv, ret, ref_adv, ref_ret, m)


@pytest.mark.parametrize("holes", [False, True])
def test_sae_in_nemo_rls_conventions(holes):
    rewards, v, lp, m = _inputs(6, holes)
    est = sae_nemo.GeneralizedAdvantageEstimator(_config(gae_lambda=0.5, sae=True,
                                                         sae_threshold=0.3), LOSS_CONFIG)
    adv, ret = est.compute_advantage(None, rewards, m, v, logprobs=lp)
    r = nemo_rl_token_level_rewards(rewards, m)
    ref_adv, ref_ret = sae_oracle(r, v, lp, m, m, 1.0, 0.5, 1.0, 0.3)
    torch.testing.assert_close(adv.double(), ref_adv, atol=ATOL, rtol=0)
    torch.testing.assert_close(ret.double(), ref_ret, atol=ATOL, rtol=0)


def test_sae_without_logprobs_says_so():
    rewards, v, _, m = _inputs(7, False)
    est = sae_nemo.GeneralizedAdvantageEstimator(_config(sae=True), LOSS_CONFIG)
    with pytest.raises(ValueError, match="logprobs"):
        est.compute_advantage(None, rewards, m, v)


def test_install_replaces_the_name_nemo_rls_factory_looks_up():
    """ppo._create_advantage_estimator (v0.7.0) builds GeneralizedAdvantageEstimator by its
    module-level name when adv_estimator.name == "gae"; a stand-in module with that name."""
    ppo = types.ModuleType("nemo_rl.algorithms.ppo")
    ppo.GeneralizedAdvantageEstimator = object

    def _create_advantage_estimator(cfg):
        assert cfg["name"] == "gae"
        return ppo.GeneralizedAdvantageEstimator(cfg, LOSS_CONFIG)

    sae_nemo.install(ppo)
    est = _create_advantage_estimator(dict(_config(), name="gae", sae=True))
    assert isinstance(est, sae_nemo.GeneralizedAdvantageEstimator) and est.sae
    with pytest.raises(AttributeError, match="GeneralizedAdvantageEstimator"):
        sae_nemo.install(types.ModuleType("not_nemo"))


# ------------------------------------------------------------------------------------------
# Per-sample and decoupled λ (switch on with the ops' per-row λ)
# ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("holes", [False, True])
@pytest.mark.parametrize("settings", [
    {"gae_lambda_value": 1.0, "gae_lambda_policy": 0.9},   # VAPO's decoupled λ
    {"gae_lambda_value": 1.0},
    {"gae_lambda_value": 1.0, "length_adaptive_alpha": 0.05},  # VAPO's length-adaptive λ
    {"length_adaptive_alpha": 0.2, "normalize_advantages": True},
])
def test_decoupled_and_length_adaptive_lam_equal_nemo_rl(device, holes, settings):
    dev = device_or_skip(device)
    rewards, v, lp, m = _inputs(8, holes)
    cfg = _config(gae_lambda=0.95, gae_gamma=0.99, **settings)
    ref_adv, ref_ret = nemo_rl_compute_advantage(cfg, rewards, m, v)
    est = sae_nemo.GeneralizedAdvantageEstimator(cfg, LOSS_CONFIG)
    adv, ret = est.compute_advantage(None, rewards.to(dev), m.to(dev), v.to(dev))
    _check(adv, ret, ref_adv, ref_ret, m)
    # SAE with lam_inner equal to the policy λ: NeMo-RL's advantages again (the returns
    # depend on how the op applies the critic λ to SAE, which is the op's contract)
    if "length_adaptive_alpha" not in settings:
        lam_policy = settings.get("gae_lambda_policy", 0.95)
        est = sae_nemo.GeneralizedAdvantageEstimator(dict(cfg, sae=True, sae_lam_inner=lam_policy),
                                                     LOSS_CONFIG)
        adv, _ = est.compute_advantage(None, rewards.to(dev), m.to(dev), v.to(dev),
                                       logprobs=lp.to(dev))
        valid = m.bool()
        torch.testing.assert_close(adv.cpu().double()[valid], ref_adv[valid], atol=ATOL, rtol=0)
