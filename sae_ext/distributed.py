"""SAE / GAE on rows sharded along T across the ranks of a torch.distributed group (context
parallelism): rank k of n holds columns [t_k, t_{k+1}) of the same B rows, in rank order, and
gets back its columns of what the unsharded op computes on the whole rows.

Why this needs only a few scalars per row: csrc/sae_step.h carries one value w from token to
token (from the end of a row towards its start), and each valid token maps it affinely,
w <- (gamma * lambda_t) * w + (V_t + lambda_t * (r_t - V_t)); masked tokens leave it alone.
So a shard's tokens compose into one map of the w that enters it from the later shard,
w_out = a * w_in + c, and the w entering a shard is exactly the `bootstrap` of the op on that
shard (the op starts its own w at the bootstrap). Segment starts need no carry: whether a
token starts a segment depends on its own log-prob and mask, and the lambda it selects is
already folded into the w it passes on. A fully masked shard is the identity map (a = 1,
c = 0). With `lam_critic` the returns come from a second chain (lambda_critic at every valid
token), which has a map and a carry of its own.

Each call makes two all_gathers: a fixed-size header (to agree on B, dtypes and
hyperparameters before anything row-sized is exchanged, and to turn one rank's bad input into
an error on every rank rather than a hang), then [B, 5] float64 per rank ([B, 8] with
`lam_critic`): each shard's (a, c), its per-row lambdas (checked equal across ranks) and the
last rank's bootstrap. The sequences themselves never leave their rank.

Precision. Each shard's (a, c) is computed in float64 from the inputs (exact casts), with
gamma and the lambdas first rounded to the op's accumulation dtype, so the map is the one the
op applies; the carries are composed in float64. In float64 the result agrees with the
unsharded op to rounding (relative ~1e-15 times the row length). In float32 the carry is
within half a float32 ulp of the exact value of the float32-parameter recursion (the unsharded
kernel's carry has accumulated float32 rounding instead), so each rank is within
flash-attention's criterion of the float64 reference; on CPU the last rank, whose carry is
the user's bootstrap, is bit for bit the unsharded op's (the CPU kernel walks each row token
by token, so a row's last columns do not depend on what precedes them).

Not differentiable across shards (the carries are plain numbers): inputs that require grad
are an error. Works with gloo (CPU tensors) and NCCL (CUDA tensors; the exchanged scalars go
through the current CUDA device).
"""
from __future__ import annotations

from typing import List, Optional, Tuple

import torch
import torch.distributed as dist
from torch import Tensor

from . import _ops, _validation
from ._ops import Lam

__all__ = ["advantages", "gae"]

_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)
_HEADER = ("ok", "mode", "B", "rewards dtype", "values dtype", "logprobs dtype", "bootstrap dtype",
           "gamma", "threshold", "lam_critic", "device type")
_MODES = {"advantages": 1.0, "gae": 2.0}


def _code(t: Optional[Tensor]) -> float:
    return -1.0 if t is None else float(_DTYPES.index(t.dtype)) if t.dtype in _DTYPES else -2.0


def _comm_device(group, like) -> torch.device:
    """NCCL moves CUDA tensors only; gloo CPU ones; a mixed backend routes by device."""
    backend = str(dist.get_backend(group)).lower()
    if backend == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    if "nccl" in backend and isinstance(like, Tensor) and like.is_cuda:
        return like.device
    return torch.device("cpu")


def _gather(x: Tensor, n: int, group, device: torch.device) -> List[Tensor]:
    x = x.to(device).contiguous()
    parts = [torch.empty_like(x) for _ in range(n)]
    dist.all_gather(parts, x, group=group)
    return [p.cpu() for p in parts]


def _rows(x: Lam, B: int, acc: torch.dtype, device) -> Tensor:
    """A lambda (float, 0-d or [B]) as the op sees it, rounded to its accumulation dtype, in
    float64 [B]."""
    t = torch.as_tensor(x, dtype=None if isinstance(x, Tensor) else torch.float64, device=device)
    return t.to(acc).to(torch.float64).expand(B)


def _shard_map(r: Tensor, v: Tensor, valid: Tensor, lam_t: Tensor, gamma: float
               ) -> Tuple[Tensor, Tensor]:
    """(a, c), float64 [B]: the carry leaving the shard's first column is a * w_in + c.

    Token t's map is (alpha_t, b_t); walking from the end, the shard's composition is
    c = sum_t (prod_{s < t} alpha_s) * b_t and a = prod_t alpha_t (masked: alpha 1, b 0)."""
    r, v = r.to(torch.float64), v.to(torch.float64)
    alpha = torch.where(valid, gamma * lam_t, 1.0)
    b = torch.where(valid, v + lam_t * (r - v), 0.0)
    prod = torch.cumprod(alpha, dim=1)
    before = torch.cat([torch.ones_like(prod[:, :1]), prod[:, :-1]], dim=1)
    B = r.shape[0]
    a = prod[:, -1] if r.shape[1] else torch.ones(B, dtype=torch.float64, device=r.device)
    return a, (before * b).sum(dim=1)


def _run(mode, rewards, values, logprobs, mask, gamma, lam, lam_inner, threshold, bootstrap,
         lam_critic, group):
    name = f"sae_ext.distributed.{mode}"
    if not dist.is_available() or not dist.is_initialized():
        raise RuntimeError(f"{name}: torch.distributed is not initialized (call "
                           f"torch.distributed.init_process_group first, or use sae_ext.{mode})")
    n, k = dist.get_world_size(group), dist.get_rank(group)
    if k < 0:
        raise RuntimeError(f"{name}: this process is not a member of `group`")
    last = k == n - 1
    boot = bootstrap if last else None  # only the last rank's bootstrap enters the recursion
    comm = _comm_device(group, rewards)

    # Everything that can fail on one rank alone is checked before the first collective, so
    # that a bad input there becomes an error on every rank instead of the others waiting.
    error: Optional[BaseException] = None
    header = torch.zeros(len(_HEADER), dtype=torch.float64)
    try:
        lam_f, inner_f, var = _ops._lambdas(_ops._rows(rewards), lam, lam_inner, lam_critic)
        _validation.check_forward("sae.advantages", rewards, values, logprobs, True, mask,
                                  bootstrap, gamma, lam_f, inner_f, threshold, **var)
        grads = [t for t in (rewards, values, bootstrap) if t is not None and t.requires_grad]
        if grads and torch.is_grad_enabled():
            raise RuntimeError(f"{name}: gradients do not flow across shards; call it under "
                               f"torch.no_grad() or pass detached tensors")
        if str(dist.get_backend(group)).lower() == "nccl" and not rewards.is_cuda:
            raise RuntimeError(f"{name}: the group's backend is NCCL but `rewards` is on "
                               f"{rewards.device}; NCCL groups need CUDA tensors")
        header = torch.tensor([
            1.0, _MODES[mode], float(rewards.shape[0]), _code(rewards), _code(values),
            _code(logprobs), _code(boot), float(gamma),
            float(threshold) if logprobs is not None else 0.0, float(lam_critic is not None),
            float(rewards.is_cuda)], dtype=torch.float64)
    except Exception as e:  # noqa: BLE001  (re-raised below, after the others have heard)
        error = e
    headers = _gather(header, n, group, comm)
    failed = [j for j, h in enumerate(headers) if h[0] != 1.0]
    if error is not None:
        raise error
    if failed:
        raise RuntimeError(f"{name}: rank {failed[0]} of the group rejected its inputs (its own "
                           f"error says why); no rank computed anything")
    for i, what in enumerate(_HEADER[1:], start=1):
        if what == "bootstrap dtype":
            continue  # only the last rank's counts
        differ = [j for j, h in enumerate(headers) if h[i] != header[i]]
        if differ:
            raise RuntimeError(f"{name}: the ranks of the group disagree on {what} (rank {k}: "
                               f"{_describe(what, header[i])}, rank {differ[0]}: "
                               f"{_describe(what, headers[differ[0]][i])}); every rank must "
                               f"hold a T-shard of the same rows, with the same settings")
    B = rewards.shape[0]
    # The op's accumulation dtype, which the last rank's bootstrap counts in; gamma and the
    # lambdas are rounded to it below, as the op rounds them.
    acc = _validation.accumulation_dtype(rewards, values, logprobs)
    if headers[-1][6] == float(_DTYPES.index(torch.float64)):
        acc = torch.float64

    if B > 0:
        dev = rewards.device
        valid = (mask != 0 if mask is not None
                 else torch.ones(rewards.shape, dtype=torch.bool, device=dev))
        g = float(torch.tensor(gamma, dtype=acc))
        lam_b, lam_i = _rows(lam, B, acc, dev), _rows(lam_inner, B, acc, dev)
        starts = (torch.ops.sae.segment_boundaries(logprobs, valid, threshold)
                  if logprobs is not None else torch.zeros_like(valid))
        lam_t = torch.where(starts, lam_b[:, None], lam_i[:, None])
        a, c = _shard_map(rewards, values, valid, lam_t, g)
        boot64 = (boot.to(torch.float64) if boot is not None
                  else torch.zeros(B, dtype=torch.float64, device=dev))
        cols = [a, c, lam_b, lam_i, boot64]
        if lam_critic is not None:
            lam_c = _rows(lam_critic, B, acc, dev)
            a_c, c_c = _shard_map(rewards, values, valid, lam_c[:, None].expand_as(lam_t), g)
            cols += [a_c, c_c, lam_c]
        payload = torch.stack(cols, dim=1)

    if B == 0:
        parts = None
    else:
        parts = _gather(payload, n, group, comm)
        lam_cols = [2, 3] + ([7] if lam_critic is not None else [])
        for j, p in enumerate(parts):
            bad = [col for col in lam_cols if not torch.equal(p[:, col], parts[k][:, col])]
            if bad:
                what = {2: "`lam`", 3: "`lam_inner`" if mode == "advantages" else "`lam`",
                        7: "`lam_critic`"}[bad[0]]
                raise RuntimeError(f"{name}: ranks {k} and {j} were given different {what} "
                                   f"(every rank must pass the same per-row values)")

    def carry(ia: int, ic: int) -> Optional[Tensor]:
        """The w entering this rank's shard: the user's bootstrap through the later shards'
        maps, nearest last."""
        if last:
            return bootstrap
        w = parts[-1][:, 4].clone()
        for j in range(n - 1, k, -1):
            w = parts[j][:, ia] * w + parts[j][:, ic]
        return w.to(device=rewards.device, dtype=acc)

    def op(boot_in, lam_crit, lam_adv=lam, lam_adv_inner=lam_inner, cut=logprobs):
        lf, inf_, var = _ops._lambdas(_ops._rows(rewards), lam_adv, lam_adv_inner, lam_crit)
        return torch.ops.sae.advantages(rewards, values, cut, mask, gamma, lf, inf_,
                                        threshold if cut is not None else 0.0, boot_in, **var)

    if B == 0:
        return op(None, lam_critic)
    w = carry(0, 1)
    if lam_critic is None or last:
        return op(w, lam_critic)  # one chain, or two chains that start from the same bootstrap
    adv, _ = op(w, None)
    _, ret = op(carry(5, 6), None, lam_critic, lam_critic, None)
    return adv, ret


def _describe(what: str, x: Tensor) -> str:
    x = float(x)
    if what.endswith("dtype"):
        return "absent" if x == -1 else str(_DTYPES[int(x)]) if x >= 0 else "not a float"
    if what == "mode":
        return {v: m for m, v in _MODES.items()}[x]
    if what in ("lam_critic", "device type"):
        return {"lam_critic": ["None", "given"], "device type": ["CPU", "CUDA"]}[what][int(x)]
    return f"{x:g}"


def advantages(
    rewards: Tensor,
    values: Tensor,
    logprobs: Tensor,
    mask: Optional[Tensor],
    *,
    lam: Lam,
    gamma: float = 1.0,
    lam_inner: Lam = 1.0,
    threshold: float = 0.2,
    bootstrap: Optional[Tensor] = None,
    lam_critic: Optional[Lam] = None,
    group: Optional[dist.ProcessGroup] = None,
) -> Tuple[Tensor, Tensor]:
    """:func:`sae_ext.advantages` on rows sharded along T over the ranks of `group` (None: the
    default group).

    Every rank passes its own columns [t_k, t_{k+1}) of the same B rows, rank 0 the first
    ones; widths may differ between ranks, and may be 0. All other arguments are as in
    :func:`sae_ext.advantages` and must be the same on every rank, except `bootstrap`, which
    is read on the last rank only (the value after each row's last token lies beyond the last
    shard); other ranks may pass it too or None. Returns this rank's columns of the unsharded
    ``(advantages, returns)``. Collective: every rank of the group must call it. Precision:
    see the module's docstring (float64: agrees with the unsharded op to rounding; float32:
    within flash-attention's criterion, bit for bit on the last rank on CPU)."""
    return _run("advantages", rewards, values, logprobs, mask, gamma, lam, lam_inner, threshold,
                bootstrap, lam_critic, group)


def gae(
    rewards: Tensor,
    values: Tensor,
    mask: Optional[Tensor],
    *,
    gamma: float = 1.0,
    lam: Lam = 0.95,
    bootstrap: Optional[Tensor] = None,
    lam_critic: Optional[Lam] = None,
    group: Optional[dist.ProcessGroup] = None,
) -> Tuple[Tensor, Tensor]:
    """:func:`sae_ext.gae` on rows sharded along T, as :func:`advantages` lays them out."""
    return _run("gae", rewards, values, None, mask, gamma, lam, lam, 0.0, bootstrap, lam_critic,
                group)
