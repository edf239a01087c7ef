"""Reference loops for the AReaL, NeMo-RL and slime drop-ins, written (not copied) from each
framework's source at the version named on each function, in float64, one token at a time
(one loop where two frameworks write the same one), plus batches in AReaL's layout. Used by
python_tests/test_integrations_{areal,nemo_rl,slime,skyrl}.py; the generic batches and the
SAE oracle are in _integrations_common.py.

Sources read:
- AReaL: areal-project/AReaL main, commit cbff54d645d2cd8ee1f1c358a82f3f473588433d (package
  version 2.0.0), areal/trainer/ppo/gae.py (_compute_token_level_gae,
  _compute_turn_level_gae, _build_gae_lambda_context), areal/trainer/ppo/lambda_fn.py and,
  for the layout turn ids arrive in, areal/trainer/ppo/actor.py (_compute_advantages).
- NeMo-RL: NVIDIA-NeMo/RL tag v0.7.0, commit 81aa43dda4765b0429cf31dab44441e4e4383911,
  nemo_rl/algorithms/advantage_estimator.py (GeneralizedAdvantageEstimator) and
  nemo_rl/algorithms/utils.py (masked_mean, masked_var).
- slime: THUDM/slime tag v0.3.1, commit a6272da0d4f3d0a08520c99a2f3b4f6c887960dc,
  slime/utils/ppo_utils.py (get_advantages_and_returns_batch, vanilla_gae, chunked_gae) and
  slime/backends/megatron_utils/loss.py (the "ppo" rewards).
"""
from __future__ import annotations

import torch

from _integrations_common import random_batch

DEVICES = ["cpu", "cuda"]


def device_or_skip(device):
    import pytest

    if device == "cuda" and not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    return torch.device(device)


def _lam_of_row(lam, b):
    return float(lam[b]) if isinstance(lam, torch.Tensor) and lam.dim() > 0 else float(lam)


# ------------------------------------------------------------------------------------------
# Loops two frameworks share
# ------------------------------------------------------------------------------------------

def carrying_gae_loop(rewards, values, mask, gamma, lam, next_value=None):
    """The loop AReaL (``_compute_token_level_gae``) and NeMo-RL (``_compute_gae``) both
    write: t = T-1 .. 0, the next-value starting at ``next_value`` ([B], default 0) and the
    advantage at 0; a position whose mask is 0 carries both and outputs the carried
    advantage; returns = advantages + values. ``lam`` float or [B]."""
    r, v, m = rewards.double().cpu(), values.double().cpu(), mask.double().cpu()
    B, T = r.shape
    adv = torch.zeros(B, T, dtype=torch.float64)
    for b in range(B):
        lb = _lam_of_row(lam, b)
        nv = 0.0 if next_value is None else float(next_value[b])
        last = 0.0
        for t in reversed(range(T)):
            new = r[b, t].item() + gamma * nv - v[b, t].item() + gamma * lb * last
            mt = m[b, t].item()
            nv = v[b, t].item() * mt + (1 - mt) * nv
            last = new * mt + (1 - mt) * last
            adv[b, t] = last
    return adv, adv + v


def vapo_length_adaptive_loop(mask, alpha):
    """VAPO's per-sample λ on token-level lengths L (the mask's count per row), as AReaL's
    ``vapo_length_adaptive_gae`` (0 for L = 0, else max(0, 1 - 1/(alpha * L))) and NeMo-RL's
    ``_resolve_lambda_policy`` (1 - 1/max(alpha * L, 1), clamped to [0, 1]) write it: the two
    forms agree for every L >= 0 and alpha > 0."""
    out = []
    for row in (mask != 0).cpu():
        n = int(row.sum())
        out.append(0.0 if n == 0 else max(0.0, 1.0 - 1.0 / (alpha * n)))
    return torch.tensor(out, dtype=torch.float64)


# ------------------------------------------------------------------------------------------
# AReaL (main, cbff54d)
# ------------------------------------------------------------------------------------------

def areal_token_level_gae(rewards, values, loss_mask, seq_no_eos_mask, discount, gae_lambda):
    """_compute_token_level_gae: the carrying loop over t = T-2 .. 0 (the last position only
    supplies values[:, -1] * seq_no_eos_mask as the first next-value); the last position's
    advantage is 0; returns = advantages + values everywhere."""
    v = values.double().cpu()
    adv = torch.zeros(v.shape, dtype=torch.float64)
    adv[:, :-1], _ = carrying_gae_loop(rewards[:, :-1], values[:, :-1], loss_mask[:, :-1],
                                       discount, gae_lambda,
                                       next_value=v[:, -1] * seq_no_eos_mask.double().cpu())
    return adv, adv + v


def areal_turn_level_gae(rewards, values, loss_mask, turn_ids, seq_no_eos_mask, discount,
                         gae_lambda):
    """_compute_turn_level_gae, one row and one turn at a time. A turn is the set of
    ``loss_mask`` positions sharing a turn id (any position, the last one included); its
    reward is their rewards' sum, its value the value at its first position. Turns, in
    increasing id, are the steps of the loop: ``values[:, -1] * seq_no_eos_mask`` is the
    next-value after the last turn, γ and λ apply once per turn. Each position gets its
    turn's advantage and return (the turn's advantage plus the turn's value) times
    ``loss_mask``; off the mask the return is ``values``."""
    r, v, m = rewards.double().cpu(), values.double().cpu(), loss_mask.double().cpu()
    ids = turn_ids.cpu()
    B, T = r.shape
    adv = torch.zeros(B, T, dtype=torch.float64)
    ret = torch.zeros(B, T, dtype=torch.float64)
    for b in range(B):
        lb = _lam_of_row(gae_lambda, b)
        turn_reward, turn_first = {}, {}
        for t in range(T):
            if m[b, t] != 0:
                k = int(ids[b, t])
                turn_first.setdefault(k, t)
                turn_reward[k] = turn_reward.get(k, 0.0) + r[b, t].item()
        next_value = v[b, T - 1].item() * float(seq_no_eos_mask[b])
        last = 0.0
        turn_adv, turn_ret = {}, {}
        for k in sorted(turn_first, reverse=True):
            value = v[b, turn_first[k]].item()
            last = turn_reward[k] + discount * next_value - value + discount * lb * last
            next_value = value
            turn_adv[k], turn_ret[k] = last, last + value
        for t in range(T):
            mt = m[b, t].item()
            k = int(ids[b, t])
            adv[b, t] = turn_adv[k] * mt if mt != 0 else 0.0
            ret[b, t] = (turn_ret[k] * mt if mt != 0 else 0.0) + v[b, t].item() * (1 - mt)
    return adv, ret


def areal_turn_counts(loss_mask, turn_ids):
    """_build_gae_lambda_context's turn_counts: the turn ids with a loss_mask position."""
    return torch.tensor([len({int(k) for k, mt in zip(ids, row) if mt != 0})
                         for ids, row in zip(turn_ids.cpu(), loss_mask.cpu())])


def areal_relative_position(loss_mask, q):
    """relative_position_gae_lambda on token-level lengths."""
    out = []
    for row in (loss_mask != 0).cpu():
        n = int(row.sum())
        out.append(0.0 if n == 0 else 1.0 if n == 1 else q ** (1.0 / (n - 1)))
    return torch.tensor(out, dtype=torch.float64)


def areal_batch(B=6, T=48, *, seed=0, holes=False, truncated=(0, 2)):
    """AReaL's layout: [B, T] whole sequences, a prompt prefix, the loss mask already rolled
    left by one (so the position before each generated token is marked), rows in
    ``truncated`` filling the length without EOS (``seq_no_eos_mask``)."""
    g = torch.Generator().manual_seed(seed)
    rewards, values, logprobs, _ = random_batch(B, T, seed=seed, padding_rewards=False)
    loss_mask = torch.zeros(B, T)
    seq_no_eos = torch.zeros(B, dtype=torch.bool)
    for b in range(B):
        prompt = int(torch.randint(2, 8, (1,), generator=g))
        seqlen = T if b in truncated else int(torch.randint(prompt + 2, T, (1,), generator=g))
        seq_no_eos[b] = seqlen == T
        gen = torch.zeros(T)
        gen[prompt:seqlen] = 1
        if holes and seqlen - prompt > 8:
            s = prompt + int(torch.randint(2, seqlen - prompt - 4, (1,), generator=g))
            gen[s:s + 3] = 0
        loss_mask[b] = torch.roll(gen, shifts=-1)
    rewards = rewards * loss_mask
    return rewards, values, logprobs, loss_mask, seq_no_eos


def areal_turn_batch(B=6, T=64, *, seed=0, max_turns=4, holes=False, truncated=(0, 2),
                     id_gaps=False):
    """A multi-turn batch in AReaL's layout, as its actor hands it to
    ``_compute_turn_level_gae``: per row a prompt, 1..``max_turns`` generated turns with
    tool output between them (turn id -1, loss mask 0), trailing padding; ``loss_mask`` and
    ``turn_ids`` rolled left by one, the last turn id set to -1. ``holes`` masks a few
    positions inside a turn that keep the turn's id; ``id_gaps`` numbers the turns 0, 2, 4..
    and gives the padding ids that no loss position uses (AReaL reads ids only on the mask).
    Rewards sit on every position, masked ones included. Returns rewards, values,
    loss_mask (float), turn_ids (int64), seq_no_eos_mask."""
    g = torch.Generator().manual_seed(seed)
    rewards = 0.1 * torch.randn(B, T, generator=g)
    values = torch.randn(B, T, generator=g)
    loss_mask = torch.zeros(B, T)
    turn_ids = torch.zeros(B, T, dtype=torch.long)
    seq_no_eos = torch.zeros(B, dtype=torch.bool)
    for b in range(B):
        gen = torch.zeros(T)
        ids = torch.full((T,), -1, dtype=torch.long)
        t = int(torch.randint(2, 6, (1,), generator=g))
        n_turns = int(torch.randint(1, max_turns + 1, (1,), generator=g))
        for k in range(n_turns):
            length = int(torch.randint(2, 8, (1,), generator=g))
            end = min(t + length, T - 1)
            if t >= end:
                break
            gen[t:end] = 1
            ids[t:end] = 2 * k if id_gaps else k
            if holes and end - t >= 4:
                gen[t + 1] = 0  # inside the turn, its id kept
            t = end + int(torch.randint(1, 5, (1,), generator=g))  # tool output
        if b in truncated:  # the last turn runs to the end of the sequence
            last = int(torch.nonzero(gen).max())
            gen[last:] = 1
            ids[last:] = ids[last]
            seq_no_eos[b] = True
        else:
            rewards[b, max(int(torch.nonzero(gen).max()) - 1, 0)] += 1.0
        if id_gaps:
            ids[gen == 0] = torch.randint(-3, 2 * T, (int((gen == 0).sum()),), generator=g)
        loss_mask[b] = torch.roll(gen, shifts=-1)
        turn_ids[b] = torch.roll(ids, shifts=-1)
        turn_ids[b, -1] = -1
    return rewards, values, loss_mask, turn_ids, seq_no_eos


# ------------------------------------------------------------------------------------------
# NeMo-RL (v0.7.0)
# ------------------------------------------------------------------------------------------

def nemo_rl_token_level_rewards(rewards, mask):
    """_build_token_level_rewards without KL: the scalar on the last mask position."""
    m = mask.double().cpu()
    out = torch.zeros(m.shape, dtype=torch.float64)
    for b in range(m.shape[0]):
        idx = torch.nonzero(m[b]).flatten()
        if len(idx):
            out[b, idx[-1]] = float(rewards[b])
    return out * m


def nemo_rl_whiten(adv, mask):
    """_reward_whiten with masked_mean (sum / (n + 1e-8)) and masked_var (unbiased)."""
    m = mask.double().cpu()
    n = m.sum()
    mean = (adv * m).sum() / (n + 1e-8)
    var = (((adv - mean) ** 2) * m).sum() / (n + 1e-8) * (n / (n - 1))
    return (adv - mean) * torch.rsqrt(var + 1e-8)


def nemo_rl_compute_advantage(config, rewards, mask, values):
    """GeneralizedAdvantageEstimator.compute_advantage (no KL in the reward): decoupled
    λ runs GAE twice (returns with the value λ, advantages with the policy λ), optional
    whitening, advantages zeroed off the mask."""
    r = nemo_rl_token_level_rewards(rewards, mask)
    lam = config["gae_lambda"]
    lam_value = config.get("gae_lambda_value")
    lam_policy = config.get("gae_lambda_policy")
    alpha = config.get("length_adaptive_alpha", 0)
    if alpha > 0:
        lam_policy_resolved = vapo_length_adaptive_loop(mask, alpha)
    else:
        lam_policy_resolved = lam_policy if lam_policy is not None else lam
    if lam_value is not None or lam_policy is not None or alpha > 0:
        _, ret = carrying_gae_loop(r, values, mask, config["gae_gamma"],
                                     lam_value if lam_value is not None else lam)
        adv, _ = carrying_gae_loop(r, values, mask, config["gae_gamma"], lam_policy_resolved)
    else:
        adv, ret = carrying_gae_loop(r, values, mask, config["gae_gamma"], lam)
    if config.get("normalize_advantages"):
        adv = nemo_rl_whiten(adv, mask)
    adv = adv.masked_fill(mask.cpu() == 0, 0)
    return adv, ret


# ------------------------------------------------------------------------------------------
# slime (v0.3.1)
# ------------------------------------------------------------------------------------------

def slime_vanilla_gae(rewards, values, gamma, lambd):
    """vanilla_gae: every position a step, the next value past the end 0."""
    r, v = rewards.double().cpu(), values.double().cpu()
    B, T = r.shape
    adv = torch.zeros(B, T, dtype=torch.float64)
    for b in range(B):
        last = 0.0
        for t in reversed(range(T)):
            nv = v[b, t + 1].item() if t < T - 1 else 0.0
            last = r[b, t].item() + gamma * nv - v[b, t].item() + gamma * lambd * last
            adv[b, t] = last
    return adv, adv + v


def slime_chunked_gae(rewards, values, gamma, lambd, chunk_size=128):
    """chunked_gae, as slime computes it in the inputs' dtype: deltas reversed in time,
    each chunk's local scan as a product with the upper-triangular matrix of powers of
    w = gamma * lambd, chunks chained by adding w^(t+1) times the previous chunk's last
    value."""
    B, T = rewards.shape
    dt = rewards.dtype
    nxt = torch.cat([values[:, 1:], torch.zeros(B, 1, dtype=dt)], dim=1)
    d = torch.flip(rewards + gamma * nxt - values, dims=[1])
    pad = (-T) % chunk_size
    d = torch.nn.functional.pad(d, (0, pad))
    n = d.shape[1] // chunk_size
    w = gamma * lambd
    i = torch.arange(chunk_size)
    diff = i[None, :] - i[:, None]
    M = torch.where(diff >= 0, torch.tensor(w, dtype=dt) ** diff.clamp(min=0).to(dt),
                    torch.zeros((), dtype=dt))
    if w == 0.0:
        M = torch.eye(chunk_size, dtype=dt)
    powv = torch.tensor(w, dtype=dt) ** torch.arange(1, chunk_size + 1, dtype=dt)
    local = (d.view(B * n, chunk_size) @ M).view(B, n, chunk_size)
    out = torch.zeros(B, n * chunk_size, dtype=dt)
    prev = torch.zeros(B, dtype=dt)
    for c in range(n):
        L = chunk_size - pad if (c == n - 1 and pad) else chunk_size
        s = local[:, c, :L] + prev[:, None] * powv[:L]
        out[:, c * chunk_size:c * chunk_size + L] = s
        prev = s[:, -1]
    adv = torch.flip(out[:, :T], dims=[1])
    return adv, adv + values


def slime_batch(gae, response_lengths, values_list, rewards_list, gamma, lambd):
    """get_advantages_and_returns_batch with CP size 1: zero-pad to the longest response,
    run ``gae`` on [B, max_len], cut each row back to its length."""
    B, T = len(response_lengths), max(response_lengths)
    v = torch.zeros(B, T, dtype=values_list[0].dtype)
    r = torch.zeros(B, T, dtype=values_list[0].dtype)
    for i, L in enumerate(response_lengths):
        v[i, :L] = values_list[i][:L].cpu()
        r[i, :L] = rewards_list[i][:L].cpu()
    adv, ret = gae(r, v, gamma, lambd)
    return ([adv[i, :L] for i, L in enumerate(response_lengths)],
            [ret[i, :L] for i, L in enumerate(response_lengths)])


def slime_ppo_rewards(rewards, kl, kl_coef):
    """The "ppo" branch of compute_advantages_and_returns (CP rank 0): -kl_coef * kl, the
    sample's reward added on its last token."""
    out = []
    for reward, k in zip(rewards, kl):
        k = k.double().cpu() * (-kl_coef)
        k[-1] += reward
        out.append(k)
    return out
