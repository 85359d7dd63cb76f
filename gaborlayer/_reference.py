"""The Gabor formula in plain autograd: the oracle every backend is tested against.

Kept deliberately naive (no masking, no recomputation tricks): it is the formula of
``docs/math.md`` written once, and nothing else -- except that ``psi`` is reduced modulo
``2 pi`` (:func:`reduced_phase_offset`) before it enters the phase, as in every backend.
"""
from __future__ import annotations

import math

import torch

TWO_PI = 2 * math.pi
# 2 pi rounded to float64 and to float32, and what each misses of 2 pi, relative to it:
# (2 pi - fl(2 pi)) / fl(2 pi), with 2 pi - float64(2 pi) = 2.4492935982947064e-16.
_TWO_PI_FLOAT32 = float(torch.tensor(TWO_PI, dtype=torch.float32))
_TWO_PI_MISSED = {torch.float64: 2.4492935982947064e-16 / TWO_PI,
                  torch.float32: -1.748455600074497e-07 / _TWO_PI_FLOAT32}


def reduced_phase_offset(psi: torch.Tensor) -> torch.Tensor:
    """``psi`` modulo ``2 pi`` (the sign of ``psi``, magnitude below ``2 pi``), in ``psi``'s dtype.

    The phase offset enters the phase as ``2 pi x'/lambd + psi``; in float32 a large ``psi``
    leaves the sum only a few correct bits (at ``psi = 1e8`` one float32 ulp is 8 radians), and
    the cosine is then noise. So ``psi`` is reduced first, in float64 (float32 on ``mps``, which
    has no float64), in two steps: ``fmod`` by ``2 pi`` rounded to that dtype, which is exact,
    then the whole turns taken out times what that rounding missed of ``2 pi`` (Cody and Waite).
    The result is the exact remainder to about one float64 rounding for ``|psi|`` up to about
    ``1e15``, so the float32 result is one rounding of it; a ``psi`` already in ``(-2 pi, 2 pi)``
    comes back bit for bit. Differentiable with derivative 1 (``fmod``'s and the casts'; the
    correction is piecewise constant, so detached), in reverse and forward mode, so double
    backward and ``torch.func`` transforms see the plain ``psi``. Six elementwise operations on
    the ``(N,)`` vector. See docs/math.md, "Phase reduction".
    """
    wide, turn = (torch.float32, _TWO_PI_FLOAT32) if psi.device.type == "mps" else (torch.float64, TWO_PI)
    wide_psi = psi.to(wide)
    rest = torch.fmod(wide_psi, turn)  # exact: psi - k fl(2 pi), k whole turns
    # - k (2 pi - fl(2 pi)) = (rest - psi) * missed; the rounding of rest - psi does not matter here.
    # (Not torch.add(..., alpha=): with a detached operand, forward AD in torch.compile segfaults.)
    return (rest + (rest - wide_psi).detach() * _TWO_PI_MISSED[wide]).to(psi.dtype)


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
    return envelope * torch.cos(2 * math.pi * x_rot / lambd + reduced_phase_offset(psi))


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
    return torch.exp(-x**2 / (2 * sigma**2)) * torch.cos(2 * math.pi * x / lambd + reduced_phase_offset(psi))


def gabor_kernel3d_reference(theta, phi, sigma, lambd, gamma, psi, kd: int, kh: int, kw: int) -> torch.Tensor:
    """Bank ``(N, kd, kh, kw)`` from six parameter vectors ``(N,)``, by the textbook formula:
    ``x_par = u . r`` with ``u = (cos phi cos theta, cos phi sin theta, sin phi)`` and
    ``|r_perp|^2 = |r|^2 - x_par^2``."""
    z, y, x = sampling_grid3d(kd, kh, kw, theta.dtype, theta.device)
    theta, phi, sigma, lambd, gamma, psi = (p[:, None, None, None] for p in (theta, phi, sigma, lambd, gamma, psi))
    x_par = torch.cos(phi) * torch.cos(theta) * x + torch.cos(phi) * torch.sin(theta) * y + torch.sin(phi) * z
    r_perp2 = x**2 + y**2 + z**2 - x_par**2
    envelope = torch.exp(-(x_par**2 + gamma**2 * r_perp2) / (2 * sigma**2))
    return envelope * torch.cos(2 * math.pi * x_par / lambd + reduced_phase_offset(psi))
