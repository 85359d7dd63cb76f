"""The Gabor bank as a ``torch.autograd.Function`` with an analytic backward.

Forward saves only the five parameter vectors; backward recomputes the rotated coordinates,
envelope and phase, so no ``(N, kh, kw)`` intermediate outlives the forward. The backward is
written in differentiable torch ops, so double backward (gradgradcheck) works through it.
The derivation of every term is in ``docs/math.md``.
"""
from __future__ import annotations

import math

import torch

from ._reference import sampling_grid

TWO_PI = 2 * math.pi


def _terms(theta, sigma, lambd, gamma, psi, kh, kw):
    """Shared intermediates, each broadcast to ``(N, kh, kw)``.

    ``a = x'/sigma`` and ``b = gamma y'/sigma`` are the envelope's scaled coordinates. They are
    formed by dividing the coordinate (bounded by the kernel size) by sigma, never by multiplying
    with 1/sigma**2, so a tiny sigma gives an envelope of exact zeros instead of 0 * inf = NaN.
    """
    y, x = sampling_grid(kh, kw, theta.dtype, theta.device)
    theta, sigma, lambd, gamma, psi = (p[:, None, None] for p in (theta, sigma, lambd, gamma, psi))
    cos_t, sin_t = torch.cos(theta), torch.sin(theta)
    x_rot = x * cos_t + y * sin_t
    y_rot = y * cos_t - x * sin_t
    a = x_rot / sigma
    b = gamma * y_rot / sigma
    envelope = torch.exp(-0.5 * (a * a + b * b))
    phase = TWO_PI * (x_rot / lambd) + psi
    return x_rot, y_rot, a, b, envelope, phase


class GaborKernel2d(torch.autograd.Function):
    """``(theta, sigma, lambd, gamma, psi)`` of shape ``(N,)`` -> bank ``(N, kh, kw)``."""

    generate_vmap_rule = True

    @staticmethod
    def forward(theta, sigma, lambd, gamma, psi, kh: int, kw: int):
        *_, envelope, phase = _terms(theta, sigma, lambd, gamma, psi, kh, kw)
        return envelope * torch.cos(phase)

    @staticmethod
    def setup_context(ctx, inputs, output):
        theta, sigma, lambd, gamma, psi, kh, kw = inputs
        ctx.save_for_backward(theta, sigma, lambd, gamma, psi)
        ctx.size = (kh, kw)

    @staticmethod
    def backward(ctx, grad):
        theta, sigma, lambd, gamma, psi = ctx.saved_tensors
        need = ctx.needs_input_grad
        x_rot, y_rot, a, b, envelope, phase = _terms(theta, sigma, lambd, gamma, psi, *ctx.size)
        # Where the envelope has underflowed to 0 every term is 0; zeroing a and b there keeps
        # products such as a * b (which may overflow for a tiny sigma) from turning 0 into NaN.
        alive = envelope > 0
        a = torch.where(alive, a, 0.0)
        b = torch.where(alive, b, 0.0)
        grad_env = grad * envelope
        g_cos = grad_env * torch.cos(phase)  # grad * kernel
        g_sin = grad_env * torch.sin(phase)

        def total(t):
            return t.sum(dim=(-2, -1))

        d_theta = d_sigma = d_lambd = d_gamma = d_psi = None
        if need[0]:
            # dK/dtheta = K * a b (gamma - 1/gamma) - E sin(phase) * 2 pi y'/lambd, with a b / gamma
            # summed as a y'/sigma: 1/gamma overflows for a subnormal gamma, y'/sigma (masked) does not.
            c = torch.where(alive, y_rot / sigma[:, None, None], 0.0)
            g_cos_a = g_cos * a
            d_theta = (total(g_cos_a * b) * gamma - total(g_cos_a * c)
                       - total(g_sin * y_rot) * (TWO_PI / lambd))
        if need[1]:
            # dK/dsigma = K (a^2 + b^2) / sigma
            d_sigma = total(g_cos * (a * a + b * b)) / sigma
        if need[2]:
            # dK/dlambd = E sin(phase) * 2 pi x' / lambd^2
            d_lambd = total(g_sin * x_rot) * (TWO_PI / (lambd * lambd))
        if need[3]:
            # dK/dgamma = -K b^2 / gamma
            d_gamma = -total(g_cos * (b * b)) / gamma
        if need[4]:
            # dK/dpsi = -E sin(phase)
            d_psi = -total(g_sin)
        return d_theta, d_sigma, d_lambd, d_gamma, d_psi, None, None
