"""The CPU kernel's code paths compute the same bits.

The CPU scan has a vector build per instruction set (16-byte vectors everywhere, 32-byte
AVX2 ones where the CPU has them, picked at run time; SAE_CPU_VECTOR=base forces the
former) and a scalar path for a row that is alone in its group (B = 1, or one row left
over after the groups of 16). All of them make the same IEEE operations per token, so
their results must agree bitwise, forward and adjoint, for every input dtype and with
holes in the mask. The vector build is chosen once per process, so the base build runs in
a child process.
"""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
import torch

import sae_ext  # noqa: F401  (registers torch.ops.sae)
from conftest import make_rollout

OPS = torch.ops.sae

# (B, T): a lone row; groups with a lone row left over (17 = 16 + 1, 33 = 2 * 16 + 1);
# a partial group; T not a multiple of the 64-token tile or of any vector width; split rows.
SHAPES = [(1, 1), (1, 777), (17, 300), (33, 129), (13, 64), (61, 1001), (2, 66000)]
DTYPES = ["float32", "bfloat16", "float64"]

_COMPUTE = textwrap.dedent("""
    import sys, torch
    sys.path.insert(0, {tests!r})
    import sae_ext
    from conftest import make_rollout
    OPS = torch.ops.sae
    out = {{}}
    for B, T in {shapes!r}:
        for dt in {dtypes!r}:
            r, v, lp, m, bs = make_rollout(B, T, dtype=getattr(torch, dt), seed=B * 7 + T,
                                           mask_kind="random", reward_kind="dense")
            out[(B, T, dt, "fwd")] = OPS.advantages(r, v, lp, m, 0.99, 0.5, 1.0, 0.2, bs)
            out[(B, T, dt, "gae")] = OPS.advantages(r, v, lp, m, 0.97, 0.9, 0.9, 0.2, None)
            out[(B, T, dt, "bwd")] = OPS.advantages_backward(r, v, m, lp, None, 0.99, 0.5, 1.0, 0.2)
    torch.save(out, sys.argv[1])
""")


def _outputs(tmp_path, name, env_extra):
    path = tmp_path / f"{name}.pt"
    code = _COMPUTE.format(tests=os.path.dirname(__file__), shapes=SHAPES, dtypes=DTYPES)
    env = dict(os.environ, **env_extra)
    res = subprocess.run([sys.executable, "-c", code, str(path)], env=env, capture_output=True,
                         text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    return torch.load(path)


def test_vector_builds_agree_bitwise(tmp_path):
    base = _outputs(tmp_path, "base", {"SAE_CPU_VECTOR": "base"})
    default = _outputs(tmp_path, "default", {"SAE_CPU_VECTOR": ""})
    assert base.keys() == default.keys()
    for key in base:
        for a, b in zip(base[key], default[key]):
            assert torch.equal(a, b), f"{key}: base and default vector builds differ"


def _assert_each_row_alone_equals_batch(r, v, lp, m, bs, hyper):
    """Forward and adjoint of each row alone are bitwise those of the row in the batch."""
    batch = OPS.advantages(r, v, lp, m, *hyper, bs)
    batch_bw = OPS.advantages_backward(r, v, m, lp, None, *hyper)
    for row in range(r.shape[0]):
        sl = slice(row, row + 1)
        alone = OPS.advantages(r[sl], v[sl], lp[sl], m[sl], *hyper, bs[sl])
        alone_bw = OPS.advantages_backward(r[sl], v[sl], m[sl], lp[sl], None, *hyper)
        for got, want in zip(alone + alone_bw, batch + batch_bw):
            assert torch.equal(got[0], want[row]), f"row {row}"


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64])
@pytest.mark.parametrize("B", [17, 33])
def test_lone_rows_equal_rows_in_a_group(B, dtype):
    """Each row alone (scalar path) equals the same row inside the batch: vector lanes for
    all but the last row, which is itself the lone leftover of the batch."""
    r, v, lp, m, bs = make_rollout(B, 515, dtype=dtype, seed=B, mask_kind="random", reward_kind="dense")
    _assert_each_row_alone_equals_batch(r, v, lp, m, bs, (0.99, 0.5, 1.0, 0.2))


def test_lone_row_with_bootstrap_and_masked_tail():
    """The scalar path carries the bootstrap through a masked tail and zeroes masked tokens."""
    r = torch.tensor([[1.0, 0.0, 2.0, 0.0, 0.0]])
    v = torch.tensor([[0.5, 0.25, 0.75, 9.0, 9.0]])
    lp = torch.zeros(1, 5)
    m = torch.tensor([[True, False, True, False, False]])
    bs = torch.tensor([4.0])
    adv, ret = OPS.advantages(r, v, lp, m, 0.5, 0.5, 0.5, 0.2, bs)
    # token 2: R = 2 + 0.5 * 4 = 4, A = 3.25; w = 0.75 + 0.5 * 3.25 = 2.375
    # token 0: R = 1 + 0.5 * 2.375 = 2.1875, A = 1.6875
    torch.testing.assert_close(ret, torch.tensor([[2.1875, 0.0, 4.0, 0.0, 0.0]]), rtol=0, atol=0)
    torch.testing.assert_close(adv, torch.tensor([[1.6875, 0.0, 3.25, 0.0, 0.0]]), rtol=0, atol=0)


@pytest.mark.parametrize("layout", ["transposed", "strided", "mixed_dtypes"])
def test_lone_rows_equal_rows_in_a_group_for_other_layouts(layout):
    """Same as above through the generic staging: non-contiguous views, and a mix of
    float16 / float64 inputs with a float32 mask (each row alone takes the scalar path)."""
    B, T = 17, 203
    r, v, lp, m, bs = make_rollout(B, T, seed=5, mask_kind="random", reward_kind="dense")
    if layout == "transposed":
        r, v, lp = (x.t().contiguous().t() for x in (r, v, lp))
        m = m.t().contiguous().t()
    elif layout == "strided":
        r, v, lp = (torch.stack([x, x], dim=-1)[..., 0] for x in (r, v, lp))
    else:
        r, v, lp, m = r.half(), v.double(), lp.half(), m.float()
    _assert_each_row_alone_equals_batch(r, v, lp, m, bs, (0.97, 0.3, 0.9, 0.25))


# Rows of at least 65536 tokens are split into 2048-token chunks whose maps are composed,
# chained and replayed (csrc/cpu/split_rows.h). 66000 = 32 whole chunks and a partial one.
SPLIT_T = 66000


def _split_rollout(B, dtype=torch.float32, seed=3):
    return make_rollout(B, SPLIT_T, dtype=dtype, seed=seed, mask_kind="mixed", reward_kind="dense")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_split_rows_alone_equal_rows_in_a_batch(dtype):
    """A split row's forward and adjoint bits do not depend on the rows beside it (3 rows:
    one vector group; alone: the scalar path)."""
    r, v, lp, m, bs = _split_rollout(3, dtype)
    _assert_each_row_alone_equals_batch(r, v, lp, m, bs, (0.99, 0.5, 1.0, 0.2))


def test_split_rows_same_on_any_thread_count():
    r, v, lp, m, bs = _split_rollout(9)
    outs = []
    before = torch.get_num_threads()
    try:
        for n in (1, 2, 3):
            torch.set_num_threads(n)
            outs.append(OPS.advantages(r, v, lp, m, 0.99, 0.5, 1.0, 0.2, bs)
                        + OPS.advantages(r, v, lp, m, 0.99, 0.9, 0.9, 0.2, bs, lam_critic=1.0)
                        + OPS.advantages_backward(r, v, m, lp, None, 0.99, 0.5, 1.0, 0.2))
    finally:
        torch.set_num_threads(before)
    for other in outs[1:]:
        for a, b in zip(outs[0], other):
            assert torch.equal(a, b)


def _adjoint_float64(ga, gr, lp, m, hyper):
    """d rewards, d values, d bootstrap of the loss sum(ga * A + gr * R), in float64: the
    adjoint recursion of reference.py, one step a token (autograd through the reference's
    forward, which test_adjoint_oracle_is_the_references_autograd checks it against, takes
    over a minute at the lengths that split rows need)."""
    from sae_ext import reference
    gamma, lam, lam_inner, threshold = hyper
    starts = reference.segment_boundaries(lp, m, threshold)
    return reference.step_order_adjoint(ga, gr, starts, m, gamma, lam, lam_inner, torch.float64)


def _assert_adjoint_close(got, want):
    for name, g, w in zip(("d rewards", "d values", "d bootstrap"), got, want):
        scale = max(1.0, w.abs().max().item())
        err = (g.double() - w).abs().max().item()
        assert err <= 1e-4 * scale, f"{name}: max error {err:.3g} (scale {scale:.3g})"


def test_adjoint_oracle_is_the_references_autograd():
    """_adjoint_float64 against autograd through reference.advantages, on a short batch
    with holes, cuts and a bootstrap."""
    from sae_ext import reference
    r, v, lp, m, bs = make_rollout(3, 300, dtype=torch.float64, seed=5, mask_kind="mixed",
                                   reward_kind="dense")
    hyper = (0.999, 0.5, 1.0, 0.2)
    r, v, bs = (x.clone().requires_grad_() for x in (r, v, bs))
    adv, ret = reference.advantages(r, v, lp, m, *hyper, bs)
    ga, gr = torch.randn_like(adv), torch.randn_like(ret)
    (adv * ga + ret * gr).sum().backward()
    got = _adjoint_float64(ga, gr, lp, m, hyper)
    for g, w in zip(got, (r.grad, v.grad, bs.grad)):
        assert (g - w).abs().max().item() <= 1e-12 * max(1.0, w.abs().max().item())


def test_split_rows_within_the_reference_criterion():
    """Forward (with the critic chain too) and adjoint of split rows against float64."""
    from conftest import assert_close_to_reference, check_against_reference
    from sae_ext import reference
    r, v, lp, m, bs = _split_rollout(4)
    hyper = (0.999, 0.5, 1.0, 0.2)
    check_against_reference(OPS.advantages(r, v, lp, m, *hyper, bs), (r, v, lp, m, *hyper, bs),
                            what="split rows")
    got = OPS.advantages(r, v, lp, m, *hyper, bs, lam_critic=0.97)[1]
    want = reference.advantages(r, v, lp, m, *hyper, bs, lam_critic=0.97)[1]
    same = reference.advantages(r, v, lp, m, *hyper, bs, dtype=torch.float32, lam_critic=0.97)[1]
    assert_close_to_reference(got, want, same, what="split rows, critic returns")
    ga, gr = torch.randn(r.shape), torch.randn(r.shape)
    got = OPS.advantages_backward(ga, gr, m, lp, None, *hyper)
    _assert_adjoint_close(got, _adjoint_float64(ga, gr, lp, m, hyper))


def test_packed_split_rows_equal_the_rows_padded():
    """Packed rows (one split, two not) give each row the bits it gets as a [1, len] row."""
    lens = [70000, 100, SPLIT_T]
    r, v, lp, _, _ = make_rollout(1, sum(lens), seed=11, mask_kind="none", reward_kind="dense")
    r, v, lp = r[0], v[0], lp[0]
    cu = torch.tensor([0, lens[0], lens[0] + lens[1], sum(lens)])
    # gamma = 1 and lam near 1, so that a chunk's map does not shrink the carry below the
    # rounding of its own terms (then a mis-chained carry would not show in the bits).
    hyper = (1.0, 0.9, 1.0, 0.2)
    adv, ret = OPS.advantages(r, v, lp, None, *hyper, None, cu_seqlens=cu)
    for b in range(3):
        s = slice(int(cu[b]), int(cu[b + 1]))
        a1, r1 = OPS.advantages(r[s][None], v[s][None], lp[s][None], None, *hyper)
        assert torch.equal(adv[s], a1[0]) and torch.equal(ret[s], r1[0]), f"row {b}"


# Many split rows take the chained walk (csrc/cpu/chained_walk.h: one pass, a lane per row)
# and few take the three phases; both must give the same bits. A row alone always takes the
# three phases, so each row alone against the batch compares the two; so do 1 and 2 threads
# where the rule (dispatch.cpp, use_chained_walk) puts the batch on different sides (with
# AVX2, 8 float lanes: 4 rows are walked at 1 thread and take the three phases at 2).
def _chained_rollout(B, dtype, seed=21):
    return make_rollout(B, SPLIT_T, dtype=dtype, seed=seed, mask_kind="mixed", reward_kind="dense")


def _all_outputs(r, v, lp, m, bs, lam_rows=None):
    """Forward (SAE, GAE, critic chain, per-row lam if given) and the adjoint by autograd."""
    outs = list(sae_ext.advantages(r, v, lp, m, gamma=1.0, lam=0.9, lam_inner=1.0, bootstrap=bs))
    outs += sae_ext.advantages(r, v, lp, m, gamma=0.99, lam=0.95, lam_inner=0.95, bootstrap=bs)
    outs += sae_ext.advantages(r, v, lp, m, gamma=1.0, lam=0.9, lam_inner=1.0, bootstrap=bs,
                               lam_critic=0.97)
    if lam_rows is not None:
        outs += sae_ext.advantages(r, v, lp, m, gamma=1.0, lam=lam_rows, lam_inner=1.0, bootstrap=bs)
    rg, vg, bg = (x.detach().clone().requires_grad_() for x in (r, v, bs))
    adv, ret = sae_ext.advantages(rg, vg, lp, m, gamma=1.0, lam=0.9, lam_inner=1.0, bootstrap=bg)
    # Output gradients elementwise from the inputs, so that a row's are the same alone.
    ga, gr = (r.float() * 0.37 + 0.1).sin(), (v.float() * 0.61).cos()
    (adv * ga + ret * gr).float().sum().backward()
    return [o.detach() for o in outs] + [rg.grad, vg.grad, bg.grad]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_chained_walk_equals_rows_alone_and_thread_counts(dtype):
    """4 and 16 split rows (walked at 1 thread; 4 rows three-phase at 2, 16 walked two
    vectors a group at 1 thread, one at 2) equal each row alone (three-phase) and the other
    thread count, bitwise, forward and adjoint."""
    before = torch.get_num_threads()
    try:
        for B in (4, 16):
            r, v, lp, m, bs = _chained_rollout(B, dtype)
            lam_rows = torch.linspace(0.5, 1.0, B)
            per_threads = []
            for n in (1, 2):
                torch.set_num_threads(n)
                per_threads.append(_all_outputs(r, v, lp, m, bs, lam_rows))
            for a, b in zip(*per_threads):
                assert torch.equal(a, b), f"B={B}: 1 and 2 threads differ"
            torch.set_num_threads(1)
            for row in (0, 1, 2, 3, B - 1):
                sl = slice(row, row + 1)
                alone = _all_outputs(r[sl], v[sl], lp[sl], m[sl], bs[sl], lam_rows[sl])
                for got, want in zip(alone, per_threads[0]):
                    assert torch.equal(got[0], want[row]), f"B={B}, row {row}"
    finally:
        torch.set_num_threads(before)


def test_chained_walk_within_the_reference_criterion():
    """The chained walk's forward and adjoint against the float64 reference."""
    from conftest import check_against_reference
    from sae_ext import reference
    r, v, lp, m, bs = _chained_rollout(8, torch.float32)
    hyper = (0.999, 0.5, 1.0, 0.2)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        check_against_reference(OPS.advantages(r, v, lp, m, *hyper, bs), (r, v, lp, m, *hyper, bs),
                                what="chained walk")
        ga, gr = torch.randn(r.shape), torch.randn(r.shape)
        got = OPS.advantages_backward(ga, gr, m, lp, None, *hyper)
    finally:
        torch.set_num_threads(before)
    _assert_adjoint_close(got, _adjoint_float64(ga, gr, lp, m, hyper))


def test_packed_chained_walk_equals_the_rows_alone():
    """Packed split rows of different chunk counts (they leave the walk's group in turn)
    and a short row: each row's bits as a [1, len] row."""
    lens = [140000, 100000, 70000, 66000, 65536, 100, 90000, 80000, 131072]
    r, v, lp, _, _ = make_rollout(1, sum(lens), seed=13, mask_kind="none", reward_kind="dense")
    r, v, lp = r[0], v[0], lp[0]
    cu = torch.tensor([0] + list(torch.tensor(lens).cumsum(0)))
    hyper = (1.0, 0.9, 1.0, 0.2)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        adv, ret = OPS.advantages(r, v, lp, None, *hyper, None, cu_seqlens=cu)
        for b in range(len(lens)):
            s = slice(int(cu[b]), int(cu[b + 1]))
            a1, r1 = OPS.advantages(r[s][None], v[s][None], lp[s][None], None, *hyper)
            assert torch.equal(adv[s], a1[0]) and torch.equal(ret[s], r1[0]), f"row {b}"
    finally:
        torch.set_num_threads(before)
