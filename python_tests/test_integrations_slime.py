"""sae_ext.integrations.slime against loops written from slime v0.3.1 (THUDM/slime a6272da:
get_advantages_and_returns_batch with vanilla_gae and chunked_gae, and the "ppo" rewards of
compute_advantages_and_returns; see _framework_sources.py). slime needs Megatron and is not
installed here: CP size 1 only."""
import argparse

import pytest
import torch

from _framework_sources import (DEVICES, device_or_skip, slime_batch, slime_chunked_gae,
                                slime_ppo_rewards, slime_vanilla_gae)
from _integrations_common import ATOL, sae_oracle
from sae_ext.integrations import slime as sae_slime


def _samples(seed, B=6, lengths=None, device="cpu"):
    """slime's per-sample lists: response lengths (one longer than a chunk of 128), values,
    rewards, log-probs, loss masks with tool-output holes."""
    g = torch.Generator().manual_seed(seed)
    lengths = lengths or [int(x) for x in torch.randint(1, 300, (B,), generator=g)]
    values = [torch.randn(L, generator=g).to(device) for L in lengths]
    rewards = [(0.05 * torch.randn(L, generator=g)).to(device) for L in lengths]
    lps = [(torch.rand(L, generator=g) * 0.99 + 0.01).log().to(device) for L in lengths]
    masks = []
    for L in lengths:
        m = torch.ones(L, dtype=torch.int32)
        if L > 10:
            m[3:7] = 0
        masks.append(m.to(device))
    total = [L + 7 for L in lengths]
    return total, lengths, values, rewards, lps, masks


def _close(got, exp, atol=ATOL):
    assert len(got) == len(exp)
    for a, b in zip(got, exp):
        torch.testing.assert_close(a.cpu().double(), b.double(), atol=atol, rtol=0)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("gamma,lambd", [(1.0, 0.95), (0.99, 0.9), (1.0, 1.0), (1.0, 0.0)])
def test_gae_equals_slimes_vanilla_and_chunked(device, gamma, lambd):
    dev = device_or_skip(device)
    total, lengths, v, r, _, _ = _samples(1, device=dev)
    assert max(lengths) > 128  # more than one chunk
    adv, ret = sae_slime.get_advantages_and_returns_batch(total, lengths, v, r, gamma, lambd)
    for gae in (slime_vanilla_gae, slime_chunked_gae):
        ref_adv, ref_ret = slime_batch(gae, lengths, [x.double() for x in v],
                                       [x.double() for x in r], gamma, lambd)
        _close(adv, ref_adv)
        _close(ret, ref_ret)


def test_float32_chunked_gae_agrees_to_rounding():
    total, lengths, v, r, _, _ = _samples(2, lengths=[1000, 300, 5])
    adv, _ = sae_slime.get_advantages_and_returns_batch(total, lengths, v, r, 1.0, 0.95)
    ref, _ = slime_batch(slime_chunked_gae, lengths, v, r, 1.0, 0.95)  # float32, as slime runs
    _close(adv, ref, atol=1e-3)


@pytest.mark.parametrize("device", DEVICES)
def test_sae_with_equal_lambdas_is_slimes_gae(device):
    dev = device_or_skip(device)
    total, lengths, v, r, lp, _ = _samples(3, device=dev)
    adv, ret = sae_slime.get_sae_advantages_and_returns_batch(total, lengths, v, r, lp, 0.99,
                                                              0.9, lam_inner=0.9)
    ref_adv, ref_ret = slime_batch(slime_vanilla_gae, lengths, [x.double() for x in v],
                                   [x.double() for x in r], 0.99, 0.9)
    _close(adv, ref_adv)
    _close(ret, ref_ret)


def test_sae_in_slimes_conventions():
    total, lengths, v, r, lp, _ = _samples(4)
    adv, ret = sae_slime.get_sae_advantages_and_returns_batch(total, lengths, v, r, lp, 1.0, 0.5,
                                                              threshold=0.3)
    B, T = len(lengths), max(lengths)
    pad = lambda xs: torch.stack([torch.nn.functional.pad(x.double(), (0, T - len(x)))
                                  for x in xs])
    steps = torch.arange(T)[None, :] < torch.tensor(lengths)[:, None]
    ref_adv, ref_ret = sae_oracle(pad(r), pad(v), pad(lp), steps, steps, 1.0, 0.5, 1.0, 0.3)
    _close(adv, [ref_adv[i, :L] for i, L in enumerate(lengths)])
    _close(ret, [ref_ret[i, :L] for i, L in enumerate(lengths)])


def _args(**kw):
    base = dict(kl_coef=0.05, gamma=1.0, lambd=0.95, use_rollout_logprobs=False)
    base.update(kw)
    return argparse.Namespace(**base)


def _rollout_data(seed):
    total, lengths, v, r, lp, masks = _samples(seed)
    g = torch.Generator().manual_seed(seed + 100)
    return {
        "total_lengths": total, "response_lengths": lengths, "values": v,
        "rewards": [float(x) for x in torch.randint(0, 2, (len(lengths),), generator=g)],
        "kl": [0.1 * torch.rand(L, generator=g) for L in lengths],
        "log_probs": lp, "rollout_log_probs": [x - 0.5 for x in lp], "loss_masks": masks,
    }


def test_gae_hook_equals_slimes_ppo_branch():
    data = _rollout_data(5)
    kl_before = [k.clone() for k in data["kl"]]
    sae_slime.gae_advantage_function(_args(), data)
    rewards = slime_ppo_rewards(data["rewards"], kl_before, 0.05)
    ref_adv, ref_ret = slime_batch(slime_vanilla_gae, data["response_lengths"],
                                   [x.double() for x in data["values"]], rewards, 1.0, 0.95)
    _close(data["advantages"], ref_adv)
    _close(data["returns"], ref_ret)
    for a, b in zip(data["kl"], kl_before):
        assert torch.equal(a, b)  # slime's kl is left as it was


def test_sae_hook_reads_the_log_probs_slime_would_use():
    data = _rollout_data(6)
    rewards = slime_ppo_rewards(data["rewards"], data["kl"], 0.05)
    lengths = data["response_lengths"]
    for flag, key in ((False, "log_probs"), (True, "rollout_log_probs")):
        sae_slime.sae_advantage_function(_args(use_rollout_logprobs=flag, sae_threshold=0.3,
                                               lambd=0.5), data)
        exp_adv, exp_ret = sae_slime.get_sae_advantages_and_returns_batch(
            data["total_lengths"], lengths, data["values"], [x.float() for x in rewards],
            data[key], 1.0, 0.5, threshold=0.3)
        _close(data["advantages"], exp_adv)
        _close(data["returns"], exp_ret)


def test_loss_mask_does_not_enter_slimes_gae():
    data = _rollout_data(7)
    sae_slime.gae_advantage_function(_args(), data)
    first = [a.clone() for a in data["advantages"]]
    data["loss_masks"] = [torch.zeros_like(m) for m in data["loss_masks"]]
    sae_slime.gae_advantage_function(_args(), data)
    _close(data["advantages"], first, atol=0)


def test_hooks_name_what_is_missing():
    data = _rollout_data(8)
    del data["values"]
    with pytest.raises(KeyError, match="values"):
        sae_slime.sae_advantage_function(_args(), data)
    data = _rollout_data(8)
    del data["log_probs"]
    with pytest.raises(KeyError, match="log_probs"):
        sae_slime.sae_advantage_function(_args(), data)
    with pytest.raises(ValueError, match="rewards_list"):
        sae_slime.get_advantages_and_returns_batch([3, 3], [2, 2], [torch.zeros(2)] * 2,
                                                   [torch.zeros(2)], 1.0, 1.0)


def test_function_path_resolves_as_slimes_load_function_does():
    import importlib

    for path in ("sae_ext.integrations.slime.sae_advantage_function",
                 "sae_ext.integrations.slime.gae_advantage_function"):
        module, _, attr = path.rpartition(".")
        assert callable(getattr(importlib.import_module(module), attr))


def test_packed_rows_with_an_empty_response_and_a_long_one():
    # the samples go to the ops back to back (no padding to the longest): an empty response
    # is an empty row, and each row equals slime's loop on that row alone
    total, lengths, v, r, lp, _ = _samples(7, lengths=[0, 5, 400, 1])
    adv, ret = sae_slime.get_advantages_and_returns_batch(total, lengths, v, r, 0.99, 0.9)
    assert [a.shape[0] for a in adv] == lengths
    for i, L in enumerate(lengths):
        if L == 0:
            continue
        ref_adv, ref_ret = slime_vanilla_gae(r[i][None].double(), v[i][None].double(), 0.99, 0.9)
        _close([adv[i], ret[i]], [ref_adv[0], ref_ret[0]])


def test_a_sample_shorter_than_its_length_is_named():
    total, lengths, v, r, lp, _ = _samples(8, lengths=[4, 6])
    with pytest.raises(ValueError, match=r"rewards_list\[1\]"):
        sae_slime.get_advantages_and_returns_batch(total, lengths, v, [r[0], r[1][:3]], 1.0, 0.9)
