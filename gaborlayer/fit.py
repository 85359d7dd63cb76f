"""Recover the parameters of a Gabor filter from its kernel or from what it does to images.

Gradient descent on ``theta`` alone fails from a bad start: the loss is periodic in ``theta``,
flat far from the truth and steep near it (``docs/recovery.md``). The procedure here does not
depend on the start:

1. **Global search.** The peak of the zero-padded magnitude spectrum gives an orientation and a
   wavelength. Added to a coarse grid over ``theta``, ``lambd``, ``sigma`` and ``gamma``, it is
   evaluated in one batched bank build; ``psi`` enters linearly (through ``cos psi`` and
   ``sin psi``) given the rest, so it is solved for, not searched. The best few distinct
   candidates are kept.
2. **Refinement.** Each candidate (and the caller's ``init``, if any) is refined by
   ``scipy.optimize.minimize(method="L-BFGS-B")`` in the coordinates ``theta``, ``log sigma``,
   ``log lambd``, ``log gamma``, ``psi`` (with loose box bounds; ``lambd >= 2``), with the
   loss and its gradient from the analytic :class:`~gaborlayer._autograd.GaborKernel2d` in
   float64. The line search never accepts a step
   that raises the loss, so the iterates cannot jump back out of the basin.
3. **Selection.** The lowest loss wins; its ``(theta, psi)`` are put in canonical form
   (:func:`~gaborlayer.functional.canonicalize`).

:func:`fit_response` first solves the linear least-squares problem for the free kernel that
maps ``x`` to ``y``, runs steps 1--2 on it, and polishes the result on the response loss itself.
The response loss is a quadratic form in the kernel, ``||A k - y||^2`` with ``A`` the ``im2col``
matrix of ``x``, so it is evaluated through the Gram matrix ``A^T A`` (exactly ``F.conv2d``'s
loss, at ``O(kh^2 kw^2)`` per evaluation instead of a convolution).

Where things are, in this file's order: the result (:class:`GaborFit`); the objective
(:class:`_Quadratic`) and the refinement (:func:`_refine`, :func:`_bounds`); step 1 (the spectrum
peak, the grid, its three scorers and the neighbour suppression); the procedure for one target
(:func:`_fit_one`) and the packaging of results; the public entries :func:`fit_kernel` and
:func:`fit_response` with their input checks (from the shared :mod:`gaborlayer._checks`). The
evaluation helpers that define success (``sample_params``, ``recovery_error``, ``is_recovered``,
``add_noise``) live in :mod:`gaborlayer.testing`. scipy (and threadpoolctl) are imported only
when a fit runs.
"""
from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from . import _checks
from ._autograd import GaborKernel2d
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
            L-BFGS-B iterations, first entry the start (raw iterates, not canonicalised, so
            ``theta`` is continuous), plus ``"origin"``. Along one record the loss never rises.
            For a batch, a list of ``N`` such dicts.
        starts: every refined start, the winner first, each a dict like ``history``. ``"origin"``
            is ``"init"`` or ``"spectrum+grid"`` (refined on the kernel loss; for
            :func:`fit_response` that of the least-squares kernel) or ``"response"`` (a polish on
            the response loss, where ``history`` comes from). For a batch, a list of ``N`` lists.
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
    """The relative loss ``(k^T Q k - 2 b^T k + c) / c`` of a flattened kernel ``k``.

    ``Q = I`` (``gram=None``) gives ``||k - b||^2 / ||b||^2``, the kernel loss; ``Q = A^T A``,
    ``b = A^T y``, ``c = ||y||^2`` give the response loss ``||A k - y||^2 / ||y||^2``.
    With ``amplitude=True`` the kernel is scaled by its best gain ``a = b^T k / k^T Q k``
    (variable projection), which leaves ``(c - (b^T k)^2 / k^T Q k) / c``; autograd through
    that expression is the exact gradient of the projected loss.
    """

    def __init__(self, b: torch.Tensor, c: float, gram: torch.Tensor | None, size: tuple[int, int],
                 amplitude: bool = False):
        self.b, self.c, self.gram, self.size, self.amplitude = b, c, gram, size, amplitude

    def _quad(self, kernels: torch.Tensor) -> torch.Tensor:
        if self.gram is None:
            return kernels.square().sum(-1)
        return ((kernels @ self.gram) * kernels).sum(-1)

    def __call__(self, kernels: torch.Tensor) -> torch.Tensor:
        """Losses ``(M,)`` of kernels ``(M, kh*kw)``."""
        quad, cross = self._quad(kernels), kernels @ self.b
        if self.amplitude:  # a kernel that vanishes (quad = 0) explains nothing: loss 1
            return 1 - cross.square() / (quad.clamp_min(torch.finfo(quad.dtype).tiny) * self.c)
        return (quad - 2 * cross + self.c) / self.c

    def gain(self, params: np.ndarray) -> float:
        """The best amplitude for five natural parameters (1 without ``amplitude``)."""
        if not self.amplitude:
            return 1.0
        kernel = GaborKernel2d.apply(*torch.tensor(params, dtype=_DTYPE)[:, None], *self.size).reshape(1, -1)
        quad = self._quad(kernel)[0].item()
        return (kernel @ self.b)[0].item() / quad if quad > 0 else 0.0

    def value_and_grad(self, params: np.ndarray) -> tuple[float, np.ndarray]:
        """Loss and gradient in the five natural parameters, through the analytic Function."""
        leaves = [torch.tensor(params[i:i + 1], dtype=_DTYPE, requires_grad=True) for i in range(5)]
        kernel = GaborKernel2d.apply(*leaves, *self.size).reshape(1, -1)
        loss = self(kernel)[0]
        grads = torch.autograd.grad(loss, leaves)
        return loss.item(), np.array([g.item() for g in grads])


def _refine(objective: _Quadratic, start: np.ndarray, free: list[int], bounds: list, max_iter: int = 400):
    """L-BFGS-B from ``start`` (five natural parameters) over the ``free`` coordinates.

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


# -- step 1: spectrum peak and coarse grid ----------------------------------------------------------
def _spectrum_peak(target: torch.Tensor) -> tuple[float, float] | None:
    """``(theta, lambd)`` at the peak of the zero-padded magnitude spectrum of ``(kh, kw)``."""
    kh, kw = target.shape
    n = max(64, 4 * max(kh, kw))
    spectrum = torch.fft.fft2(target - target.mean(), s=(n, n)).abs()
    fy = torch.fft.fftfreq(n, dtype=_DTYPE)[:, None]
    fx = torch.fft.fftfreq(n, dtype=_DTYPE)[None, :]
    spectrum = spectrum.masked_fill((fx.square() + fy.square()) > 0.25, 0)  # beyond Nyquist: aliases
    idx = int(spectrum.argmax())
    f_y, f_x = fy[idx // n, 0].item(), fx[0, idx % n].item()
    radius = math.hypot(f_x, f_y)
    if radius == 0:
        return None
    return math.atan2(f_y, f_x), 1.0 / radius


def _grid_axes(size, fixed: dict, peak, offset: float, theta_period: float):
    """The values searched along each axis (a fixed parameter has one value)."""
    span, floor = max(size), _checks.LAMBD_FLOOR
    n_theta = _GRID["theta"] if theta_period == math.pi else 2 * _GRID["theta"]
    axes = {"theta": (torch.arange(n_theta, dtype=_DTYPE) + offset) * (theta_period / n_theta)}
    def geometric(lo, hi, n):
        return torch.exp(torch.linspace(math.log(lo), math.log(hi), n, dtype=_DTYPE))

    axes["lambd"] = geometric(floor, max(2.0 * floor, 1.2 * span), _GRID["lambd"])
    axes["sigma"] = geometric(1.0, max(1.5, span / 2.5), _GRID["sigma"])
    axes["gamma"] = torch.tensor(_GRID["gamma"], dtype=_DTYPE)
    if peak is not None:
        theta_p, lambd_p = peak
        extra = torch.tensor([theta_p, theta_p + math.pi], dtype=_DTYPE) % theta_period
        axes["theta"] = torch.cat([axes["theta"], extra])
        if lambd_p >= floor:
            axes["lambd"] = torch.cat([axes["lambd"], torch.tensor([lambd_p], dtype=_DTYPE)])
    for name, value in fixed.items():
        if name != "psi":
            axes[name] = value.reshape(1)
    return axes


_MESH = ("theta", "sigma", "lambd", "gamma")  # the searched axes, psi being solved for


def _grid_mesh(axes: dict) -> dict[str, torch.Tensor]:
    """Every combination of the axes' values: four flat float64 tensors of one length."""
    mesh = torch.meshgrid(*(axes[name] for name in _MESH), indexing="ij")
    return {name: m.reshape(-1) for name, m in zip(_MESH, mesh)}


# Scorers: for a chunk of M grid points (four float32 tensors (M,) in _MESH order) and the flat
# float32 target t with |t|^2 = t_sq, the losses (M,) up to the factor 1 / t_sq, and the best psi.
def _score_psi_fixed(points: list, psi: torch.Tensor, t: torch.Tensor, t_sq: float, amplitude: bool,
                     size) -> tuple[torch.Tensor, torch.Tensor]:
    """psi held at a known value: one kernel per point (and its best gain with ``amplitude``)."""
    m = points[0].numel()
    psi = psi.to(torch.float32).expand(m)
    k = _bank2d([*points, psi], size).reshape(m, -1)
    kk, kt = k.square().sum(-1), k @ t
    score = t_sq - kt.square() / kk.clamp_min(1e-30) if amplitude else kk - 2 * kt + t_sq
    return score, psi.to(_DTYPE)


def _even_odd_products(points: list, t: torch.Tensor, size) -> tuple[torch.Tensor, ...]:
    """Inner products of the even (psi = 0) and odd (psi = -pi/2) kernels ``C`` and ``S`` of each
    point, with which ``K(psi) = cos(psi) C - sin(psi) S``: ``(C.C, S.S, C.S, C.t, S.t)``."""
    m = points[0].numel()
    pair = _bank2d([*(p.repeat(2) for p in points), torch.cat([torch.zeros(m), torch.full((m,), -math.pi / 2)])],
                   size).reshape(2, m, -1)
    c, s = pair[0], pair[1]
    return c.square().sum(-1), s.square().sum(-1), (c * s).sum(-1), c @ t, s @ t


def _score_free_gain(products: tuple, t_sq: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Free psi and gain: ``A K(psi) = alpha C + beta S`` is linear in ``(alpha, beta) =
    A (cos psi, -sin psi)``, a 2 x 2 least-squares problem per point (C and S are independent for
    lambd > 2)."""
    cc, ss, cs, ct, st = products
    det = (cc * ss - cs.square()).clamp_min(1e-30)
    alpha, beta = (ss * ct - cs * st) / det, (cc * st - cs * ct) / det
    return t_sq - alpha * ct - beta * st, torch.atan2(-beta, alpha).to(_DTYPE)


def _score_unit_gain(products: tuple, t_sq: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Free psi at unit amplitude: ``loss(psi) = cc cos^2 + ss sin^2 - 2 cs cos sin
    - 2 (ct cos - st sin) + |t|^2``, minimised over a 5-degree psi grid (five numbers per point)."""
    cc, ss, cs, ct, st = products
    grid = torch.linspace(-math.pi, math.pi, 73)[:-1]
    cos, sin = torch.cos(grid)[None], torch.sin(grid)[None]
    loss = (cc[:, None] * cos**2 + ss[:, None] * sin**2 - 2 * cs[:, None] * cos * sin
            - 2 * (ct[:, None] * cos - st[:, None] * sin) + t_sq)
    best, where = loss.min(dim=1)
    return best, grid[where].to(_DTYPE)


def _score_grid(points: dict, target: torch.Tensor, objective: _Quadratic, psi: torch.Tensor | None,
                chunk: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Scores and best psi (float64 ``(M,)``) of every grid point, in float32 chunks; ``psi`` is
    the fixed psi, or None."""
    size = tuple(target.shape)
    t = target.reshape(-1).to(torch.float32)
    t_sq = objective.c  # the kernel loss (gram None): c = |t|^2
    scores, psis = [], []
    for lo in range(0, points["theta"].numel(), chunk):
        args = [points[name][lo:lo + chunk].to(torch.float32) for name in _MESH]
        if psi is not None:
            score, best_psi = _score_psi_fixed(args, psi, t, t_sq, objective.amplitude, size)
        elif objective.amplitude:
            score, best_psi = _score_free_gain(_even_odd_products(args, t, size), t_sq)
        else:
            score, best_psi = _score_unit_gain(_even_odd_products(args, t, size), t_sq)
        scores.append(score)
        psis.append(best_psi)
    return torch.cat(scores).to(_DTYPE), torch.cat(psis)


def _suppress(score: torch.Tensor, theta: torch.Tensor, lambd: torch.Tensor, theta_period: float,
              n_keep: int) -> list[int]:
    """Non-maximum suppression in (theta, lambd): the indices of up to ``n_keep`` best points,
    each outside the neighbourhood of those before it (distinct basins, not neighbours of one)."""
    open_ = torch.isfinite(score)
    chosen: list[int] = []
    for _ in range(n_keep):
        if not bool(open_.any()):
            break
        idx = int(torch.where(open_, score, math.inf).argmin())
        chosen.append(idx)
        d_theta = torch.remainder(theta - theta[idx], theta_period)
        d_theta = torch.minimum(d_theta, theta_period - d_theta)
        near = (d_theta < 2.5 * math.pi / _GRID["theta"]) & (torch.log(lambd / lambd[idx]).abs() < 0.3)
        open_ &= ~near
    return chosen


def _grid_candidates(target: torch.Tensor, objective: _Quadratic, fixed: dict, n_keep: int,
                     offset: float, chunk: int = 4096) -> list[np.ndarray]:
    """The best ``n_keep`` distinct grid points for ``target`` ``(kh, kw)``, each five parameters.

    ``objective`` is the kernel loss of ``target`` (``gram`` None); ``fixed`` maps names to
    float64 tensors of shape ``()``."""
    theta_period = 2 * math.pi if "psi" in fixed else math.pi
    axes = _grid_axes(tuple(target.shape), fixed, _spectrum_peak(target), offset, theta_period)
    points = _grid_mesh(axes)
    score, psi = _score_grid(points, target, objective, fixed.get("psi"), chunk)
    chosen = _suppress(score, points["theta"], points["lambd"], theta_period, n_keep)
    columns = [*(points[name] for name in _MESH), psi]  # GABOR_2D.names order
    return [np.array([c[i].item() for c in columns]) for i in chosen]


# -- the procedure --------------------------------------------------------------------------------
class _Start(NamedTuple):
    """A start to refine: where it came from and its five natural parameters."""

    origin: str
    params: np.ndarray


@dataclass(eq=False)
class _Run:
    """One refined start: its origin, the record of iterates (rows: five parameters and the loss,
    first row the start) and the final parameters and loss."""

    origin: str
    record: np.ndarray
    params: np.ndarray
    loss: float


@dataclass
class _OneFit:
    """The fit of one target: the winning (raw) parameters, loss and gain, and every run, winner first."""

    params: np.ndarray
    loss: float
    gain: float
    runs: list[_Run]


def _index(name: str) -> int:
    return GABOR_2D.names.index(name)


def _starts(target: torch.Tensor, objective: _Quadratic, fixed: dict, init: dict, seed: int,
            n_keep: int) -> list[_Start]:
    """The starts for one target, lowest starting loss first (an exact fit ends the search, so a
    good init saves time): the caller's ``init`` completed by the best grid point, then the grid
    candidates, with the ``fixed`` values in place."""
    offset = float(np.random.default_rng(seed).uniform())
    fixed_t = {k: torch.tensor(v, dtype=_DTYPE) for k, v in fixed.items()}
    candidates = _grid_candidates(target, objective, fixed_t, n_keep, offset)
    starts = []
    if init:
        seeded = candidates[0].copy()
        for name, value in init.items():
            seeded[_index(name)] = value
        starts.append(_Start("init", seeded))
    starts += [_Start("spectrum+grid", c) for c in candidates]
    for name, value in fixed.items():
        for start in starts:
            start.params[_index(name)] = value
    first_loss = [objective.value_and_grad(start.params)[0] for start in starts]
    return [starts[j] for j in np.argsort(first_loss, kind="stable")]


def _refine_all(objective: _Quadratic, starts: list[_Start], free: list[int], bounds: list) -> list[_Run]:
    """Refine the starts in turn until one fits exactly."""
    runs = []
    for start in starts:
        params, loss, record = _refine(objective, start.params, free, bounds)
        runs.append(_Run(start.origin, record, params, loss))
        if loss < _EXACT:
            break
    return runs


def _polish(polish: _Quadratic, runs: list[_Run], free: list[int], bounds: list) -> list[_Run]:
    """Refine the two best runs' ends again on ``polish`` (the response loss)."""
    ranked = sorted(runs, key=lambda run: run.record[-1, -1])[:2]
    polished = []
    for run in ranked:
        params, loss, record = _refine(polish, run.record[-1, :5], free, bounds)
        polished.append(_Run("response", record, params, loss))
    return polished


def _fit_one(target: torch.Tensor, objective: _Quadratic, fixed: dict, init: dict, seed: int,
             n_keep: int, polish: _Quadratic | None = None) -> _OneFit:
    """Fit one target ``(kh, kw)``; ``fixed`` and ``init`` map names to floats. With ``polish``,
    the winner is the best of the runs refined again on that loss."""
    size = tuple(target.shape)
    free = [i for i, name in enumerate(GABOR_2D.names) if name not in fixed]
    starts = _starts(target, objective, fixed, init, seed, n_keep)
    final = polish or objective
    if not free:
        p = starts[0].params
        loss = final.value_and_grad(p)[0]
        return _OneFit(p, loss, final.gain(p), [_Run(starts[0].origin, np.append(p, loss)[None], p, loss)])
    bounds = _bounds(free, size)
    runs = contenders = _refine_all(objective, starts, free, bounds)
    if polish is not None:
        contenders = _polish(polish, runs, free, bounds)
        runs = runs + contenders
    winner = min(contenders, key=lambda run: run.loss)  # the first of the lowest
    runs = [winner, *(run for run in runs if run is not winner)]
    return _OneFit(winner.params, winner.loss, final.gain(winner.params), runs)


def _as_history(run: _Run) -> dict:
    t = torch.as_tensor(run.record, dtype=_DTYPE)
    history = {name: t[:, i] for i, name in enumerate((*GABOR_2D.names, "loss"))}
    history["loss"] = history["loss"].clamp_min(0)  # the Gram form rounds an exact fit to about -1e-15
    history["origin"] = run.origin
    return history


def _package(results: list[_OneFit], size, batched: bool, seconds: float) -> GaborFit:
    params = torch.tensor(np.stack([r.params for r in results]), dtype=_DTYPE)
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
def _exponent(t: torch.Tensor) -> int:
    """``e`` with ``max |t|`` in ``[2^(e-1), 2^e)`` (0 for an all-zero ``t``)."""
    return int(torch.frexp(t.abs().amax())[1])


def _ldexp(t, e: int):
    """``t * 2^e`` (a tensor or a float), in two factors so that neither over- or underflows."""
    return t * 2.0 ** (e // 2) * 2.0 ** (e - e // 2)


def _check_unit_scale(targets: torch.Tensor) -> None:
    """Without a gain the fitted filter peaks at 1, so the loss ``||K - T||^2 / ||T||^2`` must be
    representable: raise for a target whose squared norm underflows float64 or overflows float32
    (in which the search runs)."""
    norms = targets.square().sum(dim=(-2, -1))
    bad = (norms == 0) | (norms > torch.finfo(torch.float32).max)
    if bool(bad.any()):
        i = int(torch.nonzero(bad)[0])
        peak = targets[i].abs().max().item()
        how = "small (its squared norm underflows float64)" if norms[i] == 0 else \
            "large (its squared norm overflows float32, in which the search runs)"
        raise ValueError(f"kernel {i} (max |entry| {peak:.3g}) is too {how} to fit a unit-peak Gabor filter "
                         f"without a gain: use amplitude=True, which fits any finite non-zero scale")


def fit_kernel(kernel: torch.Tensor, *, init: dict | None = None, fixed: dict | None = None,
               seed: int = 0, amplitude: bool = False) -> GaborFit:
    """Recover the five Gabor parameters of a target kernel, independently of the start.

    Minimises the relative loss ``||K(theta, sigma, lambd, gamma, psi) - T||^2 / ||T||^2`` by a
    global search (spectrum peak plus a coarse grid) followed by L-BFGS-B from the best few
    candidates; see the module docstring and ``docs/recovery.md``.

    Args:
        kernel: target ``(kh, kw)`` or a batch ``(N, kh, kw)``, real, finite, each at least
            ``3 x 3`` and not all zero. Any float dtype; the fit runs in float64 on the CPU.
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
            back). Without it the target's squared norm must be representable (in float32).

    Returns:
        :class:`GaborFit` with parameters of shape ``()`` (or ``(N,)`` for a batch), ``theta``
        in ``[0, pi)`` and ``psi`` in ``(-pi, pi]``. Free wavelengths are searched in
        ``[2, 8 max(kh, kw)]`` pixels. ``1 - loss`` is the fraction of each target's energy
        that the fitted filter explains.

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
    """
    t0 = time.perf_counter()
    targets = _check_kernels(kernel)
    fixed_t, init_t = _check_fixed_init(fixed, init, targets.shape[0])
    seed = _checks.nonnegative_int(seed, "seed")
    amplitude = _checks.boolean(amplitude, "amplitude")
    return _fit_targets(targets, fixed_t, init_t, seed, amplitude, kernel.dim() == 3, t0)


def _fit_targets(targets: torch.Tensor, fixed_t: dict, init_t: dict, seed: int, amplitude: bool, batched: bool,
                 t0: float) -> GaborFit:
    """Fit every target of ``(N, kh, kw)`` (float64, checked) with per-target ``(N,)`` fixed/init values.
    With ``amplitude`` each target is fitted scaled by a power of two (its peak in ``[1/2, 1)``) and
    its gain scaled back: the fit is scale-invariant, and exact scaling leaves it bit for bit the same."""
    n, kh, kw = targets.shape
    if not amplitude:
        _check_unit_scale(targets)
    exponents = [_exponent(t) if amplitude else 0 for t in targets]
    targets = torch.stack([_ldexp(t, -e) for t, e in zip(targets, exponents)])
    norms = targets.square().sum(dim=(-2, -1))
    results = []
    with _single_threaded_blas():
        for i in range(n):
            objective = _Quadratic(targets[i].reshape(-1), float(norms[i]), None, (kh, kw), amplitude)
            result = _fit_one(targets[i], objective, {k: v[i].item() for k, v in fixed_t.items()},
                              {k: v[i].item() for k, v in init_t.items()}, seed, n_keep=4)
            result.gain = _ldexp(result.gain, exponents[i])
            results.append(result)
    return _package(results, (kh, kw), batched, time.perf_counter() - t0)


def _fit_kernel1d(kernels: torch.Tensor, *, amplitude: bool, seed: int = 0) -> GaborFit:
    """Fit 1-D Gabor filters (:func:`~gaborlayer.gabor_kernel1d`) to ``kernels`` ``(N, k)``
    (float64, finite, none all zero, ``k >= 3``).

    The 1-D filter is the 2-D one on a single row with ``theta = 0`` (and ``gamma``, which then
    plays no part, at 1): each target is fitted as a ``1 x k`` kernel with those two held fixed,
    by the same search and refinement as :func:`fit_kernel`. The result's ``sigma``, ``lambd``
    and ``psi`` are the 1-D parameters; its ``theta`` is 0 and its ``gamma`` 1.
    """
    t0 = time.perf_counter()
    seed = _checks.nonnegative_int(seed, "seed")
    amplitude = _checks.boolean(amplitude, "amplitude")
    n = kernels.shape[0]
    fixed_t = {"theta": torch.zeros(n, dtype=_DTYPE), "gamma": torch.ones(n, dtype=_DTYPE)}
    return _fit_targets(kernels.to(_DTYPE)[:, None, :], fixed_t, {}, seed, amplitude, True, t0)


def _pads(padding, kh: int, kw: int) -> list[int]:
    """``F.pad`` amounts (left, right, top, bottom) for ``F.conv2d``'s ``padding`` (``"same"``,
    ``"valid"``, an int or a pair), checked."""
    if isinstance(padding, str):
        if padding not in ("same", "valid"):
            raise ValueError(f"padding must be 'same', 'valid' or non-negative ints, got {padding!r}")
    else:
        padding = _checks.ints(padding, "padding", 2, minimum=0)
    return _pad_amounts(padding, (kh, kw), (1, 1))


def _check_response(x, y, kernel_size, padding) -> tuple[tuple[int, int], list[int]]:
    """Check :func:`fit_response`'s arguments; the kernel size ``(kh, kw)`` and the ``F.pad`` amounts."""
    kh, kw = _checks.ints(kernel_size, "kernel_size", 2)
    _check_size(kh, kw, "kernel_size")
    for name, t in (("x", x), ("y", y)):
        _checks.tensor(t, name, shapes="(B, 1, H, W)", dims=(4,))
        if t.shape[1] != 1:
            raise ValueError(f"{name} must have shape (B, 1, H, W), got {tuple(t.shape)}")
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"x and y must have the same batch size, got {x.shape[0]} and {y.shape[0]}")
    if x.shape[0] == 0:
        raise ValueError("x and y must hold at least one image, got B = 0")
    pads = _pads(padding, kh, kw)
    h, w = x.shape[-2] + pads[2] + pads[3] - kh + 1, x.shape[-1] + pads[0] + pads[1] - kw + 1
    if h < 1 or w < 1:
        raise ValueError(f"kernel_size {(kh, kw)} is larger than the padded input {tuple(x.shape[-2:])}")
    if tuple(y.shape[-2:]) != (h, w):
        raise ValueError(f"y must have shape (B, 1, {h}, {w}) for x {tuple(x.shape)}, kernel_size {(kh, kw)} "
                         f"and padding {padding!r}, got {tuple(y.shape)}")
    return (kh, kw), pads


def _normal_equations(x: torch.Tensor, y: torch.Tensor, kh: int, kw: int, pads):
    """``A^T A (P, P)``, ``A^T y (P,)`` and ``y^T y`` for ``y = conv(x, k)``, ``P = kh*kw``."""
    cols = F.unfold(F.pad(x, pads), (kh, kw))           # (B, P, L)
    gram = torch.einsum("bpl,bql->pq", cols, cols)
    rhs = torch.einsum("bpl,bl->p", cols, y.reshape(y.shape[0], -1))
    return gram, rhs, float(y.square().sum())


def fit_response(x: torch.Tensor, y: torch.Tensor, kernel_size: int | tuple[int, int], *,
                 padding: str | int | tuple[int, int] = "same", init: dict | None = None, fixed: dict | None = None,
                 seed: int = 0, amplitude: bool = False) -> GaborFit:
    """Recover the single Gabor filter that maps images ``x`` to responses ``y``.

    Solves for the Gabor kernel ``K`` minimising ``||F.conv2d(x, K, padding=padding) - y||^2``:
    a linear least-squares kernel estimate, the global search and L-BFGS-B refinement of
    :func:`fit_kernel` on it, then L-BFGS-B on the response loss itself (maximum likelihood
    under Gaussian noise on ``y``).

    Args:
        x: input images ``(B, 1, H, W)``.
        y: responses ``(B, 1, H', W')`` with ``(H', W')`` the output size of ``F.conv2d`` for
            ``kernel_size`` and ``padding`` (stride 1, dilation 1).
        kernel_size: ``int`` or ``(kh, kw)``, each ``>= 3``.
        padding: ``"same"``, ``"valid"``, or non-negative ``int`` / ``(ph, pw)``, as ``F.conv2d``.
        init, fixed, seed, amplitude: as in :func:`fit_kernel` (one value each: there is one
            target). With ``amplitude`` any finite non-zero scales of ``x`` and ``y`` fit.

    Returns:
        :class:`GaborFit`; ``loss`` is ``||conv(x, K) - y||^2 / ||y||^2``.

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
    """
    t0 = time.perf_counter()
    (kh, kw), pads = _check_response(x, y, kernel_size, padding)
    fixed_t, init_t = _check_fixed_init(fixed, init, 1, counts="be a single value (fit_response fits one filter)")
    seed = _checks.nonnegative_int(seed, "seed")
    amplitude = _checks.boolean(amplitude, "amplitude")
    x, y = x.detach().to("cpu", _DTYPE), y.detach().to("cpu", _DTYPE)
    if not bool(y.any()):
        raise ValueError("y must not be all zeros")
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
    estimate = torch.linalg.solve(gram + ridge * torch.eye(kh * kw, dtype=_DTYPE), rhs).reshape(kh, kw)
    kernel_loss = _Quadratic(estimate.reshape(-1), float(estimate.square().sum()) or 1.0, None, (kh, kw), amplitude)
    response_loss = _Quadratic(rhs, y_sq, gram, (kh, kw), amplitude)
    with _single_threaded_blas():
        result = _fit_one(estimate, kernel_loss, {k: v[0].item() for k, v in fixed_t.items()},
                          {k: v[0].item() for k, v in init_t.items()}, seed, n_keep=4, polish=response_loss)
    result.gain = _ldexp(result.gain, ey - ex)
    return _package([result], (kh, kw), False, time.perf_counter() - t0)
