"""Everything gaborlayer knows per dimension, in one frozen spec with three instances.

:data:`GABOR_1D`, :data:`GABOR_2D` and :data:`GABOR_3D` say, for 1-D, 2-D and 3-D Gabor filters:
the parameter names (in the order the bank builders take them), the analytic autograd Function and
the reference formula, the convolution and the plain ``nn.ConvNd`` it stands in for, the classic
initial bank, the envelope's extent per kernel axis, the unit of length, the memory layout that
``channels_last`` means for its weights, and how a trained conv's slices are fitted. The
functional API, the layers, the extent diagnostics and conversion read everything per-dimension
from here, so no other module branches on the dimension.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from ._autograd import GaborKernel1d, GaborKernel2d, GaborKernel3d
from ._reference import gabor_kernel1d_reference, gabor_kernel2d_reference, gabor_kernel3d_reference
from .init import classic_bank1d, classic_bank2d, classic_bank3d


@dataclass(frozen=True)
class GaborFamily:
    """The per-dimension facts of one family of Gabor filters (see the module docstring)."""

    dims: int
    names: tuple[str, ...]  # the filter parameters, in the bank builders' order (psi last)
    function: type  # the analytic torch.autograd.Function: (*params (N,), *size) -> (N, *size)
    reference: Callable  # the formula in plain autograd, same signature
    conv: Callable  # F.conv1d / F.conv2d / F.conv3d
    conv_class: type  # nn.Conv1d / nn.Conv2d / nn.Conv3d
    classic: Callable  # (out_channels, in_per_group, kernel_size, dtype=, device=) -> dict of names
    half_extents: Callable  # (values: dict of names, n_sigma) -> per kernel axis, the half-extents
    unit: str  # what a length is measured in
    memory_format: torch.memory_format | None  # what channels_last means for an nn.ConvNd weight
    triton: bool  # whether backend="triton" has a kernel
    fit_slices: Callable | None  # (slices (N, *size) float64, amplitude, seed, progress) -> GaborFit; None: no fit


def half_extents2d(theta, sigma, gamma, n_sigma: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Half-height and half-width of the box around the ``n_sigma`` envelope ellipse (semi-axes
    ``n_sigma sigma`` along the wave and ``n_sigma sigma / gamma`` across it, rotated by theta);
    ``theta=None``: the worst orientation."""
    along, across = n_sigma * sigma, n_sigma * sigma / gamma
    if theta is None:
        longest = torch.maximum(along, across)
        return longest, longest
    theta = torch.as_tensor(theta, dtype=along.dtype)
    cos, sin = torch.cos(theta), torch.sin(theta)
    return torch.hypot(along * sin, across * cos), torch.hypot(along * cos, across * sin)


def _half_extents1d(values, n_sigma):
    return (n_sigma * values["sigma"],)


def _half_extents2d(values, n_sigma):
    return half_extents2d(values["theta"], values["sigma"], values["gamma"], n_sigma)


def _half_extents3d(values, n_sigma):
    along = n_sigma * values["sigma"]
    across = along / values["gamma"]
    theta, phi = values["theta"], values["phi"]
    u = (torch.sin(phi), torch.cos(phi) * torch.sin(theta), torch.cos(phi) * torch.cos(theta))  # (z, y, x)
    # the box around an ellipsoid of revolution: sqrt(along^2 u_i^2 + across^2 (1 - u_i^2)) per axis
    return tuple(torch.sqrt((along * c) ** 2 + across ** 2 * (1 - c * c).clamp_min(0)) for c in u)


def _fit_slices1d(slices, amplitude, seed, progress):
    from .fit import _fit_kernel1d  # fitting imports scipy: only when a conv is converted

    return _fit_kernel1d(slices, amplitude=amplitude, seed=seed, progress=progress)


def _fit_slices2d(slices, amplitude, seed, progress):
    from .fit import _fit_slices

    return _fit_slices(slices, amplitude=amplitude, seed=seed, progress=progress)


GABOR_1D = GaborFamily(
    dims=1, names=("sigma", "lambd", "psi"), function=GaborKernel1d, reference=gabor_kernel1d_reference,
    conv=F.conv1d, conv_class=nn.Conv1d, classic=classic_bank1d, half_extents=_half_extents1d, unit="samples",
    memory_format=None, triton=False, fit_slices=_fit_slices1d)
GABOR_2D = GaborFamily(
    dims=2, names=("theta", "sigma", "lambd", "gamma", "psi"), function=GaborKernel2d,
    reference=gabor_kernel2d_reference, conv=F.conv2d, conv_class=nn.Conv2d, classic=classic_bank2d,
    half_extents=_half_extents2d, unit="px", memory_format=torch.channels_last, triton=True,
    fit_slices=_fit_slices2d)
GABOR_3D = GaborFamily(
    dims=3, names=("theta", "phi", "sigma", "lambd", "gamma", "psi"), function=GaborKernel3d,
    reference=gabor_kernel3d_reference, conv=F.conv3d, conv_class=nn.Conv3d, classic=classic_bank3d,
    half_extents=_half_extents3d, unit="voxels", memory_format=torch.channels_last_3d, triton=False,
    fit_slices=None)
FAMILIES = {family.dims: family for family in (GABOR_1D, GABOR_2D, GABOR_3D)}
