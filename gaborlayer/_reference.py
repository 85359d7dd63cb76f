"""The Gabor formula in plain autograd: the oracle every backend is tested against.

Kept deliberately naive (no masking, no recomputation tricks): it is the formula of
``docs/math.md`` written once, and nothing else.
"""
from __future__ import annotations

import math

import torch


def sampling_grid(kh: int, kw: int, dtype: torch.dtype, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixel coordinates ``y (kh, 1)`` and ``x (1, kw)``, centred; row i is y = i - (kh-1)/2."""
    y = torch.arange(kh, dtype=dtype, device=device) - (kh - 1) / 2
    x = torch.arange(kw, dtype=dtype, device=device) - (kw - 1) / 2
    return y.view(kh, 1), x.view(1, kw)


def gabor_kernel2d_reference(theta, sigma, lambd, gamma, psi, kh: int, kw: int) -> torch.Tensor:
    """Bank ``(N, kh, kw)`` from five parameter vectors ``(N,)``, by the textbook formula."""
    y, x = sampling_grid(kh, kw, theta.dtype, theta.device)
    theta, sigma, lambd, gamma, psi = (p[:, None, None] for p in (theta, sigma, lambd, gamma, psi))
    x_rot = x * torch.cos(theta) + y * torch.sin(theta)
    y_rot = -x * torch.sin(theta) + y * torch.cos(theta)
    envelope = torch.exp(-(x_rot**2 + gamma**2 * y_rot**2) / (2 * sigma**2))
    return envelope * torch.cos(2 * math.pi * x_rot / lambd + psi)
