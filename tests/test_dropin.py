"""plot_bank (every accepted input, the layout, the colour limits, bad input) and the drop-in demo."""
from __future__ import annotations

import os
import subprocess
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
import torch.nn as nn  # noqa: E402

from gaborlayer import GaborConv2d, gabor_kernel2d  # noqa: E402
from gaborlayer.plotting import plot_bank  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def images(fig):
    """The image data of every tile, in tile order."""
    return [np.asarray(im.get_array()) for ax in fig.axes for im in ax.images]


def n_tiles(fig) -> int:
    assert all(len(ax.images) == 1 for ax in fig.axes), "one image per axes, nothing else"
    return len(fig.axes)


def gabor_module(in_channels=3, out_channels=8, k=7):
    """Random parameters whose envelopes fit the kernel (3 sigma <= 6 px, gamma = 1)."""
    torch.manual_seed(0)
    shape = (out_channels, in_channels)
    return GaborConv2d(in_channels, out_channels, k, theta=torch.rand(shape) * 3, psi=torch.rand(shape),
                       sigma=0.6 + 0.4 * torch.rand(shape), lambd=3.0 + torch.rand(shape), gamma=1.0)


# -- every accepted input ------------------------------------------------------------------------------
@pytest.mark.parametrize("make, kwargs, expected", [
    (lambda: GaborConv2d(1, 16, 7), {}, 16),
    (lambda: GaborConv2d(3, 4, 5), {}, 12),                      # "all": one tile per (out, in)
    (lambda: GaborConv2d(3, 4, 5), {"inputs": 1}, 4),            # one input channel
    (lambda: GaborConv2d(3, 4, 5), {"inputs": -1}, 4),
    (lambda: GaborConv2d(3, 4, 5), {"inputs": "rgb"}, 4),        # colour tiles
    (lambda: nn.Conv2d(2, 6, 3), {}, 12),
    (lambda: nn.Conv2d(4, 8, 3, groups=2), {}, 16),              # weight (8, 2, 3, 3)
    (lambda: GaborConv2d(4, 6, (5, 7), groups=2), {}, 12),
    (lambda: gabor_kernel2d(torch.linspace(0, 3, 5), 2.0, 5.0, 0.5, 0.0, 9), {}, 5),   # (N, kh, kw)
    (lambda: torch.randn(9, 9), {}, 1),                          # one kernel
    (lambda: torch.randn(6, 2, 4, 4), {"inputs": 0}, 6),         # a 4-D tensor
    (lambda: np.random.default_rng(0).normal(size=(3, 4, 4)), {}, 3),   # numpy
    (lambda: np.arange(2 * 5 * 5).reshape(2, 5, 5), {}, 2),      # integer numpy
    (lambda: torch.randn(5, 3, 3, dtype=torch.float64, requires_grad=True), {}, 5),
    (lambda: torch.randn(5, 3, 3).half(), {}, 5),
])
def test_one_tile_per_filter(make, kwargs, expected):
    fig = plot_bank(make(), **kwargs)
    assert isinstance(fig, matplotlib.figure.Figure)
    assert n_tiles(fig) == expected


def test_rgb_tiles_are_colour_images_in_unit_range():
    conv = nn.Conv2d(3, 5, 4)
    tiles = images(plot_bank(conv, inputs="rgb"))
    assert len(tiles) == 5 and all(t.shape == (4, 4, 3) for t in tiles)
    assert all(0.0 <= t.min() and t.max() <= 1.0 for t in tiles)
    # Symmetric limits: zero is mid-grey, the largest |value| of the tile reaches 0 or 1.
    w = conv.weight.detach().double()[0].permute(1, 2, 0).numpy()
    np.testing.assert_allclose(tiles[0], 0.5 + 0.5 * w / np.abs(w).max(), atol=1e-6)


def test_tiles_hold_the_weights_in_order():
    conv = nn.Conv2d(3, 4, 5)
    w = conv.weight.detach().double()
    tiles = images(plot_bank(conv))
    for i, tile in enumerate(tiles):
        np.testing.assert_allclose(tile, w[i // 3, i % 3].numpy(), rtol=1e-6)
    for o, tile in enumerate(images(plot_bank(conv, inputs=2))):
        np.testing.assert_allclose(tile, w[o, 2].numpy(), rtol=1e-6)


def test_module_and_its_bank_give_the_same_picture():
    conv = gabor_module()
    from_module = plot_bank(conv, title="m")
    for other in (conv.weight, conv.weight.detach().numpy(), conv.to_conv2d()):
        fig = plot_bank(other, title="m")
        assert len(fig.axes) == len(from_module.axes) == 24
        for a, b in zip(from_module.axes, fig.axes):
            np.testing.assert_allclose(a.images[0].get_array(), b.images[0].get_array(), rtol=1e-6)
            assert a.images[0].get_clim() == pytest.approx(b.images[0].get_clim())
            assert a.get_subplotspec().get_geometry() == b.get_subplotspec().get_geometry()
    conv.eval()  # the cached bank in eval mode: the same picture again
    assert all(np.allclose(a, b) for a, b in zip(images(plot_bank(conv)), images(from_module)))


# -- layout and colour limits ----------------------------------------------------------------------
def grid_of(fig):
    """(nrows, ncols) of the grid and each tile's (row, col)."""
    specs = [ax.get_subplotspec() for ax in fig.axes]
    nrows, ncols = specs[0].get_gridspec().get_geometry()
    return (nrows, ncols), [(s.rowspan.start, s.colspan.start) for s in specs]


def test_layout():
    (nrows, ncols), cells = grid_of(plot_bank(torch.randn(10, 3, 3), ncols=4))
    assert (nrows, ncols) == (3, 4) and cells == [(i // 4, i % 4) for i in range(10)]
    (nrows, ncols), _ = grid_of(plot_bank(torch.randn(16, 3, 3)))
    assert (nrows, ncols) == (4, 4)
    (nrows, ncols), _ = grid_of(plot_bank(torch.randn(16, 3, 5, 5)))   # rows start at input channel 0
    assert ncols % 3 == 0 and nrows * ncols >= 48
    (nrows, ncols), _ = grid_of(plot_bank(torch.randn(3, 3, 3), ncols=10))   # ncols capped at the count
    assert (nrows, ncols) == (1, 3)


def test_colour_limits():
    bank = torch.stack([torch.full((3, 3), 2.0), torch.linspace(-1, 3, 9).reshape(3, 3)])
    sym = [ax.images[0].get_clim() for ax in plot_bank(bank).axes]
    assert sym == [pytest.approx((-2, 2)), pytest.approx((-3, 3))]
    raw = [ax.images[0].get_clim() for ax in plot_bank(bank, symmetric=False).axes]
    assert raw[1] == pytest.approx((-1, 3)) and raw[0][0] < 2 < raw[0][1]   # a constant tile still has a range
    shared = [ax.images[0].get_clim() for ax in plot_bank(bank, scale="bank").axes]
    assert shared == [pytest.approx((-3, 3))] * 2
    zero = plot_bank(torch.zeros(1, 3, 3)).axes[0].images[0].get_clim()
    assert zero == pytest.approx((-1, 1))


def test_non_finite_values_are_drawn_blank():
    bank = torch.randn(2, 4, 4)
    bank[0, 0, 0], bank[1] = float("nan"), float("inf")
    fig = plot_bank(bank)
    lo, hi = fig.axes[0].images[0].get_clim()
    assert np.isfinite([lo, hi]).all() and lo < hi
    fig.canvas.draw()
    rgb = plot_bank(torch.full((1, 3, 2, 2), float("nan")), inputs="rgb")
    assert np.isfinite(images(rgb)[0]).all()


def test_draws_into_a_given_figure_or_subfigure_with_a_title():
    fig = plt.figure()
    assert plot_bank(GaborConv2d(1, 4, 5), fig=fig, title="bank") is fig
    assert n_tiles(fig) == 4 and fig._suptitle.get_text() == "bank"
    parent = plt.figure()
    left, right = parent.subfigures(1, 2)
    plot_bank(torch.randn(3, 5, 5), fig=left)
    plot_bank(nn.Conv2d(1, 2, 3), fig=right, cmap="gray")
    assert len(parent.axes) == 5
    assert right.axes[0].images[0].get_cmap().name == "gray"
    parent.canvas.draw()


def test_new_figure_is_sized_by_the_grid():
    w, h = plot_bank(torch.randn(16, 3, 3), ncols=8).get_size_inches()
    assert w == pytest.approx(8 * 0.75) and h == pytest.approx(2 * 0.75)


# -- bad input ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("arg, kwargs, error, match", [
    (nn.Linear(3, 4), {}, TypeError, r"bank_or_module must be a GaborConv2d, an nn.Conv2d, .*got a Linear module"),
    (nn.ConvTranspose1d(1, 2, 3), {}, TypeError, r"bank_or_module must be .*got a ConvTranspose1d module"),
    ([[1.0, 2.0]], {}, TypeError, r"bank_or_module must be .*got a list object"),
    (None, {}, TypeError, r"bank_or_module must be .*got a NoneType object"),
    (torch.randn(7), {}, ValueError, r"bank_or_module must be .*\(N, kh, kw\).*got a tensor of shape \(7,\)"),
    (torch.randn(1, 1, 1, 2, 3, 3), {}, ValueError, r"got a tensor of shape \(1, 1, 1, 2, 3, 3\)"),
    (torch.randn(0, 3, 3), {}, ValueError, r"bank_or_module has no filters to draw: shape \(0, 3, 3\)"),
    (torch.randn(2, 3, 3, dtype=torch.complex64), {}, TypeError, r"real numbers, got dtype torch.complex64"),
    (torch.ones(2, 3, 3, dtype=torch.bool), {}, TypeError, r"real numbers, got dtype torch.bool"),
    (np.array([["a"]]), {}, TypeError, r"real numbers, got a numpy array of dtype <U1"),
    (nn.LazyConv2d(4, 3), {}, ValueError, r"LazyConv2d with no initialised weight yet"),
    (torch.randn(4, 2, 3, 3), {"inputs": "rgb"}, ValueError, r"inputs='rgb' needs 3 input channels, the bank has 2"),
    (torch.randn(4, 3, 3, 3), {"inputs": 3}, ValueError, r"inputs=3 is out of range .* 3 input channel"),
    (torch.randn(4, 3, 3, 3), {"inputs": "mean"}, ValueError,
     r"inputs must be 'all', 'rgb' or an input-channel index, got 'mean'"),
    (torch.randn(4, 3, 3, 3), {"inputs": True}, ValueError, r"inputs must be .*got True"),
    (torch.randn(4, 3, 3), {"ncols": 0}, ValueError, r"ncols must be a positive int or None, got 0"),
    (torch.randn(4, 3, 3), {"ncols": 2.0}, ValueError, r"ncols must be a positive int or None, got 2.0"),
    (torch.randn(4, 3, 3), {"fig": "fig"}, TypeError, r"fig must be a matplotlib Figure or SubFigure .*got str"),
    (torch.randn(4, 3, 3), {"scale": "global"}, ValueError, r"scale must be 'tile' or 'bank', got 'global'"),
    (torch.randn(4, 3, 3), {"symmetric": "yes"}, TypeError, r"symmetric must be True or False, got 'yes'"),
    (torch.randn(4, 3, 3), {"cmap": "no_such_map"}, ValueError, r"cmap must be a matplotlib colormap .*'no_such_map'"),
    (torch.randn(4, 3, 3), {"title": 3}, TypeError, r"title must be a str or None, got int"),
])
def test_bad_input_is_named(arg, kwargs, error, match):
    open_before = len(plt.get_fignums())
    with pytest.raises(error, match=match):
        plot_bank(arg, **kwargs)
    assert len(plt.get_fignums()) == open_before, "no figure left behind by a refused call"


def test_needs_matplotlib(monkeypatch):
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(ImportError, match=r"^plot_bank needs matplotlib: pip install 'gaborlayer\[plot\]'$"):
        plot_bank(torch.randn(2, 3, 3))


# -- the demo ----------------------------------------------------------------------------------------
def test_demo_quick_writes_its_images(tmp_path):
    result = subprocess.run([sys.executable, os.path.join(ROOT, "demos", "dropin.py"), "--quick",
                             "--out", str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    for text in ("| orientation | nn.Conv2d", "| orientation | GaborConv2d", "| digits      | GaborConv2d",
                 "first-layer params", "s / epoch"):
        assert text in result.stdout, text
    assert "epoch 2/2" in result.stderr   # the progress report
    names = ["gabor_before", "gabor_after_orientation", "conv_after_orientation", "gabor_after_digits",
             "conv_after_digits", "curves"]
    for name in names:
        path = tmp_path / f"dropin_{name}.png"
        assert path.exists() and 5_000 < path.stat().st_size < 300_000, name
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(f"dropin_{n}.png" for n in names)
