"""The loops of the eager CPU 2-D bank and its moment gradients, compiled by numba.

Imported only through ``gaborlayer._cpu_kernels.loops()``, which returns ``None`` where numba cannot be
imported. Each loop compiles on its first call per dtype (a few seconds; LLVM comes with numba, so
the user needs no compiler), and numba caches the compiled code on disk (beside this file, else in
the user's cache directory, or ``NUMBA_CACHE_DIR``), so a later process loads it in a fraction of a
second. Everything is computed in float64 whatever the dtype of the arrays, and rounded once on
the way out.

Inside a training step every call into a library pays for its code and data coming back into the
CPU's caches (tens of microseconds each after the convolution's step, docs/benchmarks.md), so the
bank is one call here, from the layer's stored parameters to ``K`` and ``S``. What makes one call
fast is that its loops run over the filters, with the filter index innermost and contiguous, so
LLVM vectorises them; for that the exponential and the sine and cosine are written out here as
polynomials (:func:`_exp`, :func:`_sincos`): a call into the C library's ``exp`` or ``sin`` cannot
be vectorised, and costs 10-20 ns per number. Their accuracy is that of the C library's to within
an ulp or two (tested against NumPy's over generated numbers, and the bank against the PyTorch
formula). Only ``contract`` of the fast-math flags is on: fused multiply-adds, no reassociation, so
NaN and inf propagate as in plain arithmetic. Division follows NumPy (``error_model="numpy"``: x/0 is
inf or NaN): Python's model checks every divisor for zero, a branch that kept the loops with a
division from vectorising (0.5 / (s s) over 4096 numbers: 2.0 against 0.54 ns each).
"""
from __future__ import annotations

import math

import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic

from ._checks import LAMBD_FLOOR
from ._storage import LOG_LIMIT

TWO_PI = 2 * math.pi
# psi - k fl(2 pi) is exact (fmod); the k whole turns also miss k (2 pi - fl(2 pi)), added as
# (rest - psi) * _TWO_PI_MISSED (as _reference.reduced_phase_offset does in float64)
_TWO_PI_MISSED = 2.4492935982947064e-16 / TWO_PI
FAST = {"contract"}
SINCOS_LIMIT = 1e5  # beyond it (and for NaN and inf) _sincos_into takes the C library's sine and cosine


@intrinsic
def _from_bits(typingctx, bits):
    """The float64 whose bits are the int64 ``bits``."""
    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.DoubleType())
    return types.float64(types.int64), codegen


@numba.njit(fastmath=FAST, error_model="numpy")
def _exp(e):  # pragma: no cover - compiled
    """``exp(e)`` in float64: 2^k p(r) with r = e - k ln 2 in [-ln2/2, ln2/2] (ln 2 in two parts) and
    p the Taylor polynomial of degree 13 (remainder below 1e-17). Below -708 it gives 0 (no
    subnormals: an envelope that small is zero to any filter), above 709 inf; NaN stays NaN."""
    t = min(max(e, -708.0), 709.0)
    k = np.floor(t * 1.4426950408889634 + 0.5)
    r = (t - k * 6.93147180369123816490e-01) - k * 1.90821492927058770002e-10
    p = ((((((((((((r * (1 / 6227020800) + 1 / 479001600) * r + 1 / 39916800) * r + 1 / 3628800) * r
                   + 1 / 362880) * r + 1 / 40320) * r + 1 / 5040) * r + 1 / 720) * r + 1 / 120) * r
              + 1 / 24) * r + 1 / 6) * r + 0.5) * r + 1.0) * r + 1.0
    scaled = p * _from_bits((np.int64(np.int32(k)) + 1023) << 52)
    if -708.0 <= e <= 709.0:
        return scaled
    return 0.0 if e < -708.0 else (math.inf if e > 709.0 else e)


@numba.njit(fastmath=FAST, error_model="numpy")
def _sincos(x):  # pragma: no cover - compiled
    """``(sin x, cos x)`` in float64 for ``|x| <= SINCOS_LIMIT``: x less q pi/2 (pi/2 in three parts,
    Cody and Waite) into [-pi/4, pi/4], fdlibm's minimax polynomials there, and the quadrant q mod 4
    chosen by selects, kept in floating point (vectorises where an integer quadrant did not)."""
    t = min(max(x, -SINCOS_LIMIT), SINCOS_LIMIT)
    q = np.floor(t * 0.63661977236758138243 + 0.5)
    r = ((t - q * 1.57079632673412561417e+00) - q * 6.07710050650619224932e-11) - q * 2.02226624879595063154e-21
    z = r * r
    s = r + r * z * (-1.66666666666666324348e-01 + z * (8.33333333332248946124e-03 + z * (
        -1.98412698298579493134e-04 + z * (2.75573137070700676789e-06 + z * (
            -2.50507602534068634195e-08 + z * 1.58969099521155010221e-10)))))
    c = 1.0 - 0.5 * z + z * z * (4.16666666666666019037e-02 + z * (-1.38888888888741095749e-03 + z * (
        2.48015872894767294178e-05 + z * (-2.75573143513906633035e-07 + z * (
            2.08757232129817482790e-09 + z * -1.13596475577881948265e-11)))))
    quadrant = q - 4.0 * np.floor(q * 0.25)
    odd = quadrant == 1.0 or quadrant == 3.0
    sin, cos = (c, s) if odd else (s, c)
    sin = -sin if quadrant >= 2.0 else sin
    cos = -cos if (quadrant == 1.0 or quadrant == 2.0) else cos
    return sin, cos


@numba.njit(fastmath=FAST, error_model="numpy")
def _sincos_into(angles, sin_out, cos_out):  # pragma: no cover - compiled
    """Sines and cosines of the 1-D ``angles`` (a buffer of its own) into the two arrays."""
    for n in range(angles.shape[0]):
        sin_out[n], cos_out[n] = _sincos(angles[n])
    for n in range(angles.shape[0]):  # rare: beyond the reduction's range, NaN and inf
        if not abs(angles[n]) <= SINCOS_LIMIT:
            sin_out[n], cos_out[n] = math.sin(angles[n]), math.cos(angles[n])


@numba.njit(fastmath=FAST, error_model="numpy")
def _bounded_exp(r):  # pragma: no cover - compiled
    """A stored log-parameter's value, as ``_storage`` reads it: ``exp`` of its clamp to +-LOG_LIMIT."""
    return _exp(min(max(r, -LOG_LIMIT), LOG_LIMIT))


@intrinsic
def _pointer(typingctx, address):
    """The ``void *`` at the integer ``address``."""
    def codegen(context, builder, signature, args):
        return builder.inttoptr(args[0], ir.IntType(8).as_pointer())
    return types.voidptr(types.intp), codegen


@numba.njit(nogil=True, fastmath=FAST, error_model="numpy", cache=True)
def bank_loop(addresses, filters, kh, kw, start, end, stored, want_sine, ranges, like):  # pragma: no cover
    """:func:`_bank_block` on filters ``start`` to ``end`` of a bank of ``filters``, in blocks whose
    temporaries stay in the CPU's cache. The arrays are the C-contiguous tensors whose data start at
    ``addresses`` (a tuple of ints: theta, sigma, lambd, gamma, psi, each of ``filters``, then the bank and,
    with ``want_sine``, ``S``, each ``(filters, kh, kw)``), of ``like``'s dtype: an address is read
    in the call, with no NumPy array made per tensor (each ``Tensor.numpy()`` runs torch operations).
    Returns whether every sigma and gamma of those filters lies in its range (see ``_bank_block``)."""
    dtype = like.dtype
    theta, sigma, lambd, gamma, psi = (numba.carray(_pointer(addresses[0]), filters, dtype),
                                       numba.carray(_pointer(addresses[1]), filters, dtype),
                                       numba.carray(_pointer(addresses[2]), filters, dtype),
                                       numba.carray(_pointer(addresses[3]), filters, dtype),
                                       numba.carray(_pointer(addresses[4]), filters, dtype))
    bank = numba.carray(_pointer(addresses[5]), (filters, kh, kw), dtype)
    sine = numba.carray(_pointer(addresses[6]), (filters if want_sine else 0, kh, kw), dtype)
    step = _block(kh * kw)
    inside = True
    for first in range(start, end, step):
        last = min(first + step, end)
        part = slice(first, last)
        inside &= _bank_block(theta[part], sigma[part], lambd[part], gamma[part], psi[part], stored, bank[part],
                              sine[part], want_sine, ranges)  # (without want_sine, sine has no filters)
    return inside


@numba.njit(fastmath=FAST, error_model="numpy")
def _block(taps):  # pragma: no cover - compiled
    """Filters per block: a multiple of 64 (no vector tails but the last block's), at most 1024,
    and about 2^14 taps, so that a block's float64 temporaries (two of ``(taps, block)``) take
    about 256 KB."""
    return max(64, min(1024, (1 << 14) // taps // 64 * 64))


@numba.njit(fastmath=FAST, error_model="numpy")
def _bank_block(theta, sigma, lambd, gamma, psi, stored, bank, sine, want_sine, ranges):  # pragma: no cover
    """``K = E cos(phase)`` into ``bank`` and, with ``want_sine``, ``S = E sin(phase)`` into ``sine``
    (each ``(n, kh, kw)``, C-contiguous) from the parameters, 1-D arrays of ``n`` (with ``stored``,
    ``sigma``, ``lambd`` and ``gamma`` are a layer's log-parameters, read as ``_storage`` reads
    them). Returns whether every sigma lies in ``[ranges[0], ranges[1]]`` and every gamma in
    ``[ranges[2], ranges[3]]`` (NaN lies in no range).

    The formulas are those of ``_autograd._bank_terms2d`` (docs/math.md): the carrier ``exp(i
    phase)`` is the product of a column factor ``exp(i (2 pi x cos(theta)/lambd + psi))`` and a row
    factor ``exp(i 2 pi y sin(theta)/lambd)``; the envelope's rotated coordinates are scaled by a
    finite 1/sigma before they are squared (a tiny sigma gives exact zeros, never ``0 * inf``:
    docs/math.md, "Tiny sigma"). A psi outside
    ``(-2 pi, 2 pi)`` is reduced first, as ``_reference.reduced_phase_offset`` does."""
    filters, kh, kw = bank.shape
    taps = kh * kw
    # One value per loop: each vectorises (several outputs per loop did not).
    width, aspect, wave, inv_sigma = np.empty(filters), np.empty(filters), np.empty(filters), np.empty(filters)
    cos_t, sin_t, offset, angle = np.empty(filters), np.empty(filters), np.empty(filters), np.empty(filters)
    if stored:
        for n in range(filters):
            width[n] = _bounded_exp(np.float64(sigma[n]))
        for n in range(filters):
            aspect[n] = _bounded_exp(np.float64(gamma[n]))
        for n in range(filters):
            wave[n] = TWO_PI / (LAMBD_FLOOR + _bounded_exp(np.float64(lambd[n])))
    else:
        for n in range(filters):
            width[n] = sigma[n]
        for n in range(filters):
            aspect[n] = gamma[n]
        for n in range(filters):
            wave[n] = TWO_PI / np.float64(lambd[n])
    for n in range(filters):  # (a subnormal sigma is read as the smallest normal: 1/sigma stays finite,
        inv_sigma[n] = 1.0 / max(width[n], 2.2250738585072014e-308)  # so the centre tap is 0 * 1/sigma = 0)
    inside = 0  # filters with sigma and gamma in their ranges (NaN in none)
    for n in range(filters):
        s, g = width[n], aspect[n]
        inside += (ranges[0] <= s) & (s <= ranges[1]) & (ranges[2] <= g) & (g <= ranges[3])
    reduce = 0
    for n in range(filters):
        offset[n] = psi[n]
        angle[n] = theta[n]
        reduce += not abs(offset[n]) < TWO_PI
    if reduce:
        for n in range(filters):
            if not abs(offset[n]) < TWO_PI:
                rest = np.fmod(offset[n], TWO_PI)
                offset[n] = rest + (rest - offset[n]) * _TWO_PI_MISSED
    _sincos_into(angle, sin_t, cos_t)
    col_sin, col_cos, row_sin, row_cos = np.empty((kw, filters)), np.empty((kw, filters)), \
        np.empty((kh, filters)), np.empty((kh, filters))
    for j in range(kw):
        x = j - (kw - 1) / 2
        for n in range(filters):
            angle[n] = wave[n] * cos_t[n] * x + offset[n]
        _sincos_into(angle, col_sin[j], col_cos[j])
    for i in range(kh):
        y = i - (kh - 1) / 2
        for n in range(filters):
            angle[n] = wave[n] * sin_t[n] * y
        _sincos_into(angle, row_sin[i], row_cos[i])
    # The taps with the filter index innermost (vectorised), then transposed into (n, kh, kw).
    k_taps, s_taps = np.empty((taps, filters)), np.empty((taps, filters))
    for i in range(kh):
        y = i - (kh - 1) / 2
        for j in range(kw):
            x = j - (kw - 1) / 2
            t = i * kw + j
            for n in range(filters):
                along = (x * cos_t[n] + y * sin_t[n]) * inv_sigma[n]
                across = (y * cos_t[n] - x * sin_t[n]) * inv_sigma[n] * aspect[n]
                envelope = _exp(-0.5 * (along * along + across * across))
                k_taps[t, n] = envelope * (col_cos[j, n] * row_cos[i, n] - col_sin[j, n] * row_sin[i, n])
                s_taps[t, n] = envelope * (col_sin[j, n] * row_cos[i, n] + col_cos[j, n] * row_sin[i, n])
    out = bank.reshape(filters, taps)
    for n in range(filters):
        for t in range(taps):
            out[n, t] = k_taps[t, n]
    if want_sine:
        out = sine.reshape(filters, taps)
        for n in range(filters):
            for t in range(taps):
                out[n, t] = s_taps[t, n]
    return inside == filters


@numba.njit(nogil=True, fastmath=FAST, error_model="numpy", cache=True)
def moment_loop(addresses, filters, kh, kw, start, end, stored, like):  # pragma: no cover - compiled
    """:func:`_moments` of filters ``start`` to ``end``, from C-contiguous tensors at ``addresses``
    (ints, as in :func:`bank_loop`: the incoming gradient, ``K`` and ``S``, each ``(filters, kh,
    kw)``, theta, sigma, lambd, gamma, each of ``filters``, and the gradients ``(5, filters)``), of
    ``like``'s dtype."""
    dtype = like.dtype
    grad = numba.carray(_pointer(addresses[0]), (filters, kh, kw), dtype)
    bank = numba.carray(_pointer(addresses[1]), (filters, kh, kw), dtype)
    sine = numba.carray(_pointer(addresses[2]), (filters, kh, kw), dtype)
    theta, sigma, lambd, gamma = (numba.carray(_pointer(addresses[3]), filters, dtype),
                                  numba.carray(_pointer(addresses[4]), filters, dtype),
                                  numba.carray(_pointer(addresses[5]), filters, dtype),
                                  numba.carray(_pointer(addresses[6]), filters, dtype))
    out = numba.carray(_pointer(addresses[7]), (5, filters), dtype)
    _moments(grad, bank, sine, theta, sigma, lambd, gamma, stored, out, start, end)


MOMENT_BLOCK = 256  # filters: the sums and the per-filter values of a block stay in the L1 cache


@numba.njit(fastmath=FAST, error_model="numpy")
def _moments(grad, bank, sine, theta, sigma, lambd, gamma, stored, out, start, end):  # pragma: no cover
    """The five parameter gradients of filters ``start`` to ``end`` into ``out (5, n)`` from the
    incoming gradient ``G``, ``K`` and ``S``, each ``(n, kh, kw)``, and the Function's inputs (1-D
    arrays of ``n``; with ``stored`` ``sigma``, ``lambd`` and ``gamma`` are a layer's log-parameters,
    read as :func:`bank_loop` reads them, and their gradients multiplied by the derivative of that
    read: the exp inside the clamp's bounds, 0 at and beyond them). Everything in float64: the
    products G K and G S are exact, the six moments
        sum G K (x^2 - y^2),  sum G K 2xy,  sum G K (x^2 + y^2),  sum G S x,  sum G S y,  sum G S
    are rotated into the filter's frame (by -2 theta and -theta, the cosines and sines of 2 theta
    by the double-angle formulas) and combined (see the comment above ``_autograd._MomentBody``).

    In blocks of ``MOMENT_BLOCK`` filters, two passes: the six sums, filter by filter over its taps;
    then the rest (the reads of the parameters, theta's sine and cosine, the rotations and the
    combination), in loops over the filters that vectorise, one result per loop, as the bank's do.
    Done filter by filter, that rest (three exps, a sine and cosine, four divisions) cost more than
    the sums: about 100 ns a filter, 0.40 ms of 4096 3 x 3 filters."""
    _, kh, kw = sine.shape
    size = MOMENT_BLOCK
    sums = np.empty((6, size))
    width, wave_len, aspect, angle, sin_t, cos_t = (np.empty(size), np.empty(size), np.empty(size),
                                                    np.empty(size), np.empty(size), np.empty(size))
    d_sigma, d_lambd, d_gamma = np.ones(size), np.ones(size), np.ones(size)
    for first in range(start, end, size):
        m = min(first + size, end) - first
        for b in range(m):
            n = first + b
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
            sums[0, b], sums[1, b], sums[2, b], sums[3, b], sums[4, b], sums[5, b] = d_x, d_y, k_rr, l_x, l_y, s_1
        if stored:
            for b in range(m):
                width[b] = _bounded_exp(np.float64(sigma[first + b]))
            for b in range(m):
                wave_len[b] = _bounded_exp(np.float64(lambd[first + b]))
            for b in range(m):
                aspect[b] = _bounded_exp(np.float64(gamma[first + b]))
            for b in range(m):
                d_sigma[b] = width[b] if -LOG_LIMIT < sigma[first + b] < LOG_LIMIT else 0.0
            for b in range(m):
                d_lambd[b] = wave_len[b] if -LOG_LIMIT < lambd[first + b] < LOG_LIMIT else 0.0
            for b in range(m):
                d_gamma[b] = aspect[b] if -LOG_LIMIT < gamma[first + b] < LOG_LIMIT else 0.0
            for b in range(m):
                wave_len[b] += LAMBD_FLOOR
        else:
            for b in range(m):
                width[b], wave_len[b], aspect[b] = sigma[first + b], lambd[first + b], gamma[first + b]
        for b in range(m):
            angle[b] = theta[first + b]
        _sincos_into(angle[:m], sin_t[:m], cos_t[:m])  # (as the forward takes them)
        # With q = 1/(2 sigma^2): sum G K x'^2 = (T + Re D')/2, sum G K y'^2 = (T - Re D')/2, where
        # D = sum G K (x + iy)^2 is turned by -2 theta (D') and L = sum G S (x + iy) by -theta (L').
        for b in range(m):  # K x'y' (gamma^2 - 1)/sigma^2 - S 2 pi y'/lambd
            c, sn, s, g = cos_t[b], sin_t[b], width[b], aspect[b]
            half_var = 0.5 / (s * s)
            d_im = sums[1, b] * ((c - sn) * (c + sn)) - sums[0, b] * (2 * sn * c)
            l_im = sums[4, b] * c - sums[3, b] * sn
            out[0, first + b] = (g * g * half_var - half_var) * d_im - TWO_PI / wave_len[b] * l_im
        for b in range(m):  # K (x'^2 + gamma^2 y'^2)/sigma^3
            c, sn, s, g = cos_t[b], sin_t[b], width[b], aspect[b]
            half_var = 0.5 / (s * s)
            d_re = sums[0, b] * ((c - sn) * (c + sn)) + sums[1, b] * (2 * sn * c)
            y_sq, x_sq = sums[2, b] - d_re, sums[2, b] + d_re  # twice sum G K y'^2 and twice sum G K x'^2
            out[1, first + b] = (g * g * half_var * y_sq + half_var * x_sq) / s * d_sigma[b]
        for b in range(m):  # S 2 pi x'/lambd^2
            c, sn, w = cos_t[b], sin_t[b], wave_len[b]
            out[2, first + b] = TWO_PI / w / w * (sums[3, b] * c + sums[4, b] * sn) * d_lambd[b]
        for b in range(m):  # -K gamma y'^2/sigma^2
            c, sn, s, g = cos_t[b], sin_t[b], width[b], aspect[b]
            d_re = sums[0, b] * ((c - sn) * (c + sn)) + sums[1, b] * (2 * sn * c)
            out[3, first + b] = -g * (0.5 / (s * s)) * (sums[2, b] - d_re) * d_gamma[b]
        for b in range(m):  # -S
            out[4, first + b] = -sums[5, b]


@numba.njit(nogil=True, cache=True)
def same_bytes(addresses, copies, sizes):  # pragma: no cover - compiled
    """Whether the ``sizes[i]`` bytes at ``addresses[i]`` equal those at ``copies[i]``, for every
    ``i`` (tuples of ints): the eval-mode bank cache's check that a layer's parameters are those the
    bank was built from. No early exit: the differences are OR-ed together, 8 bytes at a time where
    both addresses allow it, so the loop vectorises."""
    diff = np.uint64(0)
    for i in range(len(sizes)):
        words = sizes[i] // 8 if (addresses[i] | copies[i]) % 8 == 0 else 0
        a_words = numba.carray(_pointer(addresses[i]), words, np.uint64)
        b_words = numba.carray(_pointer(copies[i]), words, np.uint64)
        for j in range(words):
            diff |= a_words[j] ^ b_words[j]
        a = numba.carray(_pointer(addresses[i]), sizes[i], np.uint8)
        b = numba.carray(_pointer(copies[i]), sizes[i], np.uint8)
        for j in range(8 * words, sizes[i]):
            diff |= np.uint64(a[j] ^ b[j])
    return diff == 0
