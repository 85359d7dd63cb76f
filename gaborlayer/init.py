"""Gabor initialisation for plain convolutions, in the ``torch.nn.init`` convention.

For users who want the Gabor prior without the constraint: ``gabor_(conv.weight)`` fills an
``nn.Conv2d``'s weight with a Gabor bank, after which every weight trains freely.
"""
from __future__ import annotations

import torch

from . import _checks
from .functional import _bank
from .modules import _GaborConvNd, classic_bank


def gabor_(tensor: torch.Tensor, *, theta=None, sigma=None, lambd=None, gamma=None, psi=None,
           zero_mean: bool = False, gain: float = 1.0) -> torch.Tensor:
    """Fill a 2-D convolution weight with a Gabor bank, in place (no gradient is recorded).

    Args:
        tensor: ``(out_channels, in_channels // groups, kh, kw)``, floating point, e.g.
            ``conv.weight``.
        theta, sigma, lambd, gamma, psi: the filters' parameters, floats or tensors
            broadcastable to ``(out_channels, in_channels // groups)``; ``None`` takes the value
            of :func:`~gaborlayer.modules.classic_bank` (as ``GaborConv2d`` does). Ranges:
            sigma > 0, gamma > 0, lambd > 2.
        zero_mean: remove each kernel's DC response (see :func:`~gaborlayer.gabor_kernel2d`).
        gain: a factor on every filter (each peaks at ``gain``), like ``torch.nn.init``'s ``gain``.

    Returns:
        ``tensor``, filled.

    Example:
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
    gain = _checks.real(gain, "gain")
    out_c, in_per_group, kh, kw = tensor.shape
    shape = (out_c, in_per_group)
    values = _GaborConvNd._check_init(dict(theta=theta, sigma=sigma, lambd=lambd, gamma=gamma, psi=psi), shape)
    values = {**classic_bank(out_c, in_per_group, (kh, kw), dtype=torch.float64), **values}
    # Built in float32 at least and rounded, as GaborConv2d builds its bank (its .weight is the same).
    compute = torch.promote_types(tensor.dtype, torch.float32)
    bank = _bank(*(values[n].to(compute) for n in _checks.PARAM_NAMES), kh, kw, zero_mean=zero_mean, backend="torch")
    with torch.no_grad():
        return tensor.copy_(gain * bank)
