"""Recover the parameters of a Gabor filter from its kernel or from what it does to images.

Gradient descent on ``theta`` alone fails from a bad start: the loss is periodic in ``theta``,
flat far from the truth and steep near it (``docs/recovery.md``). The procedure here does not
depend on the start:

1. **Global search.** The peak of the zero-padded magnitude spectrum gives an orientation and a
   wavelength. Added to a coarse grid over ``theta``, ``lambd``, ``sigma`` and ``gamma``, it is
   scored for a whole batch of targets at once: the grid's kernels are built once and scored
   against every target by one matrix product, each target's own spectrum-peak points in
   batched bank builds; ``psi`` enters linearly (through ``cos psi`` and ``sin psi``) given the
   rest, so it is solved for, not searched. The best few distinct candidates are kept.
2. **Refinement.** Each target's best start (the caller's ``init``, if any, or a candidate) is
   refined, all targets at once, by a batched damped Gauss-Newton (Levenberg-Marquardt,
   :func:`_levenberg_marquardt`) in the coordinates ``theta``, ``log sigma``, ``log lambd``,
   ``log gamma``, ``psi`` (with loose box bounds; ``lambd >= 2``), with the kernels and their
   Jacobians from the analytic forward and jvp of :mod:`gaborlayer._autograd` in float64. A
   step is taken only if it lowers the loss, so the iterates cannot jump back out of the basin.
   Targets that are not fitted exactly have their other starts refined next, again all at once.
3. **Selection.** The lowest loss wins; its ``(theta, psi)`` are put in canonical form
   (:func:`~gaborlayer.functional.canonicalize`).

:func:`fit_response` first solves the linear least-squares problem for the free kernel that
maps ``x`` to ``y``, for the spectrum peak, and runs steps 1--2 on the response loss itself (the
grid scored and the starts refined on it: maximum likelihood under Gaussian noise on ``y``).
The response loss is a quadratic form in the kernel, ``||A k - y||^2`` with ``A`` the ``im2col``
matrix of ``x``, so it is evaluated through the Gram matrix ``A^T A`` (exactly ``F.conv2d``'s
loss, at ``O(kh^2 kw^2)`` per evaluation instead of a convolution). ``A`` itself is never formed:
``A^T A`` is the autocorrelation of the padded images less border sums, and ``A^T y`` a
cross-correlation, all by FFT in row bands (:func:`_normal_equations`), so memory stays bounded.

Where things are, in this file's order: the result (:class:`GaborFit`); the objective
(:class:`_Quadratic`) and the refinement (:func:`_levenberg_marquardt`, :func:`_bounds`; scipy's
L-BFGS-B in :func:`_refine` is kept as a benchmark anchor); step 1 (the spectrum peaks, the grid,
its three scorers and the neighbour suppression); the procedure for a chunk of targets
(:func:`_fit_chunk`) and the packaging of results; the scale handling and the poor-fit warning;
the public entries :func:`fit_kernel` and :func:`fit_response` with their input checks (from the
shared :mod:`gaborlayer._checks`). The evaluation helpers that define success (``sample_params``,
``recovery_error``, ``is_recovered``, ``add_noise``) live in :mod:`gaborlayer.testing`. tqdm (and
scipy, for the anchor) are imported only when a fit runs.
"""
from __future__ import annotations

import contextlib
import math
import sys
import time
import warnings
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from . import _checks
from ._autograd import GaborKernel2d, QuadratureMagnitude, gabor_kernel2d_forward, gabor_kernel2d_jvp
from ._family import GABOR_2D
from .functional import _bank, _pad_amounts, canonicalize

_LOG = (False, True, True, True, False)  # which coordinates are optimised as logarithms
_DTYPE = torch.float64
_EXACT = 1e-12  # relative loss below which a start is an exact fit: no other start can beat it
# Coarse-grid sizes over [0, pi) (doubled over [0, 2 pi) when psi is fixed), wavelength, width, aspect.
_GRID = {"theta": 24, "lambd": 8, "sigma": 3, "gamma": (0.6, 1.2)}


def _bank2d(values, size: tuple[int, int]) -> torch.Tensor:
    """Bank ``(*S, kh, kw)`` from the five parameters (in ``GABOR_2D.names`` order, one shape ``S``)."""
    return _bank(GABOR_2D, dict(zip(GABOR_2D.names, values)), size)


@dataclass
class GaborFit:
    """The result of :func:`fit_kernel` or :func:`fit_response`.

    ``theta`` is in ``[0, pi)`` and ``psi`` in ``(-pi, pi]`` (canonical form, see
    :func:`~gaborlayer.functional.canonicalize`). Each parameter and ``loss`` is a float64
    tensor of shape ``()`` for one target, ``(N,)`` for a batch of ``N`` kernels.

    Attributes:
        theta, sigma, lambd, gamma, psi: the recovered parameters.
        loss: the final relative loss: ``||K - T||^2 / ||T||^2`` for :func:`fit_kernel`,
            ``||conv(x, K) - y||^2 / ||y||^2`` for :func:`fit_response`.
        size: the kernel size ``(kh, kw)``.
        amplitude: the fitted gain ``A >= 0`` (the kernel is ``A`` times the unit-peak Gabor
            filter) when the fit was called with ``amplitude=True``; ones otherwise.
        history: the optimisation record of the winning start: a dict of 1-D float64 tensors
            ``"theta"``, ``"sigma"``, ``"lambd"``, ``"gamma"``, ``"psi"``, ``"loss"`` over its
            refinement's accepted steps, first entry the start (raw iterates, not canonicalised, so
            ``theta`` is continuous), plus ``"origin"``. Along one record the loss never rises.
            For a batch, a list of ``N`` such dicts.
        starts: every refined start, the winner first, each a dict like ``history``. ``"origin"``
            is ``"init"`` or ``"spectrum+grid"`` (refined on the kernel loss; for
            :func:`fit_response` on the response loss, where ``"least-squares kernel"`` marks the
            candidates of the search on the least-squares kernel). For a batch, a list of ``N`` lists.
        seconds: wall time of the fit.
    """

    theta: torch.Tensor
    sigma: torch.Tensor
    lambd: torch.Tensor
    gamma: torch.Tensor
    psi: torch.Tensor
    loss: torch.Tensor
    size: tuple[int, int]
    amplitude: torch.Tensor | None = None
    history: dict | list = field(repr=False, default_factory=dict)
    starts: list = field(repr=False, default_factory=list)
    seconds: float = 0.0

    def params(self) -> dict[str, torch.Tensor]:
        """The five parameters as a dict (``gabor_kernel2d(**fit.params(), size=fit.size)``)."""
        return {name: getattr(self, name) for name in GABOR_2D.names}

    def __post_init__(self):
        if self.amplitude is None:
            self.amplitude = torch.ones_like(self.theta)

    def kernel(self) -> torch.Tensor:
        """The fitted kernel ``(kh, kw)``, or ``(N, kh, kw)`` for a batch, in float64
        (times ``amplitude``)."""
        return self.amplitude[..., None, None] * _bank(GABOR_2D, self.params(), self.size)

    def __repr__(self) -> str:
        def show(t):
            return f"{t.item():.4f}" if t.dim() == 0 else f"<{tuple(t.shape)}>"
        body = ", ".join(f"{name}={show(getattr(self, name))}" for name in (*GABOR_2D.names, "amplitude", "loss"))
        return f"GaborFit({body}, size={self.size})"


def _single_threaded_blas():
    """L-BFGS-B calls BLAS on vectors of length <= 5; a multi-threaded BLAS then spends ~10 ms
    per iteration waking threads (measured 40x slower on 2 cores), so pin it to one thread."""
    try:  # a scipy dependency's dependency in practice; optional here
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover
        return contextlib.nullcontext()
    return threadpool_limits(1, user_api="blas")


# -- the objective and the refinement -------------------------------------------------------------
class _Quadratic:
    """The relative loss ``(k^T Q k - 2 b^T k + c) / c`` of flattened kernels ``k``.

    ``Q = I`` (``gram=None``) gives ``||k - b||^2 / ||b||^2``, the kernel loss; ``Q = A^T A``,
    ``b = A^T y``, ``c = ||y||^2`` give the response loss ``||A k - y||^2 / ||y||^2``.
    With ``amplitude=True`` the kernel is scaled by its best gain ``a = b^T k / k^T Q k``
    (variable projection), which leaves ``(c - (b^T k)^2 / k^T Q k) / c``; autograd through
    that expression is the exact gradient of the projected loss. ``b`` is one target ``(P,)``
    with ``c`` a float, or one per kernel, ``(M, P)`` with ``c`` a tensor ``(M,)``. The kernel
    loss is computed from the residual itself (exact down to float64's rounding of the residual,
    not of ``c``), which lets the refinement converge on exact fits.
    """

    def __init__(self, b: torch.Tensor, c, gram: torch.Tensor | None, size: tuple[int, int],
                 amplitude: bool = False):
        self.b, self.c, self.gram, self.size, self.amplitude = b, c, gram, size, amplitude

    def subset(self, index: torch.Tensor) -> _Quadratic:
        """The objective of the kernels ``index`` (one row each; a single target is shared)."""
        if self.b.dim() == 1:
            return self
        return _Quadratic(self.b[index], self.c[index], self.gram, self.size, self.amplitude)

    def _quad(self, kernels: torch.Tensor) -> torch.Tensor:
        if self.gram is None:
            return kernels.square().sum(-1)
        return ((kernels @ self.gram) * kernels).sum(-1)

    def __call__(self, kernels: torch.Tensor) -> torch.Tensor:
        """Losses ``(M,)`` of kernels ``(M, kh*kw)``."""
        cross = (kernels * self.b).sum(-1)
        if self.gram is None:
            if self.amplitude:
                kernels = (cross / self._quad(kernels).clamp_min(torch.finfo(kernels.dtype).tiny))[..., None] * kernels
            return (self.b - kernels).square().sum(-1) / self.c
        quad = self._quad(kernels)
        if self.amplitude:  # a kernel that vanishes (quad = 0) explains nothing: loss 1
            return 1 - cross.square() / (quad.clamp_min(torch.finfo(quad.dtype).tiny) * self.c)
        return (quad - 2 * cross + self.c) / self.c

    def gains(self, kernels: torch.Tensor) -> torch.Tensor:
        """The best amplitudes ``(M,)`` of kernels ``(M, kh*kw)`` (ones without ``amplitude``)."""
        if not self.amplitude:
            return torch.ones(kernels.shape[0], dtype=kernels.dtype)
        quad = self._quad(kernels)
        return torch.where(quad > 0, (kernels * self.b).sum(-1) / quad.clamp_min(torch.finfo(quad.dtype).tiny), 0.0)

    def value_and_grad(self, params: np.ndarray) -> tuple[float, np.ndarray]:
        """Loss and gradient in the five natural parameters, through the analytic Function."""
        leaves = [torch.tensor(params[i:i + 1], dtype=_DTYPE, requires_grad=True) for i in range(5)]
        kernel = GaborKernel2d.apply(*leaves, *self.size).reshape(1, -1)
        loss = self(kernel)[0]
        grads = torch.autograd.grad(loss, leaves)
        return loss.item(), np.array([g.item() for g in grads])

    def gauss_newton(self, kernels: torch.Tensor, jac: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Gradient ``(M, F)`` and Gauss-Newton Hessian ``(M, F, F)`` of the loss for kernels ``(M, P)``
        with Jacobians ``jac`` ``(M, P, F)``. With ``amplitude`` the Jacobian is that of the projected
        kernel ``a(k) k`` (the gain's derivative included: exact, not Kaufman's approximation)."""
        gram = self.gram
        q_k = kernels if gram is None else kernels @ gram
        q_jac = jac if gram is None else torch.einsum("pq,mqf->mpf", gram, jac)
        c = torch.as_tensor(self.c, dtype=kernels.dtype)
        c = c[:, None] if c.dim() else c
        b = self.b
        if self.amplitude:
            quad = (kernels * q_k).sum(-1).clamp_min(torch.finfo(kernels.dtype).tiny)
            gain = (kernels * b).sum(-1) / quad
            d_gain = torch.einsum("mpf,mp->mf", jac, b - 2 * gain[:, None] * q_k) / quad[:, None]
            jac = torch.addcmul(gain[:, None, None] * jac, kernels[:, :, None], d_gain[:, None, :])
            q_jac = jac if gram is None else torch.addcmul(gain[:, None, None] * q_jac, q_k[:, :, None],
                                                           d_gain[:, None, :])
            q_k = gain[:, None] * q_k
        grad = 2 * torch.einsum("mpf,mp->mf", jac, q_k - b) / c
        hessian = 2 * torch.einsum("mpf,mpg->mfg", jac, q_jac) / c[..., None]
        return grad, hessian


def _kernels(params: torch.Tensor, size) -> torch.Tensor:
    """Flat kernels ``(M, kh*kw)`` of natural parameters ``(M, 5)`` (float64)."""
    return gabor_kernel2d_forward(params.unbind(1), size).reshape(params.shape[0], -1)


def _jacobian(params: torch.Tensor, free: list[int], size) -> torch.Tensor:
    """``dK/dp`` ``(M, kh*kw, F)`` for the ``free`` natural parameters, by one jvp per parameter."""
    columns, ones = params.unbind(1), torch.ones(params.shape[0], dtype=params.dtype)
    return torch.stack([gabor_kernel2d_jvp(columns, [ones if j == i else None for j in range(5)], size)
                        .reshape(params.shape[0], -1) for i in free], -1)


class _Refined(NamedTuple):
    """The ends of a batch of refinements: parameters ``(M, 5)``, losses ``(M,)`` and each
    problem's record (rows: the five parameters and the loss, first row the start)."""

    params: torch.Tensor
    loss: torch.Tensor
    records: list[torch.Tensor]


_FTOL = 1e-9  # relative loss decrease of an accepted step below which a refinement stops
_STALL, _STALL_FTOL = 10, 1e-6  # ... and of _STALL iterations
_MAX_ITER = 100  # iterations at most (an exact fit takes 10-30; the rest are targets no Gabor filter fits)


def _levenberg_marquardt(objective: _Quadratic, start: torch.Tensor, free: list[int], bounds: list,
                         max_iter: int | None = None) -> _Refined:
    """Refine ``M`` problems at once from ``start`` ``(M, 5)`` (natural parameters) over the ``free``
    coordinates, by damped Gauss-Newton (Levenberg-Marquardt) with per-problem damping.

    The coordinates are ``theta``, ``log sigma``, ``log lambd``, ``log gamma``, ``psi`` (``_LOG``),
    clipped to the box ``bounds``. Each step solves ``(H + mu diag H) d = -g`` (batched 5 x 5
    solves) and is taken only if the loss falls (the damping then shrinks; otherwise it grows and
    the step is retried), so along each record the loss never rises. A problem stops when the
    step's predicted decrease is below float64's resolution of its loss, its loss is zero to
    rounding, or the damping has grown past any useful step; only unfinished problems are computed.
    """
    size = objective.size
    m = start.shape[0]
    logs = torch.tensor([_LOG[i] for i in free])
    lower = torch.tensor([lo for lo, _ in bounds], dtype=_DTYPE)
    upper = torch.tensor([hi for _, hi in bounds], dtype=_DTYPE)
    params = start.to(_DTYPE).clone()
    z = torch.where(logs, params[:, free].log(), params[:, free]).clamp(lower, upper)

    def natural(rows: torch.Tensor, z_rows: torch.Tensor) -> torch.Tensor:
        p = rows.clone()
        p[:, free] = torch.where(logs, z_rows.exp(), z_rows)
        return p

    params = natural(params, z)
    kernels = _kernels(params, size)
    loss = objective(kernels)
    steps = [(torch.arange(m), torch.cat([params, loss[:, None]], 1))]  # the start (inside the box)
    damping = torch.full((m,), 1e-3, dtype=_DTYPE)
    grad = torch.zeros(m, len(free), dtype=_DTYPE)
    hessian = torch.zeros(m, len(free), len(free), dtype=_DTYPE)
    stale = torch.ones(m, dtype=torch.bool)  # moved since its gradient and Hessian were computed
    checkpoint = loss.clone()  # the loss _STALL iterations ago
    active = torch.arange(m)
    eye = torch.eye(len(free), dtype=_DTYPE)
    for iteration in range(1, (max_iter or _MAX_ITER) + 1):
        if active.numel() == 0:
            break
        update = active[stale[active]]
        if update.numel():
            p = params[update]
            jac = _jacobian(p, free, size) * torch.where(logs, p[:, free], 1.0)[:, None, :]  # chain rule to z
            grad[update], hessian[update] = objective.subset(update).gauss_newton(kernels[update], jac)
            stale[update] = False
        sub = objective.subset(active)
        p, z_a, loss_a, mu = params[active], z[active], loss[active], damping[active]
        g, h = grad[active], hessian[active]
        # a coordinate on its bound with the descent pointing out of the box is held (projected Newton)
        held = ((z_a <= lower) & (g > 0)) | ((z_a >= upper) & (g < 0))
        g = g.masked_fill(held, 0.0)
        h = h.masked_fill(held[:, :, None] | held[:, None, :], 0.0) + torch.diag_embed(held.to(_DTYPE))
        diag = torch.diagonal(h, dim1=-2, dim2=-1)
        scale = diag.clamp_min(1e-12 * diag.amax(-1, keepdim=True) + 1e-300)
        delta, info = torch.linalg.solve_ex(h + (mu[:, None] * scale)[..., None] * eye, -g)
        delta = torch.where((info == 0)[:, None] & torch.isfinite(delta), delta, 0.0)
        z_new = (z_a + delta).clamp(lower, upper)
        step = z_new - z_a  # after clipping
        predicted = -(g * step).sum(-1) - 0.5 * torch.einsum("mf,mfg,mg->m", step, h, step)
        p_new = natural(p, z_new)
        k_new = _kernels(p_new, size)
        loss_new = sub(k_new)
        accept = loss_new < loss_a  # NaN compares False
        idx = active[accept]
        z[idx], params[idx], loss[idx], kernels[idx] = z_new[accept], p_new[accept], loss_new[accept], k_new[accept]
        stale[idx] = True
        steps.append((idx, torch.cat([p_new[accept], loss_new[accept, None]], 1)))
        damping[active] = torch.where(accept, (mu / 3).clamp_min(1e-12), mu * 8)
        # Stop: the model promises less than the loss can resolve (relative to the loss for the
        # kernel form, computed from the residual; absolute for the Gram form, which cancels at
        # the scale of c), an accepted step gained less than a share _FTOL, or the last _STALL
        # iterations together less than _STALL_FTOL (an exact fit converges quadratically, so
        # these two stop only inexact ones, in the flat valleys of a target that is no Gabor
        # filter), the loss is zero to rounding, or no damping gives a step that lowers it.
        resolution = 1e-15 * (loss_a if objective.gram is None else torch.ones_like(loss_a))
        done = ((predicted <= resolution) | (accept & (loss_a - loss_new <= _FTOL * loss_a))
                | (loss[active] <= 1e-28) | (damping[active] > 1e10) | ~torch.isfinite(predicted))
        if iteration % _STALL == 0:
            done |= checkpoint[active] - loss[active] <= _STALL_FTOL * checkpoint[active]
            checkpoint[active] = loss[active]
        active = active[~done]
    index = torch.cat([i for i, _ in steps])
    rows = torch.cat([r for _, r in steps])
    order = torch.sort(index, stable=True).indices
    records = list(torch.split(rows[order], torch.bincount(index, minlength=m).tolist()))
    return _Refined(params, loss, records)


def _refine(objective: _Quadratic, start: np.ndarray, free: list[int], bounds: list, max_iter: int = 400):
    """L-BFGS-B (scipy) from ``start`` (five natural parameters) over the ``free`` coordinates: the
    one-problem quasi-Newton refinement the library used before the batched
    :func:`_levenberg_marquardt`, kept as an anchor for ``benchmarks/recovery.py``.

    Returns the final parameters, the final loss and the record of iterates (rows: the five
    parameters and the loss, first row the start).
    """
    from scipy.optimize import minimize  # scipy only when a fit runs

    natural = start.astype(np.float64).copy()

    def to_z(p):
        return np.array([math.log(p[i]) if _LOG[i] else p[i] for i in free])

    def to_params(z):
        p = natural.copy()
        for j, i in enumerate(free):
            p[i] = math.exp(z[j]) if _LOG[i] else z[j]
        return p

    def fun(z):
        p = to_params(z)
        loss, grad = objective.value_and_grad(p)
        chain = np.array([grad[i] * (p[i] if _LOG[i] else 1.0) for i in free])
        return loss, chain

    record = [np.append(natural, objective.value_and_grad(natural)[0])]

    def callback(intermediate_result):
        record.append(np.append(to_params(intermediate_result.x), intermediate_result.fun))

    z0 = np.clip(to_z(natural), [lo for lo, _ in bounds], [hi for _, hi in bounds])
    result = minimize(fun, z0, jac=True, method="L-BFGS-B", bounds=bounds, callback=callback,
                      options={"maxiter": max_iter, "ftol": 1e-15, "gtol": 1e-11, "maxcor": 20})
    final = to_params(result.x)
    return final, float(result.fun), np.stack(record)


def _bounds(free: list[int], size: tuple[int, int]) -> list[tuple[float, float]]:
    """Box bounds of the ``free`` coordinates (theta and psi unbounded, the rest as logarithms)."""
    span = max(size)
    limits = {1: (math.log(0.3), math.log(4.0 * span)),                  # sigma
              2: (math.log(_checks.LAMBD_FLOOR), math.log(8.0 * span)),  # lambd
              3: (math.log(0.1), math.log(10.0))}                        # gamma
    return [limits.get(i, (-math.inf, math.inf)) for i in free]




# -- step 1: spectrum peak and coarse grid, for a batch of targets ----------------------------------
def _spectrum_peaks(targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(theta, lambd)`` ``(G,)`` at the peak of each zero-padded magnitude spectrum of targets
    ``(G, kh, kw)`` (``lambd`` is inf where the peak is at zero frequency)."""
    g, kh, kw = targets.shape
    n = max(min(64, 8 * max(kh, kw)), 4 * max(kh, kw))  # zero-padded 4-8 times (at least 64 from 8 taps)
    fy = torch.fft.fftfreq(n, dtype=_DTYPE)[:, None]
    fx = torch.fft.fftfreq(n, dtype=_DTYPE)[None, :]
    aliases = (fx.square() + fy.square()) > 0.25  # beyond Nyquist
    step = max(1, _BANK_ELEMENTS // (n * n))
    idx = torch.cat([torch.fft.fft2(t - t.mean((-2, -1), keepdim=True), s=(n, n)).abs().masked_fill_(aliases, 0)
                     .reshape(len(t), -1).argmax(-1) for t in targets.split(step)])
    f_y, f_x = fy[idx // n, 0], fx[0, idx % n]
    return torch.atan2(f_y, f_x), 1.0 / torch.hypot(f_x, f_y)


_MESH = ("theta", "sigma", "lambd", "gamma")  # the searched axes, psi being solved for


class _Grid(NamedTuple):
    """The coarse grid shared by targets with the same fixed values: its axes, every combination
    of them (``points``: four float64 ``(M,)`` in ``_MESH`` order), their unit-peak kernels in
    float32 (``(M, P)`` at the fixed psi, or the even and odd ones ``(2, M, P)``), the fixed psi
    (or None) and the period of theta (``2 pi`` when psi is fixed, else ``pi``)."""

    axes: dict
    points: dict
    banks: torch.Tensor
    psi: float | None
    period: float
    fixed: tuple[str, ...]


def _grid_points(size, fixed: dict[str, float], offset: float, period: float, counts: dict
                 ) -> tuple[dict, dict]:
    """The axes of a coarse grid for kernels of ``size`` (``counts`` values each: theta evenly over
    ``period`` from ``offset`` steps, lambd in ``[2, 1.2 size]`` log-spaced (or with
    ``uniform_frequency`` evenly in ``1 / lambd``) and sigma in ``[1, size / 2.5]`` log-spaced, gamma
    as given), a ``fixed`` value (floats by name) in place of its axis; and every
    combination of them, four float64 ``(M,)`` in ``_MESH`` order."""
    span, floor = max(size), _checks.LAMBD_FLOOR

    def geometric(lo, hi, n):
        return torch.exp(torch.linspace(math.log(lo), math.log(hi), n, dtype=_DTYPE))

    longest = max(2.0 * floor, 1.2 * span)
    if counts.get("uniform_frequency"):  # the magnitude's grid: even steps in 1 / lambd
        lambd = 1 / torch.linspace(1 / longest, 1 / floor, counts["lambd"], dtype=_DTYPE)
    else:
        lambd = geometric(floor, longest, counts["lambd"])
    axes = {"theta": (torch.arange(counts["theta"], dtype=_DTYPE) + offset) * (period / counts["theta"]),
            "lambd": lambd,
            "sigma": geometric(1.0, max(1.5, span / 2.5), counts["sigma"]),
            "gamma": torch.tensor(counts["gamma"], dtype=_DTYPE)}
    for name, value in fixed.items():
        if name != "psi":
            axes[name] = torch.tensor([value], dtype=_DTYPE)
    mesh = torch.meshgrid(*(axes[name] for name in _MESH), indexing="ij")
    return axes, {name: m.reshape(-1) for name, m in zip(_MESH, mesh)}


def _grid(size, fixed: dict[str, float], offset: float) -> _Grid:
    """The grid for ``size`` and the ``fixed`` values (floats by name) with the theta axis offset:
    ``_GRID``, its theta count doubled over ``[0, 2 pi)`` when psi is fixed."""
    period = 2 * math.pi if "psi" in fixed else math.pi
    counts = _GRID if period == math.pi else {**_GRID, "theta": 2 * _GRID["theta"]}
    axes, points = _grid_points(size, fixed, offset, period, counts)
    return _Grid(axes, points, _unit_banks(points, fixed.get("psi"), size), fixed.get("psi"), period, tuple(fixed))


def _unit_banks(points: dict, psi: float | None, size) -> torch.Tensor:
    """Float32 kernels of grid points (``_MESH`` tensors of one shape ``S``): ``(*S, P)`` at the fixed
    ``psi``, or the even (psi = 0) and odd (psi = -pi/2) ones ``(2, *S, P)``, with which
    ``K(psi) = cos(psi) C - sin(psi) S``."""
    args = [points[name].to(torch.float32) for name in _MESH]
    shape = args[0].shape
    if psi is not None:
        return _bank2d([*args, torch.full(shape, psi)], size).reshape(*shape, -1)
    phases = torch.tensor([0.0, -math.pi / 2]).reshape(2, *(1,) * len(shape)).expand(2, *shape)
    return _bank2d([*(a.expand(2, *shape) for a in args), phases], size).reshape(2, *shape, -1)


# Scorers: from the float32 inner products of a point's kernels with a unit-norm target and the
# target's norm ``scale`` (float64), the relative losses (float64) and the best psi at each point.
def _score_psi_fixed(kk, kt, scale, psi: float, amplitude: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """psi held at a known value: one kernel per point (and its best gain with ``amplitude``)."""
    kk, kt = kk.to(_DTYPE), kt.to(_DTYPE)
    score = 1 - kt.square() / kk.clamp_min(1e-30) if amplitude else kk / scale.square() - 2 * kt / scale + 1
    return score, torch.full_like(score, psi)


def _score_free_gain(products: tuple, scale) -> tuple[torch.Tensor, torch.Tensor]:
    """Free psi and gain: ``A K(psi) = alpha C + beta S`` is linear in ``(alpha, beta) =
    A (cos psi, -sin psi)``, a 2 x 2 least-squares problem per point (C and S are independent for
    lambd > 2)."""
    cc, ss, cs, ct, st = (p.to(_DTYPE) for p in products)
    det = (cc * ss - cs.square()).clamp_min(1e-30)
    alpha, beta = (ss * ct - cs * st) / det, (cc * st - cs * ct) / det
    return 1 - alpha * ct - beta * st, torch.atan2(-beta, alpha)


def _score_unit_gain(products: tuple, scale) -> tuple[torch.Tensor, torch.Tensor]:
    """Free psi at unit amplitude: ``loss(psi) = (cc cos^2 + ss sin^2 - 2 cs cos sin) / s^2
    - 2 (ct cos - st sin) / s + 1``, minimised over a 5-degree psi grid (five numbers per point)."""
    cc, ss, cs, ct, st = (p.to(_DTYPE) for p in products)
    quad = (cc / scale.square(), ss / scale.square(), cs / scale.square())
    ct, st = ct / scale, st / scale
    best, where = None, None
    for psi in torch.linspace(-math.pi, math.pi, 73, dtype=_DTYPE)[:-1]:
        cos, sin = math.cos(psi), math.sin(psi)
        loss = quad[0] * cos**2 + quad[1] * sin**2 - 2 * quad[2] * cos * sin - 2 * (ct * cos - st * sin) + 1
        if best is None:
            best, where = loss, torch.full_like(loss, psi.item())
        else:
            better = loss < best
            best, where = torch.where(better, loss, best), torch.where(better, psi, where)
    return best, where


def _score(banks: torch.Tensor, cross, quad, grid: _Grid, scale, amplitude: bool
           ) -> tuple[torch.Tensor, torch.Tensor]:
    """Scores and best psi of points whose banks are ``banks`` (as :func:`_unit_banks`); ``cross(k)``
    gives the inner products of kernels ``k`` with their targets, ``quad(k1, k2)`` the quadratic
    form of two kernels (``k1 . k2``, or ``k1^T A^T A k2`` for the response loss)."""
    def own(norms, crossed):  # a point's own products, broadcast over the targets' axis
        return norms.reshape(norms.shape + (1,) * (crossed.dim() - norms.dim()))

    if grid.psi is not None:
        kt = cross(banks)
        return _score_psi_fixed(own(quad(banks, banks), kt), kt, scale, grid.psi, amplitude)
    c, s = banks[0], banks[1]
    ct, st = cross(c), cross(s)
    products = own(quad(c, c), ct), own(quad(s, s), ct), own(quad(c, s), ct), ct, st
    return (_score_free_gain if amplitude else _score_unit_gain)(products, scale)


_BANK_ELEMENTS = 1 << 21  # taps per bank build in the search (bounds its float32 temporaries to ~100 MB)


def _extra_points(grid: _Grid, theta_p: torch.Tensor, lambd_p: torch.Tensor) -> tuple[dict, torch.Tensor]:
    """Each target's points from its spectrum peak ``(theta_p, lambd_p)`` ``(G,)``: the peak's two
    orientations across the grid's wavelengths and the peak's, and the grid's orientations at the
    peak's wavelength. Returns ``_MESH`` tensors ``(G, E)`` and which of them are searched
    (orientations and wavelengths that are fixed are not; nor a peak at zero frequency or below
    the Nyquist wavelength)."""
    g = theta_p.shape[0]
    axes = grid.axes
    n_s, n_g = len(axes["sigma"]), len(axes["gamma"])
    has_peak = torch.isfinite(lambd_p)
    lambd_ok = has_peak & (lambd_p >= _checks.LAMBD_FLOOR) & ("lambd" not in grid.fixed)
    lambd_p = torch.where(lambd_ok, lambd_p, axes["lambd"][0])
    # part A: theta_p and theta_p + pi (mod the period) x (grid wavelengths, lambd_p)
    theta_a = (torch.stack([theta_p, theta_p + math.pi], 1) % grid.period)          # (G, 2)
    lambd_a = torch.cat([axes["lambd"].expand(g, -1), lambd_p[:, None]], 1)          # (G, L + 1)
    ok_a = (has_peak & ("theta" not in grid.fixed))[:, None, None] & torch.cat(
        [torch.ones(g, len(axes["lambd"]), dtype=torch.bool), lambd_ok[:, None]], 1)[:, None, :]
    shape_a = (g, 2, lambd_a.shape[1], n_s, n_g)
    part_a = {"theta": theta_a[:, :, None, None, None], "lambd": lambd_a[:, None, :, None, None],
              "sigma": axes["sigma"][None, None, None, :, None], "gamma": axes["gamma"][None, None, None, None, :]}
    # part B: the grid's orientations x lambd_p
    shape_b = (g, len(axes["theta"]), n_s, n_g)
    part_b = {"theta": axes["theta"][None, :, None, None], "lambd": lambd_p[:, None, None, None],
              "sigma": axes["sigma"][None, None, :, None], "gamma": axes["gamma"][None, None, None, :]}
    points = {name: torch.cat([part_a[name].expand(shape_a).reshape(g, -1),
                               part_b[name].expand(shape_b).reshape(g, -1)], 1) for name in _MESH}
    valid = torch.cat([ok_a[..., None, None].expand(shape_a).reshape(g, -1),
                       lambd_ok[:, None].expand(g, shape_b[1] * n_s * n_g)], 1)
    return points, valid


def _suppress(score: torch.Tensor, theta: torch.Tensor, lambd: torch.Tensor, period: float,
              n_keep: int, theta_tol: float = 2.5 * math.pi / _GRID["theta"], frequency_tol: float | None = None
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """Non-maximum suppression in (theta, lambd), per row of ``(G, M)``: the indices ``(G, n_keep)``
    of up to ``n_keep`` best points, each outside the neighbourhood of those before it (distinct
    basins, not neighbours of one), and which of them exist. Neighbours: theta within
    ``theta_tol`` and lambd within a factor ``e^0.3``, or with ``frequency_tol`` ``1 / lambd``
    within it."""
    open_ = torch.isfinite(score)
    chosen, exists = [], []
    for _ in range(n_keep):
        idx = torch.where(open_, score, math.inf).argmin(1, keepdim=True)
        exists.append(open_.any(1))
        chosen.append(idx[:, 0])
        d_theta = torch.remainder(theta - theta.gather(1, idx), period)
        d_theta = torch.minimum(d_theta, period - d_theta)
        if frequency_tol is None:
            close = torch.log(lambd / lambd.gather(1, idx)).abs() < 0.3
        else:
            close = (1 / lambd - 1 / lambd.gather(1, idx)).abs() < frequency_tol
        open_ &= ~((d_theta < theta_tol) & close)
    return torch.stack(chosen, 1), torch.stack(exists, 1)


def _grid_candidates(targets: torch.Tensor, objective: _Quadratic, grid: _Grid, n_keep: int
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """The best ``n_keep`` distinct points of the grid and of each target's own spectrum-peak points,
    for targets ``(G, kh, kw)`` whose loss is ``objective`` (the kernel loss, or for one target the
    response loss: then the search scores the response loss itself, and the target, the
    least-squares kernel, gives only the spectrum peak): five parameters ``(G, n_keep, 5)`` (fixed
    ones not yet in place) and which exist. Scores use ``b / sqrt(c)`` in float32 and are combined
    with ``sqrt(c)`` in float64, so any finite scale is scored without overflow; ``_CHUNK_TARGETS``
    targets at a time, which bounds the score tables."""
    found = [_chunk_candidates(targets[lo:lo + _CHUNK_TARGETS], objective.subset(torch.arange(lo, min(
        lo + _CHUNK_TARGETS, len(targets)))), grid, n_keep) for lo in range(0, len(targets), _CHUNK_TARGETS)]
    return torch.cat([params for params, _ in found]), torch.cat([exists for _, exists in found])


def _chunk_candidates(targets: torch.Tensor, objective: _Quadratic, grid: _Grid, n_keep: int
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    g, kh, kw = targets.shape
    amplitude = objective.amplitude
    scale = torch.as_tensor(objective.c, dtype=_DTYPE).reshape(-1).sqrt()
    unit = (objective.b.reshape(-1, kh * kw) / scale[:, None]).to(torch.float32)
    if objective.gram is None:
        def quad(k1, k2):
            return (k1 * k2).sum(-1)
    else:
        gram = objective.gram.to(torch.float32)

        def quad(k1, k2):
            return ((k1 @ gram) * k2).sum(-1)
    base_score, base_psi = _score(grid.banks, lambda k: k @ unit.T, quad, grid, scale, amplitude)  # (M, G)
    theta_p, lambd_p = _spectrum_peaks(targets)
    extra, valid = _extra_points(grid, theta_p, lambd_p)
    per_build = max(1, _BANK_ELEMENTS // (2 * extra["theta"].shape[1] * kh * kw))
    scores, psis = [], []
    for lo in range(0, g, per_build):
        rows = slice(lo, lo + per_build)
        banks = _unit_banks({name: v[rows] for name, v in extra.items()}, grid.psi, (kh, kw))
        score, psi = _score(banks, lambda k, t=unit[rows]: torch.einsum("gep,gp->ge", k, t), quad, grid,
                            scale[rows, None], amplitude)
        scores.append(score)
        psis.append(psi)
    extra_score = torch.cat(scores).masked_fill(~valid, math.inf)
    score = torch.cat([base_score.T, extra_score], 1)
    psi = torch.cat([base_psi.T, torch.cat(psis)], 1)
    columns = {name: torch.cat([grid.points[name].expand(g, -1), extra[name]], 1) for name in _MESH}
    chosen, exists = _suppress(score, columns["theta"], columns["lambd"], grid.period, n_keep)
    params = torch.stack([columns[name].gather(1, chosen) for name in _MESH] + [psi.gather(1, chosen)], -1)
    return params, exists


# -- the procedure --------------------------------------------------------------------------------
@dataclass(eq=False)
class _Run:
    """One refined start: its origin, the record of iterates (rows: five parameters and the loss,
    first row the start) and the final parameters and loss."""

    origin: str
    record: torch.Tensor
    params: torch.Tensor
    loss: float


@dataclass
class _OneFit:
    """The fit of one target: the winning (raw) parameters, loss and gain, and every run, winner first."""

    params: torch.Tensor
    loss: float
    gain: float
    runs: list[_Run]


def _index(name: str) -> int:
    return GABOR_2D.names.index(name)


def _starts(targets: torch.Tensor, objective: _Quadratic, grid: _Grid, fixed: dict, init: dict,
            n_keep: int, also: _Quadratic | None = None) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """The starts of targets ``(G, kh, kw)``: five parameters ``(G, S, 5)``, lowest starting loss
    first (an exact fit ends the search, so a good init saves time), which exist ``(G, S)``, and
    their origins ``(G, S)`` as a nested list. They are the caller's ``init`` completed by the best
    grid point, then the grid candidates (and those of the search on ``also``, the kernel loss of
    the targets, where ``objective`` is a response loss), with the ``fixed`` values (tensors
    ``(G,)``) in place."""
    g = targets.shape[0]
    candidates, exists = _grid_candidates(targets, objective, grid, n_keep)
    origins = ["spectrum+grid"] * n_keep
    if also is not None:
        more, more_exist = _grid_candidates(targets, also, grid, n_keep)
        candidates, exists = torch.cat([candidates, more], 1), torch.cat([exists, more_exist], 1)
        origins += ["least-squares kernel"] * n_keep
    if init:
        seeded = candidates[:, :1].clone()
        for name, value in init.items():
            seeded[:, 0, _index(name)] = value
        candidates = torch.cat([seeded, candidates], 1)
        exists = torch.cat([exists[:, :1], exists], 1)
        origins = ["init", *origins]
    for name, value in fixed.items():
        candidates[:, :, _index(name)] = value[:, None]
    s = candidates.shape[1]
    owner, flat = torch.arange(g).repeat_interleave(s), candidates.reshape(-1, 5)
    step = max(1, _BANK_ELEMENTS // (objective.size[0] * objective.size[1]))
    first = torch.cat([objective.subset(owner[lo:lo + step])(_kernels(flat[lo:lo + step], objective.size))
                       for lo in range(0, len(flat), step)])
    order = torch.sort(first.reshape(g, s).masked_fill(~exists, math.inf), dim=1, stable=True).indices
    ranked = [[origins[j] for j in row] for row in order.tolist()]
    return candidates.gather(1, order[..., None].expand(-1, -1, 5)), exists.gather(1, order), ranked


def _refine_batch(objective: _Quadratic, problems: list[tuple[int, int]], starts: torch.Tensor, free: list[int],
                  bounds: list, bar=None) -> list[tuple[torch.Tensor, float, torch.Tensor]]:
    """Refine the starts ``starts[g, s]`` of ``problems`` (pairs ``(g, s)``) together, in chunks of
    bounded memory (advancing the progress ``bar``, if any, by each chunk's size); for each, the
    final parameters, loss and record."""
    if not problems:
        return []
    index = torch.tensor(problems)
    chunk = max(1, _REFINE_ELEMENTS // (objective.size[0] * objective.size[1] * len(free)))
    out = []
    for lo in range(0, len(problems), chunk):
        part = index[lo:lo + chunk]
        refined = _levenberg_marquardt(objective.subset(part[:, 0]), starts[part[:, 0], part[:, 1]], free, bounds)
        out += zip(refined.params.unbind(0), refined.loss.tolist(), refined.records)
        if bar is not None:
            bar.update(len(part))
    return out


_REFINE_ELEMENTS = 1 << 21  # Jacobian entries per refinement chunk (float64 temporaries of ~100 MB)


def _fit_chunk(targets: torch.Tensor, objective: _Quadratic, grid: _Grid, fixed: dict, init: dict,
               n_keep: int, bar=None, also: _Quadratic | None = None) -> list[_OneFit]:
    """Fit targets ``(G, kh, kw)`` together; ``objective`` is their loss (the kernel loss, or for
    one target the response loss: see :func:`_grid_candidates`), ``fixed`` and ``init`` map names
    to tensors ``(G,)``; ``also``: a second loss whose grid candidates are starts too (see
    :func:`_starts`).

    Every target's best start is refined first, all at once; the targets it does not fit exactly
    have their other starts refined next, all at once. ``bar``: a progress bar counting refined
    starts (its total is raised by the further starts)."""
    size = objective.size
    g = targets.shape[0]
    free = [i for i, name in enumerate(GABOR_2D.names) if name not in fixed]
    starts, exists, origins = _starts(targets, objective, grid, fixed, init, n_keep, also)
    final = objective
    if not free:
        p = starts[:, 0]
        final = final.subset(torch.arange(g))
        loss, gains = final(_kernels(p, size)), final.gains(_kernels(p, size))
        return [_OneFit(p[i], loss[i].item(), gains[i].item(),
                        [_Run(origins[i][0], torch.cat([p[i], loss[i:i + 1]])[None], p[i], loss[i].item())])
                for i in range(g)]
    bounds = _bounds(free, size)
    runs: list[list[_Run]] = [[] for _ in range(g)]

    def refine(problems):
        for (i, s), (p, loss, record) in zip(problems, _refine_batch(objective, problems, starts, free, bounds, bar)):
            runs[i].append(_Run(origins[i][s], record, p, loss))

    refine([(i, 0) for i in range(g)])
    later = [(i, s) for i in range(g) if runs[i][0].loss >= _EXACT for s in range(1, starts.shape[1])
             if bool(exists[i, s])]
    if bar is not None and later:
        bar.total += len(later)
        bar.refresh()
    refine(later)
    results = []
    for i in range(g):
        winner = min(runs[i], key=lambda run: run.loss)  # the first of the lowest
        results.append(_OneFit(winner.params, winner.loss, 0.0, [winner, *(r for r in runs[i] if r is not winner)]))
    winners = torch.stack([r.params for r in results])
    gains = final.subset(torch.arange(g)).gains(_kernels(winners, size))
    for result, gain in zip(results, gains.tolist()):
        result.gain = gain
    return results


_RECORD = (*GABOR_2D.names, "loss")


def _as_history(run: _Run) -> dict:
    history = dict(zip(_RECORD, run.record.unbind(1)))
    history["loss"] = history["loss"].clamp_min(0)  # the Gram form rounds an exact fit to about -1e-15
    history["origin"] = run.origin
    return history


def _package(results: list[_OneFit], size, batched: bool, seconds: float) -> GaborFit:
    params = torch.stack([r.params for r in results]).to(_DTYPE)
    gain = torch.tensor([r.gain for r in results], dtype=_DTYPE)
    # A negative gain is a positive one with psi + pi.
    theta, psi = canonicalize(params[:, 0], params[:, 4] + math.pi * (gain < 0))
    loss = torch.tensor([r.loss for r in results], dtype=_DTYPE).clamp_min(0)
    values = dict(theta=theta, sigma=params[:, 1], lambd=params[:, 2], gamma=params[:, 3], psi=psi, loss=loss,
                  amplitude=gain.abs())
    starts = [[_as_history(run) for run in r.runs] for r in results]
    history = [s[0] for s in starts]
    if not batched:
        values = {k: v[0] for k, v in values.items()}
        starts, history = starts[0], history[0]
    return GaborFit(**values, size=size, history=history, starts=starts, seconds=seconds)


# -- the public entries and their input checks -------------------------------------------------------
def _check_size(kh: int, kw: int, name: str) -> None:
    if kh < 3 or kw < 3:
        raise ValueError(f"{name} must be at least 3 x 3 to identify a Gabor filter, got ({kh}, {kw})")


def _check_fixed_init(fixed, init, n: int, counts: str | None = None) -> tuple[dict, dict]:
    """``fixed`` and ``init`` as float64 tensors ``(n,)`` by name (``n`` targets; ``counts``: how
    many values each may have, in words, if not one or ``n``)."""
    fixed_t = _checks.per_target(fixed, "fixed", GABOR_2D.names, _checks.BANK_BOUNDS, n, counts=counts)
    init_t = _checks.per_target(init, "init", GABOR_2D.names, _checks.LAYER_BOUNDS, n, counts=counts)
    both = sorted(set(fixed_t) & set(init_t))
    if both:
        raise ValueError(f"parameters {both} are both fixed and given an init; a fixed value is its own init")
    return fixed_t, init_t


def _check_kernels(kernel) -> torch.Tensor:
    """``kernel`` ``(kh, kw)`` or ``(N, kh, kw)`` as float64 CPU targets ``(N, kh, kw)``, checked."""
    _checks.tensor(kernel, "kernel", shapes="(kh, kw) or (N, kh, kw)", dims=(2, 3))
    targets = kernel.detach().to("cpu", _DTYPE).reshape(-1, *kernel.shape[-2:])
    n, kh, kw = targets.shape
    _check_size(kh, kw, "kernel")
    if n == 0:
        raise ValueError("kernel must hold at least one kernel, got N = 0")
    zero = targets.abs().amax(dim=(-2, -1)) == 0  # not the squared norm: that underflows for tiny kernels
    if bool(zero.any()):
        raise ValueError(f"kernel must not be all zeros (kernel {int(torch.nonzero(zero)[0])} is)")
    return targets


# -- scale: fits with a gain run on targets scaled by a power of two (exact, so a target of ordinary
# scale fits bit for bit as before), so that any finite non-zero scale fits; the gain is scaled back.
def _exponents(t: torch.Tensor) -> torch.Tensor:
    """``e`` ``(N,)`` with ``max |t[i]|`` in ``[2^(e-1), 2^e)`` for each ``t[i]`` of ``(N, ...)``
    (0 for an all-zero one)."""
    return torch.frexp(t.abs().flatten(1).amax(1))[1]


def _exponent(t: torch.Tensor) -> int:
    """``e`` with ``max |t|`` in ``[2^(e-1), 2^e)`` (0 for an all-zero ``t``)."""
    return int(_exponents(t.reshape(1, -1))[0])


def _ldexp(t, e):
    """``t * 2^e`` (a tensor or a float; ``e`` an int or an int tensor broadcastable to ``t``), in two
    factors so that neither over- or underflows."""
    if isinstance(e, torch.Tensor):
        return t * torch.pow(2.0, (e // 2).to(_DTYPE)) * torch.pow(2.0, (e - e // 2).to(_DTYPE))
    return t * 2.0 ** (e // 2) * 2.0 ** (e - e // 2)


def _check_unit_scale(targets: torch.Tensor) -> None:
    """Without a gain the fitted filter peaks at 1, so the loss ``||K - T||^2 / ||T||^2`` must be
    representable: raise for a target whose squared norm under- or overflows float64. (The search
    scores unit-norm targets, so any representable scale runs; a target far from unit peak is then
    not explained, which the fit's warning says.)"""
    norms = targets.square().sum(dim=(-2, -1))
    bad = (norms == 0) | ~torch.isfinite(norms)
    if bool(bad.any()):
        i = int(torch.nonzero(bad)[0])
        peak = targets[i].abs().max().item()
        how = "small (its squared norm underflows float64)" if norms[i] == 0 else \
            "large (its squared norm overflows float64)"
        raise ValueError(f"kernel {i} (max |entry| {peak:.3g}) is too {how} to fit a unit-peak Gabor filter "
                         f"without a gain: use amplitude=True, which fits any finite non-zero scale")


class GaborFitWarning(UserWarning):
    """Fitted Gabor filters explain little of the targets (kernels, responses or weights) they fit."""


#: fit_kernel and fit_response warn (:class:`GaborFitWarning`) when a fit explains less than this
#: share of its target's energy; replace_conv2d(fit=True) when the median over a layer's slices does.
POOR_FIT = 0.5


def _poor_fit_message(explained: torch.Tensor, peaks: torch.Tensor, amplitude: bool, what: str) -> str | None:
    """Why fits explaining ``explained`` ``(N,)`` of their targets' energy are poor (None if none is):
    ``peaks`` ``(N,)`` are the targets' peak values that a unit-peak filter would have to match."""
    poor = explained < POOR_FIT
    if not bool(poor.any()):
        return None
    i = int(torch.nonzero(poor)[0])
    where = f" (target {i}; {int(poor.sum())} of {len(poor)} explain less than {POOR_FIT:.0%})" if len(poor) > 1 else ""
    peak = float(peaks[i])
    if not amplitude and not 0.25 <= peak <= 4:
        why = (f"without a gain the filter peaks at 1 but {what} peaks at {peak:.3g}: use amplitude=True, which "
               f"fits any scale")
    else:
        why = f"{what} is not close to a Gabor filter of this size (noise, another shape, or a crop that cuts it)"
    share = f"{100 * float(explained[i]):.1f}%" if explained[i] >= 0 else \
        f"none (relative loss {1 - float(explained[i]):.3g})"
    return f"the fitted Gabor filter explains {share} of the target's energy{where}: {why}"


_CHUNK_TARGETS = 1024  # targets scored together in the search (bounds its score tables)
_PROGRESS_DELAY = 2.0  # seconds before a fit shows its progress bar


def fit_kernel(kernel: torch.Tensor, *, init: dict | None = None, fixed: dict | None = None,
               seed: int = 0, amplitude: bool = False, progress: bool = True) -> GaborFit:
    """Recover the five Gabor parameters of a target kernel, independently of the start.

    Minimises the relative loss ``||K(theta, sigma, lambd, gamma, psi) - T||^2 / ||T||^2`` by a
    global search (spectrum peak plus a coarse grid) followed by a damped Gauss-Newton
    refinement from the best few candidates; see the module docstring and ``docs/recovery.md``.
    A batch is fitted together: one search and one refinement for all its kernels (a few
    milliseconds per kernel), in chunks of bounded memory.

    Args:
        kernel: target ``(kh, kw)`` or a batch ``(N, kh, kw)``, a tensor or numpy array, real,
            finite, each at least ``3 x 3`` and not all zero. Any float dtype; the fit runs in
            float64 on the CPU.
        init: starting values for some parameters, e.g. ``{"theta": -math.pi / 4}``; they seed
            one start among several (the others come from the search; the result does not
            depend on the init). Parameters it leaves out are taken from the best grid point.
            Floats or tensors of shape ``()`` or ``(N,)``; sigma > 0, lambd > 2, gamma > 0.
        fixed: known parameters held at the given values, e.g. every one but ``theta``. Values
            are floats or tensors of shape ``()`` or ``(N,)``; sigma, lambd, gamma > 0.
        seed: a non-negative int; offsets the coarse grid (the result does not depend on it either).
        amplitude: also fit a gain ``A >= 0``, minimising ``||A K - T||^2 / ||T||^2`` (``A`` is
            solved in closed form for every candidate, so the search is no harder). Use it for
            targets of arbitrary scale, such as a trained convolution's weights: any finite
            non-zero scale fits (the target is scaled by a power of two for the fit, and ``A``
            back). Without it the filter peaks at 1, so a target far from unit peak is not
            explained (and the fit warns); its squared norm must be representable in float64.
        progress: show a progress bar (tqdm, on stderr) when the fit takes more than two seconds;
            never when stderr is not a terminal.

    Returns:
        :class:`GaborFit` with parameters of shape ``()`` (or ``(N,)`` for a batch), ``theta``
        in ``[0, pi)`` and ``psi`` in ``(-pi, pi]``. Free wavelengths are searched in
        ``[2, 8 max(kh, kw)]`` pixels. ``1 - loss`` is the fraction of each target's energy
        that the fitted filter explains; below ``POOR_FIT`` (50%) a :class:`GaborFitWarning`
        says so and why.

    Examples:
        >>> import math, torch
        >>> from gaborlayer import gabor_kernel2d, fit_kernel
        >>> target = gabor_kernel2d(math.pi / 4, 3.0, 6.0, 0.8, 0.0, 15)
        >>> fit = fit_kernel(target, init={"theta": -math.pi / 4})
        >>> round(math.degrees(fit.theta.item()), 3), round(fit.lambd.item(), 3)
        (45.0, 6.0)
        >>> scaled = fit_kernel(-0.2 * target, amplitude=True)   # a gain, and the sign as psi + pi
        >>> round(scaled.amplitude.item(), 3), round(math.cos(scaled.psi.item()), 3)  # psi = +-pi
        (0.2, -1.0)
        >>> batch = gabor_kernel2d(torch.linspace(0, 3, 64), 3.0, 6.0, 0.8, 0.0, 15)
        >>> fit_kernel(batch).theta.shape
        torch.Size([64])
    """
    t0 = time.perf_counter()
    kernel = _checks.from_numpy(kernel)
    targets = _check_kernels(kernel)
    fixed_t, init_t = _check_fixed_init(fixed, init, targets.shape[0])
    seed = _checks.nonnegative_int(seed, "seed")
    amplitude = _checks.boolean(amplitude, "amplitude")
    progress = _checks.boolean(progress, "progress")
    fit = _fit_targets(targets, fixed_t, init_t, seed, amplitude, kernel.dim() == 3, t0, progress)
    message = _poor_fit_message(1 - fit.loss.reshape(-1), targets.abs().flatten(1).amax(1), amplitude, "the kernel")
    if message:
        warnings.warn(f"fit_kernel: {message}", GaborFitWarning, stacklevel=2)
    return fit


def _fixed_groups(fixed_t: dict, n: int) -> list[tuple[dict, torch.Tensor]]:
    """Targets with the same fixed values share a grid: each distinct set of values (floats by
    name) with the indices of its targets."""
    if not fixed_t:
        return [({}, torch.arange(n))]
    values = torch.stack(list(fixed_t.values()), 1)
    unique, inverse = torch.unique(values, dim=0, return_inverse=True)
    return [(dict(zip(fixed_t, row.tolist())), torch.nonzero(inverse == j)[:, 0]) for j, row in enumerate(unique)]


def _fit_targets(targets: torch.Tensor, fixed_t: dict, init_t: dict, seed: int, amplitude: bool, batched: bool,
                 t0: float, progress: bool = False) -> GaborFit:
    """Fit every target of ``(N, kh, kw)`` (float64, checked) with per-target ``(N,)`` fixed/init values:
    the targets that share fixed values are searched and refined together (a tqdm bar over the
    refined starts with ``progress``, after two seconds, on a terminal). With ``amplitude`` each
    target is fitted scaled by a power of two (its peak in ``[1/2, 1)``) and its gain scaled back:
    the fit is scale-invariant, and exact scaling leaves it bit for bit the same."""
    from tqdm.auto import tqdm

    n, kh, kw = targets.shape
    if not amplitude:
        _check_unit_scale(targets)
    exponents = _exponents(targets) if amplitude else torch.zeros(n, dtype=torch.int32)
    targets = _ldexp(targets, -exponents[:, None, None])
    offset = float(np.random.default_rng(seed).uniform())
    results: list = [None] * n
    show = progress and sys.stderr.isatty()
    with tqdm(total=n, desc="fitting Gabor filters", unit="start", disable=not show, delay=_PROGRESS_DELAY) as bar:
        for values, idx in _fixed_groups(fixed_t, n):
            group = targets[idx]
            objective = _Quadratic(group.reshape(len(idx), -1), group.square().sum((-2, -1)), None, (kh, kw),
                                   amplitude)
            grid = _grid((kh, kw), values, offset)
            fits = _fit_chunk(group, objective, grid, {k: v[idx] for k, v in fixed_t.items()},
                              {k: v[idx] for k, v in init_t.items()}, n_keep=4, bar=bar)
            for i, fit in zip(idx.tolist(), fits):
                fit.gain = _ldexp(fit.gain, int(exponents[i]))
                results[i] = fit
    return _package(results, (kh, kw), batched, time.perf_counter() - t0)


def _fit_slices(slices: torch.Tensor, *, amplitude: bool, seed: int = 0, progress: bool = False) -> GaborFit:
    """:func:`fit_kernel` of a conv's slices ``(N, kh, kw)`` (float64, finite, none all zero) for
    conversion, which judges the fits per layer itself (no warning here)."""
    t0 = time.perf_counter()
    seed = _checks.nonnegative_int(seed, "seed")
    amplitude = _checks.boolean(amplitude, "amplitude")
    return _fit_targets(_check_kernels(slices), {}, {}, seed, amplitude, True, t0, progress)


def _fit_kernel1d(kernels: torch.Tensor, *, amplitude: bool, seed: int = 0, progress: bool = False) -> GaborFit:
    """Fit 1-D Gabor filters (:func:`~gaborlayer.gabor_kernel1d`) to ``kernels`` ``(N, k)``
    (float64, finite, none all zero, ``k >= 3``).

    The 1-D filter is the 2-D one on a single row with ``theta = 0`` (and ``gamma``, which then
    plays no part, at 1): each target is fitted as a ``1 x k`` kernel with those two held fixed,
    by the same batched search and refinement as :func:`fit_kernel`. The result's ``sigma``,
    ``lambd`` and ``psi`` are the 1-D parameters; its ``theta`` is 0 and its ``gamma`` 1.
    """
    t0 = time.perf_counter()
    seed = _checks.nonnegative_int(seed, "seed")
    amplitude = _checks.boolean(amplitude, "amplitude")
    n = kernels.shape[0]
    fixed_t = {"theta": torch.zeros(n, dtype=_DTYPE), "gamma": torch.ones(n, dtype=_DTYPE)}
    return _fit_targets(kernels.to(_DTYPE)[:, None, :], fixed_t, {}, seed, amplitude, True, t0, progress)


def _pads(padding, kh: int, kw: int) -> list[int]:
    """``F.pad`` amounts (left, right, top, bottom) for ``F.conv2d``'s ``padding`` (``"same"``,
    ``"valid"``, an int or a pair), checked."""
    if isinstance(padding, str):
        if padding not in ("same", "valid"):
            raise ValueError(f"padding must be 'same', 'valid' or non-negative ints, got {padding!r}")
    else:
        padding = _checks.ints(padding, "padding", 2, minimum=0)
    return _pad_amounts(padding, (kh, kw), (1, 1))


def _check_response(x, y, kernel_size, padding, y_channels: int = 1) -> tuple[tuple[int, int], list[int]]:
    """Check :func:`fit_response`'s arguments (``y`` with ``y_channels`` channels); the kernel size
    ``(kh, kw)`` and the ``F.pad`` amounts."""
    kh, kw = _checks.ints(kernel_size, "kernel_size", 2)
    _check_size(kh, kw, "kernel_size")
    for name, t, channels in (("x", x, 1), ("y", y, y_channels)):
        _checks.tensor(t, name, shapes=f"(B, {channels}, H, W)", dims=(4,))
        if t.shape[1] != channels:
            raise ValueError(f"{name} must have shape (B, {channels}, H, W), got {tuple(t.shape)}")
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"x and y must have the same batch size, got {x.shape[0]} and {y.shape[0]}")
    if x.shape[0] == 0:
        raise ValueError("x and y must hold at least one image, got B = 0")
    pads = _pads(padding, kh, kw)
    h, w = x.shape[-2] + pads[2] + pads[3] - kh + 1, x.shape[-1] + pads[0] + pads[1] - kw + 1
    if h < 1 or w < 1:
        raise ValueError(f"kernel_size {(kh, kw)} is larger than the padded input {tuple(x.shape[-2:])}")
    if tuple(y.shape[-2:]) != (h, w):
        raise ValueError(f"y must have shape (B, {y_channels}, {h}, {w}) for x {tuple(x.shape)}, kernel_size "
                         f"{(kh, kw)} and padding {padding!r}, got {tuple(y.shape)}")
    return (kh, kw), pads


_BAND_BYTES = 32 << 20  # one row band's FFT buffers in _normal_equations


def _rows(image: torch.Tensor, pads, r0: int, r1: int) -> torch.Tensor:
    """Rows ``[r0, r1)`` of ``image`` ``(H, W)`` zero-padded by ``pads`` (left, right, top, bottom),
    rows outside the padded image being zeros too: ``(r1 - r0, W + left + right)``, built without
    padding the whole image."""
    left, right, top, _ = pads
    h, w = image.shape
    out = image.new_zeros(r1 - r0, left + w + right)
    lo, hi = max(r0 - top, 0), min(r1 - top, h)
    if lo < hi:
        out[lo + top - r0:hi + top - r0, left:left + w] = image[lo:hi]
    return out


def _fast_size(n: int) -> int:
    """The least ``2^a 3^b 5^c >= n`` (a size the FFT handles fast)."""
    best = 1 << (n - 1).bit_length()
    p5 = 1
    while p5 < best:
        p35 = p5
        while p35 < best:
            size = p35
            while size < n:
                size *= 2
            best = min(best, size)
            p35 *= 3
        p5 *= 5
    return best


def _correlate(a: torch.Tensor, b: torch.Tensor, dy: tuple[int, int], dx: tuple[int, int]) -> torch.Tensor:
    """``C[..., y, x] = sum_s a[..., s] b[..., s + (dy[0] + y, dx[0] + x)]`` for lags ``dy[0] <= . <= dy[1]``
    and ``dx[0] <= . <= dx[1]``, ``a`` and ``b`` ``(..., h, w)`` zero outside, by FFT (sizes chosen so
    that the circular correlation does not wrap)."""
    n = [_fast_size(max(a.shape[i] + hi, b.shape[i] - lo) + 1) for i, (lo, hi) in ((-2, dy), (-1, dx))]
    spectrum = torch.fft.rfft2(a, s=n).conj() * torch.fft.rfft2(b, s=n)
    full = torch.fft.irfft2(spectrum, s=n)
    rows = torch.arange(dy[0], dy[1] + 1) % n[0]
    cols = torch.arange(dx[0], dx[1] + 1) % n[1]
    return full[..., rows[:, None], cols[None, :]]


def _normal_equations(x: torch.Tensor, y: torch.Tensor, kh: int, kw: int, pads):
    """``A^T A (P, P)``, ``A^T y (P,)`` and ``y^T y`` for ``y = conv(x, k)``, ``P = kh*kw``, without
    forming ``A`` (the im2col matrix, ``P`` times the size of ``y``).

    With ``X`` the padded image and ``Q_d(s) = X[s] X[s + d]``, the entry for taps ``(i, j)`` and
    ``(k, l)`` is the sum of ``Q_d``, ``d = (k - i, l - j)``, over the output window shifted by
    ``(i, j)``. That is the autocorrelation ``R(d)`` (all of ``X``, by FFT in row bands) less what
    falls outside the window: the sums of ``Q_d`` along the first and last ``kh - 1`` rows and
    ``kw - 1`` columns (one FFT correlation per border line), plus the four corners counted twice.
    ``A^T y`` is the cross-correlation of ``y`` with ``X`` (by FFT in row bands). Memory: a few row
    bands' FFT buffers (``_BAND_BYTES``) and ``O(kh kw (kh + kw) (H + W))`` for the border lines.
    """
    left, right, top, bottom = pads
    b_, _, h, w = x.shape
    hp, wp = h + top + bottom, w + left + right
    ho, wo = hp - kh + 1, wp - kw + 1
    ly, lx = 2 * kh - 1, 2 * kw - 1
    band = max(1, _BAND_BYTES // (16 * 4 * (wp + 2 * kw)))
    auto = x.new_zeros(ly, lx)
    rhs = x.new_zeros(kh, kw)
    top_rows, bottom_rows = x.new_zeros(kh - 1, ly, lx), x.new_zeros(kh - 1, ly, lx)
    left_cols, right_cols = x.new_zeros(kw - 1, ly, lx), x.new_zeros(kw - 1, ly, lx)
    corners = {key: x.new_zeros(kh - 1, kw - 1, ly, lx) for key in ("tl", "tr", "bl", "br")}
    pads_t = (top, bottom, left, right)
    for b in range(b_):
        image, image_t, out = x[b, 0], x[b, 0].T, y[b, 0]
        for r0 in range(0, hp, band):  # R(d) over bands of leading rows
            r1 = min(r0 + band, hp)
            auto += _correlate(_rows(image, pads, r0, r1), _rows(image, pads, r0 - kh + 1, r1 + kh - 1),
                               (0, 2 * kh - 2), (-(kw - 1), kw - 1))
        for u0 in range(0, ho, band):  # A^T y over bands of output rows
            u1 = min(u0 + band, ho)
            rhs += _correlate(out[u0:u1], _rows(image, pads, u0, u1 + kh - 1), (0, kh - 1), (0, kw - 1))
        for lines, first, image_, pads_, k_along, transpose in (
                (top_rows, 0, image, pads, kh, False), (bottom_rows, ho, image, pads, kh, False),
                (left_cols, 0, image_t, pads_t, kw, True), (right_cols, wo, image_t, pads_t, kw, True)):
            lines_at = range(first, first + k_along - 1)
            lead = torch.stack([_rows(image_, pads_, r, r + 1) for r in lines_at])
            partner = torch.stack([_rows(image_, pads_, r - k_along + 1, r + k_along) for r in lines_at])
            k_across = kw if not transpose else kh
            c = _correlate(lead, partner, (0, 2 * k_along - 2), (-(k_across - 1), k_across - 1))
            lines += c.transpose(-2, -1) if transpose else c
        # corners: Q_d on the (kh - 1) x (kw - 1) blocks at the image's corners, directly
        rows = {"t": range(0, kh - 1), "b": range(ho, hp)}
        cols = {"l": range(0, kw - 1), "r": range(wo, wp)}
        for key in corners:
            r0, c0 = rows[key[0]].start, cols[key[1]].start
            block = _rows(image, pads, r0, r0 + kh - 1)[:, c0:c0 + kw - 1]
            around = _rows(image, pads, r0 - kh + 1, r0 + 2 * kh - 2)
            around = F.pad(around, (kw - 1, kw - 1))[:, c0:c0 + 3 * kw - 3]  # columns c0 - kw + 1 .. c0 + 2 kw - 3
            windows = around.unfold(0, ly, 1).unfold(1, lx, 1)  # (kh - 1, kw - 1, ly, lx): Xe[r + dy, c + dx]
            corners[key] += block[:, :, None, None] * windows
    gram = _assemble_gram(auto, top_rows, bottom_rows, left_cols, right_cols, corners, kh, kw)
    return gram, rhs.reshape(-1), float(y.square().sum())


def _assemble_gram(auto, top_rows, bottom_rows, left_cols, right_cols, corners, kh: int, kw: int) -> torch.Tensor:
    """The Gram matrix from the autocorrelation and the border sums of ``_normal_equations``
    (inclusion-exclusion over the rows and columns outside each tap's window)."""
    def before(lines):  # sum over lines q < i, for i = 0 .. k - 1
        return torch.cat([torch.zeros_like(lines[:1]), lines.cumsum(0)])

    def after(lines):  # sum over lines q >= i, for i = 0 .. k - 1
        return torch.cat([lines.flip(0).cumsum(0).flip(0), torch.zeros_like(lines[:1])])

    tl = before(before(corners["tl"]).transpose(0, 1)).transpose(0, 1)
    tr = after(before(corners["tr"]).transpose(0, 1)).transpose(0, 1)
    bl = before(after(corners["bl"]).transpose(0, 1)).transpose(0, 1)
    br = after(after(corners["br"]).transpose(0, 1)).transpose(0, 1)
    tap = torch.arange(kh * kw)
    i, j = (tap // kw)[:, None], (tap % kw)[:, None]
    dy, dx = (tap // kw)[None, :] - i + kh - 1, (tap % kw)[None, :] - j + kw - 1
    gram = (auto[dy, dx] - before(top_rows)[i, dy, dx] - after(bottom_rows)[i, dy, dx]
            - before(left_cols)[j, dy, dx] - after(right_cols)[j, dy, dx]
            + tl[i, j, dy, dx] + tr[i, j, dy, dx] + bl[i, j, dy, dx] + br[i, j, dy, dx])
    return (gram + gram.T) / 2


def fit_response(x: torch.Tensor, y: torch.Tensor, kernel_size: int | tuple[int, int], *,
                 padding: str | int | tuple[int, int] = "same", init: dict | None = None, fixed: dict | None = None,
                 seed: int = 0, amplitude: bool = False, output: str = "linear") -> GaborFit:
    """Recover the single Gabor filter that maps images ``x`` to responses ``y``.

    Solves for the Gabor kernel ``K`` minimising ``||F.conv2d(x, K, padding=padding) - y||^2``:
    the spectrum peak of the linear least-squares kernel estimate, then the global search and
    refinement of :func:`fit_kernel` on the response loss itself (maximum likelihood under
    Gaussian noise on ``y``). The normal equations ``A^T A``, ``A^T y`` are
    computed by FFT correlations in row bands, never through the im2col matrix ``A``: extra
    memory stays below 256 MB whatever ``B``, ``H`` and ``W`` (for rows up to about 100,000
    pixels; FFT buffers of 32 MB per row band plus ``O(kh kw (kh + kw) (H + W))``); ``B = 2``
    images of ``512 x 512`` with ``kernel_size = 21`` take about 0.3 s of CPU time
    (``docs/recovery.md``).
    A fit that explains less than ``POOR_FIT`` (50%) of ``y``'s energy warns
    (:class:`GaborFitWarning`) and says why.

    Args:
        x: input images ``(B, 1, H, W)``, a tensor or numpy array.
        y: responses ``(B, 1, H', W')`` with ``(H', W')`` the output size of ``F.conv2d`` for
            ``kernel_size`` and ``padding`` (stride 1, dilation 1).
        kernel_size: ``int`` or ``(kh, kw)``, each ``>= 3``.
        padding: ``"same"``, ``"valid"``, or non-negative ``int`` / ``(ph, pw)``, as ``F.conv2d``.
        init, fixed, seed, amplitude: as in :func:`fit_kernel` (one value each: there is one
            target). With ``amplitude`` any finite non-zero scales of ``x`` and ``y`` fit.
        output: what ``y`` is, as ``GaborConv2d``'s ``output`` (the pair of phases ``psi`` and
            ``psi - pi/2``, ``docs/quadrature.md``): ``"linear"`` (default) ``conv(x, K)``;
            ``"quadrature"`` both responses of the pair, ``(B, 2, H', W')`` (even, then odd);
            ``"magnitude"`` ``|conv(x, K_even) + i conv(x, K_odd)|``, ``(B, 1, H', W')``, the
            energy model of a complex cell, which ``psi`` does not change (see below).

    Returns:
        :class:`GaborFit`; ``loss`` is ``||conv(x, K) - y||^2 / ||y||^2`` (of the pair's two
        channels together for ``"quadrature"``, of the magnitude for ``"magnitude"``). For
        ``"quadrature"`` ``theta`` is in ``[0, 2 pi)`` (``theta + pi`` with ``-psi`` negates the
        odd filter, so the pair has no twin); for ``"magnitude"`` it is in ``[0, pi)`` and
        ``psi`` is 0 (or its ``fixed`` value): any psi gives the same magnitude. The magnitude
        is fitted by its own grid search, scored by FFT correlations on at most 2048 output
        pixels, a batched Levenberg-Marquardt polish of its 64 best points on those pixels, and
        L-BFGS-B from the best 4 on the whole magnitude loss, correlating the images in chunks of
        about 32 MB (one image per chunk when an image is larger). Its extra memory is the
        images' spectra (about twice the bytes of ``x`` in float64) plus those chunks: for B = 2,
        512 x 512, k = 21 and an exact energy-model ``y``, measured 92 MB of peak RSS growth and
        2.2 s (one thread, shared 2-core CPU; the first start was exact); a ``y`` that no pair
        fits exactly spends longer in L-BFGS-B. An earlier measurement with the previous search
        took 205 MB and 25.6 s on a busy CPU.

    Examples:
        >>> import math, torch, torch.nn.functional as F
        >>> from gaborlayer import gabor_kernel2d, fit_response
        >>> x = torch.rand(1, 1, 40, 40, generator=torch.Generator().manual_seed(0))
        >>> truth = gabor_kernel2d(math.pi / 4, 2.0, 5.0, 1.0, 0.0, 9)
        >>> y = F.conv2d(x, truth[None, None], padding="same")
        >>> fit = fit_response(x, y, 9, init={"theta": -math.pi / 4},
        ...                    fixed={"sigma": 2.0, "lambd": 5.0, "gamma": 1.0, "psi": 0.0})
        >>> round(math.degrees(fit.theta.item()), 3)
        45.0
        >>> from gaborlayer import gabor_conv2d
        >>> params = [torch.tensor([[value]]) for value in (2.5, 2.0, 5.0, 1.0, 0.7)]  # (C_out, C_in) each
        >>> energy = gabor_conv2d(x, *params, 9, padding="same", output="magnitude")  # (1, 1, 40, 40)
        >>> cell = fit_response(x, energy, 9, output="magnitude")  # a complex cell: psi plays no part
        >>> round(math.degrees(cell.theta.item()), 3), round(cell.lambd.item(), 3), cell.psi.item()
        (143.239, 5.0, 0.0)
    """
    t0 = time.perf_counter()
    output = _checks.one_of(output, "output", RESPONSE_OUTPUTS)
    x, y = _checks.from_numpy(x), _checks.from_numpy(y)
    (kh, kw), pads = _check_response(x, y, kernel_size, padding, 2 if output == "quadrature" else 1)
    fixed_t, init_t = _check_fixed_init(fixed, init, 1, counts="be a single value (fit_response fits one filter)")
    seed = _checks.nonnegative_int(seed, "seed")
    amplitude = _checks.boolean(amplitude, "amplitude")
    x, y = x.detach().to("cpu", _DTYPE), y.detach().to("cpu", _DTYPE)
    if not bool(y.any()):
        raise ValueError("y must not be all zeros")
    if output != "linear":
        return _fit_cell(x, y, (kh, kw), pads, {k: v[0].item() for k, v in fixed_t.items()},
                         {k: v[0].item() for k, v in init_t.items()}, seed, amplitude, output, t0)
    # Scaled by powers of two (exactly): with a gain x and y each to a peak in [1/2, 1), the gain scaled
    # back; without one both by the same factor, which leaves the problem as it is.
    ex, ey = _exponent(x), _exponent(y)
    if not amplitude:
        ex = ey = max(ex, ey)
    gram, rhs, y_sq = _normal_equations(_ldexp(x, -ex), _ldexp(y, -ey), kh, kw, pads)
    if not (y_sq > 0 and bool(torch.isfinite(gram).all())):  # without a gain only: y far below x
        raise ValueError(f"y (max |entry| {y.abs().max().item():.3g}) is too small next to x (max |entry| "
                         f"{x.abs().max().item():.3g}) to fit a unit-peak Gabor filter without a gain: use "
                         f"amplitude=True, which fits any finite non-zero scales")
    ridge = 1e-8 * float(torch.diagonal(gram).mean()) + 1e-300
    estimate = torch.linalg.solve(gram + ridge * torch.eye(kh * kw, dtype=_DTYPE), rhs).reshape(1, kh, kw)
    response_loss = _Quadratic(rhs, y_sq, gram, (kh, kw), amplitude)
    # The grid is searched twice: on the response loss (robust where noise swamps the least-squares
    # kernel, 10 dB) and on the kernel loss of the least-squares kernel (where the response loss of a
    # unit-gain filter favours a small filter that does little, 20 dB on photographs); every start is
    # refined on the response loss.
    kernel_loss = _Quadratic(estimate.reshape(1, -1), estimate.square().sum().reshape(1), None, (kh, kw), amplitude)
    offset = float(np.random.default_rng(seed).uniform())
    grid = _grid((kh, kw), {k: v[0].item() for k, v in fixed_t.items()}, offset)
    result, = _fit_chunk(estimate, response_loss, grid, fixed_t, init_t, n_keep=4, also=kernel_loss)
    result.gain = _ldexp(result.gain, ey - ex)
    fit = _package([result], (kh, kw), False, time.perf_counter() - t0)
    peak = _ldexp(estimate.abs().max(), ey - ex).reshape(1)  # the least-squares kernel's peak, at the data's scale
    message = _poor_fit_message(1 - fit.loss.reshape(1), peak, amplitude, "the least-squares kernel from x to y")
    if message:
        warnings.warn(f"fit_response: {message}", GaborFitWarning, stacklevel=2)
    return fit


# -- complex cells: responses of a quadrature pair ---------------------------------------------------
# fit_response(output="quadrature") fits y = (conv(x, K_even), conv(x, K_odd)), the pair of
# functional._quadrature_params (phases psi and psi - pi/2), and output="magnitude" fits
# y = |conv(x, K_even) + i conv(x, K_odd)|, the energy model of a V1 complex cell. The quadrature
# responses are linear in the pair: its least-squares kernels are fitted by fit_kernel (the even
# half, and the odd one with psi - pi/2 put back), and the candidates refined on the pair's response
# loss. The magnitude is not linear in any kernel: its own grid (theta over [0, pi), psi dropping
# out) is scored through FFT correlations batched over candidates, on at most _SEARCH_PIXELS
# output pixels, its best points are polished together on those pixels, and the best few refined on
# the whole magnitude loss.
RESPONSE_OUTPUTS = ("linear", "quadrature", "magnitude")
_SEARCH_PIXELS = 2048     # output pixels (of all images together) that score the magnitude grid
_CHUNK_BYTES = 32 << 20    # complex correlations held at once (search and refinement)
_PLANES = 16               # complex planes per image that one correlation and its gradient hold (measured)
_SMALL = 1 << 18           # padded pixels below which one thread beats two (measured 50x on a busy 2-core CPU)
# The magnitude's grid: no spectrum peak adds the truth's point, and the phase-free loss ripples along
# 1 / lambd with a period of about 1 / (2 pi sigma) and is shallow, so a grid point ranks well only
# with sigma and gamma near the truth's: even steps in 1 / lambd (0.03 cycles per pixel at 21 x 21),
# 5 widths and 3 aspects. Its best _CELL_POLISHED distinct points (neighbours: within 1.5 theta steps
# and 0.02 cycles per pixel) are polished together by _POLISH_ITER Levenberg-Marquardt steps before
# the best few are refined (docs/recovery.md, section 6: 95.0% of 500 cases before, 100% after).
_CELL_GRID = {"theta": 36, "lambd": 16, "sigma": 5, "gamma": (0.55, 0.8, 1.2), "uniform_frequency": True}
_CELL_POLISHED, _POLISH_ITER = 64, 15


def _pair(values, size: tuple[int, int]) -> torch.Tensor:
    """The quadrature pair ``(*S, 2, kh, kw)`` (even, then odd: phases psi and psi - pi/2) of the
    five parameters (one shape ``S`` each), differentiable through :class:`GaborKernel2d`."""
    theta, sigma, lambd, gamma, psi = (torch.stack([v, v]) for v in values)
    psi = psi - torch.tensor([0.0, math.pi / 2], dtype=psi.dtype).reshape(2, *(1,) * (psi.dim() - 1))
    return _bank2d([theta, sigma, lambd, gamma, psi], size).movedim(0, -3)


class _Correlator:
    """``F.conv2d(x_padded, K)`` (valid on the padded images ``(B, Hp, Wp)``) for complex kernels
    ``K = even + i odd``, by FFT, over chunks of images so that memory stays bounded."""

    def __init__(self, padded: torch.Tensor, size: tuple[int, int]):
        self.size, self.shape = size, tuple(padded.shape[-2:])
        step = max(1, _CHUNK_BYTES // (_PLANES * padded[0].numel() * 16))
        self.spectra = [torch.fft.fft2(padded[lo:lo + step]) for lo in range(0, padded.shape[0], step)]

    def magnitude(self, pairs: torch.Tensor, spectrum: torch.Tensor) -> torch.Tensor:
        """``|conv(x, even) + i conv(x, odd)|`` ``(M, b, H', W')`` of pairs ``(M, 2, kh, kw)`` and
        the spectra ``(b, Hp, Wp)`` of ``b`` padded images."""
        kh, kw = self.size
        flipped = torch.complex(pairs[:, 0], pairs[:, 1]).flip(-2, -1)
        response = torch.fft.ifft2(torch.fft.fft2(flipped, s=self.shape)[:, None] * spectrum)[..., kh - 1:, kw - 1:]
        return QuadratureMagnitude.apply(torch.stack([response.real, response.imag], 2), 2)


def _magnitude_scores(m: torch.Tensor, y: torch.Tensor, c: float, amplitude: bool) -> torch.Tensor:
    """Relative losses ``(M,)`` of magnitudes ``m`` ``(M, L)`` against ``y`` ``(L,)`` (``c = |y|^2``):
    ``||m - y||^2 / c``, or with the best gain ``1 - (m.y)^2 / (m.m c)``."""
    my, mm = m @ y, m.square().sum(-1)
    if amplitude:  # the best gain, >= 0
        return 1 - my.clamp_min(0).square() / (mm.clamp_min(torch.finfo(mm.dtype).tiny) * c)
    return (mm - 2 * my + c) / c


class _MagnitudeLoss:
    """The relative loss ``||a |conv(x, K_even) + i conv(x, K_odd)| - y||^2 / ||y||^2`` of five
    parameters (psi plays no part), ``a = 1`` or, with ``amplitude``, the best gain (variable
    projection: the gradient at the best gain is that of the projected loss).

    ``padded``: the images padded as ``padding`` asks ``(B, Hp, Wp)``; ``y``: ``(B, H', W')``."""

    def __init__(self, padded: torch.Tensor, y: torch.Tensor, size: tuple[int, int], amplitude: bool):
        self.correlator = _Correlator(padded, size)
        step = self.correlator.spectra[0].shape[0]
        self.targets = list(y.split(step))
        self.size, self.amplitude, self.c = size, amplitude, float(y.square().sum())

    def _sums(self, pair: torch.Tensor) -> tuple[float, float]:
        with torch.no_grad():
            parts = [(m @ t.reshape(-1), m.square().sum()) for m, t in self._magnitudes(pair)]
        return max(0.0, float(sum(p[0] for p in parts))), float(sum(p[1] for p in parts))

    def _magnitudes(self, pair: torch.Tensor):
        for spectrum, t in zip(self.correlator.spectra, self.targets):
            yield self.correlator.magnitude(pair[None], spectrum).reshape(-1), t

    def gain(self, params: np.ndarray) -> float:
        if not self.amplitude:
            return 1.0
        my, mm = self._sums(_pair(torch.tensor(params, dtype=_DTYPE), self.size))
        return my / mm if mm > 0 else 0.0

    def value_and_grad(self, params: np.ndarray) -> tuple[float, np.ndarray]:
        leaves = [torch.tensor(params[i], dtype=_DTYPE, requires_grad=True) for i in range(5)]
        pair = _pair(leaves, self.size)
        detached = pair.detach().requires_grad_(True)
        gain = 1.0
        if self.amplitude:
            my, mm = self._sums(detached)
            gain = my / mm if mm > 0 else 0.0
        loss = 0.0
        for m, t in self._magnitudes(detached):
            part = (gain * m - t.reshape(-1)).square().sum() / self.c
            part.backward()
            loss += part.item()
        grads = torch.autograd.grad(pair, leaves, detached.grad, allow_unused=True)
        return loss, np.array([0.0 if g is None else g.item() for g in grads])


def _search_window(padded: torch.Tensor, y: torch.Tensor, size: tuple[int, int]):
    """At most :data:`_SEARCH_PIXELS` output pixels for the grid: the first images, each cropped
    about its centre (with the input window that the kernel sees)."""
    b, h, w = y.shape
    side = max(8, math.isqrt(_SEARCH_PIXELS // b))
    ch, cw = min(h, side), min(w, side)
    n = max(1, min(b, _SEARCH_PIXELS // (ch * cw)))
    r0, c0 = (h - ch) // 2, (w - cw) // 2
    return padded[:n, r0:r0 + ch + size[0] - 1, c0:c0 + cw + size[1] - 1], y[:n, r0:r0 + ch, c0:c0 + cw]


def _gain_residuals(correlator: _Correlator, spectrum: torch.Tensor, target: torch.Tensor, params: torch.Tensor,
                    size) -> torch.Tensor:
    """``a m - y`` ``(M, L)`` for the magnitudes ``m`` of the pairs of ``params`` ``(M, 5)`` on the
    images of ``spectrum``, each with its best gain ``a >= 0`` (``y``: ``target`` ``(L,)``)."""
    m = correlator.magnitude(_pair(params.unbind(1), size), spectrum).reshape(params.shape[0], -1)
    gain = (m @ target).clamp_min(0) / m.square().sum(-1).clamp_min(torch.finfo(m.dtype).tiny)
    return gain[:, None] * m - target


def _polish_cells(correlator: _Correlator, spectrum: torch.Tensor, target: torch.Tensor, start: torch.Tensor,
                  free: list[int], size) -> tuple[torch.Tensor, torch.Tensor]:
    """``_POLISH_ITER`` Levenberg-Marquardt steps for ``M`` starts ``(M, 5)`` at once on the
    gain-projected magnitude loss (the search window's), over the ``free`` ones of theta, log sigma,
    log lambd and log gamma (forward-difference Jacobian, a damping per start, a step taken only
    where it lowers the loss). Returns the parameters ``(M, 5)`` and relative losses ``(M,)``."""
    logs = torch.tensor([_LOG[i] for i in free])
    bounds = _bounds(free, size)
    lower = torch.tensor([lo for lo, _ in bounds], dtype=_DTYPE)
    upper = torch.tensor([hi for _, hi in bounds], dtype=_DTYPE)
    z = torch.where(logs, start[:, free].log(), start[:, free]).clamp(lower, upper)

    def natural(z):
        p = start.clone()
        p[:, free] = torch.where(logs, z.exp(), z)
        return p

    c = float(target.square().sum())
    residual = _gain_residuals(correlator, spectrum, target, natural(z), size)
    loss = residual.square().sum(-1) / c
    damping = torch.full((z.shape[0],), 1e-2, dtype=_DTYPE)
    eye, h = torch.eye(len(free), dtype=_DTYPE), 1e-6
    for _ in range(_POLISH_ITER):
        jac = torch.stack([(_gain_residuals(correlator, spectrum, target, natural(z + h * eye[j]), size) - residual) / h
                           for j in range(len(free))], -1)  # (M, L, F)
        grad, hessian = torch.einsum("mlf,ml->mf", jac, residual), jac.transpose(1, 2) @ jac
        diag = torch.diagonal(hessian, dim1=-2, dim2=-1).clamp_min(1e-12)
        delta, info = torch.linalg.solve_ex(hessian + (damping[:, None] * diag)[..., None] * eye, -grad)
        z_new = (z + torch.where((info == 0)[:, None], delta, 0.0)).clamp(lower, upper)
        residual_new = _gain_residuals(correlator, spectrum, target, natural(z_new), size)
        loss_new = residual_new.square().sum(-1) / c
        accept = loss_new < loss  # NaN compares False
        z, residual = torch.where(accept[:, None], z_new, z), torch.where(accept[:, None], residual_new, residual)
        loss, damping = torch.where(accept, loss_new, loss), torch.where(accept, damping / 3, damping * 8)
    return natural(z), loss


def _magnitude_candidates(padded, y, size, fixed: dict, n_keep: int, offset: float):
    """The best ``n_keep`` distinct starts for the magnitude: the grid ``_CELL_GRID`` (theta over
    ``[0, pi)``, psi 0 or its fixed value) scored on the search window in float32 with the best gain
    (the gain-free rank favours points whose width matches over those whose orientation does), in
    chunks of candidates; its best ``_CELL_POLISHED`` distinct points polished together
    (:func:`_polish_cells`, float64) and ranked by their polished loss. Each start is five
    parameters (a numpy array)."""
    window_x, window_y = _search_window(padded, y, size)
    correlator = _Correlator(window_x.to(torch.float32), size)
    target = window_y.reshape(-1).to(torch.float32)
    c = float(target.square().sum())
    axes, points = _grid_points(size, fixed, offset, math.pi, _CELL_GRID)
    total = points["theta"].numel()
    step = max(1, _CHUNK_BYTES // (4 * math.prod(correlator.shape) * 16 * window_x.shape[0]))
    zero, spectrum = torch.zeros(1, dtype=torch.float32), torch.cat(correlator.spectra)
    scores = []
    for lo in range(0, total, step):
        values = [points[name][lo:lo + step].to(torch.float32) for name in _MESH]
        pairs = _pair([*values, zero.expand_as(values[0])], size)
        m = correlator.magnitude(pairs, spectrum).reshape(pairs.shape[0], -1)
        scores.append(_magnitude_scores(m, target, c, True))
    score = torch.cat(scores).to(_DTYPE)
    n_lambd = axes["lambd"].numel()  # one when lambd is fixed: then neighbours in theta alone
    f_step = float(1 / axes["lambd"].min() - 1 / axes["lambd"].max()) / (n_lambd - 1) if n_lambd > 1 else math.inf
    chosen, exists = _suppress(score[None], points["theta"][None], points["lambd"][None], math.pi, _CELL_POLISHED,
                               theta_tol=1.5 * math.pi / _CELL_GRID["theta"], frequency_tol=2 * f_step / 3)
    chosen = chosen[0][exists[0]]
    psi = fixed.get("psi", 0.0)
    start = torch.stack([*(points[name][chosen] for name in _MESH), torch.full(chosen.shape, psi, dtype=_DTYPE)], 1)
    free = [i for i, name in enumerate(_MESH) if name not in fixed]
    loss = score[chosen]
    if free:
        correlator = _Correlator(window_x, size)
        start, loss = _polish_cells(correlator, torch.cat(correlator.spectra), window_y.reshape(-1), start, free, size)
    chosen, exists = _suppress(loss[None], start[None, :, 0], start[None, :, 2], math.pi, n_keep, theta_tol=0.01,
                               frequency_tol=1e-3)
    return [start[i].numpy().copy() for i in chosen[0][exists[0]].tolist()]


class _PairQuadratic(_Quadratic):
    """:class:`_Quadratic` of a quadrature pair: the flattened pairs ``(M, 2 kh kw)`` (even, then
    odd), with the two halves' quadratic forms summed (one Gram matrix, ``b`` and ``c`` of both
    channels together): the relative loss of both responses, with one gain."""

    def _quad(self, kernels: torch.Tensor) -> torch.Tensor:
        return super()._quad(kernels.unflatten(-1, (2, -1))).sum(-1)

    def gain(self, params: np.ndarray) -> float:
        if not self.amplitude:
            return 1.0
        pair = _pair(torch.tensor(params, dtype=_DTYPE), self.size).reshape(1, -1)
        quad = self._quad(pair)[0].item()
        return (pair @ self.b)[0].item() / quad if quad > 0 else 0.0

    def value_and_grad(self, params: np.ndarray) -> tuple[float, np.ndarray]:
        leaves = [torch.tensor(params[i], dtype=_DTYPE, requires_grad=True) for i in range(5)]
        loss = self(_pair(leaves, self.size).reshape(1, -1))[0]
        return loss.item(), np.array([g.item() for g in torch.autograd.grad(loss, leaves)])


def _scaled(x: torch.Tensor, y: torch.Tensor, amplitude: bool) -> tuple[torch.Tensor, torch.Tensor, int]:
    """``x`` and ``y`` scaled by powers of two (exactly) and the exponent that scales a fitted gain
    back: with a gain each to a peak in ``[1/2, 1)``; without one both by the same factor, which
    leaves a problem that is linear, or homogeneous like the magnitude, as it is."""
    ex, ey = _exponent(x), _exponent(y)
    if not amplitude:
        ex = ey = max(ex, ey)
    return _ldexp(x, -ex), _ldexp(y, -ey), ey - ex


def _cell_starts(objective, candidates: list[np.ndarray], origin: str, fixed: dict, init: dict
                 ) -> list[tuple[str, np.ndarray]]:
    """``(origin, five parameters)`` of each start: the caller's ``init`` completed by the first
    candidate, then the candidates, with the ``fixed`` values in place; lowest starting loss first."""
    starts = []
    if init:
        seeded = candidates[0].copy()
        for name, value in init.items():
            seeded[_index(name)] = value
        starts.append(("init", seeded))
    starts += [(origin, c.copy()) for c in candidates]
    for _, params in starts:
        for name, value in fixed.items():
            params[_index(name)] = value
    first_loss = [objective.value_and_grad(params)[0] for _, params in starts]
    return [starts[j] for j in np.argsort(first_loss, kind="stable")]


def _refine_cell(objective, starts: list[tuple[str, np.ndarray]], free: list[int], size) -> list[_Run]:
    """L-BFGS-B (:func:`_refine`) from each start in turn, until one fits exactly."""
    runs = []
    for origin, params in starts:
        if free:
            with _single_threaded_blas():
                params, loss, record = _refine(objective, params, free, _bounds(free, size))
        else:
            loss = objective.value_and_grad(params)[0]
            record = np.append(params, loss)[None]
        runs.append(_Run(origin, torch.as_tensor(record, dtype=_DTYPE), torch.as_tensor(params, dtype=_DTYPE), loss))
        if loss < _EXACT:
            break
    return runs


def _pair_normal_equations(x: torch.Tensor, y: torch.Tensor, kh: int, kw: int, pads):
    """:func:`_normal_equations` of a quadrature pair's two-channel ``y``: the Gram matrix ``(P, P)``,
    both channels' right-hand sides ``(2 P,)`` (even, then odd) and the summed ``y^T y``."""
    (gram, rhs_even, y_even), (_, rhs_odd, y_odd) = (_normal_equations(x, y[:, i:i + 1], kh, kw, pads) for i in (0, 1))
    return gram, torch.cat([rhs_even, rhs_odd]), y_even + y_odd


def _quadrature_candidates(x, y, size, pads, fixed: dict, init: dict, seed: int, amplitude: bool):
    """The pair objective and the starts for ``output="quadrature"``: the least-squares kernels of
    both channels, each fitted by :func:`fit_kernel` (the odd one with ``psi - pi/2``), with each
    fit's ``theta + pi`` twin (the twin of one real filter is not that of the pair)."""
    kh, kw = size
    gram, rhs, y_sq = _pair_normal_equations(x, y, kh, kw, pads)
    rhs_even, rhs_odd = rhs.view(2, -1)
    ridge = 1e-8 * float(torch.diagonal(gram).mean()) + 1e-300
    estimates = torch.linalg.solve(gram + ridge * torch.eye(kh * kw, dtype=_DTYPE), torch.stack([rhs_even, rhs_odd], 1))
    objective = _PairQuadratic(rhs, y_sq, gram, size, amplitude)
    quarter = torch.tensor([0.0, math.pi / 2], dtype=_DTYPE)
    per_half = {"fixed": fixed, "init": init}
    for kind, values in per_half.items():
        values = {k: torch.full((2,), v, dtype=_DTYPE) for k, v in values.items()}
        if "psi" in values:
            values["psi"] = values["psi"] - quarter
        per_half[kind] = values or None
    halves = fit_kernel(estimates.T.reshape(2, kh, kw), seed=seed, amplitude=amplitude, progress=False, **per_half)
    candidates = []
    for i in (0, 1):
        theta, psi = halves.theta[i].item(), halves.psi[i].item()
        rest = [halves.sigma[i].item(), halves.lambd[i].item(), halves.gamma[i].item()]
        # even: psi as fitted; odd: the odd filter of phase psi' is the pair of phase psi' + pi/2
        candidates += [np.array([theta, *rest, psi + quarter[i].item()]),
                       np.array([theta + math.pi, *rest, -psi + quarter[i].item()])]
    return objective, candidates


@contextlib.contextmanager
def _threads(n: int):
    """torch's intra-op threads set to ``n`` inside the block."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _fit_cell(x: torch.Tensor, y: torch.Tensor, size: tuple[int, int], pads: list[int], fixed: dict, init: dict,
              seed: int, amplitude: bool, output: str, t0: float) -> GaborFit:
    """:func:`fit_response` for ``output="quadrature"`` or ``"magnitude"`` (arguments checked;
    ``fixed`` and ``init`` map names to floats)."""
    x, y, gain_exponent = _scaled(x, y, amplitude)
    with _threads(1 if x[0, 0].numel() * x.shape[0] < _SMALL else torch.get_num_threads()):
        return _fit_cell_scaled(x, y, size, pads, fixed, init, seed, amplitude, output, gain_exponent, t0)


def _fit_cell_scaled(x, y, size, pads, fixed, init, seed, amplitude, output, gain_exponent, t0) -> GaborFit:
    """:func:`_fit_cell` on ``x`` and ``y`` scaled by :func:`_scaled` (the gain scaled back by
    ``2^gain_exponent``)."""
    free = [i for i, name in enumerate(GABOR_2D.names) if name not in fixed]
    if output == "quadrature":
        objective, candidates = _quadrature_candidates(x, y, size, pads, fixed, init, seed, amplitude)
        origin = "fit_kernel"
    else:  # psi plays no part in the magnitude
        free = [i for i in free if i != _index("psi")]
        init = {k: v for k, v in init.items() if k != "psi"}
        padded = F.pad(x, pads)[:, 0]
        objective = _MagnitudeLoss(padded, y[:, 0], size, amplitude)
        offset = float(np.random.default_rng(seed).uniform())
        candidates = _magnitude_candidates(padded, y[:, 0], size, fixed, 4, offset)
        origin = "magnitude grid"
    runs = _refine_cell(objective, _cell_starts(objective, candidates, origin, fixed, init), free, size)
    winner = min(runs, key=lambda run: run.loss)
    runs = [winner, *(run for run in runs if run is not winner)]
    params = winner.params
    gain = objective.gain(params.numpy())
    theta, psi = params[0], params[4] + math.pi * (gain < 0)  # a pair's negative gain is psi + pi
    # The pair is periodic in theta with period 2 pi (K(theta + pi, -psi) negates the odd half); its
    # magnitude with period pi (the conjugate pair), whatever psi.
    theta = torch.remainder(theta, 2 * math.pi if output == "quadrature" else math.pi)
    psi = torch.atan2(torch.sin(psi), torch.cos(psi))
    psi = torch.where(psi == -math.pi, math.pi, psi)
    starts_out = [_as_history(run) for run in runs]
    return GaborFit(theta=theta, sigma=params[1], lambd=params[2], gamma=params[3], psi=psi,
                    loss=torch.tensor(max(winner.loss, 0.0), dtype=_DTYPE), size=size,
                    amplitude=torch.tensor(_ldexp(abs(gain), gain_exponent), dtype=_DTYPE),
                    history=starts_out[0], starts=starts_out, seconds=time.perf_counter() - t0)
