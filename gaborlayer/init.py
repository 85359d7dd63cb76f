"""Initial values: the classic banks the Gabor layers start from, and Gabor initialisation for
plain convolutions in the ``torch.nn.init`` convention.

``classic_bank1d`` / ``classic_bank2d`` / ``classic_bank3d`` give the default parameters of
``GaborConv1d`` / ``GaborConv2d`` / ``GaborConv3d``. For users who want the Gabor prior without the
constraint, ``gabor_(conv.weight)`` fills an ``nn.Conv2d``'s weight with a Gabor bank, after which
every weight trains freely.
"""
from __future__ import annotations

import math
import warnings

import torch

from . import _checks
from ._extent import EXTENT_SIGMAS


def _scales(index: torch.Tensor, n_scales: int, kernel_size) -> tuple[torch.Tensor, torch.Tensor]:
    """``(lambd, sigma)`` for scale ``index`` of ``n_scales``: wavelengths geometric from 2.5 to half the
    smaller kernel side, ``sigma = 0.56 lambd`` (one octave) capped at a sixth of that side, so that
    3 sigma fits the kernel."""
    lo, hi = 2.5, max(2.5, min(kernel_size) / 2)
    lambd = lo * (hi / lo) ** (index / max(n_scales - 1, 1))
    return lambd, torch.clamp(0.56 * lambd, max=min(kernel_size) / (2 * EXTENT_SIGMAS))


def _per_filter(values: dict, out_channels: int, in_per_group: int, dtype, device) -> dict:
    return {k: v[:, None].expand(out_channels, in_per_group).to(dtype=dtype, device=device) for k, v in values.items()}


def classic_bank2d(out_channels: int, in_per_group: int, kernel_size: tuple[int, int], dtype: torch.dtype | None = None,
                   device: torch.device | str | None = None) -> dict[str, torch.Tensor]:
    """The default initial parameters: a classic multi-orientation, multi-scale bank.

    Output channel ``o`` gets orientation ``pi * (o mod n) / n`` with ``n = min(8, out_channels)``,
    phase ``0`` or ``-pi/2`` (even / odd filter) alternating every ``n`` channels, and a scale
    cycling every ``2n`` channels. Scales are spread geometrically over wavelengths from 2.5 pixels
    up to half the smaller kernel side, with ``sigma = 0.56 lambd`` (a one-octave bandwidth) capped
    at a sixth of the smaller kernel side, so that the envelope's 3-sigma extent fits the kernel
    (sigma can grow by a fifth in training before a :class:`GaborTruncationWarning`), and
    ``gamma = 1``. Every input channel of an output
    channel gets the same filter.

    Returns:
        dict of five tensors ``(out_channels, in_per_group)``.
    """
    o = torch.arange(out_channels, dtype=torch.float64)
    n_orient = min(8, out_channels)
    n_scales = max(1, math.ceil(out_channels / (2 * n_orient)))
    lambd, sigma = _scales(torch.div(o, 2 * n_orient, rounding_mode="floor") % n_scales, n_scales, kernel_size)
    values = {
        "theta": math.pi * (o % n_orient) / n_orient,
        "sigma": sigma,
        "lambd": lambd,
        "gamma": torch.ones_like(o),
        "psi": -math.pi / 2 * (torch.div(o, n_orient, rounding_mode="floor") % 2),
    }
    return _per_filter(values, out_channels, in_per_group, dtype, device)


def classic_bank1d(out_channels: int, in_per_group: int, kernel_size: tuple[int], dtype: torch.dtype | None = None,
                   device: torch.device | str | None = None) -> dict[str, torch.Tensor]:
    """The default initial parameters of :class:`GaborConv1d`: even/odd pairs over scales.

    Output channel ``o`` gets phase ``0`` (even) for even ``o`` and ``-pi/2`` (odd) for odd ``o``,
    and scale ``(o // 2) mod n`` of ``n = ceil(out_channels / 2)`` scales, spread as in
    :func:`classic_bank2d` (wavelengths geometric from 2.5 samples to half the kernel,
    ``sigma = 0.56 lambd`` capped at a sixth of the kernel).

    Returns:
        dict of three tensors ``(out_channels, in_per_group)``: ``sigma``, ``lambd``, ``psi``.
    """
    o = torch.arange(out_channels, dtype=torch.float64)
    n_scales = max(1, math.ceil(out_channels / 2))
    lambd, sigma = _scales(torch.div(o, 2, rounding_mode="floor") % n_scales, n_scales, kernel_size)
    values = {"sigma": sigma, "lambd": lambd, "psi": -math.pi / 2 * (o % 2)}
    return _per_filter(values, out_channels, in_per_group, dtype, device)


def classic_bank3d(out_channels: int, in_per_group: int, kernel_size: tuple[int, int, int],
                   dtype: torch.dtype | None = None,
                   device: torch.device | str | None = None) -> dict[str, torch.Tensor]:
    """The default initial parameters of :class:`GaborConv3d`: directions over the half sphere.

    With ``n = min(13, out_channels)`` directions, channel ``o`` gets direction ``j = o mod n`` of a
    Fibonacci lattice on the upper half sphere (elevation ``phi = asin((j + 1/2) / n)``, azimuth
    ``theta = j`` times the golden angle), evenly spread since ``u`` and ``-u`` are the same
    direction up to the phase; phase ``0`` or ``-pi/2`` alternating every ``n`` channels; and a
    scale cycling every ``2n`` channels, spread as in :func:`classic_bank2d`; ``gamma = 1``.

    Returns:
        dict of six tensors ``(out_channels, in_per_group)``.
    """
    o = torch.arange(out_channels, dtype=torch.float64)
    n_dir = min(13, out_channels)
    n_scales = max(1, math.ceil(out_channels / (2 * n_dir)))
    j = o % n_dir
    lambd, sigma = _scales(torch.div(o, 2 * n_dir, rounding_mode="floor") % n_scales, n_scales, kernel_size)
    values = {
        "theta": torch.remainder(j * math.pi * (3 - math.sqrt(5)), 2 * math.pi),
        "phi": torch.asin((j + 0.5) / n_dir),
        "sigma": sigma,
        "lambd": lambd,
        "gamma": torch.ones_like(o),
        "psi": -math.pi / 2 * (torch.div(o, n_dir, rounding_mode="floor") % 2),
    }
    return _per_filter(values, out_channels, in_per_group, dtype, device)


def gabor_(tensor: torch.Tensor, *, theta: float | torch.Tensor | None = None,
           sigma: float | torch.Tensor | None = None, lambd: float | torch.Tensor | None = None,
           gamma: float | torch.Tensor | None = None, psi: float | torch.Tensor | None = None, zero_mean: bool = False,
           gain: float = 1.0) -> torch.Tensor:
    """Fill a 2-D convolution weight with a Gabor bank, in place (no gradient is recorded).

    Args:
        tensor: ``(out_channels, in_channels // groups, kh, kw)``, floating point, e.g.
            ``conv.weight``.
        theta, sigma, lambd, gamma, psi: the filters' parameters, floats or tensors
            broadcastable to ``(out_channels, in_channels // groups)``; ``None`` takes the value
            of :func:`classic_bank2d` (as ``GaborConv2d`` does). Ranges:
            sigma > 0, gamma > 0, lambd > 2.
        zero_mean: remove each kernel's DC response (see :func:`~gaborlayer.gabor_kernel2d`).
        gain: a factor on every filter (each peaks at ``gain``), like ``torch.nn.init``'s ``gain``;
            finite.

    Returns:
        ``tensor``, filled. A tensor with no elements is returned unchanged, with a warning, as
        ``torch.nn.init`` does (its arguments are still checked).

    Examples:
        >>> conv = torch.nn.Conv2d(3, 16, 7, padding=3)
        >>> _ = gabor_(conv.weight)
        >>> from gaborlayer import GaborConv2d
        >>> torch.allclose(conv.weight, GaborConv2d(3, 16, 7).weight, atol=1e-6)
        True
    """
    if not isinstance(tensor, torch.Tensor):
        raise TypeError(f"tensor must be a torch.Tensor, got {type(tensor).__name__}")
    if tensor.dim() != 4:
        raise ValueError(f"tensor must be a 2-D convolution weight (out_channels, in_channels // groups, kh, kw), "
                         f"got shape {tuple(tensor.shape)}")
    if not tensor.dtype.is_floating_point:
        raise TypeError(f"tensor must be floating point, got dtype {tensor.dtype}")
    gain = _checks.finite_real(gain, "gain")
    zero_mean = _checks.boolean(zero_mean, "zero_mean")
    out_c, in_per_group, kh, kw = tensor.shape
    shape = (out_c, in_per_group)
    from ._family import GABOR_2D  # here: the family spec imports this module's classic banks
    from .functional import _bank

    given = _checks.param_values(dict(theta=theta, sigma=sigma, lambd=lambd, gamma=gamma, psi=psi),
                                 _checks.LAYER_BOUNDS, shape)
    if tensor.numel() == 0:
        warnings.warn("Initializing zero-element tensors is a no-op", stacklevel=2)  # as torch.nn.init says
        return tensor
    values = {**classic_bank2d(out_c, in_per_group, (kh, kw), dtype=torch.float64), **given}
    # Built in float32 at least and rounded, as GaborConv2d builds its bank (its .weight is the same).
    compute = torch.promote_types(tensor.dtype, torch.float32)
    bank = _bank(GABOR_2D, {n: values[n].to(compute) for n in GABOR_2D.names}, (kh, kw), zero_mean=zero_mean,
                 backend="torch")
    with torch.no_grad():
        return tensor.copy_(gain * bank)
