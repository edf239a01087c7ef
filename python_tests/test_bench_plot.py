"""bench/run.py's plot: its legend covers no panel, and it explains the single-row marker only
for a run that has a single-row size (--quick has none)."""
from __future__ import annotations

import importlib.util
import json
import os

import pytest

pytest.importorskip("matplotlib")

BENCH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench")


def _run_module():
    spec = importlib.util.spec_from_file_location("bench_run", os.path.join(BENCH, "run.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _labels(fig):
    return [t.get_text() for legend in fig.legends for t in legend.get_texts()]


@pytest.mark.parametrize("results, sizes_from", [("cpu.json", "file"), ("cpu.json", "quick")])
def test_plot_legend_and_single_row_marker(results, sizes_from):
    run = _run_module()
    with open(os.path.join(BENCH, "results", results)) as f:
        res = json.load(f)
    if sizes_from == "quick":
        res["records"] = [r for r in res["records"] if (r["B"], r["T"]) in run.QUICK_SIZES]
    has_single_row = any(r["B"] == 1 for r in res["records"])
    assert has_single_row == (sizes_from == "file")
    fig = run.figure(res)
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    (legend,) = fig.legends
    box = legend.get_window_extent(renderer)
    for ax in fig.axes:
        assert not box.overlaps(ax.get_window_extent(renderer)), "the legend covers a panel"
    assert any("B = 1" in s for s in _labels(fig)) == has_single_row
    for ax in fig.axes:  # no caption about single rows written into a panel either
        assert not any("B = 1" in t.get_text() for t in ax.texts)
    assert {"op", "verl_loop", "float32", "bfloat16"} <= set(_labels(fig))
