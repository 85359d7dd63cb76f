"""The 2-D bank and its moment gradients as NumPy kernels: the eager CPU path.

On a CPU a small layer's bank is a few dozen elementwise passes over ~10^4 numbers, so each
operation's fixed cost, not its arithmetic, sets the speed: a PyTorch operation costs 1-6 us of
dispatch here, a NumPy ufunc about 0.4 us, and NumPy's vectorised float32 ``sin``, ``cos`` and
``exp`` run about twice as fast as ATen's on this CPU (docs/benchmarks.md, "Fourth pass"). So where
:func:`eligible` holds (plain CPU tensors, float32 or float64, no tracer, compiler or functorch
transform running, no autograd graph to record) the 2-D Functions of ``gaborlayer._autograd`` build
the bank here: the plain Function's forward and the moment Function alike, so a layer's bank is the
same to the bit in training and in eval. Everywhere else the PyTorch formula
(``_autograd._bank_terms2d``) runs. Every array here is a view of a tensor that torch allocated, so
the results are ordinary, resizable torch tensors.

The formulas are those of ``_autograd`` (derivations in docs/math.md): the phase and the rotated
coordinates are per-column plus per-row terms, the carrier ``exp(i phase)`` is the product of a
column factor and a row factor, the envelope's scaled coordinates divide the bounded ``x'`` and
``y'`` by sigma (a tiny sigma gives exact zeros, never ``0 * inf``); overflow to ``inf`` and
underflow to 0 are the intended results there, so NumPy's floating-point warnings are silenced
inside the kernels only.
"""
from __future__ import annotations

import functools
import math
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Callable

import numpy as np
import torch

from ._compat import functorch_active, fx_tracing
from ._reference import reduced_phase_offset

TWO_PI = 2 * math.pi
CHUNK_ELEMENTS = 1 << 18
_FLOAT64 = np.dtype(np.float64)


def eager_cpu(*tensors: torch.Tensor) -> bool:
    """Whether the NumPy kernels may read ``tensors``: plain CPU tensors of float32 or float64, outside
    ``torch.compile``, ``torch.jit.trace``, ``torch.fx`` tracing and functorch transforms (which must
    see torch operations). The moment Function (``_autograd.moments_pay``) asks this too."""
    first = tensors[0]
    if first.device.type != "cpu" or first.dtype not in (torch.float32, torch.float64):
        return False
    if any(type(t) not in (torch.Tensor, torch.nn.Parameter) for t in tensors):
        return False  # fake tensors, tensor subclasses
    return not (torch.compiler.is_compiling() or torch.jit.is_tracing() or fx_tracing() or functorch_active())


def eligible(*tensors: torch.Tensor) -> bool:
    """Whether the NumPy kernels may build a bank from ``tensors`` (:func:`eager_cpu`) with no autograd
    graph to record through them."""
    return not (torch.is_grad_enabled() and any(t.requires_grad for t in tensors)) and eager_cpu(*tensors)


def _quiet():
    return np.errstate(over="ignore", under="ignore", invalid="ignore", divide="ignore")


@functools.lru_cache(maxsize=64)
def _tables(kh: int, kw: int, dtype: np.dtype) -> tuple[np.ndarray, torch.Tensor, np.ndarray]:
    """The per-tap table ``(6, m, 1)`` of ``(2 pi x, 2 pi y, x, -x, y, y)`` in ``dtype``, with
    ``m = max(kh, kw)`` (the shorter coordinate padded with zeros, whose terms are never read), the
    float64 ``(2, 3, P)`` tensor of weights that turn ``G K`` and ``G S`` (taps in row-major order) into
    the moments ``(x^2 - y^2, 2 x y, x^2 + y^2)`` and ``(x, y, 1)``, and the same six weights as the
    columns of a ``(P, 6)`` array."""
    m = max(kh, kw)
    x, y = np.zeros(m), np.zeros(m)
    x[:kw] = np.arange(kw) - (kw - 1) / 2
    y[:kh] = np.arange(kh) - (kh - 1) / 2
    table = np.stack([TWO_PI * x, TWO_PI * y, x, -x, y, y]).reshape(6, m, 1).astype(dtype)
    tx, ty = np.broadcast_to(x[None, :kw], (kh, kw)).ravel(), np.broadcast_to(y[:kh, None], (kh, kw)).ravel()
    weights = np.stack([np.stack([tx * tx - ty * ty, 2 * tx * ty, tx * tx + ty * ty]),
                        np.stack([tx, ty, np.ones_like(tx)])])
    columns = np.ascontiguousarray(weights.reshape(6, kh * kw).T)
    table.flags.writeable = columns.flags.writeable = False
    return table, torch.from_numpy(weights), columns


def _filter_chunks(filters: int, taps: int) -> list[slice]:
    """Slices of the filter index in chunks of about ``CHUNK_ELEMENTS / taps`` filters, a multiple of
    64: a large bank is built and differentiated chunk by chunk, so that each chunk's passes stay in
    the CPU's cache instead of streaming ``(P, N)`` arrays through memory (256 x 256 x 7 x 7 forward
    + backward, PyTorch operations: 102 ms unchunked, 65 ms in chunks of 2^18 taps), and the chunks
    are spread over threads (:func:`_each_chunk`). A multiple of 64 filters keeps every chunk but the
    last free of the scalar tails of vectorised loops, so a chunked bank is the unchunked one to the
    bit."""
    step = max(64, CHUNK_ELEMENTS // taps // 64 * 64)
    return [slice(start, start + step) for start in range(0, filters, step)]


_pool: tuple[int, ThreadPoolExecutor] | None = None


def _forget_pool() -> None:
    global _pool
    _pool = None


os.register_at_fork(after_in_child=_forget_pool)  # a forked child (DataLoader workers) has no pool threads


def _each_chunk(work: Callable[[slice], None], parts: list[slice], threads: int) -> None:
    """``work(part)`` for each of ``parts``: in turn where there is one part or one thread, else spread
    over ``threads`` threads of a pool kept for the purpose (NumPy's ufuncs release the GIL, so the
    chunks run in parallel, as torch's own operations would)."""
    global _pool
    threads = min(threads, len(parts))
    if threads <= 1:
        for part in parts:
            work(part)
        return
    pool = _pool
    if pool is None or pool[0] != threads:
        pool = _pool = (threads, ThreadPoolExecutor(threads, thread_name_prefix="gaborlayer"))
    for _ in pool[1].map(work, parts):  # (raises a worker's exception here)
        pass


def bank2d(values: torch.Tensor, kh: int, kw: int, *, sine: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The bank ``K = E cos(phase)`` ``(N, kh, kw)`` from the parameters ``values (5, N)`` (``theta,
    sigma, lambd, gamma, psi``; contiguous, CPU, float32 or float64), and with ``sine`` also ``S = E
    sin(phase)`` (else ``None``). Where a psi lies outside ``(-2 pi, 2 pi)`` the psis are reduced
    first (``reduced_phase_offset``, which returns one inside it bit for bit)."""
    filters = values.shape[1]
    bank = values.new_empty((filters, kh, kw))
    sines = values.new_empty((filters, kh, kw)) if sine else None
    v = values.numpy()
    if not np.abs(v[4]).max(initial=0.0) < TWO_PI:
        v = v.copy()
        v[4] = reduced_phase_offset(values[4]).numpy()
    outputs = [bank.numpy()] + ([] if sines is None else [sines.numpy()])

    def build(part: slice) -> None:
        with _quiet():  # (per thread: NumPy's error state is thread-local)
            _bank_chunk(v[:, part], kh, kw, [out[part] for out in outputs])

    # (a float64 bank's chunks in turn: its sines and cosines are torch's, which use torch's threads)
    threads = torch.get_num_threads() if values.dtype == torch.float32 else 1
    _each_chunk(build, _filter_chunks(filters, kh * kw), threads)
    return bank, sines


def _cos_sin(angles: np.ndarray, cos_out: np.ndarray, sin_out: np.ndarray) -> None:
    """Cosines and sines of ``angles`` into the two arrays: NumPy's in float32 (vectorised), torch's
    in float64 (NumPy's float64 sine and cosine are scalar code: 4.1 against 0.9 ms for 220,000
    values, one thread)."""
    if angles.dtype == np.float32:
        np.cos(angles, out=cos_out)
        np.sin(angles, out=sin_out)
    else:
        wide = torch.from_numpy(angles)
        torch.cos(wide, out=torch.from_numpy(cos_out))
        torch.sin(wide, out=torch.from_numpy(sin_out))


def _bank_chunk(v: np.ndarray, kh: int, kw: int, outputs: list[np.ndarray]) -> None:
    """Write ``K`` (and ``S``) of the filters ``v (5, n)`` into ``outputs``, each ``(n, kh, kw)``."""
    theta, sigma, lambd, gamma, psi = v
    n = theta.shape[0]
    table = _tables(kh, kw, v.dtype)[0]
    # Per filter (cos/lambd, sin/lambd, cos, sin, sin, cos) times the table: the phase's column and
    # row terms (2 pi x cos/lambd, 2 pi y sin/lambd), x cos and -x sin per column, y sin and y cos per row.
    per_filter = np.empty((6, 1, n), v.dtype)
    _cos_sin(theta, per_filter[2, 0], per_filter[3, 0])
    np.divide(per_filter[2:4, 0], lambd, out=per_filter[0:2, 0])
    per_filter[4:6] = per_filter[3:1:-1]
    terms = per_filter * table  # (6, m, n), the filter index contiguous
    terms[0] += psi
    # exp(i phase) = exp(i alpha) exp(i beta): the column and row factors, multiplied per tap. (The
    # cosines and sines of the kh kw n summed phases, contiguous, were 1.5x as fast at 4096 3 x 3
    # filters but 4.7x as slow at 96 15 x 15 and 7.7x at 96 31 x 31: docs/benchmarks.md.)
    factors = np.empty((2, *terms.shape[1:]), np.complex64 if v.dtype == np.float32 else np.complex128)
    _cos_sin(terms[:2], factors.real, factors.imag)
    carrier = factors[0, None, :kw] * factors[1, :kh, None]  # (kh, kw, n)
    scaled = terms[2:4, None, :kw] + terms[4:6, :kh, None]  # (2, kh, kw, n): x', y'
    scaled /= sigma
    a, b = scaled
    b *= gamma
    a *= a
    b *= b
    a += b
    a *= -0.5
    envelope = np.exp(a, out=a)
    # Into (n, kh, kw) through transposed views: no separate transposing copy.
    np.multiply(carrier.real, envelope, out=outputs[0].transpose(1, 2, 0))
    if len(outputs) > 1:
        np.multiply(carrier.imag, envelope, out=outputs[1].transpose(1, 2, 0))


def _moment_sums(g: torch.Tensor, k: torch.Tensor, s: torch.Tensor, kh: int, kw: int) -> np.ndarray:
    """The six moment sums ``(2, 3, N)`` (float64) of the incoming gradient ``g``, ``K`` and ``S``,
    each ``(N, P)``; every product is exact (both factors in float64). A bank of one chunk in NumPy
    (the lowest cost per call); a larger one by torch operations, chunk by chunk: torch's threads and
    its BLAS share the cores (NumPy's BLAS in the chunk pool's threads would compete with them:
    256 x 256 x 7 x 7 on 2 threads, 21 ms against 13)."""
    filters, taps = k.shape
    _, weights, columns = _tables(kh, kw, _FLOAT64)
    parts = _filter_chunks(filters, taps)
    if len(parts) == 1:  # one (2N, P) @ (P, 6) product (half of it unused): a plain BLAS call
        products = np.empty((2, filters, taps))
        np.multiply(g.numpy(), k.numpy(), out=products[0], dtype=np.float64)
        np.multiply(g.numpy(), s.numpy(), out=products[1], dtype=np.float64)
        both = (products.reshape(2 * filters, taps) @ columns).reshape(2, filters, 6)
        return np.stack([both[0, :, :3], both[1, :, 3:]]).transpose(0, 2, 1)
    moments = torch.empty((2, 3, filters), dtype=torch.float64)
    for part in parts:
        products = torch.empty((2, k[part].shape[0], taps), dtype=torch.float64)
        products[0].copy_(k[part])
        products[1].copy_(s[part])
        products.mul_(g[part])
        torch.matmul(weights, products.transpose(1, 2), out=moments[:, :, part])
    return moments.numpy()


def moment_gradients2d(grad: torch.Tensor, values: torch.Tensor, bank: torch.Tensor,
                       sine: torch.Tensor) -> torch.Tensor:
    """The five parameter gradients ``(5, N)`` in ``bank``'s dtype from the incoming gradient, the
    bank ``K`` and ``S = E sin(phase)`` (``S`` of shape ``(N, kh, kw)``, the other two of any shape
    with its elements in that order), and the parameters ``values (5, N)``:
    the six moments ``sum G K {x^2 - y^2, 2xy, x^2 + y^2}`` and ``sum G S {x, y, 1}`` per filter in
    float64 (from the exact float64 products of the float32 factors), rotated into each filter's frame
    and combined (see the comment above ``_autograd._MomentBody``)."""
    with _quiet():  # (an inf in the incoming gradient gives NaN, as in torch, without a warning)
        return _moment_gradients(grad, values, bank, sine)


def _moment_gradients(grad: torch.Tensor, values: torch.Tensor, bank: torch.Tensor,
                      sine: torch.Tensor) -> torch.Tensor:
    filters, kh, kw = sine.shape
    moments = _moment_sums(grad.reshape(filters, -1), bank.reshape(filters, -1), sine.reshape(filters, -1), kh, kw)
    (x_moments, y_moments, (k_rr, s_1)) = moments.transpose(1, 0, 2)
    theta, sigma, lambd, gamma = values[:4].numpy().astype(np.float64)
    # Into the filter's frame: D = sum G K (x^2 - y^2 + 2i xy) turned by -2 theta, L = sum G S (x + iy)
    # by -theta, on the rows (D, L), with the cosines and sines of (2 theta, theta) in float64 (of
    # 2 theta by the double-angle formulas: a few roundings of 1).
    cos_a, sin_a = np.empty((2, filters)), np.empty((2, filters))
    _cos_sin(theta, cos_a[1], sin_a[1])
    np.multiply(cos_a[1] - sin_a[1], cos_a[1] + sin_a[1], out=cos_a[0])
    np.multiply(2 * sin_a[1], cos_a[1], out=sin_a[0])
    d_re, l_re = x_moments * cos_a + y_moments * sin_a
    d_im, l_im = y_moments * cos_a - x_moments * sin_a
    # With q = 1/(2 sigma^2): sum G K x'^2 = (T + Re D e^{-2i theta})/2, sum G K y'^2 = (T - Re ...)/2.
    half_var, wave = 0.5 / (sigma * sigma), TWO_PI / lambd
    across = gamma * gamma * half_var
    y_sq, x_sq = k_rr - d_re, k_rr + d_re  # twice sum G K y'^2 and twice sum G K x'^2
    grads = values.new_empty((5, filters))
    out = grads.numpy()  # (a float32 gradient beyond its range is inf, as a cast in torch gives)
    out[0] = (across - half_var) * d_im - wave * l_im  # K x'y' (gamma^2 - 1)/sigma^2 - S 2 pi y'/lambd
    out[1] = (across * y_sq + half_var * x_sq) / sigma  # K (x'^2 + gamma^2 y'^2)/sigma^3
    out[2] = wave / lambd * l_re  # S 2 pi x'/lambd^2
    out[3] = -gamma * half_var * y_sq  # -K gamma y'^2/sigma^2
    np.negative(s_1, out=out[4])  # -S
    return grads
