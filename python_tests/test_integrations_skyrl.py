"""sae_ext.integrations.skyrl against the skyrl 0.3.0 package's own
skyrl.backends.skyrl_train.utils.ppo_utils (its GAE, its registry, its dispatcher). Install
with scripts/install_frameworks_for_tests.sh; without it the package tests skip, saying why.

On Python < 3.12, ``skyrl/backends/__init__.py`` imports the Tinker backend, whose pydantic
models refuse ``typing.TypedDict``; the advantage code does not use it, so a placeholder
``skyrl.backends.backend`` stands in for it (the heavy-import placeholder of these tests)."""
import importlib.util
import sys
import types

import pytest
import torch

from _framework_sources import DEVICES, device_or_skip
from _integrations_common import ATOL, MASK_DTYPES, random_batch, sae_oracle

PPO_UTILS = "skyrl.backends.skyrl_train.utils.ppo_utils"


def _import_ppo_utils():
    if importlib.util.find_spec("skyrl") is None:
        return None, ("skyrl not installed; run `bash scripts/test_frameworks.sh`, which installs "
                      "it into a side environment and runs these tests")
    if sys.version_info < (3, 12) and "skyrl.backends.backend" not in sys.modules:
        placeholder = types.ModuleType("skyrl.backends.backend")
        placeholder.AbstractBackend = object
        sys.modules["skyrl.backends.backend"] = placeholder
    try:
        return importlib.import_module(PPO_UTILS), None
    except Exception as exc:
        return None, (f"{PPO_UTILS} not importable ({type(exc).__name__}: {exc}); run "
                      "`bash scripts/test_frameworks.sh`, which installs it into a side environment "
                      "and runs these tests")


ppo_utils, _err = _import_ppo_utils()
from sae_ext.integrations import skyrl as sae_skyrl  # noqa: E402  (after the placeholder)

needs_skyrl = pytest.mark.skipif(ppo_utils is None, reason=str(_err))


def _batch(seed, holes, **kw):
    r, v, lp, m = random_batch(8, 48, seed=seed, holes=holes, padding_rewards=False, **kw)
    return r, v, lp, m


@needs_skyrl
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("mask_dtype", MASK_DTYPES)
@pytest.mark.parametrize("holes", [False, True])
@pytest.mark.parametrize("gamma,lambd", [(1.0, 0.95), (0.99, 0.9), (1.0, 1.0)])
def test_gae_equals_skyrls(device, mask_dtype, holes, gamma, lambd):
    dev = device_or_skip(device)
    r, v, _, m = (x.to(dev) for x in _batch(1 + holes, holes))
    ref_adv, ref_ret = ppo_utils.compute_gae_advantage_return(
        token_level_rewards=r, values=v, response_mask=m, gamma=gamma, lambd=lambd)
    adv, ret = sae_skyrl.compute_gae_advantage_return(r, v, m.to(mask_dtype), gamma, lambd)
    valid = m.bool()
    torch.testing.assert_close(adv[valid], ref_adv[valid], atol=ATOL, rtol=0)
    torch.testing.assert_close(ret, ref_ret, atol=ATOL, rtol=0)  # every position, as SkyRL
    assert (adv[~valid] == 0).all()


@needs_skyrl
def test_skip_masked_equals_skyrl_where_padding_is_zero():
    r, v, _, m = _batch(3, holes=False)
    v = v * m  # a critic whose padding values are 0, no holes: skipping changes nothing
    ref_adv, _ = ppo_utils.compute_gae_advantage_return(
        token_level_rewards=r, values=v, response_mask=m, gamma=0.99, lambd=0.9)
    adv, _ = sae_skyrl.compute_gae_advantage_return(r, v, m, 0.99, 0.9, skip_masked=True)
    valid = m.bool()
    torch.testing.assert_close(adv[valid], ref_adv[valid], atol=ATOL, rtol=0)


def test_skip_masked_skips_masked_positions():
    r, v, lp, m = _batch(4, holes=True)
    ref_adv, ref_ret = sae_oracle(r, v, lp, m, m, 0.99, 0.9, 0.9, 0.0)
    adv, ret = sae_skyrl.compute_sae_advantage_return(r, v, m, lp, 0.99, 0.9, lam_inner=0.9,
                                                      skip_masked=True, whiten=False)
    torch.testing.assert_close(adv.double(), ref_adv, atol=ATOL, rtol=0)
    torch.testing.assert_close(ret.double(), ref_ret, atol=ATOL, rtol=0)


def test_sae_in_skyrls_conventions():
    r, v, lp, m = _batch(5, holes=True)
    steps = torch.ones_like(m)  # SkyRL steps through every position
    ref_adv, ref_ret = sae_oracle(r, v, lp, steps, m, 1.0, 0.5, 1.0, 0.2)
    adv, ret = sae_skyrl.compute_sae_advantage_return(r, v, m, lp, 1.0, 0.5, whiten=False)
    valid = m.bool()
    torch.testing.assert_close(adv.double()[valid], ref_adv[valid], atol=ATOL, rtol=0)
    torch.testing.assert_close(ret.double(), ref_ret, atol=ATOL, rtol=0)


@needs_skyrl
def test_sae_is_in_skyrls_registry():
    assert sae_skyrl.ESTIMATOR_NAME in ppo_utils.AdvantageEstimatorRegistry.list_available()
    assert ppo_utils.AdvantageEstimatorRegistry.get("sae") is sae_skyrl.sae_advantage_estimator
    sae_skyrl.install()  # idempotent (SkyRL's register refuses a name twice)


def _dispatch(name, r, v, m, gamma, lambd, config, **kw):
    """SkyRL's own dispatcher, called as RayPPOTrainer.compute_advantages_and_returns does."""
    return ppo_utils.compute_advantages_and_returns(
        token_level_rewards=r, response_mask=m, index=[str(i) for i in range(len(r))],
        adv_estimator=name, config=config, values=v, gamma=gamma, lambd=lambd,
        grpo_norm_by_std=True, **kw)


@needs_skyrl
@pytest.mark.parametrize("holes", [False, True])
def test_sae_with_equal_lambdas_equals_skyrls_gae_through_its_dispatcher(holes):
    r, v, lp, m = _batch(6, holes)
    gae = _dispatch("gae", r, v, m, 0.99, 0.9, config=None)
    sae = _dispatch("sae", r, v, m, 0.99, 0.9, types.SimpleNamespace(sae_lam_inner=0.9),
                    log_probs=lp)
    valid = m.bool()
    torch.testing.assert_close(sae[0][valid], gae[0][valid], atol=ATOL, rtol=0)
    torch.testing.assert_close(sae[1], gae[1], atol=ATOL, rtol=0)


class _Trainer:
    """Stands in for RayPPOTrainer (skyrl.train.trainer needs its GPU stack): the same method
    name, calling SkyRL's dispatcher with what the real method passes (no log-probs)."""

    def compute_advantages_and_returns(self, data):
        data["advantages"], data["returns"] = _dispatch(
            "sae", data["rewards"], data["values"], data["response_mask"], 1.0, 0.5, None)
        return data


@needs_skyrl
def test_wrapped_trainer_method_hands_the_batch_to_the_estimator():
    r, v, lp, m = _batch(7, holes=False)
    data = {"rewards": r, "values": v, "response_mask": m, "action_log_probs": lp}
    with pytest.raises(RuntimeError, match="import sae_ext.integrations.skyrl"):
        _Trainer().compute_advantages_and_returns(dict(data))
    sae_skyrl.wrap_trainer_class(_Trainer)
    sae_skyrl.wrap_trainer_class(_Trainer)  # idempotent
    out = _Trainer().compute_advantages_and_returns(dict(data))
    exp = sae_skyrl.compute_sae_advantage_return(r, v, m, lp, 1.0, 0.5)
    torch.testing.assert_close(out["advantages"], exp[0])
    torch.testing.assert_close(out["returns"], exp[1])
    with pytest.raises(KeyError, match="action_log_probs"):
        _Trainer().compute_advantages_and_returns({k: x for k, x in data.items()
                                                   if k != "action_log_probs"})


def test_estimator_without_values_or_tokens_says_so():
    r, v, lp, m = _batch(8, holes=False)
    with pytest.raises(ValueError, match="critic"):
        sae_skyrl.sae_advantage_estimator(r, m, values=None, log_probs=lp)
    with pytest.raises(ValueError, match="mask"):
        sae_skyrl.compute_gae_advantage_return(r, v, torch.zeros_like(m), 1.0, 0.9)
