"""torch.library.opcheck, gradcheck, and torch.compile(fullgraph=True, dynamic=True)."""
from __future__ import annotations

import pytest
import torch

import sae_ext

from conftest import make_rollout

OPS = torch.ops.sae


def _samples(device="cpu"):
    out = []
    for B, T, dtype in [(3, 17, torch.float32), (4, 40, torch.float64), (2, 9, torch.bfloat16)]:
        r, v, lp, m, bs = make_rollout(B, T, dtype=dtype, seed=B + T, device=device, reward_kind="dense")
        out.append((r, v, lp, m, bs))
        nc = tuple(t.t().contiguous().t() for t in (r, v, lp, m))
        out.append(nc + (bs,))
    return out


@pytest.mark.parametrize("i", range(6))
def test_opcheck_advantages(i):
    r, v, lp, m, bs = _samples()[i]
    torch.library.opcheck(OPS.advantages.default, (r, v, lp, m, 0.99, 0.5, 1.0, 0.2, bs))
    torch.library.opcheck(OPS.advantages.default, (r, v, lp, m, 1.0, 0.9, 0.9, 0.2))
    b = OPS.segment_boundaries(lp, m, 0.2)
    torch.library.opcheck(OPS.advantages_from_boundaries.default, (r, v, b, m, 0.99, 0.5, 1.0, bs))
    torch.library.opcheck(OPS.segment_boundaries.default, (lp, m, 0.2))


@pytest.mark.parametrize("i", range(6))
def test_opcheck_with_gradients(i):
    r, v, lp, m, bs = _samples()[i]
    r, v, bs = (t.detach().requires_grad_() for t in (r, v, bs))
    torch.library.opcheck(OPS.advantages.default, (r, v, lp, m, 0.99, 0.5, 1.0, 0.2, bs))
    ga, gr = torch.randn_like(r), torch.randn_like(r)
    torch.library.opcheck(OPS.advantages_backward.default, (ga, gr, m, lp, None, 0.99, 0.5, 1.0, 0.2))
    torch.library.opcheck(OPS.advantages_backward.default, (None, gr, m, None, m.bool(), 0.99, 0.5, 1.0, 0.0))


@pytest.mark.parametrize("hyper", [(1.0, 0.5, 1.0, 0.2), (0.9, 0.7, 0.95, 0.5), (1.0, 0.95, 0.95, 0.2)])
def test_gradcheck(hyper):
    r, v, lp, m, bs = make_rollout(3, 21, dtype=torch.float64, seed=1, reward_kind="dense")
    r, v, bs = (t.requires_grad_() for t in (r, v, bs))
    assert torch.autograd.gradcheck(lambda r, v, bs: OPS.advantages(r, v, lp, m, *hyper, bs), (r, v, bs))
    b = OPS.segment_boundaries(lp, m, hyper[3])
    assert torch.autograd.gradcheck(
        lambda r, v, bs: OPS.advantages_from_boundaries(r, v, b, m, *hyper[:3], bs), (r, v, bs))
    assert torch.autograd.gradgradcheck(lambda r, v: OPS.advantages(r, v, lp, m, *hyper), (r, v))


def test_gradient_dtypes_follow_inputs():
    r, v, lp, m, bs = make_rollout(2, 30, seed=3, reward_kind="dense")
    r = r.bfloat16().requires_grad_()
    v = v.requires_grad_()
    bs = bs.double().requires_grad_()
    adv, ret = sae_ext.advantages(r, v, lp, m, lam=0.5, bootstrap=bs)
    (adv.sum() + ret.pow(2).sum()).backward()
    assert r.grad.dtype == torch.bfloat16 and v.grad.dtype == torch.float32 and bs.grad.dtype == torch.float64


def _ppo_step(r, v, lp, m, bs):
    adv, ret = sae_ext.advantages(r, v, lp, m, lam=0.5, gamma=0.99, bootstrap=bs)
    gae_adv, _ = sae_ext.gae(r, v, m, lam=0.95)
    b = sae_ext.segment_boundaries(lp, m)
    adv_b, _ = sae_ext.advantages_from_boundaries(r, v, b, m, lam=0.5, gamma=0.99, bootstrap=bs)
    return sae_ext.masked_whiten(adv, m) + gae_adv + adv_b, ret


def test_compile_fullgraph_dynamic_matches_eager():
    torch._dynamo.reset()
    compiled = torch.compile(_ppo_step, fullgraph=True, dynamic=True)
    for B, T in [(4, 50), (7, 130), (3, 33)]:  # several shapes: must not recompile per shape
        args = make_rollout(B, T, seed=B * T, reward_kind="dense")
        for got, want in zip(compiled(*args), _ppo_step(*args)):
            torch.testing.assert_close(got, want)


def test_compile_backward():
    torch._dynamo.reset()

    def loss(r, v, lp, m, bs):
        adv, ret = torch.ops.sae.advantages(r, v, lp, m, 0.99, 0.5, 1.0, 0.2, bs)
        return (adv * adv).sum() + ret.sum()

    args = list(make_rollout(5, 64, seed=7, reward_kind="dense"))
    eager = [t.clone().requires_grad_() for t in (args[0], args[1], args[4])]
    comp = [t.clone().requires_grad_() for t in (args[0], args[1], args[4])]
    loss(eager[0], eager[1], args[2], args[3], eager[2]).backward()
    torch.compile(loss, fullgraph=True, dynamic=True)(comp[0], comp[1], args[2], args[3], comp[2]).backward()
    for a, b in zip(eager, comp):
        torch.testing.assert_close(a.grad, b.grad)


class _Tagged(torch.Tensor):
    """A tensor subclass: the wrappers must leave such inputs to the dispatcher."""


def _through_wrapper(case):
    r, v, lp, m, bs = make_rollout(3, 25, seed=8, reward_kind="dense")
    if case == "grad":  # grad mode on, an input requires grad: autograd must record a graph
        r = r.requires_grad_()
        return sae_ext.advantages(r, v, lp, m, lam=0.5, bootstrap=bs), (r,)
    if case == "bootstrap_grad":  # the only input needing grad is a keyword argument
        bs = bs.requires_grad_()
        return sae_ext.gae(r, v, m, lam=0.9, bootstrap=bs), (bs,)
    if case == "subclass":
        r = r.as_subclass(_Tagged).requires_grad_()
        return sae_ext.advantages(r, v, lp, m, lam=0.5), (r,)
    if case == "parameter":
        v = torch.nn.Parameter(v)
        return sae_ext.advantages_from_boundaries(
            r, v, sae_ext.segment_boundaries(lp, m), m, lam=0.5), (v,)
    if case == "varlen":
        cu = torch.tensor([0, 25, 50, 75])
        v = v.reshape(-1).requires_grad_()
        return sae_ext.gae_varlen(r.reshape(-1), v, cu, lam=0.9), (v,)
    raise AssertionError(case)


@pytest.mark.parametrize("case", ["grad", "bootstrap_grad", "subclass", "parameter", "varlen"])
def test_wrappers_keep_autograd_exactly_where_a_gradient_is_needed(case):
    # The wrappers skip torch's autograd kernel when no gradient can be asked for
    # (sae_ext._ops._call); everywhere else the graph must be there and give the op's gradient.
    (adv, ret), leaves = _through_wrapper(case)
    assert adv.grad_fn is not None and ret.grad_fn is not None
    g, = torch.autograd.grad((adv.sum() + 2 * ret.sum()), leaves)
    assert torch.isfinite(g).all() and g.abs().sum() > 0
    with torch.no_grad():  # the same call without grad mode: values equal, no graph
        (adv0, ret0), _ = _through_wrapper(case)
    assert adv0.grad_fn is None and ret0.grad_fn is None
    torch.testing.assert_close(adv0, adv.detach(), rtol=0, atol=0)
    torch.testing.assert_close(ret0, ret.detach(), rtol=0, atol=0)
