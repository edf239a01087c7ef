"""Issue 12's variants through the public API: per-row lambdas, lam_critic, GAE without
log-probs, length_adaptive_lam, packed rows (cu_seqlens) and an absent mask. Bitwise where
design12.md promises bits (a row alone, gae-mode returns, never-cutting log-probs, the padded
op's rows), the flash-attention criterion against reference.py otherwise; autograd, opcheck
and torch.compile for the new call forms. CPU always, CUDA where a CUDA build and device exist.
"""
from __future__ import annotations

import pytest
import torch

import sae_ext
from sae_ext import reference

from conftest import HAS_CUDA_KERNELS, assert_close_to_reference, make_rollout

OPS = torch.ops.sae

DEVICES = ["cpu"] + (["cuda"] if HAS_CUDA_KERNELS else [])

# The plumbing (schemas, launchers, Python wrappers) lands separately from these kernels.
pytestmark = pytest.mark.skipif(not hasattr(sae_ext, "advantages_varlen"),
                                reason="issue 12's Python API is not in this build yet")


def _rollout(B, T, device, seed=0, dtype=torch.float32, mask_kind="mixed"):
    return make_rollout(B, T, seed=seed, device=device, dtype=dtype, mask_kind=mask_kind,
                        reward_kind="dense")


def _row_lams(B, device, seed, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(B, generator=g).to(device=device, dtype=dtype)


# ---- per-row lambdas ---------------------------------------------------------------------

@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("lam_dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_per_row_lam_equals_each_row_alone_with_its_scalar(device, lam_dtype):
    B, T = 19, 301  # 19: groups of 8 / 16 plus a row alone; T: partial last tile
    r, v, lp, m, bs = _rollout(B, T, device, seed=1)
    lam = _row_lams(B, device, 2, lam_dtype)
    lam_in = _row_lams(B, device, 3, lam_dtype)
    adv, ret = sae_ext.advantages(r, v, lp, m, lam=lam, lam_inner=lam_in, gamma=0.99, bootstrap=bs)
    for b in range(B):
        a1, r1 = sae_ext.advantages(r[b:b + 1], v[b:b + 1], lp[b:b + 1], m[b:b + 1],
                                    lam=float(lam[b]), lam_inner=float(lam_in[b]), gamma=0.99,
                                    bootstrap=bs[b:b + 1])
        assert torch.equal(adv[b], a1[0]) and torch.equal(ret[b], r1[0]), f"row {b}"


@pytest.mark.parametrize("device", DEVICES)
def test_per_row_lam_against_reference(device):
    B, T = 13, 257
    r, v, lp, m, bs = _rollout(B, T, device, seed=4)
    lam, lam_in = _row_lams(B, device, 5), _row_lams(B, device, 6)
    got = sae_ext.advantages(r, v, lp, m, lam=lam, lam_inner=lam_in, gamma=0.97, bootstrap=bs)
    args = [x.cpu() for x in (r, v, lp, m)]
    kw = dict(lam=lam.cpu(), lam_inner=lam_in.cpu(), bootstrap=bs.cpu())
    want = reference.advantages(*args, 0.97, threshold=0.2, **kw)
    same = reference.advantages(*args, 0.97, threshold=0.2, dtype=torch.float32, **kw)
    for g, w, s, name in zip(got, want, same, ("advantages", "returns")):
        assert_close_to_reference(g.cpu(), w, s, what=f"per-row lam {name}")


@pytest.mark.parametrize("name", ["lam", "lam_inner", "lam_critic"])
def test_per_row_lam_errors_name_the_python_argument(name):
    r, v, lp, m, _ = _rollout(3, 10, "cpu")
    with pytest.raises(RuntimeError, match=rf"`{name}` must be in \[0, 1\], got 1.5 at row 1"):
        sae_ext.advantages(r, v, lp, m, **{"lam": 0.5, name: torch.tensor([0.5, 1.5, 0.2])})
    shape = rf"`{name}` must be 1-D with one value per row \[3\], got shape \[2\]"
    with pytest.raises(RuntimeError, match=shape):
        sae_ext.advantages(r, v, lp, m, **{"lam": 0.5, name: torch.tensor([0.5, 0.2])})
    # The fake kernels (meta tensors, torch.compile) say the same.
    meta = [x.to("meta") for x in (r, v, lp, m)]
    with pytest.raises(RuntimeError, match=shape):
        sae_ext.advantages(*meta, **{"lam": 0.5, name: torch.tensor([0.5, 0.2], device="meta")})


# ---- lam_critic --------------------------------------------------------------------------

@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("per_row", [False, True])
def test_lam_critic_returns_are_gae_returns_and_advantages_unchanged(device, per_row):
    B, T = 21, 300
    r, v, lp, m, bs = _rollout(B, T, device, seed=7)
    lam_c = _row_lams(B, device, 8) if per_row else 0.6
    adv, ret = sae_ext.advantages(r, v, lp, m, lam=0.9, lam_inner=1.0, gamma=0.99, bootstrap=bs,
                                  lam_critic=lam_c)
    adv0, ret0 = sae_ext.advantages(r, v, lp, m, lam=0.9, lam_inner=1.0, gamma=0.99, bootstrap=bs)
    _, ret_gae = sae_ext.gae(r, v, m, lam=lam_c, gamma=0.99, bootstrap=bs)
    assert torch.equal(adv, adv0)
    assert torch.equal(ret, ret_gae)
    assert not torch.equal(ret, ret0)  # the critic chain is really a different chain


# ---- GAE without log-probs, absent mask --------------------------------------------------

@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64])
def test_gae_equals_advantages_with_never_cutting_logprobs(device, dtype):
    r, v, lp, m, bs = _rollout(17, 300, device, seed=9, dtype=dtype)
    never = torch.zeros_like(lp)  # log p = 0 >= log(0.2): no token cuts
    got = sae_ext.gae(r, v, m, lam=0.95, gamma=0.99, bootstrap=bs)
    want = sae_ext.advantages(r, v, never, m, lam=0.95, lam_inner=0.95, gamma=0.99, bootstrap=bs)
    for g, w in zip(got, want):
        assert torch.equal(g, w)


@pytest.mark.parametrize("device", DEVICES)
def test_absent_mask_equals_all_true_mask(device):
    r, v, lp, _, bs = _rollout(11, 200, device, seed=10)
    ones = torch.ones(r.shape, dtype=torch.bool, device=device)
    got = OPS.advantages(r, v, lp, None, 0.99, 0.5, 1.0, 0.2, bs)
    want = OPS.advantages(r, v, lp, ones, 0.99, 0.5, 1.0, 0.2, bs)
    for g, w in zip(got, want):
        assert torch.equal(g, w)


# ---- length_adaptive_lam -----------------------------------------------------------------

def test_length_adaptive_lam_values_and_clamp():
    T = 100
    lengths = [0, 1, 10, 20, 21, 40, 100]
    mask = torch.zeros(len(lengths), T, dtype=torch.bool)
    for b, n in enumerate(lengths):
        mask[b, torch.randperm(T)[:n]] = True  # holes count as they are: valid tokens only
    lam = sae_ext.length_adaptive_lam(mask, alpha=0.05)
    assert lam.dtype == torch.float32 and lam.shape == (len(lengths),)
    want = [max(0.0, 1 - 1 / (0.05 * n)) if 0.05 * n > 1 else 0.0 for n in lengths]
    assert torch.allclose(lam, torch.tensor(want), atol=1e-7), (lam, want)
    assert lam[:5].tolist() == [0.0, 0.0, 0.0, 0.0, pytest.approx(1 - 1 / 1.05)]
    assert ((lam >= 0) & (lam <= 1)).all()


# ---- packed rows -------------------------------------------------------------------------

def _packed(lengths, device, seed, holes):
    g = torch.Generator().manual_seed(seed)
    N = sum(lengths)
    r, v = torch.randn(N, generator=g), torch.randn(N, generator=g)
    lp = (torch.rand(N, generator=g) ** 0.3).clamp_min(1e-6).log()
    mask = torch.rand(N, generator=g) > 0.3 if holes else None
    return [x.to(device) if x is not None else None for x in (r, v, lp, mask)]


def _pad(x, lengths, T, fill):
    out = torch.full((len(lengths), T), fill, dtype=x.dtype, device=x.device)
    o = 0
    for b, n in enumerate(lengths):
        out[b, :n] = x[o:o + n]
        o += n
    return out


def _lengths(B, seed):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(0, 400, (B,), generator=g).tolist()
    lengths[0], lengths[1 % B] = 0, 1  # an empty row and a one-token row
    return lengths


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("idx_dtype", [torch.int32, torch.int64])
@pytest.mark.parametrize("holes", [False, True])
@pytest.mark.parametrize("extras", ["plain", "per_row_lam", "lam_critic", "both"])
@pytest.mark.parametrize("B", [1, 5, 37])
def test_varlen_equals_padded_rows(device, idx_dtype, holes, extras, B):
    lengths = _lengths(B, seed=B)
    r, v, lp, mask = _packed(lengths, device, seed=B + 1, holes=holes)
    cu = torch.tensor([0] + torch.tensor(lengths).cumsum(0).tolist(), dtype=idx_dtype, device=device)
    bs = torch.randn(B).to(device)
    lam = _row_lams(B, device, 11) if extras in ("per_row_lam", "both") else 0.9
    lam_c = _row_lams(B, device, 12) if extras in ("lam_critic", "both") else None
    T = max(lengths) + 13  # trailing masked tokens must change nothing
    pm = _pad(mask if mask is not None else torch.ones_like(r, dtype=torch.bool), lengths, T, False)
    pr, pv, plp = (_pad(x, lengths, T, 0.0) for x in (r, v, lp))
    adv, ret = sae_ext.advantages_varlen(r, v, lp, cu, mask=mask, gamma=0.99, lam=lam,
                                         lam_inner=1.0, bootstrap=bs, lam_critic=lam_c)
    padv, pret = sae_ext.advantages(pr, pv, plp, pm, gamma=0.99, lam=lam, lam_inner=1.0,
                                    bootstrap=bs, lam_critic=lam_c)
    assert adv.shape == r.shape and ret.shape == r.shape
    assert torch.equal(_pad(adv, lengths, T, 0.0), padv)
    assert torch.equal(_pad(ret, lengths, T, 0.0), pret)
    gadv, gret = sae_ext.gae_varlen(r, v, cu, mask=mask, gamma=0.99, lam=lam, bootstrap=bs,
                                    lam_critic=lam_c)
    pgadv, pgret = sae_ext.gae(pr, pv, pm, gamma=0.99, lam=lam, bootstrap=bs, lam_critic=lam_c)
    assert torch.equal(_pad(gadv, lengths, T, 0.0), pgadv)
    assert torch.equal(_pad(gret, lengths, T, 0.0), pgret)


@pytest.mark.parametrize("device", DEVICES)
def test_varlen_backward_equals_padded(device):
    lengths = _lengths(23, seed=3)
    r, v, lp, mask = _packed(lengths, device, seed=4, holes=True)
    cu = torch.tensor([0] + torch.tensor(lengths).cumsum(0).tolist(), device=device)
    T = max(lengths) + 5
    pm = _pad(mask, lengths, T, False)
    ga, gr = torch.randn_like(r), torch.randn_like(r)
    got = OPS.advantages_backward(ga, gr, mask, lp, None, 0.99, 0.5, 1.0, 0.2, cu_seqlens=cu)
    want = OPS.advantages_backward(_pad(ga, lengths, T, 0.0), _pad(gr, lengths, T, 0.0), pm,
                                   _pad(lp, lengths, T, 0.0), None, 0.99, 0.5, 1.0, 0.2)
    assert torch.equal(_pad(got[0], lengths, T, 0.0), want[0])
    assert torch.equal(_pad(got[1], lengths, T, 0.0), want[1])
    assert torch.equal(got[2], want[2])


@pytest.mark.parametrize("bad, match", [
    ("not_monotone", "cu_seqlens"), ("wrong_end", "cu_seqlens"), ("wrong_start", "cu_seqlens"),
    ("float", "cu_seqlens"), ("2d", "cu_seqlens")])
def test_bad_cu_seqlens_is_a_clear_error(bad, match):
    r, v, lp, _ = _packed([3, 4, 5], "cpu", seed=6, holes=False)
    cu = {"not_monotone": torch.tensor([0, 5, 3, 12]), "wrong_end": torch.tensor([0, 3, 7, 11]),
          "wrong_start": torch.tensor([1, 3, 7, 12]), "float": torch.tensor([0.0, 3, 7, 12]),
          "2d": torch.tensor([[0, 3, 7, 12]])}[bad]
    with pytest.raises(Exception, match=match):
        sae_ext.advantages_varlen(r, v, lp, cu, lam=0.9)
    with pytest.raises(Exception, match=match):
        sae_ext.gae_varlen(r, v, cu, lam=0.9)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a second device")
def test_cu_seqlens_on_the_wrong_device_is_an_error():
    r, v, lp, _ = _packed([3, 4, 5], "cpu", seed=6, holes=False)
    with pytest.raises(Exception, match="cu_seqlens"):
        sae_ext.advantages_varlen(r, v, lp, torch.tensor([0, 3, 7, 12], device="cuda"), lam=0.9)


# ---- autograd, opcheck, torch.compile ----------------------------------------------------

def _small(B=3, T=9, seed=13):
    r, v, lp, m, bs = make_rollout(B, T, seed=seed, dtype=torch.float64, reward_kind="dense")
    return r.requires_grad_(), v.requires_grad_(), lp, m, bs.requires_grad_()


def test_gradcheck_per_row_lam_and_lam_critic():
    r, v, lp, m, bs = _small()
    lam = torch.tensor([0.2, 0.7, 1.0], dtype=torch.float64)
    f = lambda r, v, bs: sae_ext.advantages(r, v, lp, m, lam=lam, lam_inner=0.9, gamma=0.95,  # noqa: E731
                                            bootstrap=bs, lam_critic=torch.tensor([1.0, 0.5, 0.0], dtype=torch.float64))
    assert torch.autograd.gradcheck(f, (r, v, bs))
    assert torch.autograd.gradgradcheck(f, (r, v, bs))


def test_gradcheck_varlen():
    lengths = [0, 1, 5, 7]
    g = torch.Generator().manual_seed(14)
    N = sum(lengths)
    r = torch.randn(N, generator=g, dtype=torch.float64, requires_grad=True)
    v = torch.randn(N, generator=g, dtype=torch.float64, requires_grad=True)
    lp = torch.randn(N, generator=g, dtype=torch.float64) - 1
    bs = torch.randn(4, generator=g, dtype=torch.float64, requires_grad=True)
    cu = torch.tensor([0, 0, 1, 6, 13], dtype=torch.int32)
    f = lambda r, v, bs: sae_ext.advantages_varlen(r, v, lp, cu, lam=0.5, lam_inner=0.9, gamma=0.9,  # noqa: E731
                                                   bootstrap=bs, lam_critic=0.7)
    assert torch.autograd.gradcheck(f, (r, v, bs))
    assert torch.autograd.gradgradcheck(f, (r, v, bs))


def test_opcheck_new_call_forms():
    r, v, lp, m, bs = make_rollout(4, 20, seed=15, reward_kind="dense")
    lam = torch.rand(4)
    torch.library.opcheck(OPS.advantages.default, (r, v, lp, m, 0.99, 0.5, 1.0, 0.2, bs),
                          {"lam_rows": lam, "lam_critic_rows": lam})
    torch.library.opcheck(OPS.advantages.default, (r, v, None, None, 0.99, 0.5, 0.5, 0.2, bs),
                          {"lam_critic": 0.8})
    cu = torch.tensor([0, 10, 10, 50, 80])
    torch.library.opcheck(OPS.advantages.default, (r.flatten(), v.flatten(), lp.flatten(), None,
                                                   0.99, 0.5, 1.0, 0.2, bs), {"cu_seqlens": cu})
    torch.library.opcheck(OPS.advantages_backward.default,
                          (r.flatten(), v.flatten(), torch.ones(80, dtype=torch.bool), lp.flatten(),
                           None, 0.99, 0.5, 1.0, 0.2), {"cu_seqlens": cu, "lam_rows": lam})


def test_compile_fullgraph_dynamic_each_public_function():
    def step(r, v, lp, m, bs, lam, cu, fr, fv, flp):
        a = sae_ext.advantages(r, v, lp, m, lam=lam, lam_critic=1.0, bootstrap=bs)
        b = sae_ext.gae(r, v, m, lam=lam, bootstrap=bs)
        c = sae_ext.length_adaptive_lam(m)
        d = sae_ext.advantages_varlen(fr, fv, flp, cu, lam=0.9)
        e = sae_ext.gae_varlen(fr, fv, cu, lam=0.9)
        f = sae_ext.advantages_from_boundaries(r, v, m, m, lam=lam)
        return (*a, *b, c, *d, *e, *f)
    compiled = torch.compile(step, fullgraph=True, dynamic=True)
    for B, T in [(4, 50), (7, 130)]:
        r, v, lp, m, bs = make_rollout(B, T, seed=B, reward_kind="dense")
        lam = torch.rand(B)
        cu = torch.linspace(0, B * T, B + 1).long()
        args = (r, v, lp, m, bs, lam, cu, r.flatten(), v.flatten(), lp.flatten())
        for got, want in zip(compiled(*args), step(*args)):
            assert torch.equal(got, want)
