"""The README's torch.compile claim, counted: a compiled function that calls the op
recompiles once per new (gamma, lam, lam_inner, p) -- Dynamo specializes on Python floats --
and not per shape: with dynamic=True never for a new shape; with the default (dynamic=None)
once, at the first new shape, after which the shapes are symbolic."""
from __future__ import annotations

import pytest
import torch
from torch._dynamo.testing import CompileCounter

import sae_ext

from conftest import make_rollout


def _step(rewards, values, logprobs, mask, gamma, lam, lam_inner, threshold):
    adv, ret = sae_ext.advantages(rewards, values, logprobs, mask, lam=lam, gamma=gamma,
                                  lam_inner=lam_inner, threshold=threshold)
    return sae_ext.masked_whiten(adv, mask), ret


SHAPES = [(4, 16), (8, 33), (3, 7), (16, 64), (5, 129)]
HYPERS = [(1.0, 0.5, 1.0, 0.2), (0.99, 0.5, 1.0, 0.2), (1.0, 0.7, 1.0, 0.2),
          (1.0, 0.5, 0.9, 0.2), (1.0, 0.5, 1.0, 0.3)]


def _compiled(dynamic):
    torch._dynamo.reset()
    counter = CompileCounter()
    return torch.compile(_step, backend=counter, dynamic=dynamic, fullgraph=True), counter


@pytest.mark.parametrize("dynamic, compiles_for_shapes", [(True, 1), (None, 2)],
                         ids=["dynamic", "default"])
def test_new_shapes_do_not_recompile_after_the_first(dynamic, compiles_for_shapes):
    fn, counter = _compiled(dynamic)
    for B, T in SHAPES:
        r, v, lp, m, _ = make_rollout(B, T)
        fn(r, v, lp, m, *HYPERS[0])
    assert counter.frame_count == compiles_for_shapes


@pytest.mark.parametrize("dynamic", [True, None], ids=["dynamic", "default"])
def test_each_new_hyperparameter_tuple_compiles_once(dynamic):
    fn, counter = _compiled(dynamic)
    r, v, lp, m, _ = make_rollout(6, 40)
    for k, hyper in enumerate(HYPERS, 1):
        want = sae_ext.advantages(r, v, lp, m, gamma=hyper[0], lam=hyper[1], lam_inner=hyper[2],
                                  threshold=hyper[3])[1]
        for _ in range(2):  # the same tuple again: no recompile
            _, ret = fn(r, v, lp, m, *hyper)
            assert torch.equal(ret, want)
        assert counter.frame_count == k
    for hyper in HYPERS:  # back to tuples seen before: their graphs are cached
        fn(r, v, lp, m, *hyper)
    assert counter.frame_count == len(HYPERS)
