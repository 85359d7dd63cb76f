"""The eager CPU kernels of the 2-D bank: the bank in NumPy, its moment gradients compiled by numba.

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

The moment gradients (:func:`moment_gradients2d`) are one loop over the filters and their taps,
compiled by numba (:func:`moment_kernel`: LLVM comes with numba, so no compiler is needed; the
compilation takes about a second on the first training step of a process). Inside a training step
every call into a library pays for its code and data coming back into the CPU's caches (tens of
microseconds each, after the convolution's step), so one compiled call does the six moment sums
and the per-filter algebra that took two dozen NumPy and ATen calls (docs/benchmarks.md, "Fifth
pass"). The bank itself stays NumPy's: a compiled loop takes a scalar ``exp`` per tap, and NumPy's
vectorised ones are several times faster.

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

from ._checks import LAMBD_FLOOR
from ._compat import functorch_active, fx_tracing
from ._reference import reduced_phase_offset
from ._storage import LOG_LIMIT

TWO_PI = 2 * math.pi
CHUNK_ELEMENTS = 1 << 18


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
def _tables(kh: int, kw: int, dtype: np.dtype) -> np.ndarray:
    """The per-tap table ``(6, m, 1)`` of ``(2 pi x, 2 pi y, x, -x, y, y)`` in ``dtype``, with
    ``m = max(kh, kw)`` (the shorter coordinate padded with zeros, whose terms are never read)."""
    m = max(kh, kw)
    x, y = np.zeros(m), np.zeros(m)
    x[:kw] = np.arange(kw) - (kw - 1) / 2
    y[:kh] = np.arange(kh) - (kh - 1) / 2
    table = np.stack([TWO_PI * x, TWO_PI * y, x, -x, y, y]).reshape(6, m, 1).astype(dtype)
    table.flags.writeable = False
    return table


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
    table = _tables(kh, kw, v.dtype)
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


def _moment_loop(grad, bank, sine, params, stored, out):  # pragma: no cover - compiled by numba
    """The five parameter gradients of each filter into ``out (5, n)`` from the incoming gradient
    ``G``, ``K`` and ``S``, each ``(n, kh, kw)``, and the Function's inputs ``params (5, n)`` (with
    ``stored`` the second to fourth a layer's log-parameters, read as exp of their clamp and lambd
    above its floor, and their gradients multiplied by the derivative of that read: the exp inside
    the clamp's bounds, 0 at and beyond them). Everything in float64: the products G K and G S are
    exact, the six moments
        sum G K (x^2 - y^2),  sum G K 2xy,  sum G K (x^2 + y^2),  sum G S x,  sum G S y,  sum G S
    are rotated into the filter's frame (by -2 theta and -theta, the cosines and sines of 2 theta
    by the double-angle formulas) and combined (see the comment above ``_autograd._MomentBody``).
    Compiled by numba (:func:`moment_kernel`): one pass over the three banks, no temporaries."""
    filters, kh, kw = sine.shape
    for n in range(filters):
        d_x = d_y = k_rr = l_x = l_y = s_1 = 0.0
        for i in range(kh):  # each row's sums over x first, then weighted by the row's y
            y = i - (kh - 1) / 2
            gk_1 = gk_x = gk_xx = gs_1 = gs_x = 0.0
            for j in range(kw):
                x = j - (kw - 1) / 2
                g = np.float64(grad[n, i, j])  # (numba's float() keeps a float32 a float32)
                gk = g * np.float64(bank[n, i, j])
                gs = g * np.float64(sine[n, i, j])
                gk_1 += gk
                gk_x += gk * x
                gk_xx += gk * x * x
                gs_1 += gs
                gs_x += gs * x
            d_x += gk_xx - y * y * gk_1
            d_y += 2 * y * gk_x
            k_rr += gk_xx + y * y * gk_1
            l_x += gs_x
            l_y += y * gs_1
            s_1 += gs_1
        theta, sigma, lambd, gamma = (np.float64(params[0, n]), np.float64(params[1, n]), np.float64(params[2, n]),
                                      np.float64(params[3, n]))
        d_sigma = d_lambd = d_gamma = 1.0
        if stored:
            e_sigma = math.exp(min(max(sigma, -LOG_LIMIT), LOG_LIMIT))
            e_lambd = math.exp(min(max(lambd, -LOG_LIMIT), LOG_LIMIT))
            e_gamma = math.exp(min(max(gamma, -LOG_LIMIT), LOG_LIMIT))
            d_sigma = e_sigma if -LOG_LIMIT < sigma < LOG_LIMIT else 0.0
            d_lambd = e_lambd if -LOG_LIMIT < lambd < LOG_LIMIT else 0.0
            d_gamma = e_gamma if -LOG_LIMIT < gamma < LOG_LIMIT else 0.0
            sigma, lambd, gamma = e_sigma, LAMBD_FLOOR + e_lambd, e_gamma
        c, s = math.cos(theta), math.sin(theta)
        c2, s2 = (c - s) * (c + s), 2 * s * c
        d_re, d_im = d_x * c2 + d_y * s2, d_y * c2 - d_x * s2  # D = sum G K (x + iy)^2, turned by -2 theta
        l_re, l_im = l_x * c + l_y * s, l_y * c - l_x * s  # L = sum G S (x + iy), turned by -theta
        # With q = 1/(2 sigma^2): sum G K x'^2 = (T + Re D')/2, sum G K y'^2 = (T - Re D')/2.
        half_var, wave = 0.5 / (sigma * sigma), TWO_PI / lambd
        across = gamma * gamma * half_var
        y_sq, x_sq = k_rr - d_re, k_rr + d_re  # twice sum G K y'^2 and twice sum G K x'^2
        out[0, n] = (across - half_var) * d_im - wave * l_im  # K x'y' (gamma^2 - 1)/sigma^2 - S 2 pi y'/lambd
        out[1, n] = (across * y_sq + half_var * x_sq) / sigma * d_sigma  # K (x'^2 + gamma^2 y'^2)/sigma^3
        out[2, n] = wave / lambd * l_re * d_lambd  # S 2 pi x'/lambd^2
        out[3, n] = -gamma * half_var * y_sq * d_gamma  # -K gamma y'^2/sigma^2
        out[4, n] = -s_1  # -S


@functools.cache
def moment_kernel() -> Callable | None:
    """:func:`_moment_loop` compiled by numba for float32 and float64 (about a second, on the first
    call in a process), or ``None`` where numba cannot be imported; then the 2-D Function keeps its
    plain backward (``_autograd.moments_pay``)."""
    try:
        import numba
    except ImportError:
        return None
    signatures = [numba.void(f[:, :, :], f[:, :, :], f[:, :, :], f[:, :], numba.boolean, f[:, :])
                  for f in (numba.float32, numba.float64)]
    return numba.njit(signatures, nogil=True, cache=False)(_moment_loop)


def moment_gradients2d(grad: torch.Tensor, params: torch.Tensor, bank: torch.Tensor, sine: torch.Tensor,
                       stored: bool) -> torch.Tensor:
    """The five parameter gradients ``(5, N)`` in ``bank``'s dtype from the incoming gradient, the
    bank ``K`` and ``S = E sin(phase)`` (``S`` of shape ``(N, kh, kw)``, the other two of any shape
    with its elements in that order) and the Function's inputs ``params (5, N)`` (``stored``: as in
    :func:`_moment_loop`), by the compiled kernel, over the filters in chunks spread over torch's
    thread count (the kernel releases the GIL)."""
    filters, kh, kw = sine.shape
    kernel = moment_kernel()
    grads = params.new_empty((5, filters))
    g, k, s, p, out = (t.numpy() for t in (grad.reshape(sine.shape), bank.reshape(sine.shape), sine, params, grads))
    _each_chunk(lambda part: kernel(g[part], k[part], s[part], p[:, part], stored, out[:, part]),
                _filter_chunks(filters, kh * kw), torch.get_num_threads())
    return grads
