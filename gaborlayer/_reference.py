"""The Gabor formula in plain autograd: the oracle every backend is tested against.

Kept deliberately naive (no masking, no recomputation tricks): it is the formula of
``docs/math.md`` written once, and nothing else.
"""
from __future__ import annotations

import math

import torch


def sampling_grid2d(kh: int, kw: int, dtype: torch.dtype, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixel coordinates ``y (kh, 1)`` and ``x (1, kw)``, centred; row i is y = i - (kh-1)/2."""
    y = torch.arange(kh, dtype=dtype, device=device) - (kh - 1) / 2
    x = torch.arange(kw, dtype=dtype, device=device) - (kw - 1) / 2
    return y.view(kh, 1), x.view(1, kw)


def gabor_kernel2d_reference(theta, sigma, lambd, gamma, psi, kh: int, kw: int) -> torch.Tensor:
    """Bank ``(N, kh, kw)`` from five parameter vectors ``(N,)``, by the textbook formula."""
    y, x = sampling_grid2d(kh, kw, theta.dtype, theta.device)
    theta, sigma, lambd, gamma, psi = (p[:, None, None] for p in (theta, sigma, lambd, gamma, psi))
    x_rot = x * torch.cos(theta) + y * torch.sin(theta)
    y_rot = -x * torch.sin(theta) + y * torch.cos(theta)
    envelope = torch.exp(-(x_rot**2 + gamma**2 * y_rot**2) / (2 * sigma**2))
    return envelope * torch.cos(2 * math.pi * x_rot / lambd + psi)


def sampling_grid1d(k: int, dtype: torch.dtype, device) -> torch.Tensor:
    """Sample coordinates ``x (k,)``, centred: entry i is x = i - (k-1)/2."""
    return torch.arange(k, dtype=dtype, device=device) - (k - 1) / 2


def sampling_grid3d(kd: int, kh: int, kw: int, dtype: torch.dtype, device) -> tuple[torch.Tensor, ...]:
    """Voxel coordinates ``z (kd, 1, 1)``, ``y (1, kh, 1)``, ``x (1, 1, kw)``, centred, in
    ``nn.Conv3d``'s ``(depth, height, width)`` layout."""
    z = sampling_grid1d(kd, dtype, device).view(kd, 1, 1)
    y = sampling_grid1d(kh, dtype, device).view(1, kh, 1)
    x = sampling_grid1d(kw, dtype, device).view(1, 1, kw)
    return z, y, x


def gabor_kernel1d_reference(sigma, lambd, psi, k: int) -> torch.Tensor:
    """Bank ``(N, k)`` from three parameter vectors ``(N,)``, by the textbook formula."""
    x = sampling_grid1d(k, sigma.dtype, sigma.device)
    sigma, lambd, psi = (p[:, None] for p in (sigma, lambd, psi))
    return torch.exp(-x**2 / (2 * sigma**2)) * torch.cos(2 * math.pi * x / lambd + psi)


def gabor_kernel3d_reference(theta, phi, sigma, lambd, gamma, psi, kd: int, kh: int, kw: int) -> torch.Tensor:
    """Bank ``(N, kd, kh, kw)`` from six parameter vectors ``(N,)``, by the textbook formula:
    ``x_par = u . r`` with ``u = (cos phi cos theta, cos phi sin theta, sin phi)`` and
    ``|r_perp|^2 = |r|^2 - x_par^2``."""
    z, y, x = sampling_grid3d(kd, kh, kw, theta.dtype, theta.device)
    theta, phi, sigma, lambd, gamma, psi = (p[:, None, None, None] for p in (theta, phi, sigma, lambd, gamma, psi))
    x_par = torch.cos(phi) * torch.cos(theta) * x + torch.cos(phi) * torch.sin(theta) * y + torch.sin(phi) * z
    r_perp2 = x**2 + y**2 + z**2 - x_par**2
    envelope = torch.exp(-(x_par**2 + gamma**2 * r_perp2) / (2 * sigma**2))
    return envelope * torch.cos(2 * math.pi * x_par / lambd + psi)
