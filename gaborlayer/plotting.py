"""``plot_bank``: draw a filter bank (a ``GaborConv2d``, an ``nn.Conv2d`` or a tensor) as a grid.

matplotlib is optional (``pip install 'gaborlayer[plot]'``) and imported only when
:func:`plot_bank` is called, so ``import gaborlayer`` never needs it.
"""
from __future__ import annotations

import math
import numbers

import numpy as np
import torch
import torch.nn as nn

from .modules import GaborConv2d

_ACCEPTED = ("a GaborConv2d, an nn.Conv2d, or a tensor / numpy array of shape (kh, kw), (N, kh, kw) "
             "or (out_channels, in_channels, kh, kw)")
_INPUTS = "'all', 'rgb' or an input-channel index"
_TILE_INCHES = 0.75  # side of one tile in a figure plot_bank creates
_TITLE_INCHES = 0.4


def plot_bank(bank_or_module, *, ncols: int | None = None, title: str | None = None, fig=None,
              cmap="RdBu_r", symmetric: bool = True, inputs="all", scale: str = "tile"):
    """Draw a bank of 2-D filters as a grid of small images, one tile per filter.

    Args:
        bank_or_module: what to draw:

            - a :class:`~gaborlayer.GaborConv2d` or an :class:`torch.nn.Conv2d`: its ``.weight``,
              ``(out_channels, in_channels // groups, kh, kw)``, read without gradient;
            - a tensor (or numpy array) ``(N, kh, kw)``: ``N`` tiles, e.g. from
              :func:`~gaborlayer.gabor_kernel2d`; ``(kh, kw)`` is one tile;
            - a tensor ``(out_channels, in_channels, kh, kw)``: as a conv weight, see ``inputs``.
        ncols: tiles per row. Default: about the square root of the number of tiles; for a 4-D
            bank drawn with ``inputs="all"``, a multiple of ``in_channels``, so every row starts
            at input channel 0.
        title: drawn above the grid (``fig.suptitle``).
        fig: a matplotlib ``Figure`` (or ``SubFigure``) to draw into. Default: a new
            ``matplotlib.pyplot`` figure sized ``0.75`` inch per tile (close it with
            ``plt.close(fig)`` when drawing many).
        cmap: colormap of single-channel tiles (signed data: a diverging map, white at zero).
        symmetric: colour limits ``-m .. m`` with ``m`` the largest ``|value|``, so zero is the
            middle colour; ``False``: limits ``min .. max``.
        inputs: how a 4-D bank ``(out, in, kh, kw)`` becomes tiles:

            - ``"all"`` (default): one tile per ``(out, in)`` slice, in that (row-major) order;
              ``out * in`` tiles;
            - an int ``i``: input channel ``i`` of every output channel; ``out`` tiles;
            - ``"rgb"``: needs ``in == 3``: one colour tile per output channel, the three input
              channels as red, green, blue (the usual picture of a first layer on RGB images),
              mapped to ``[0, 1]`` by the same limits as the other tiles (``cmap`` is unused).

            Ignored for 2-D and 3-D input.
        scale: ``"tile"`` (default): colour limits per tile, to show each filter's shape;
            ``"bank"``: one set of limits for the whole bank, to compare their magnitudes.

    Returns:
        The ``matplotlib.figure.Figure`` drawn into (``fig`` when given), with one axes per tile
        in tile order and nothing else; non-finite values are drawn blank.

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
        >>> plt.close("all")
    """
    try:
        import matplotlib
        from matplotlib.figure import FigureBase
    except ImportError:
        raise ImportError("plot_bank needs matplotlib: pip install 'gaborlayer[plot]'") from None

    tiles, group = _tiles(bank_or_module, inputs)
    rgb = tiles.ndim == 4
    n = tiles.shape[0]
    if ncols is None:
        # 4-D "all": about sqrt(out / in) output channels per row, so the grid is roughly square.
        ncols = max(1, round(math.sqrt(n) / group)) * group if group > 1 else math.ceil(math.sqrt(n))
    elif not isinstance(ncols, numbers.Integral) or isinstance(ncols, bool) or ncols < 1:
        raise ValueError(f"ncols must be a positive int or None, got {ncols!r}")
    ncols = int(min(ncols, n))
    nrows = math.ceil(n / ncols)
    if title is not None and not isinstance(title, str):
        raise TypeError(f"title must be a str or None, got {type(title).__name__}")
    if not isinstance(symmetric, bool):
        raise TypeError(f"symmetric must be True or False, got {symmetric!r}")
    if scale not in ("tile", "bank"):
        raise ValueError(f"scale must be 'tile' or 'bank', got {scale!r}")
    if isinstance(cmap, str) and cmap not in matplotlib.colormaps:
        raise ValueError(f"cmap must be a matplotlib colormap or the name of one, got {cmap!r}")

    if fig is None:
        import matplotlib.pyplot as plt
        extra = _TITLE_INCHES if title else 0.0
        fig = plt.figure(figsize=(ncols * _TILE_INCHES, nrows * _TILE_INCHES + extra))
        top = 1 - extra / (nrows * _TILE_INCHES + extra)
    elif isinstance(fig, FigureBase):
        top = 0.9 if title else 1.0
    else:
        raise TypeError(f"fig must be a matplotlib Figure or SubFigure (or None for a new figure), "
                        f"got {type(fig).__name__}")

    limits = _limits(tiles, symmetric, scale)
    grid = fig.add_gridspec(nrows, ncols, left=0.02, right=0.98, bottom=0.02, top=top - 0.02,
                            wspace=0.1, hspace=0.1)
    for i in range(n):
        ax = fig.add_subplot(grid[i // ncols, i % ncols])
        lo, hi = limits[i]
        if rgb:
            image = np.clip((tiles[i] - lo) / (hi - lo), 0.0, 1.0)
            image = np.where(np.isfinite(image), image, 1.0)  # blank (white) where not finite
            ax.imshow(image, interpolation="nearest")
        else:
            ax.imshow(tiles[i], cmap=cmap, vmin=lo, vmax=hi, interpolation="nearest")
        ax.set_axis_off()
    if title:
        fig.suptitle(title, y=(1 + top) / 2)
    return fig


def _tiles(obj, inputs) -> tuple[np.ndarray, int]:
    """The tiles ``(T, kh, kw)`` or ``(T, kh, kw, 3)`` (float64) and how many make a group (in_channels)."""
    if isinstance(obj, (GaborConv2d, nn.Conv2d)):
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
    if bank.ndim not in (2, 3, 4):
        raise ValueError(f"bank_or_module must be {_ACCEPTED}; got a tensor of shape {tuple(bank.shape)}")
    if bank.numel() == 0:
        raise ValueError(f"bank_or_module has no filters to draw: shape {tuple(bank.shape)}")
    bank = bank.to(device="cpu", dtype=torch.float64)
    if bank.ndim == 2:
        return bank[None].numpy(), 1
    if bank.ndim == 3:
        return bank.numpy(), 1
    out_ch, in_ch, kh, kw = bank.shape
    if isinstance(inputs, str) and inputs == "all":
        return bank.reshape(out_ch * in_ch, kh, kw).numpy(), in_ch
    if isinstance(inputs, str) and inputs == "rgb":
        if in_ch != 3:
            raise ValueError(f"inputs='rgb' needs 3 input channels, the bank has {in_ch} "
                             f"(shape {tuple(bank.shape)}); use inputs='all' or an index")
        return bank.permute(0, 2, 3, 1).numpy(), 1
    if isinstance(inputs, numbers.Integral) and not isinstance(inputs, bool):
        if not -in_ch <= inputs < in_ch:
            raise ValueError(f"inputs={inputs} is out of range for a bank with {in_ch} input channel(s) "
                             f"(shape {tuple(bank.shape)})")
        return bank[:, int(inputs)].numpy(), 1
    raise ValueError(f"inputs must be {_INPUTS}, got {inputs!r}")


def _limits(tiles: np.ndarray, symmetric: bool, scale: str) -> list[tuple[float, float]]:
    """Colour limits ``(lo, hi)`` with ``lo < hi`` per tile, from the finite values only."""
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
