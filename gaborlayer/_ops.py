"""The Gabor bank as ``torch.library`` operators, for ``backend="triton"`` (the middle layer).

Two operators, each made by :func:`torch.library.triton_op`:

- ``torch.ops.gaborlayer.gabor_bank(theta, sigma, lambd, gamma, psi, kh, kw) -> bank``, five
  vectors ``(N,)`` of one dtype and device -> ``(N, kh, kw)`` in that dtype;
- ``torch.ops.gaborlayer.gabor_bank_backward(grad, theta, sigma, lambd, gamma, psi, kh, kw)``
  -> the five parameter gradients ``(N,)``,

with autograd registered once, on ``gabor_bank``: its backward calls ``gabor_bank_backward``.
Forward keeps only the five parameter vectors; backward recomputes the rest.

Implementations, by device:

- CUDA: the Triton kernels (:mod:`gaborlayer._triton.bank`), launched through ``wrap_triton``, so
  torch.compile sees the kernels themselves (``triton_op`` decomposes the op into them).
- CPU: the formulas ``gabor_kernel2d_forward`` / ``gabor_kernel2d_backward`` of
  :mod:`gaborlayer._autograd` (the ones the autograd Function calls; eagerly the forward is the
  compiled loop of :mod:`gaborlayer._cpu_kernels`). Under the Triton
  interpreter (``TRITON_INTERPRET=1``, how CI tests the kernels without a GPU) the eager CPU
  kernel runs the interpreted Triton kernels instead, so ``backend="triton"`` really runs Triton
  there; traced code (fake tensors, torch.compile) always takes the PyTorch formulas on CPU,
  since the interpreter needs real data.
- Fake/meta: the same function as CUDA, traced with fake tensors (``triton_op`` registers it).

Math is float32 for float16/bfloat16/float32 parameters (float64 for float64) with the result
cast to the parameters' dtype, on every device. ``psi`` is reduced modulo ``2 pi`` in float64
(:func:`gaborlayer._reference.reduced_phase_offset`) before the Triton kernels see it, as the
PyTorch formulas do themselves; the reduction has derivative 1, so ``d_psi`` is unchanged by it.
The operators have no double backward, no vmap rule and no forward-mode AD (``torch.func.jvp``,
``jacfwd``); ``backend="torch"`` (the autograd Function) has all three.
"""
from __future__ import annotations

import torch
from torch.library import triton_op

from ._autograd import gabor_kernel2d_backward, gabor_kernel2d_forward
from ._reference import reduced_phase_offset
from ._triton.bank import INTERPRETED, bank_backward, bank_forward

__all__ = ["gabor_bank", "gabor_bank_backward"]


def _check(theta, sigma, lambd, gamma, psi, kh, kw) -> None:
    for name, p in zip(("sigma", "lambd", "gamma", "psi"), (sigma, lambd, gamma, psi)):
        # The messages are built (if at all) within this iteration; the defaults make that explicit.
        torch._check(p.shape == theta.shape, lambda name=name, p=p: f"gabor_bank: {name} has shape "
                     f"{tuple(p.shape)}, theta {tuple(theta.shape)}; all five must be (N,)")
        torch._check(p.dtype == theta.dtype and p.device == theta.device,
                     lambda name=name, p=p: f"gabor_bank: the five parameters need one dtype and device, got "
                                            f"{name} {p.dtype} on {p.device}, theta {theta.dtype} on {theta.device}")
    torch._check(theta.dim() == 1, lambda: f"gabor_bank: parameters must be vectors (N,), got {tuple(theta.shape)}")
    torch._check(theta.dtype.is_floating_point, lambda: f"gabor_bank: parameters must be floating, got {theta.dtype}")
    torch._check(kh >= 1 and kw >= 1, lambda: f"gabor_bank: kernel size must be >= 1, got ({kh}, {kw})")


# -- the PyTorch implementation (CPU, and every traced CPU graph) ----------------------------
def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.promote_types(dtype, torch.float32)


def _torch_forward(theta, sigma, lambd, gamma, psi, kh: int, kw: int) -> torch.Tensor:
    dtype = theta.dtype
    params = [p.to(_compute_dtype(dtype)) for p in (theta, sigma, lambd, gamma, psi)]
    return gabor_kernel2d_forward(params, (kh, kw)).to(dtype)


def _torch_backward(grad, theta, sigma, lambd, gamma, psi, kh: int, kw: int) -> tuple[torch.Tensor, ...]:
    dtype = theta.dtype
    compute = _compute_dtype(dtype)
    params = [p.to(compute) for p in (theta, sigma, lambd, gamma, psi)]
    grads = gabor_kernel2d_backward(grad.to(compute), params, (kh, kw), (True,) * 5)
    return tuple(g.to(dtype) for g in grads)


# -- the operators ------------------------------------------------------------------------------
@triton_op("gaborlayer::gabor_bank", mutates_args=())
def gabor_bank(theta: torch.Tensor, sigma: torch.Tensor, lambd: torch.Tensor, gamma: torch.Tensor,
               psi: torch.Tensor, kh: int, kw: int) -> torch.Tensor:
    """Bank ``(N, kh, kw)`` from five vectors ``(N,)`` (CUDA: Triton; traced CPU: PyTorch)."""
    _check(theta, sigma, lambd, gamma, psi, kh, kw)
    if theta.device.type == "cuda":
        return bank_forward(theta, sigma, lambd, gamma, reduced_phase_offset(psi), kh, kw)
    return _torch_forward(theta, sigma, lambd, gamma, psi, kh, kw)


@triton_op("gaborlayer::gabor_bank_backward", mutates_args=())
def gabor_bank_backward(grad: torch.Tensor, theta: torch.Tensor, sigma: torch.Tensor, lambd: torch.Tensor,
                        gamma: torch.Tensor, psi: torch.Tensor, kh: int, kw: int
                        ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(d_theta, d_sigma, d_lambd, d_gamma, d_psi)``, each ``(N,)``, from ``grad`` ``(N, kh, kw)``."""
    _check(theta, sigma, lambd, gamma, psi, kh, kw)
    torch._check(grad.shape == (theta.shape[0], kh, kw),
                 lambda: f"gabor_bank_backward: grad has shape {tuple(grad.shape)}, expected "
                         f"{(theta.shape[0], kh, kw)}")
    if theta.device.type == "cuda":
        return bank_backward(grad, theta, sigma, lambd, gamma, reduced_phase_offset(psi), kh, kw)
    return _torch_backward(grad, theta, sigma, lambd, gamma, psi, kh, kw)


@gabor_bank.register_kernel("cpu")
def _gabor_bank_cpu(theta, sigma, lambd, gamma, psi, kh, kw):
    _check(theta, sigma, lambd, gamma, psi, kh, kw)
    if INTERPRETED:
        return bank_forward(theta, sigma, lambd, gamma, reduced_phase_offset(psi), kh, kw)
    return _torch_forward(theta, sigma, lambd, gamma, psi, kh, kw)


@gabor_bank_backward.register_kernel("cpu")
def _gabor_bank_backward_cpu(grad, theta, sigma, lambd, gamma, psi, kh, kw):
    _check(theta, sigma, lambd, gamma, psi, kh, kw)
    if INTERPRETED:
        return bank_backward(grad, theta, sigma, lambd, gamma, reduced_phase_offset(psi), kh, kw)
    return _torch_backward(grad, theta, sigma, lambd, gamma, psi, kh, kw)


# -- autograd, registered once ------------------------------------------------------------------
def _setup_context(ctx, inputs, output) -> None:
    theta, sigma, lambd, gamma, psi, kh, kw = inputs
    ctx.save_for_backward(theta, sigma, lambd, gamma, psi)
    ctx.size = (kh, kw)


def _backward(ctx, grad):
    grads = gabor_bank_backward(grad, *ctx.saved_tensors, *ctx.size)
    return (*(g if need else None for g, need in zip(grads, ctx.needs_input_grad)), None, None)


gabor_bank.register_autograd(_backward, setup_context=_setup_context)
