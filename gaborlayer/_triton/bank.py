"""The Gabor bank in Triton: two kernels and their launchers (the bottom layer).

One forward launch builds the whole bank ``(N, kh, kw)`` from the five parameter vectors; one
backward launch turns the incoming gradient into all five parameter gradients. Both work on a
2-D block of ``BLOCK_N`` filters x ``BLOCK_T`` taps per program and loop over the taps in chunks
when a kernel has more taps than one block. The backward recomputes the rotated coordinates,
envelope and phase (nothing but the parameters is saved) and reduces over the taps inside the
program (``tl.sum(axis=1)``), so each filter's five gradients are owned by exactly one program:
no atomics, no partial buffers, bitwise deterministic.

The formulas are those of :mod:`gaborlayer._autograd` (derivations in ``docs/math.md``),
including its tiny-sigma rule: scaled coordinates are ``coordinate / sigma`` (never
``coordinate * (1 / sigma)``), and where the envelope has underflowed to 0 the scaled coordinates
are zeroed before any product, so a tiny sigma gives exact zeros, not NaN. Math is float32 for
float32/float16/bfloat16 parameters (float64 for float64 ones); loads and stores cast, so the
bank and the gradients come out in the parameters' dtype.

The phase is formed as ``2 pi frac(x'/lambd) + psi``: taking the whole cycles out of ``x'/lambd``
is exact and changes no cosine or sine, and it keeps the phase small (at most ``pi + |psi|``,
and psi arrives reduced modulo ``2 pi`` by the op wrapper in ``gaborlayer._ops``, so at most
``3 pi``) however many cycles a big kernel spans. (``tl.cos``/``tl.sin`` compile to libdevice's
range-reducing ``cosf``/``sinf``, not to the approximate PTX instructions, so theta needs no such
care.)

Importing this module imports triton and decides, once, between triton's compiler and its
interpreter (``TRITON_INTERPRET=1``): see :mod:`gaborlayer._triton`.
"""
from __future__ import annotations

import math

import torch
import triton
import triton.language as tl
from torch.library import wrap_triton
from triton.runtime.jit import JITFunction

TWO_PI = 2 * math.pi
MAX_BLOCK_T = 256  # taps per chunk; bigger kernels (31 x 31 = 961 taps and beyond) loop over chunks
NUM_WARPS = 4
_TWO_PI = tl.constexpr(TWO_PI)


@triton.jit
def _centred_fraction(x):
    """``x`` minus its nearest integer, in ``[-1/2, 1/2]`` (exact in floating point)."""
    return x - tl.floor(x + 0.5)


@triton.jit
def _load_params(theta_ptr, sigma_ptr, lambd_ptr, gamma_ptr, psi_ptr, rows, row_ok):
    """The five parameters of ``rows`` in the compute dtype, ``cos theta`` and ``sin theta``.

    Adding a float32 zero promotes float16/bfloat16 to float32 and keeps float64 as it is.
    Masked rows read harmless values (1 for the divisors) and are never stored.
    """
    zero = tl.full((), 0.0, tl.float32)
    theta = tl.load(theta_ptr + rows, mask=row_ok, other=0.0) + zero
    sigma = tl.load(sigma_ptr + rows, mask=row_ok, other=1.0) + zero
    lambd = tl.load(lambd_ptr + rows, mask=row_ok, other=1.0) + zero
    gamma = tl.load(gamma_ptr + rows, mask=row_ok, other=1.0) + zero
    psi = tl.load(psi_ptr + rows, mask=row_ok, other=0.0) + zero
    two_pi = tl.full((), _TWO_PI, tl.float64).to(theta.dtype)
    return tl.cos(theta), tl.sin(theta), sigma, lambd, gamma, psi, two_pi


@triton.jit
def _terms(taps, cos_t, sin_t, sigma, lambd, gamma, psi, two_pi, KH: tl.constexpr, KW: tl.constexpr):
    """``x', y', a = x'/sigma, b = gamma y'/sigma``, envelope and phase, each ``[BLOCK_N, BLOCK_T]``."""
    # Row i samples y = i - (kh-1)/2, column j samples x = j - (kw-1)/2 (see _reference.sampling_grid).
    y = ((taps // KW).to(sigma.dtype) - (KH - 1) / 2)[None, :]
    x = ((taps % KW).to(sigma.dtype) - (KW - 1) / 2)[None, :]
    cos_t = cos_t[:, None]
    sin_t = sin_t[:, None]
    sigma = sigma[:, None]
    x_rot = x * cos_t + y * sin_t
    y_rot = y * cos_t - x * sin_t
    a = x_rot / sigma
    b = gamma[:, None] * y_rot / sigma
    envelope = tl.exp(-0.5 * (a * a + b * b))
    phase = two_pi * _centred_fraction(x_rot / lambd[:, None]) + psi[:, None]
    return x_rot, y_rot, a, b, envelope, phase


@triton.jit
def _gabor_bank_fwd_kernel(
    theta_ptr, sigma_ptr, lambd_ptr, gamma_ptr, psi_ptr,
    out_ptr,
    N,
    KH: tl.constexpr, KW: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_T: tl.constexpr,
):
    rows = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    row_ok = rows < N
    cos_t, sin_t, sigma, lambd, gamma, psi, two_pi = _load_params(
        theta_ptr, sigma_ptr, lambd_ptr, gamma_ptr, psi_ptr, rows, row_ok)
    row_start = rows.to(tl.int64) * (KH * KW)
    for start in range(0, KH * KW, BLOCK_T):
        taps = start + tl.arange(0, BLOCK_T)
        _, _, _, _, envelope, phase = _terms(taps, cos_t, sin_t, sigma, lambd, gamma, psi, two_pi, KH, KW)
        value = envelope * tl.cos(phase)
        mask = row_ok[:, None] & (taps < KH * KW)[None, :]
        tl.store(out_ptr + row_start[:, None] + taps[None, :], value.to(out_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _gabor_bank_bwd_kernel(
    grad_ptr, stride_gn, stride_gh, stride_gw,
    theta_ptr, sigma_ptr, lambd_ptr, gamma_ptr, psi_ptr,
    d_theta_ptr, d_sigma_ptr, d_lambd_ptr, d_gamma_ptr, d_psi_ptr,
    N,
    KH: tl.constexpr, KW: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_T: tl.constexpr,
):
    rows = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    row_ok = rows < N
    cos_t, sin_t, sigma, lambd, gamma, psi, two_pi = _load_params(
        theta_ptr, sigma_ptr, lambd_ptr, gamma_ptr, psi_ptr, rows, row_ok)
    grad_rows = grad_ptr + rows.to(tl.int64)[:, None] * stride_gn
    # Seven sums over the taps, one value per filter (names follow _autograd.GaborKernel2d.backward).
    sum_cos_ab = tl.zeros_like(sigma)
    sum_cos_ac = tl.zeros_like(sigma)
    sum_cos_r2 = tl.zeros_like(sigma)
    sum_cos_b2 = tl.zeros_like(sigma)
    sum_sin = tl.zeros_like(sigma)
    sum_sin_x = tl.zeros_like(sigma)
    sum_sin_y = tl.zeros_like(sigma)
    for start in range(0, KH * KW, BLOCK_T):
        taps = start + tl.arange(0, BLOCK_T)
        x_rot, y_rot, a, b, envelope, phase = _terms(taps, cos_t, sin_t, sigma, lambd, gamma, psi, two_pi, KH, KW)
        # Where the envelope underflowed every term is 0: zero a and b first, so that products
        # such as a * b (which can overflow for a tiny sigma) cannot turn 0 into NaN.
        alive = envelope > 0
        a = tl.where(alive, a, 0.0)
        b = tl.where(alive, b, 0.0)
        c = tl.where(alive, y_rot / sigma[:, None], 0.0)  # b / gamma, finite for a subnormal gamma
        mask = row_ok[:, None] & (taps < KH * KW)[None, :]
        offsets = (taps // KW).to(tl.int64) * stride_gh + (taps % KW).to(tl.int64) * stride_gw
        grad = tl.load(grad_rows + offsets[None, :], mask=mask, other=0.0).to(sigma.dtype)
        grad_env = grad * envelope
        g_cos = grad_env * tl.cos(phase)
        g_sin = grad_env * tl.sin(phase)
        sum_cos_ab += tl.sum(g_cos * (a * b), axis=1)
        sum_cos_ac += tl.sum(g_cos * (a * c), axis=1)
        sum_cos_r2 += tl.sum(g_cos * (a * a + b * b), axis=1)
        sum_cos_b2 += tl.sum(g_cos * (b * b), axis=1)
        sum_sin += tl.sum(g_sin, axis=1)
        sum_sin_x += tl.sum(g_sin * x_rot, axis=1)
        sum_sin_y += tl.sum(g_sin * y_rot, axis=1)
    d_theta = sum_cos_ab * gamma - sum_cos_ac - sum_sin_y * (two_pi / lambd)
    d_sigma = sum_cos_r2 / sigma
    d_lambd = sum_sin_x * (two_pi / (lambd * lambd))
    d_gamma = -sum_cos_b2 / gamma
    d_psi = -sum_sin
    tl.store(d_theta_ptr + rows, d_theta.to(d_theta_ptr.dtype.element_ty), mask=row_ok)
    tl.store(d_sigma_ptr + rows, d_sigma.to(d_sigma_ptr.dtype.element_ty), mask=row_ok)
    tl.store(d_lambd_ptr + rows, d_lambd.to(d_lambd_ptr.dtype.element_ty), mask=row_ok)
    tl.store(d_gamma_ptr + rows, d_gamma.to(d_gamma_ptr.dtype.element_ty), mask=row_ok)
    tl.store(d_psi_ptr + rows, d_psi.to(d_psi_ptr.dtype.element_ty), mask=row_ok)


INTERPRETED = not isinstance(_gabor_bank_fwd_kernel, JITFunction)
"""Whether the kernels were built by the Triton interpreter (``TRITON_INTERPRET=1`` at import)."""

# Elements (filters x taps) per program, 8 per thread at 4 warps. Compiled offline by
# benchmarks/triton_resources.py (2026-11-23; triton 3.9, ptxas 12.9 for sm_80 and 13.4 for sm_90;
# float32/float16/bfloat16 parameters; 3x3, 7x7 and 31x31 kernels), at 1024 the forward takes 75-106
# registers per thread and the backward (seven running sums) 118-162, with no spills in any case.
# At 2048 the forward takes 125-163 and spills 4 bytes once (sm_90, float32, 31x31), the backward
# 211-255 without spills; at 4096 the backward spills in every case (up to 1.4 KB a thread) and the
# forward (232-255 registers) in its 7x7 cases. Those are compile-time bounds, not timings: a GPU
# session may retune these (benchmarks/bench_triton.py --sweep). The script prints every case;
# docs/benchmarks.md sums them up.
# The interpreter pays per operation, not per element, so it gets blocks 16x bigger (the tap axis
# still loops in chunks of MAX_BLOCK_T, so CI covers the loop).
FORWARD_BLOCK = 1024 * (16 if INTERPRETED else 1)
BACKWARD_BLOCK = 1024 * (16 if INTERPRETED else 1)


def block_sizes(kh: int, kw: int, elements: int) -> tuple[int, int]:
    """``(BLOCK_N, BLOCK_T)`` for a ``kh x kw`` kernel and about ``elements`` per program.

    Depends on the kernel size only, never on N, so one compiled kernel serves every bank size
    (and a symbolic N under torch.compile adds no guard).
    """
    block_t = min(triton.next_power_of_2(kh * kw), MAX_BLOCK_T)
    return max(1, elements // block_t), block_t


def bank_forward(theta, sigma, lambd, gamma, psi, kh: int, kw: int) -> torch.Tensor:
    """Bank ``(N, kh, kw)`` in the parameters' dtype from five vectors ``(N,)`` of one dtype/device."""
    n = theta.shape[0]
    out = torch.empty((n, kh, kw), dtype=theta.dtype, device=theta.device)
    if n == 0:
        return out
    block_n, block_t = block_sizes(kh, kw, FORWARD_BLOCK)
    params = [p.contiguous() for p in (theta, sigma, lambd, gamma, psi)]
    # wrap_triton makes the launch traceable (make_fx, torch.compile); the interpreter's kernels
    # are launched as they are (older torch's wrap_triton refuses them).
    fwd = _gabor_bank_fwd_kernel if INTERPRETED else wrap_triton(_gabor_bank_fwd_kernel)
    fwd[(triton.cdiv(n, block_n),)](
        *params, out, n,
        KH=kh, KW=kw, BLOCK_N=block_n, BLOCK_T=block_t, num_warps=NUM_WARPS,
    )
    return out


def bank_backward(grad, theta, sigma, lambd, gamma, psi, kh: int, kw: int) -> tuple[torch.Tensor, ...]:
    """The five parameter gradients ``(N,)`` from ``grad`` ``(N, kh, kw)`` (any strides, e.g. expanded)."""
    n = theta.shape[0]
    grads = tuple(torch.empty_like(theta, memory_format=torch.contiguous_format) for _ in range(5))
    if n == 0:
        return grads
    block_n, block_t = block_sizes(kh, kw, BACKWARD_BLOCK)
    params = [p.contiguous() for p in (theta, sigma, lambd, gamma, psi)]
    bwd = _gabor_bank_bwd_kernel if INTERPRETED else wrap_triton(_gabor_bank_bwd_kernel)
    bwd[(triton.cdiv(n, block_n),)](
        grad, grad.stride(0), grad.stride(1), grad.stride(2), *params, *grads, n,
        KH=kh, KW=kw, BLOCK_N=block_n, BLOCK_T=block_t, num_warps=NUM_WARPS,
    )
    return grads
