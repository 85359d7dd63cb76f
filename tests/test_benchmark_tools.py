"""The benchmarks' side-by-side tools: another revision's package imported beside this one
(benchmarks/revision.py), the paired ratio with its confidence interval, and bench_layer --base."""
from __future__ import annotations

import contextlib
import io
import os
import re
import subprocess
import sys

import pytest
import torch

import gaborlayer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))

import bench_layer  # noqa: E402
from revision import import_revision  # noqa: E402

try:
    HEAD = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short=7", "HEAD"], capture_output=True,
                          text=True).stdout.strip()
except OSError:  # no git on the machine
    HEAD = ""
needs_git = pytest.mark.skipif(not HEAD, reason="needs a git checkout (benchmarks/revision.py reads git)")


@needs_git
def test_a_revision_is_its_own_package_beside_this_one():
    """HEAD's package under its own name: its own modules and layer class, its torch.library
    operators in their own namespace (no clash with this checkout's), the same filters."""
    base = import_revision("HEAD")
    assert base.__name__ == f"gaborlayer_{HEAD}" and base is not gaborlayer
    assert base.GaborConv2d is not gaborlayer.GaborConv2d
    assert os.path.dirname(base.__file__) != os.path.dirname(gaborlayer.__file__)
    assert all(name == base.__name__ or name.startswith(base.__name__ + ".")
               for name in sys.modules if name.startswith("gaborlayer_"))
    assert import_revision("HEAD") is base  # imported once
    x = torch.randn(2, 3, 12, 12, generator=torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    ours = gaborlayer.GaborConv2d(3, 8, 5, padding=2)
    torch.manual_seed(0)
    theirs = base.GaborConv2d(3, 8, 5, padding=2)
    torch.testing.assert_close(theirs(x), ours(x))


def test_paired_ratio_is_the_median_ratio_with_an_interval_around_it():
    base = [1.0, 2.0, 4.0, 8.0, 16.0]
    assert bench_layer.paired_ratio([2 * b for b in base], base) == (2.0, 2.0, 2.0)
    ratios = [0.9, 1.0, 1.1, 1.2, 1.3, 1.4, 1.5]
    median, low, high = bench_layer.paired_ratio(ratios, [1.0] * len(ratios))
    assert median == 1.2 and 0.9 <= low < median < high <= 1.5


@needs_git
def test_bench_layer_compares_against_a_revision(monkeypatch):
    """--base prints that revision's layer in the table and this one's against it, per mode."""
    shape = (3, 4, 3, 1, 8)
    monkeypatch.setattr(bench_layer, "SHAPES", {"small": [shape]})
    monkeypatch.setattr(bench_layer, "TRAIN_TARGET", {shape: 1.10})
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert bench_layer.main(["--quick", "--shapes", "small", "--base", "HEAD"]) == 0
    text = out.getvalue()
    assert f"| 3->4 k3 B1 8x8 | GaborConv2d @{HEAD} |" in text
    for mode in ("train", "eval"):
        line = re.search(rf"# 3->4 k3 B1 8x8 {mode}: GaborConv2d / GaborConv2d @{HEAD} = "
                         r"([\d.]+) \[95% CI ([\d.]+), ([\d.]+)\]", text)
        assert line, text
        median, low, high = map(float, line.groups())
        assert 0 < low <= median <= high
    assert re.search(rf"# against GaborConv2d @{HEAD}: (nowhere slower|slower \(the whole)", text), text


@needs_git
def test_bench_triton_compares_against_a_revision(monkeypatch):
    """--base adds that revision's Function to the bank table and prints this one against it."""
    import bench_triton

    monkeypatch.setattr(bench_triton, "BANK_SHAPES", [(2, 3, 3, 3)])
    monkeypatch.setattr(bench_triton.torch, "compile", lambda fn, **options: fn)  # no inductor build here
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert bench_triton.main(["--base", "HEAD", "--min-run-time", "0.01"]) == 0
    text = out.getvalue()
    header = next(line for line in text.splitlines() if line.startswith("shape (C_out"))
    assert f"Function @{HEAD}" in header
    line = re.search(rf"2x3x3x3 +Function / Function @{HEAD} +([\d.]+)", text)
    assert line and float(line.group(1)) > 0, text
