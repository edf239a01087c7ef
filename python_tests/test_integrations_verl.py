"""sae_ext.integrations.verl against the real verl package (written against verl 0.9.1).

`bash scripts/test_verl.sh` installs verl into a side environment and runs these tests (as
the README and CI do). Without verl they skip with one message saying so; the tests that need
no verl still run.
"""
import functools
import os
import subprocess
import sys
import tempfile

import pytest
import torch

from _integrations_common import (ATOL, MASK_DTYPES, VERL_OPTIONAL_OVERRIDES, VERL_OVERRIDES,
                                  random_batch, subprocess_env, whiten_loop)
import sae_ext
from sae_ext import reference
from sae_ext.integrations import verl as sae_verl

INSTALL_HINT = ("run `bash scripts/test_verl.sh`, which installs verl into a side environment "
                "and runs these tests")


def _try_import(name):
    try:
        module = __import__(name, fromlist=["_"])
        return module, None
    except Exception as exc:  # ImportError, or a broken dependency of verl
        return None, f"{name} not importable ({type(exc).__name__}: {exc}); {INSTALL_HINT}"


core_algos, _core_err = _try_import("verl.trainer.ppo.core_algos")
ray_trainer, _rt_err = _try_import("verl.trainer.ppo.ray_trainer") if core_algos else (None, _core_err)
v1_utils, _v1_err = _try_import("verl.trainer.ppo.v1.utils") if ray_trainer else (None, _rt_err)
hydra, _hydra_err = _try_import("hydra") if core_algos else (None, _core_err)


# Skipped from inside the test rather than by skipif marks: pytest reports a mark's skip at
# each test's line but a raised skip at the line that raised it, so every test skipped for
# the same reason folds into one line of the summary.
def _skip_if(err):
    if err is not None:
        pytest.skip(err)


def _needs(err):
    def decorate(test):
        @functools.wraps(test)
        def run(*args, **kwargs):
            _skip_if(err)
            return test(*args, **kwargs)
        return run
    return decorate


needs_verl = _needs(_core_err if core_algos is None else None)
needs_ray_trainer = _needs(_rt_err if ray_trainer is None else None)
needs_v1 = _needs(_v1_err if v1_utils is None else None)
needs_hydra = _needs(_hydra_err if hydra is None else None)


# ------------------------------------------------------------------------------------------
# No verl needed
# ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("gamma,lam", [(1.0, 0.95), (0.99, 0.9)])
def test_gae_dropin_against_the_reference(gamma, lam):
    r, v, lp, m = random_batch(seed=11, holes=True)
    adv, ret = sae_verl.compute_gae_advantage_return(r, v, m.bool(), gamma, lam)
    raw, ref_ret = reference.advantages(r, v, lp, m, gamma, lam, lam, 0.0)
    valid = m.bool()
    ref_adv = whiten_loop(raw, m, unbiased=True)
    torch.testing.assert_close(adv.double()[valid], ref_adv[valid], atol=ATOL, rtol=0)
    torch.testing.assert_close(ret.double(), ref_ret, atol=ATOL, rtol=0)
    assert (adv[~valid] == 0).all()


def test_gae_dropin_refuses_fewer_than_two_tokens_like_verl():
    r, v, _, _ = random_batch(seed=12, B=2, T=5)
    for count in (0, 1):
        m = torch.zeros(2, 5)
        m[0, :count] = 1
        with pytest.raises(ValueError, match="mask"):
            sae_verl.compute_gae_advantage_return(r, v, m, 1.0, 0.95)


def test_estimator_outside_wrapped_compute_advantage_explains_itself():
    r, v, lp, m = random_batch(seed=13, B=2, T=6)
    with pytest.raises(RuntimeError, match="VERL_USE_EXTERNAL_MODULES"):
        sae_verl.sae_advantage_estimator(token_level_rewards=r, response_mask=m, config=None)
    # with values and log-probs passed explicitly it needs no batch
    adv, ret = sae_verl.sae_advantage_estimator(
        token_level_rewards=r, response_mask=m, config={"gamma": 1.0, "lam": 0.5},
        values=v, old_log_probs=lp)
    exp_adv, exp_ret = sae_ext.advantages(r, v, lp, m, lam=0.5)
    torch.testing.assert_close(adv, sae_ext.masked_whiten(exp_adv, m))
    torch.testing.assert_close(ret, exp_ret)


# ------------------------------------------------------------------------------------------
# Against verl's own code
# ------------------------------------------------------------------------------------------


@needs_verl
@pytest.mark.parametrize("gamma,lam", [(1.0, 0.95), (0.99, 0.9), (1.0, 1.0)])
@pytest.mark.parametrize("holes", [False, True])
@pytest.mark.parametrize("mask_dtype", MASK_DTYPES)
def test_gae_dropin_equals_verl_on_valid_tokens(gamma, lam, holes, mask_dtype):
    r, v, _, m = random_batch(B=8, T=64, seed=21 + holes, holes=holes)
    # verl's loop computes `1 - response_mask`, which torch refuses for bool: feed it floats.
    verl_adv, verl_ret = core_algos.compute_gae_advantage_return(
        token_level_rewards=r, values=v, response_mask=m, gamma=gamma, lam=lam)
    adv, ret = sae_verl.compute_gae_advantage_return(r, v, m.to(mask_dtype), gamma, lam)
    valid = m.bool()
    torch.testing.assert_close(adv[valid], verl_adv[valid], atol=ATOL, rtol=0)
    torch.testing.assert_close(ret[valid], verl_ret[valid], atol=ATOL, rtol=0)


@needs_verl
def test_sae_is_registered_in_verls_registry():
    assert core_algos.get_adv_estimator_fn("sae") is sae_verl.sae_advantage_estimator
    assert sae_verl.is_installed()
    sae_verl.install()  # idempotent: re-registering the same function is allowed
    assert core_algos.get_adv_estimator_fn(sae_verl.ESTIMATOR_NAME) is sae_verl.sae_advantage_estimator


def _data_proto(r, v, lp, m, *, with_values=True):
    from verl import DataProto

    tensors = {"token_level_rewards": r, "response_mask": m, "old_log_probs": lp}
    if with_values:
        tensors["values"] = v
    return DataProto.from_dict(tensors=tensors)


def _algo_config(**extra):
    from omegaconf import OmegaConf

    cfg = OmegaConf.create({"gamma": 1.0, "lam": 0.95, "adv_estimator": "sae",
                            "use_pf_ppo": False, **extra})
    OmegaConf.set_struct(cfg, True)  # as Hydra hands it over: unknown keys are errors
    return cfg


@needs_ray_trainer
def test_compute_advantage_is_wrapped():
    assert getattr(ray_trainer.compute_advantage, "_sae_ext_wrapped", False)
    assert ray_trainer.compute_advantage.__wrapped__.__module__ == ray_trainer.__name__


@needs_ray_trainer
@pytest.mark.parametrize("gamma,lam,inner,p", [(1.0, 0.5, 1.0, 0.2), (0.99, 0.8, 0.95, 0.3)])
@pytest.mark.parametrize("holes", [False, True])
def test_sae_through_verls_compute_advantage(gamma, lam, inner, p, holes):
    """verl's entry point (the legacy trainer calls it, the v1 trainer through
    compute_advantage_for_multi_trajectories), dispatching on adv_estimator="sae"."""
    from verl.utils import torch_functional as verl_F

    r, v, lp, m = random_batch(B=8, T=64, seed=31, holes=holes)
    extra = {"sae_threshold": p} if p != 0.2 else {}
    if inner != 1.0:
        extra["sae_lam_inner"] = inner
    data = _data_proto(r, v, lp, m.long())
    out = ray_trainer.compute_advantage(data, adv_estimator="sae", gamma=gamma, lam=lam,
                                        config=_algo_config(gamma=gamma, lam=lam, **extra))
    raw, exp_ret = reference.advantages(r, v, lp, m, gamma, lam, inner, p)
    exp_adv = verl_F.masked_whiten(raw, m.double())  # whitened the way verl whitens GAE
    valid = m.bool()
    torch.testing.assert_close(out.batch["advantages"].double()[valid], exp_adv[valid],
                               atol=ATOL, rtol=0)
    torch.testing.assert_close(out.batch["returns"].double()[valid], exp_ret[valid],
                               atol=ATOL, rtol=0)


@needs_ray_trainer
@pytest.mark.parametrize("holes", [False, True])
def test_sae_with_equal_lambdas_equals_verls_gae_through_the_same_entry_point(holes):
    r, v, lp, m = random_batch(B=8, T=64, seed=32, holes=holes)
    gamma, lam = 0.99, 0.9
    gae = ray_trainer.compute_advantage(_data_proto(r, v, lp, m), adv_estimator="gae",
                                        gamma=gamma, lam=lam,
                                        config=_algo_config(adv_estimator="gae"))
    sae = ray_trainer.compute_advantage(_data_proto(r, v, lp, m), adv_estimator="sae",
                                        gamma=gamma, lam=lam,
                                        config=_algo_config(sae_lam_inner=lam))
    valid = m.bool()
    for key in ("advantages", "returns"):
        torch.testing.assert_close(sae.batch[key][valid], gae.batch[key][valid],
                                   atol=ATOL, rtol=0)


@needs_ray_trainer
def test_wrapper_leaves_other_estimators_alone():
    r, v, lp, m = random_batch(B=4, T=16, seed=33)
    cfg = _algo_config(adv_estimator="gae")
    wrapped = ray_trainer.compute_advantage(_data_proto(r, v, lp, m), "gae", gamma=1.0,
                                            lam=0.95, config=cfg)
    original = ray_trainer.compute_advantage.__wrapped__(_data_proto(r, v, lp, m), "gae",
                                                         gamma=1.0, lam=0.95, config=cfg)
    for key in ("advantages", "returns"):
        assert torch.equal(wrapped.batch[key], original.batch[key])


@needs_ray_trainer
def test_fused_gae_swapped_into_verls_gae_branch(monkeypatch):
    """docs/integrations.md: verl's GAE branch looks up core_algos.compute_gae_advantage_return
    at call time, so assigning the drop-in there makes adv_estimator=gae use the fused op."""
    r, v, lp, m = random_batch(B=8, T=32, seed=37, holes=True)
    cfg = _algo_config(adv_estimator="gae")
    stock = ray_trainer.compute_advantage(_data_proto(r, v, lp, m), "gae", gamma=0.99, lam=0.9,
                                          config=cfg)
    calls = []

    def fused(*args, **kwargs):
        calls.append(1)
        return sae_verl.compute_gae_advantage_return(*args, **kwargs)

    monkeypatch.setattr(core_algos, "compute_gae_advantage_return", fused)
    out = ray_trainer.compute_advantage(_data_proto(r, v, lp, m), "gae", gamma=0.99, lam=0.9,
                                        config=cfg)
    assert calls
    valid = m.bool()
    for key in ("advantages", "returns"):
        torch.testing.assert_close(out.batch[key][valid], stock.batch[key][valid],
                                   atol=ATOL, rtol=0)


@needs_ray_trainer
def test_sae_reads_gamma_and_lam_from_the_call_like_gae():
    r, v, lp, m = random_batch(B=4, T=16, seed=34)
    out = ray_trainer.compute_advantage(_data_proto(r, v, lp, m), "sae", gamma=0.9, lam=0.3,
                                        config=None)
    raw, ret = reference.advantages(r, v, lp, m, 0.9, 0.3, 1.0, 0.2)
    valid = m.bool()
    torch.testing.assert_close(out.batch["returns"].double()[valid], ret[valid], atol=ATOL, rtol=0)


@needs_ray_trainer
def test_sae_without_critic_values_says_so():
    r, v, lp, m = random_batch(B=4, T=16, seed=35)
    with pytest.raises(KeyError, match="critic.enable=True"):
        ray_trainer.compute_advantage(_data_proto(r, v, lp, m, with_values=False), "sae",
                                      gamma=1.0, lam=0.95, config=_algo_config())


@needs_ray_trainer
def test_sae_log_prob_key():
    r, v, lp, m = random_batch(B=4, T=16, seed=36)
    data = _data_proto(r, v, lp, m)
    data.batch["rollout_log_probs"] = torch.full_like(lp, -10.0)  # every token cuts
    out = ray_trainer.compute_advantage(data, "sae", gamma=1.0, lam=0.5,
                                        config=_algo_config(sae_log_prob_key="rollout_log_probs",
                                                            sae_whiten=False))
    exp_adv, _ = sae_ext.gae(r, v, m, gamma=1.0, lam=0.5)  # all cuts: lambda everywhere
    torch.testing.assert_close(out.batch["advantages"], exp_adv, atol=ATOL, rtol=0)


@needs_v1
def test_sae_through_the_v1_trainers_entry_point():
    """verl's v1 trainer (the default in 0.9.1) calls compute_advantage_for_multi_trajectories,
    which binds compute_advantage at import time: it must have bound the wrapper."""
    assert v1_utils.compute_advantage is ray_trainer.compute_advantage
    r, v, lp, m = random_batch(B=8, T=32, seed=41, holes=True)
    data = _data_proto(r, v, lp, m)
    out = v1_utils.compute_advantage_for_multi_trajectories(
        data, batch_keys=[f"uid{i}_0_0" for i in range(8)], adv_estimator="sae",
        gamma=1.0, lam=0.5, num_repeat=1, config=_algo_config(lam=0.5))
    raw, exp_ret = reference.advantages(r, v, lp, m, 1.0, 0.5, 1.0, 0.2)
    valid = m.bool()
    exp_adv = whiten_loop(raw, m, unbiased=True)
    torch.testing.assert_close(out.batch["advantages"].double()[valid], exp_adv[valid],
                               atol=ATOL, rtol=0)
    torch.testing.assert_close(out.batch["returns"].double()[valid], exp_ret[valid],
                               atol=ATOL, rtol=0)


@needs_hydra
@needs_ray_trainer
def test_documented_config_composes_and_turns_the_critic_on():
    """Compose verl's own ppo_trainer.yaml with the overrides docs/integrations.md gives
    (Hydra, as main_ppo does; test_integrations_docs.py checks the docs show them), check
    the critic is on, and run the estimator with that config."""
    import verl
    from hydra import compose, initialize_config_dir
    from verl.trainer.ppo.utils import need_critic

    config_dir = os.path.join(os.path.dirname(verl.__file__), "trainer", "config")
    with initialize_config_dir(config_dir=config_dir, version_base=None):
        cfg = compose("ppo_trainer", overrides=VERL_OVERRIDES + ["+algorithm.sae_threshold=0.3"])
        with_optional = compose("ppo_trainer", overrides=VERL_OVERRIDES + VERL_OPTIONAL_OVERRIDES)
        without_critic = compose("ppo_trainer", overrides=VERL_OVERRIDES[:2])
    assert need_critic(cfg)
    assert with_optional.algorithm.sae_threshold == 0.2
    assert with_optional.algorithm.sae_lam_inner == 1.0
    with pytest.warns(UserWarning, match="critic"):
        assert not need_critic(without_critic)  # the reason critic.enable=True is needed

    algo = cfg.algorithm
    r, v, lp, m = random_batch(B=4, T=24, seed=51)
    out = ray_trainer.compute_advantage(_data_proto(r, v, lp, m), adv_estimator=algo.adv_estimator,
                                        gamma=algo.gamma, lam=algo.lam, config=algo)
    raw, ret = reference.advantages(r, v, lp, m, algo.gamma, algo.lam, 1.0, 0.3)
    valid = m.bool()
    torch.testing.assert_close(out.batch["advantages"].double()[valid],
                               whiten_loop(raw, m, unbiased=True)[valid], atol=ATOL, rtol=0)


def _run_child(code, **env):
    proc = subprocess.run([sys.executable, "-W", "ignore", "-c", code], capture_output=True,
                          text=True, env=subprocess_env(**env), timeout=300, cwd=tempfile.gettempdir())
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


@needs_v1
def test_env_var_installs_it_in_a_fresh_process():
    """What a Ray worker of verl's trainer goes through: `import verl` imports the modules in
    VERL_USE_EXTERNAL_MODULES (from inside verl/__init__), and later imports bind the
    wrapper."""
    code = (
        "import verl\n"
        "from verl.trainer.ppo import core_algos\n"
        "import sae_ext.integrations.verl as s\n"
        "assert core_algos.get_adv_estimator_fn('sae') is s.sae_advantage_estimator\n"
        "from verl.trainer.ppo.ray_trainer import compute_advantage\n"
        "import verl.trainer.ppo.v1.utils as u\n"
        "assert compute_advantage._sae_ext_wrapped and u.compute_advantage is compute_advantage\n"
        "print('ok')\n")
    assert "ok" in _run_child(code, VERL_USE_EXTERNAL_MODULES="sae_ext.integrations.verl")


@needs_v1
def test_import_after_verls_trainer_modules_still_wraps():
    code = (
        "import torch\n"
        "import verl.trainer.ppo.ray_trainer as rt, verl.trainer.ppo.v1.utils as u\n"
        "import sae_ext.integrations.verl as s\n"
        "assert rt.compute_advantage._sae_ext_wrapped and u.compute_advantage is rt.compute_advantage\n"
        "assert s.is_installed()\n"
        "print('ok')\n")
    assert "ok" in _run_child(code)
