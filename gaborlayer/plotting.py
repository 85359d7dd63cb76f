"""``plot_bank``: draw a filter bank (a Gabor layer, a plain conv or a tensor) as a grid of tiles.

matplotlib is optional (``pip install 'gaborlayer[plot]'``) and imported only when
:func:`plot_bank` is called, so ``import gaborlayer`` never needs it.
"""
from __future__ import annotations

import math
import numbers
import textwrap
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn as nn

from .modules import GaborConv1d, GaborConv2d, GaborConv3d

if TYPE_CHECKING:
    from matplotlib.colors import Colormap
    from matplotlib.figure import Figure, SubFigure

_ACCEPTED = ("a GaborConv2d, an nn.Conv2d, a GaborConv1d / nn.Conv1d, a GaborConv3d / nn.Conv3d, or a tensor / "
             "numpy array of shape (kh, kw), (N, kh, kw), (out_channels, in_channels, kh, kw) or "
             "(out_channels, in_channels, kd, kh, kw)")
_INPUTS = "'all', 'rgb' or an input-channel index"
_TILE_INCHES = 0.75  # height of one tile in a figure plot_bank creates; the width of a 2-D tile
_LINE_TILE_INCHES = 1.5  # the width of a 1-D (line plot) tile
_MIN_TITLED_INCHES = 3.0  # a new figure with a title is at least this wide, so the title wraps little
_TITLE_PAD_INCHES = 0.08  # above and below the title
_RGB = ("tab:red", "tab:green", "tab:blue")


def plot_bank(bank_or_module: nn.Module | torch.Tensor | np.ndarray, *, ncols: int | None = None,
              title: str | None = None, fig: Figure | SubFigure | None = None, cmap: str | Colormap = "RdBu_r",
              symmetric: bool = True, inputs: str | int = "all", scale: str = "tile") -> Figure:
    """Draw a filter bank as a grid of small tiles, one tile per filter.

    2-D filters are drawn as images; 1-D filters (a :class:`~gaborlayer.GaborConv1d` or an
    :class:`torch.nn.Conv1d`) as line plots, the filter's value against its tap ``x = i - (k - 1) / 2``
    (a thin grey line marks zero); 3-D filters (a :class:`~gaborlayer.GaborConv3d`, an
    :class:`torch.nn.Conv3d` or a 5-D tensor) as their **central depth slice**, the image
    ``kernel[kd // 2]`` of each ``(kd, kh, kw)`` kernel (the slice through the centre, ``z = 0``,
    for odd ``kd``; for even ``kd`` the one just after it, ``z = +1/2``).

    Args:
        bank_or_module: what to draw:

            - a :class:`~gaborlayer.GaborConv2d` or an :class:`torch.nn.Conv2d`: its ``.weight``,
              ``(out_channels, in_channels // groups, kh, kw)``, read without gradient;
            - a :class:`~gaborlayer.GaborConv1d` or an :class:`torch.nn.Conv1d`: its ``.weight``
              ``(out_channels, in_channels // groups, k)``, one line plot per 1-D filter;
            - a :class:`~gaborlayer.GaborConv3d` or an :class:`torch.nn.Conv3d`: its ``.weight``
              ``(out_channels, in_channels // groups, kd, kh, kw)``, the central depth slice of each;
            - a tensor (or numpy array) ``(N, kh, kw)``: ``N`` tiles, e.g. from
              :func:`~gaborlayer.gabor_kernel2d`; ``(kh, kw)`` is one tile (so ``N`` 1-D kernels
              ``(N, k)``, e.g. from :func:`~gaborlayer.gabor_kernel1d`, are one image with a row each);
            - a tensor ``(out_channels, in_channels, kh, kw)``: as a conv weight, see ``inputs``;
              ``(out_channels, in_channels, kd, kh, kw)``: as a 3-D conv weight, its central slices.

            A 3-D tensor is always read as ``(N, kh, kw)``; to draw a 1-D conv weight as line plots,
            pass the module.
        ncols: tiles per row. Default: about the square root of the number of tiles (fewer for the
            wider 1-D tiles, so the grid is roughly square); for a bank drawn with ``inputs="all"``,
            a multiple of ``in_channels``, so every row starts at input channel 0.
        title: drawn above the grid (``fig.suptitle``), wrapped to the figure's width; a figure
            ``plot_bank`` creates is at least 3 inches wide when titled, and as tall as the
            wrapped title needs.
        fig: a matplotlib ``Figure`` (or ``SubFigure``) to draw into. Default: a new
            ``matplotlib.pyplot`` figure sized ``0.75`` inch per tile (1-D tiles: 1.5 x 0.75 inch;
            close it with ``plt.close(fig)`` when drawing many).
        cmap: colormap of single-channel image tiles (signed data: a diverging map, white at
            zero). Unused for 1-D tiles.
        symmetric: colour limits (1-D: y limits) ``-m .. m`` with ``m`` the largest ``|value|``, so
            zero is the middle colour; ``False``: limits ``min .. max``.
        inputs: how a conv weight ``(out, in, ...)`` becomes tiles:

            - ``"all"`` (default): one tile per ``(out, in)`` filter, in that (row-major) order;
              ``out * in`` tiles;
            - an int ``i``: input channel ``i`` of every output channel; ``out`` tiles;
            - ``"rgb"``: needs ``in == 3``: one tile per output channel, the three input channels
              as red, green, blue: a colour image for 2-D (and 3-D) filters (the usual picture of a
              first layer on RGB images), mapped to ``[0, 1]`` by the same limits as the other
              tiles (``cmap`` is unused); three lines (red, green, blue) for 1-D filters.

            Ignored for 2-D and 3-D tensors.
        scale: ``"tile"`` (default): colour (or y) limits per tile, to show each filter's shape;
            ``"bank"``: one set of limits for the whole bank, to compare their magnitudes.

    Returns:
        The ``matplotlib.figure.Figure`` drawn into (``fig`` when given), with one axes per tile
        in tile order and nothing else: each 2-D tile holds one image, each 1-D tile one line
        (three with ``inputs="rgb"``). Non-finite values are drawn blank.

    Raises:
        ImportError: matplotlib is not installed.
        TypeError / ValueError: an argument of the wrong kind or shape, named in the message.

    Examples:
        >>> import matplotlib.pyplot as plt
        >>> conv = GaborConv2d(3, 16, 7, padding=3)
        >>> fig = plot_bank(conv, inputs=0, title="initial bank")   # 16 tiles, input channel 0
        >>> len(fig.axes), fig.axes[0].images[0].get_array().shape
        (16, (7, 7))
        >>> len(plot_bank(conv.weight, inputs="rgb", fig=plt.figure()).axes)
        16
        >>> fig = plot_bank(GaborConv1d(1, 6, 31))                   # 1-D: a line plot per filter
        >>> len(fig.axes), len(fig.axes[0].lines), fig.axes[0].lines[0].get_xdata().shape
        (6, 1, (31,))
        >>> fig = plot_bank(GaborConv3d(1, 4, (5, 9, 9)))            # 3-D: the central depth slice
        >>> len(fig.axes), fig.axes[0].images[0].get_array().shape
        (4, (9, 9))
        >>> plt.close("all")
    """
    try:
        import matplotlib
        from matplotlib.figure import FigureBase
    except ImportError:
        raise ImportError("plot_bank needs matplotlib: pip install 'gaborlayer[plot]'") from None

    tiles, group, lines = _tiles(bank_or_module, inputs)
    rgb = tiles.ndim == (3 if lines else 4)
    n = tiles.shape[0]
    tile_w = _LINE_TILE_INCHES if lines else _TILE_INCHES
    ncols = _checked_ncols(ncols, n, group, tile_w)
    _check_options(title, symmetric, scale, cmap, fig, matplotlib, FigureBase)
    nrows = math.ceil(n / ncols)
    fig, box = _figure_and_grid_box(fig, title, ncols * tile_w, nrows * _TILE_INCHES)
    limits = _limits(tiles, symmetric, scale)
    grid = fig.add_gridspec(nrows, ncols, wspace=0.1, hspace=0.1, **box)
    for i in range(n):
        ax = fig.add_subplot(grid[i // ncols, i % ncols])
        lo, hi = limits[i]
        if lines:
            _draw_lines(ax, tiles[i], lo, hi, rgb)
        else:
            _draw_image(ax, tiles[i], lo, hi, rgb, cmap)
    return fig


def _checked_ncols(ncols, n: int, group: int, tile_w: float) -> int:
    """Tiles per row: the given ``ncols`` (at most ``n``), or about the square root of the number of
    tiles, in whole output channels per row for a bank with ``group`` input channels."""
    if ncols is None:
        # About sqrt(n * tile height / tile width) per row, so the grid is roughly square in inches;
        # a bank with in_channels > 1 ("all"): whole output channels per row.
        per_row = math.sqrt(n * _TILE_INCHES / tile_w)
        ncols = max(1, round(per_row / group)) * group if group > 1 else math.ceil(per_row)
    elif not isinstance(ncols, numbers.Integral) or isinstance(ncols, bool) or ncols < 1:
        raise ValueError(f"ncols must be a positive int or None, got {ncols!r}")
    return int(min(ncols, n))


def _check_options(title, symmetric, scale, cmap, fig, matplotlib, figure_base) -> None:
    if title is not None and not isinstance(title, str):
        raise TypeError(f"title must be a str or None, got {type(title).__name__}")
    if not isinstance(symmetric, bool):
        raise TypeError(f"symmetric must be True or False, got {symmetric!r}")
    if scale not in ("tile", "bank"):
        raise ValueError(f"scale must be 'tile' or 'bank', got {scale!r}")
    if isinstance(cmap, str) and cmap not in matplotlib.colormaps:
        raise ValueError(f"cmap must be a matplotlib colormap or the name of one, got {cmap!r}")
    if fig is not None and not isinstance(fig, figure_base):
        raise TypeError(f"fig must be a matplotlib Figure or SubFigure (or None for a new figure), "
                        f"got {type(fig).__name__}")


def _figure_and_grid_box(fig, title, grid_w: float, grid_h: float):
    """The figure (a new one sized by the grid, or ``fig``), its title placed, and the box
    (``left``, ``right``, ``bottom``, ``top`` in figure fractions) the grid of tiles fills."""
    if fig is None:
        import matplotlib.pyplot as plt
        width = max(grid_w, _MIN_TITLED_INCHES) if title else grid_w
        fig = plt.figure(figsize=(width, grid_h))
        height = grid_h
        if title:
            title_h = _title(fig, title, width)
            height = grid_h + title_h + 2 * _TITLE_PAD_INCHES
            fig.set_size_inches(width, height)
        # The grid keeps its own width, centred (a title may have widened the figure).
        half = 0.48 * grid_w / width
        box = dict(left=0.5 - half, right=0.5 + half, bottom=0.02 * grid_h / height, top=0.98 * grid_h / height)
    else:
        width, height = _size_inches(fig)
        top = 1.0
        if title:
            title_h = _title(fig, title, width)
            top = max(0.3, 1 - (title_h + 2 * _TITLE_PAD_INCHES) / height)
        box = dict(left=0.02, right=0.98, bottom=0.02, top=top - 0.02)
    if title:
        fig._suptitle.set_y(1 - _TITLE_PAD_INCHES / height)
    return fig, box


def _draw_image(ax, tile: np.ndarray, lo: float, hi: float, rgb: bool, cmap) -> None:
    if rgb:
        image = np.clip((tile - lo) / (hi - lo), 0.0, 1.0)
        image = np.where(np.isfinite(image), image, 1.0)  # blank (white) where not finite
        ax.imshow(image, interpolation="nearest")
    else:
        ax.imshow(tile, cmap=cmap, vmin=lo, vmax=hi, interpolation="nearest")
    ax.set_axis_off()


def _draw_lines(ax, tile: np.ndarray, lo: float, hi: float, rgb: bool) -> None:
    """One 1-D filter ``(k,)`` (or three, ``(k, 3)``, in red, green, blue) as a line plot in ``lo .. hi``."""
    k = tile.shape[0]
    x = np.arange(k) - (k - 1) / 2
    values = np.where(np.isfinite(tile), tile, np.nan)  # gaps where not finite
    if rgb:
        for c in range(3):
            ax.plot(x, values[:, c], color=_RGB[c], lw=0.9)
    else:
        ax.plot(x, values, color="black", lw=0.9, marker="." if k <= 15 else None, ms=2.5)
    margin = 0.08 * (hi - lo)  # the peak stays off the tile's edge
    ax.set_ylim(lo - margin, hi + margin)
    ax.set_xlim(x[0] - 0.5, x[-1] + 0.5)
    # The zero line is the y grid at 0, not a second Line2D, so ax.lines holds only the filter.
    ax.set_xticks([])
    ax.set_yticks([0.0])
    ax.tick_params(left=False, labelleft=False)
    ax.grid(axis="y", color="0.8", lw=0.6)
    for spine in ax.spines.values():
        spine.set_visible(False)


def _size_inches(fig) -> tuple[float, float]:
    """Width and height of a Figure or SubFigure, in inches."""
    return fig.bbox.width / fig.dpi, fig.bbox.height / fig.dpi


def _title(fig, title: str, width: float) -> float:
    """Set ``title`` as the suptitle of ``fig``, wrapped to fit ``width`` inches; its height in inches."""
    import matplotlib

    fontsize = matplotlib.font_manager.FontProperties(size=matplotlib.rcParams["figure.titlesize"]).get_size_in_points()
    usable = 0.96 * width
    # A first guess from an average character width of 0.5 em, then narrower until it fits.
    chars = max(8, int(usable * 72 / (0.5 * fontsize)))
    text = fig.suptitle(title, va="top")
    dpi = fig.dpi
    while True:
        lines = [textwrap.fill(line, chars) if line else line for line in title.splitlines()] or [""]
        text.set_text("\n".join(lines))
        extent = text.get_window_extent()
        if extent.width / dpi <= usable or chars <= 4:
            return extent.height / dpi
        chars = max(4, min(chars - 1, int(chars * usable * dpi / extent.width)))


def _tiles(obj, inputs) -> tuple[np.ndarray, int, bool]:
    """The tiles (float64) and how many make a group (in_channels), and whether they are 1-D.

    2-D tiles are ``(T, kh, kw)`` or, with ``inputs="rgb"``, ``(T, kh, kw, 3)``; 1-D tiles
    ``(T, k)`` or ``(T, k, 3)``.
    """
    lines = isinstance(obj, (GaborConv1d, nn.Conv1d))
    if isinstance(obj, (GaborConv1d, GaborConv2d, GaborConv3d, nn.Conv1d, nn.Conv2d, nn.Conv3d)):
        with torch.no_grad():
            weight = obj.weight
        if not isinstance(weight, torch.Tensor) or isinstance(weight, nn.parameter.UninitializedParameter):
            raise ValueError(f"bank_or_module is a {type(obj).__name__} with no initialised weight yet "
                             f"(run a forward pass first)")
        bank = weight.detach()
    elif isinstance(obj, torch.Tensor):
        bank = obj.detach()
    elif isinstance(obj, np.ndarray):
        if obj.dtype.kind not in "fiu":
            raise TypeError(f"bank_or_module must hold real numbers, got a numpy array of dtype {obj.dtype}")
        bank = torch.from_numpy(np.asarray(obj, dtype=np.float64))
    else:
        kind = "module" if isinstance(obj, nn.Module) else "object"
        raise TypeError(f"bank_or_module must be {_ACCEPTED}; got a {type(obj).__name__} {kind}")
    if bank.is_complex() or bank.dtype == torch.bool:
        raise TypeError(f"bank_or_module must hold real numbers, got dtype {bank.dtype}")
    if bank.ndim not in (2, 3, 4, 5):
        raise ValueError(f"bank_or_module must be {_ACCEPTED}; got a tensor of shape {tuple(bank.shape)}")
    if bank.numel() == 0:
        raise ValueError(f"bank_or_module has no filters to draw: shape {tuple(bank.shape)}")
    shape = tuple(bank.shape)
    bank = bank.to(device="cpu", dtype=torch.float64)
    if bank.ndim == 2:
        return bank[None].numpy(), 1, False
    if bank.ndim == 3 and not lines:
        return bank.numpy(), 1, False
    if bank.ndim == 5:
        bank = bank[:, :, bank.shape[2] // 2]  # the central depth slice of every 3-D kernel
    out_ch, in_ch = bank.shape[:2]
    if isinstance(inputs, str) and inputs == "all":
        return bank.reshape(out_ch * in_ch, *bank.shape[2:]).numpy(), in_ch, lines
    if isinstance(inputs, str) and inputs == "rgb":
        if in_ch != 3:
            raise ValueError(f"inputs='rgb' needs 3 input channels, the bank has {in_ch} "
                             f"(shape {shape}); use inputs='all' or an index")
        return bank.movedim(1, -1).numpy(), 1, lines
    if isinstance(inputs, numbers.Integral) and not isinstance(inputs, bool):
        if not -in_ch <= inputs < in_ch:
            raise ValueError(f"inputs={inputs} is out of range for a bank with {in_ch} input channel(s) "
                             f"(shape {shape})")
        return bank[:, int(inputs)].numpy(), 1, lines
    raise ValueError(f"inputs must be {_INPUTS}, got {inputs!r}")


def _limits(tiles: np.ndarray, symmetric: bool, scale: str) -> list[tuple[float, float]]:
    """Colour (or y) limits ``(lo, hi)`` with ``lo < hi`` per tile, from the finite values only."""
    def limit(values: np.ndarray) -> tuple[float, float]:
        finite = values[np.isfinite(values)]
        if finite.size == 0:
            return -1.0, 1.0
        if symmetric:
            m = float(np.abs(finite).max())
            return (-m, m) if m > 0 else (-1.0, 1.0)
        lo, hi = float(finite.min()), float(finite.max())
        return (lo, hi) if hi > lo else (lo - 1.0, hi + 1.0)

    if scale == "bank":
        return [limit(tiles)] * tiles.shape[0]
    return [limit(t) for t in tiles]
