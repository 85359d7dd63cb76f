"""plot_bank for 1-D and 3-D banks, and titles that fit their figure (2-D input: tests/test_dropin.py)."""
from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
import torch.nn as nn  # noqa: E402

from gaborlayer import GaborConv1d, GaborConv2d, GaborConv3d  # noqa: E402
from gaborlayer.plotting import plot_bank  # noqa: E402


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def line_data(fig):
    """Per tile, the y data of its lines ``(lines, k)``; every tile has lines and no image."""
    assert all(not ax.images and ax.lines for ax in fig.axes)
    return [np.array([line.get_ydata() for line in ax.lines]) for ax in fig.axes]


def images(fig):
    assert all(len(ax.images) == 1 and not ax.lines for ax in fig.axes)
    return [np.asarray(ax.images[0].get_array()) for ax in fig.axes]


# -- 1-D ---------------------------------------------------------------------------------------------
def test_1d_bank_is_one_line_plot_per_filter():
    conv = GaborConv1d(2, 3, 15)
    w = conv.weight.detach().double()
    fig = plot_bank(conv)
    tiles = line_data(fig)
    assert len(fig.axes) == 6 and all(t.shape == (1, 15) for t in tiles)
    for i, tile in enumerate(tiles):   # (out, in) in row-major order, the taps centred on 0
        np.testing.assert_allclose(tile[0], w[i // 2, i % 2].numpy(), rtol=1e-6)
    np.testing.assert_array_equal(fig.axes[0].lines[0].get_xdata(), np.arange(15) - 7.0)
    for o, tile in enumerate(line_data(plot_bank(conv, inputs=-1))):
        np.testing.assert_allclose(tile[0], w[o, 1].numpy(), rtol=1e-6)


def test_1d_module_and_its_plain_conv_give_the_same_picture():
    conv = GaborConv1d(1, 5, 31)
    a, b = plot_bank(conv, title="t"), plot_bank(conv.to_conv1d(), title="t")
    for x, y in zip(line_data(a), line_data(b)):
        np.testing.assert_allclose(x, y, rtol=1e-6)
    np.testing.assert_allclose([ax.get_ylim() for ax in a.axes], [ax.get_ylim() for ax in b.axes], rtol=1e-6)
    assert len(line_data(plot_bank(nn.Conv1d(4, 6, 5, groups=2)))) == 12   # weight (6, 2, 5)


def test_1d_rgb_is_three_coloured_lines_per_output_channel():
    conv = nn.Conv1d(3, 4, 9)
    fig = plot_bank(conv, inputs="rgb")
    tiles = line_data(fig)
    assert len(tiles) == 4 and all(t.shape == (3, 9) for t in tiles)
    np.testing.assert_allclose(tiles[2], conv.weight.detach().double()[2].numpy(), rtol=1e-6)
    assert [line.get_color() for line in fig.axes[0].lines] == ["tab:red", "tab:green", "tab:blue"]


def test_1d_y_limits_and_non_finite_values():
    conv = nn.Conv1d(1, 2, 5, bias=False)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([[[1.0, -2.0, 0.5, 0.0, 1.0]], [[0.1, 0.2, float("nan"), 0.4, float("inf")]]]))
    fig = plot_bank(conv)
    lo, hi = fig.axes[0].get_ylim()
    assert lo == pytest.approx(-hi) and 2.0 < hi < 2.5   # symmetric, the peak off the edge
    lo, hi = plot_bank(conv, symmetric=False).axes[0].get_ylim()
    assert lo < -2.0 and 1.0 < hi < -lo
    tile = line_data(fig)[1][0]
    assert np.isnan(tile[[2, 4]]).all() and np.isfinite(tile[[0, 1, 3]]).all()   # gaps where not finite
    assert np.isfinite(fig.axes[1].get_ylim()).all()
    shared = [ax.get_ylim() for ax in plot_bank(conv, scale="bank").axes]
    assert shared[0] == pytest.approx(shared[1])
    fig.canvas.draw()


def test_1d_layout_and_size():
    fig = plot_bank(GaborConv1d(1, 16, 21))
    nrows, ncols = fig.axes[0].get_subplotspec().get_gridspec().get_geometry()
    assert (nrows, ncols) == (6, 3)   # wide tiles: fewer per row, a roughly square grid
    assert tuple(fig.get_size_inches()) == pytest.approx((3 * 1.5, 6 * 0.75))
    fig = plot_bank(nn.Conv1d(3, 8, 5))   # "all": whole output channels per row
    assert fig.axes[0].get_subplotspec().get_gridspec().get_geometry()[1] % 3 == 0


# -- 3-D ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kd", [5, 4])
def test_3d_bank_is_the_central_depth_slice(kd):
    conv = GaborConv3d(2, 3, (kd, 7, 9))
    w = conv.weight.detach().double()
    tiles = images(plot_bank(conv))
    assert len(tiles) == 6 and all(t.shape == (7, 9) for t in tiles)
    for i, tile in enumerate(tiles):
        np.testing.assert_allclose(tile, w[i // 2, i % 2, kd // 2].numpy(), rtol=1e-6)
    # The plain conv and the 5-D weight tensor give the same picture.
    for other in (conv.to_conv3d(), conv.weight, conv.weight.detach().numpy()):
        for a, b in zip(tiles, images(plot_bank(other))):
            np.testing.assert_allclose(a, b, rtol=1e-6)
    assert len(images(plot_bank(conv, inputs=1))) == 3


def test_3d_rgb_and_plain_conv3d():
    conv = nn.Conv3d(3, 2, 3)
    tiles = images(plot_bank(conv, inputs="rgb"))
    assert len(tiles) == 2 and tiles[0].shape == (3, 3, 3) and 0 <= tiles[0].min() and tiles[0].max() <= 1
    with pytest.raises(ValueError, match=r"needs 3 input channels, the bank has 1 \(shape \(4, 1, 3, 3, 3\)\)"):
        plot_bank(nn.Conv3d(1, 4, 3), inputs="rgb")


def test_still_refused():
    with pytest.raises(TypeError, match=r"GaborConv1d / nn.Conv1d, a GaborConv3d / nn.Conv3d, .*got a Linear module"):
        plot_bank(nn.Linear(2, 3))
    with pytest.raises(ValueError, match=r"got a tensor of shape \(1, 1, 1, 2, 3, 3\)"):
        plot_bank(torch.randn(1, 1, 1, 2, 3, 3))
    with pytest.raises(ValueError, match=r"LazyConv1d with no initialised weight yet"):
        plot_bank(nn.LazyConv1d(4, 3))


# -- titles ------------------------------------------------------------------------------------------
LONG = ("GaborConv2d after training on the orientation task (seed 0, test accuracy 68.1%), "
        "every filter of the first layer")


def assert_title_fits(fig):
    """The (sub)figure's title lies inside the figure and above every tile, and says the whole title."""
    root = fig.figure
    root.canvas.draw()
    renderer = root.canvas.get_renderer()
    box = fig._suptitle.get_window_extent(renderer)
    inside = fig.bbox
    assert inside.x0 - 0.5 <= box.x0 and box.x1 <= inside.x1 + 0.5, (box, inside)
    assert inside.y0 - 0.5 <= box.y0 and box.y1 <= inside.y1 + 0.5, (box, inside)
    lowest = min(box.y0, box.y1)
    for ax in fig.axes:
        assert ax.get_window_extent(renderer).y1 <= lowest + 0.5, "the title overlaps a tile"
    return fig._suptitle.get_text()


@pytest.mark.parametrize("make", [
    lambda: torch.randn(1, 5, 5),                     # one tile: the narrowest grid
    lambda: torch.randn(3, 5, 5),
    lambda: GaborConv2d(1, 16, 7),
    lambda: GaborConv1d(1, 2, 25),
    lambda: GaborConv3d(1, 40, 5),
])
@pytest.mark.parametrize("title", [LONG, "short", "a_title_with_no_spaces_at_all_that_has_to_be_broken_somewhere"])
def test_title_is_wrapped_to_fit_a_new_figure(make, title):
    fig = plot_bank(make(), title=title)
    text = assert_title_fits(fig)
    assert text.replace("\n", "" if " " not in title else " ") == title
    if title == "short":
        assert text == "short"
    if title == LONG:
        assert text.count("\n") >= 1
    fig.savefig(io.BytesIO(), format="png")   # and it saves


def test_title_fits_a_given_figure_and_subfigure():
    fig = plt.figure(figsize=(2.5, 3))
    assert plot_bank(torch.randn(4, 5, 5), fig=fig, title=LONG) is fig
    assert "\n" in assert_title_fits(fig)
    parent = plt.figure(figsize=(6, 3))
    left, right = parent.subfigures(1, 2)
    plot_bank(torch.randn(6, 5, 5), fig=left, title=LONG)
    plot_bank(GaborConv1d(1, 4, 21), fig=right, title="1-D")
    assert_title_fits(left)
    assert assert_title_fits(right) == "1-D"
    assert len(parent.axes) == 10


def test_a_title_makes_a_new_figure_taller_not_the_tiles_smaller():
    plain = plot_bank(torch.randn(16, 3, 3), ncols=8)
    titled = plot_bank(torch.randn(16, 3, 3), ncols=8, title=LONG)
    (w0, h0), (w1, h1) = plain.get_size_inches(), titled.get_size_inches()
    assert w1 == pytest.approx(w0) and h1 > h0
    heights = [ax.get_position().height * h for fig, h in ((plain, h0), (titled, h1)) for ax in fig.axes[:1]]
    assert heights[0] == pytest.approx(heights[1])
    narrow = plot_bank(torch.randn(2, 3, 3), title="x")   # a titled figure is at least 3 inches wide
    assert narrow.get_size_inches()[0] == pytest.approx(3.0)
    positions = [ax.get_position() for ax in narrow.axes]   # the grid stays its own width, centred
    assert positions[0].x0 + positions[-1].x1 == pytest.approx(1.0)
