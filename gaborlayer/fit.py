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

The evaluation helpers at the end (:func:`sample_params`, :func:`recovery_error`,
:func:`is_recovered`, :func:`add_noise`) define the success criterion used by the tests, the
benchmark and the demo.
"""
from __future__ import annotations

import contextlib
import math
import numbers
import time
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import minimize

from . import _checks
from ._autograd import GaborKernel2d
from .functional import _bank, canonicalize

try:  # a scipy dependency's dependency in practice; optional here
    from threadpoolctl import threadpool_limits
except ImportError:  # pragma: no cover
    threadpool_limits = None

PARAM_NAMES = _checks.PARAM_NAMES
LAMBD_FLOOR = 2.0  # pixels; the search stays above the Nyquist wavelength
_LOG = (False, True, True, True, False)  # which coordinates are optimised as logarithms
_DTYPE = torch.float64
_EXACT = 1e-12  # relative loss below which a start is an exact fit: no other start can beat it
# Coarse-grid sizes over [0, pi) (doubled over [0, 2 pi) when psi is fixed), wavelength, width, aspect.
_GRID = {"theta": 24, "lambd": 8, "sigma": 3, "gamma": (0.6, 1.2)}
# Fixed values must be finite and above these bounds (theta and psi: any finite value).
_FIXED_LOWER = {"sigma": 0.0, "lambd": 0.0, "gamma": 0.0}
_INIT_LOWER = {"sigma": 0.0, "lambd": LAMBD_FLOOR, "gamma": 0.0}


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
        return {name: getattr(self, name) for name in PARAM_NAMES}

    def __post_init__(self):
        if self.amplitude is None:
            self.amplitude = torch.ones_like(self.theta)

    def kernel(self) -> torch.Tensor:
        """The fitted kernel ``(kh, kw)``, or ``(N, kh, kw)`` for a batch, in float64
        (times ``amplitude``)."""
        return self.amplitude[..., None, None] * _bank(*self.params().values(), *self.size)

    def __repr__(self) -> str:
        def show(t):
            return f"{t.item():.4f}" if t.dim() == 0 else f"<{tuple(t.shape)}>"
        body = ", ".join(f"{name}={show(getattr(self, name))}" for name in (*PARAM_NAMES, "amplitude", "loss"))
        return f"GaborFit({body}, size={self.size})"


# -- input checks --------------------------------------------------------------------------------
def _check_params(values, name: str, lower: dict, n: int | None) -> dict[str, torch.Tensor]:
    """``fixed`` or ``init`` as float64 tensors broadcast to ``(n,)`` (``n`` targets)."""
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise TypeError(f"{name} must be a dict of parameter values, got {type(values).__name__}")
    unknown = [k for k in values if k not in PARAM_NAMES]
    if unknown:
        raise ValueError(f"{name} has unknown parameter names {unknown}; allowed: {PARAM_NAMES}")
    out = {}
    for key, value in values.items():
        if isinstance(value, torch.Tensor):
            if not value.dtype.is_floating_point:
                raise TypeError(f"{name}[{key!r}] must be a float or a floating-point tensor, got dtype {value.dtype}")
            t = value.detach().to("cpu", _DTYPE).reshape(-1)
        elif isinstance(value, numbers.Real) and not isinstance(value, bool):
            t = torch.tensor([float(value)], dtype=_DTYPE)
        else:
            raise TypeError(f"{name}[{key!r}] must be a float or a floating-point tensor, got {type(value).__name__}")
        if t.numel() not in (1, n or 1):
            raise ValueError(f"{name}[{key!r}] must be a scalar or have one value per kernel ({n}), "
                             f"got {t.numel()} values")
        if not bool(torch.isfinite(t).all()):
            raise ValueError(f"{name}[{key!r}] must be finite, got {t.tolist()}")
        if key in lower and bool((t <= lower[key]).any()):
            raise ValueError(f"{name}[{key!r}] must be > {lower[key]}, got {t.min().item()}")
        out[key] = t.expand(n or 1)
    return out


def _check_fixed_init(fixed, init, n):
    fixed_t = _check_params(fixed, "fixed", _FIXED_LOWER, n)
    init_t = _check_params(init, "init", _INIT_LOWER, n)
    both = sorted(set(fixed_t) & set(init_t))
    if both:
        raise ValueError(f"parameters {both} are both fixed and given an init; a fixed value is its own init")
    return fixed_t, init_t


def _check_size(kh: int, kw: int, name: str) -> None:
    if kh < 3 or kw < 3:
        raise ValueError(f"{name} must be at least 3 x 3 to identify a Gabor filter, got ({kh}, {kw})")


def _single_threaded_blas():
    """L-BFGS-B calls BLAS on vectors of length <= 5; a multi-threaded BLAS then spends ~10 ms
    per iteration waking threads (measured 40x slower on 2 cores), so pin it to one thread."""
    if threadpool_limits is None:  # pragma: no cover
        return contextlib.nullcontext()
    return threadpool_limits(1, user_api="blas")


# -- the objective -------------------------------------------------------------------------------
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

    Returns the final parameters, the final loss and the record of iterates.
    """
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
    span = max(size)
    limits = {1: (math.log(0.3), math.log(4.0 * span)),          # sigma
              2: (math.log(LAMBD_FLOOR), math.log(8.0 * span)),  # lambd
              3: (math.log(0.1), math.log(10.0))}                # gamma
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
    span = max(size)
    n_theta = _GRID["theta"] if theta_period == math.pi else 2 * _GRID["theta"]
    axes = {"theta": (torch.arange(n_theta, dtype=_DTYPE) + offset) * (theta_period / n_theta)}
    def geometric(lo, hi, n):
        return torch.exp(torch.linspace(math.log(lo), math.log(hi), n, dtype=_DTYPE))

    axes["lambd"] = geometric(LAMBD_FLOOR, max(2.0 * LAMBD_FLOOR, 1.2 * span), _GRID["lambd"])
    axes["sigma"] = geometric(1.0, max(1.5, span / 2.5), _GRID["sigma"])
    axes["gamma"] = torch.tensor(_GRID["gamma"], dtype=_DTYPE)
    if peak is not None:
        theta_p, lambd_p = peak
        extra = torch.tensor([theta_p, theta_p + math.pi], dtype=_DTYPE) % theta_period
        axes["theta"] = torch.cat([axes["theta"], extra])
        if lambd_p >= LAMBD_FLOOR:
            axes["lambd"] = torch.cat([axes["lambd"], torch.tensor([lambd_p], dtype=_DTYPE)])
    for name, value in fixed.items():
        if name != "psi":
            axes[name] = value.reshape(1)
    return axes


def _grid_candidates(target: torch.Tensor, objective: _Quadratic, fixed: dict, n_keep: int,
                     offset: float, chunk: int = 4096) -> list[np.ndarray]:
    """The best ``n_keep`` distinct grid points for ``target`` ``(kh, kw)``, each five parameters."""
    size = tuple(target.shape)
    psi_fixed = "psi" in fixed
    theta_period = 2 * math.pi if psi_fixed else math.pi
    axes = _grid_axes(size, fixed, _spectrum_peak(target), offset, theta_period)
    mesh = torch.meshgrid(axes["theta"], axes["sigma"], axes["lambd"], axes["gamma"], indexing="ij")
    theta, sigma, lambd, gamma = (m.reshape(-1) for m in mesh)
    t = target.reshape(-1).to(torch.float32)
    t_sq = objective.c if objective.gram is None else float(t.square().sum())
    scores, psis = [], []
    for lo in range(0, theta.numel(), chunk):
        sl = slice(lo, lo + chunk)
        m = theta[sl].numel()
        # Even (psi = 0) and odd (psi = -pi/2) kernels: K(psi) = cos(psi) C - sin(psi) S.
        args = [v[sl].to(torch.float32) for v in (theta, sigma, lambd, gamma)]
        if psi_fixed:
            psi = fixed["psi"].to(torch.float32).expand(m)
            k = _bank(*args[:3], args[3], psi, *size).reshape(m, -1)
            kk, kt = k.square().sum(-1), k @ t
            scores.append(t_sq - kt.square() / kk.clamp_min(1e-30) if objective.amplitude else kk - 2 * kt + t_sq)
            psis.append(psi.to(_DTYPE))
            continue
        pair = _bank(*(a.repeat(2) for a in args),
                     torch.cat([torch.zeros(m), torch.full((m,), -math.pi / 2)]), *size).reshape(2, m, -1)
        c, s = pair[0], pair[1]
        cc, ss, cs = c.square().sum(-1), s.square().sum(-1), (c * s).sum(-1)
        ct, st = c @ t, s @ t
        if objective.amplitude:
            # Free gain: A K(psi) = alpha C + beta S is linear in (alpha, beta) = A (cos psi, -sin psi),
            # a 2 x 2 least-squares problem per candidate (C and S are independent for lambd > 2).
            det = (cc * ss - cs.square()).clamp_min(1e-30)
            alpha, beta = (ss * ct - cs * st) / det, (cc * st - cs * ct) / det
            scores.append(t_sq - alpha * ct - beta * st)
            psis.append(torch.atan2(-beta, alpha).to(_DTYPE))
            continue
        # Unit amplitude: loss(psi) = cc cos^2 + ss sin^2 - 2 cs cos sin - 2 (ct cos - st sin) + |t|^2,
        # minimised over a fine psi grid (cheap: five numbers per candidate).
        grid = torch.linspace(-math.pi, math.pi, 73)[:-1]
        cos, sin = torch.cos(grid)[None], torch.sin(grid)[None]
        loss = (cc[:, None] * cos**2 + ss[:, None] * sin**2 - 2 * cs[:, None] * cos * sin
                - 2 * (ct[:, None] * cos - st[:, None] * sin) + t_sq)
        best, where = loss.min(dim=1)
        scores.append(best)
        psis.append(grid[where].to(_DTYPE))
    score = torch.cat(scores).to(_DTYPE)
    psi = torch.cat(psis)
    # Non-maximum suppression in (theta, lambd): keep distinct basins, not neighbours of one.
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
    return [np.array([theta[i].item(), sigma[i].item(), lambd[i].item(), gamma[i].item(), psi[i].item()])
            for i in chosen]


# -- the procedure --------------------------------------------------------------------------------
def _fit_one(target: torch.Tensor, objective: _Quadratic, fixed: dict, init: dict, seed: int,
             n_keep: int, polish: _Quadratic | None = None):
    """Fit one target ``(kh, kw)``; ``fixed`` and ``init`` map names to floats."""
    size = tuple(target.shape)
    free = [i for i, name in enumerate(PARAM_NAMES) if name not in fixed]
    bounds = _bounds(free, size)
    offset = float(np.random.default_rng(seed).uniform())
    fixed_t = {k: torch.tensor(v, dtype=_DTYPE) for k, v in fixed.items()}
    candidates = _grid_candidates(target, objective, fixed_t, n_keep, offset)
    starts = []
    if init:
        seeded = candidates[0].copy()
        for name, value in init.items():
            seeded[PARAM_NAMES.index(name)] = value
        starts.append(("init", seeded))
    starts += [("spectrum+grid", c) for c in candidates]
    for name, value in fixed.items():
        for _, s in starts:
            s[PARAM_NAMES.index(name)] = value
    # Lowest starting loss first: an exact fit ends the search, so a good init saves time.
    first_loss = [objective.value_and_grad(s)[0] for _, s in starts]
    starts = [starts[j] for j in np.argsort(first_loss, kind="stable")]
    final = polish or objective
    if not free:
        p = starts[0][1]
        loss = final.value_and_grad(p)[0]
        return p, loss, [{"origin": starts[0][0], "record": np.append(p, loss)[None]}], final.gain(p)
    tried = []
    best = None
    for origin, start in starts:
        params, loss, record = _refine(objective, start, free, bounds)
        tried.append({"origin": origin, "record": record})
        if best is None or loss < best[1]:
            best = (params, loss, len(tried) - 1)
        if loss < _EXACT:
            break
    if polish is not None:
        # Polish the best few on the response loss itself.
        ranked = sorted(range(len(tried)), key=lambda j: tried[j]["record"][-1, -1])[:2]
        best = None
        for j in ranked:
            params, loss, record = _refine(polish, tried[j]["record"][-1, :5], free, bounds)
            tried.append({"origin": "response", "record": record})
            if best is None or loss < best[1]:
                best = (params, loss, len(tried) - 1)
    params, loss, index = best
    tried.insert(0, tried.pop(index))  # the winner first
    return params, loss, tried, final.gain(params)


def _as_history(record: np.ndarray) -> dict[str, torch.Tensor]:
    t = torch.as_tensor(record, dtype=_DTYPE)
    history = {name: t[:, i] for i, name in enumerate((*PARAM_NAMES, "loss"))}
    history["loss"] = history["loss"].clamp_min(0)  # the Gram form rounds an exact fit to about -1e-15
    return history


def _package(results, size, batched: bool, seconds: float) -> GaborFit:
    params = torch.tensor(np.stack([r[0] for r in results]), dtype=_DTYPE)
    gain = torch.tensor([r[3] for r in results], dtype=_DTYPE)
    # A negative gain is a positive one with psi + pi.
    theta, psi = canonicalize(params[:, 0], params[:, 4] + math.pi * (gain < 0))
    loss = torch.tensor([r[1] for r in results], dtype=_DTYPE).clamp_min(0)
    values = [theta, params[:, 1], params[:, 2], params[:, 3], psi, loss, gain.abs()]
    starts = [[{**_as_history(t["record"]), "origin": t["origin"]} for t in r[2]] for r in results]
    history = [s[0] for s in starts]
    if not batched:
        values = [v[0] for v in values]
        starts, history = starts[0], history[0]
    return GaborFit(*values[:6], size=size, amplitude=values[6], history=history, starts=starts, seconds=seconds)


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
        seed: offsets the coarse grid (the result does not depend on it either).
        amplitude: also fit a gain ``A >= 0``, minimising ``||A K - T||^2 / ||T||^2`` (``A`` is
            solved in closed form for every candidate, so the search is no harder). Use it for
            targets of arbitrary scale, such as a trained convolution's weights.

    Returns:
        :class:`GaborFit` with parameters of shape ``()`` (or ``(N,)`` for a batch), ``theta``
        in ``[0, pi)`` and ``psi`` in ``(-pi, pi]``. Free wavelengths are searched in
        ``[2, 8 max(kh, kw)]`` pixels. ``1 - loss`` is the fraction of each target's energy
        that the fitted filter explains.

    Example:
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
    if not isinstance(kernel, torch.Tensor):
        raise TypeError(f"kernel must be a torch.Tensor, got {type(kernel).__name__}")
    if kernel.dim() not in (2, 3):
        raise ValueError(f"kernel must have shape (kh, kw) or (N, kh, kw), got {tuple(kernel.shape)}")
    if not kernel.dtype.is_floating_point:
        raise TypeError(f"kernel must be a floating-point tensor, got dtype {kernel.dtype}")
    batched = kernel.dim() == 3
    targets = kernel.detach().to("cpu", _DTYPE).reshape(-1, *kernel.shape[-2:])
    n, kh, kw = targets.shape
    _check_size(kh, kw, "kernel")
    if n == 0:
        raise ValueError("kernel must hold at least one kernel, got N = 0")
    if not bool(torch.isfinite(targets).all()):
        raise ValueError("kernel must be finite, got NaN or inf entries")
    norms = targets.square().sum(dim=(-2, -1))
    if bool((norms == 0).any()):
        raise ValueError(f"kernel must not be all zeros (kernel {int(torch.nonzero(norms == 0)[0])} is)")
    fixed_t, init_t = _check_fixed_init(fixed, init, n)
    return _fit_targets(targets, fixed_t, init_t, seed, amplitude, batched, t0)


def _fit_targets(targets: torch.Tensor, fixed_t: dict, init_t: dict, seed: int, amplitude: bool, batched: bool,
                 t0: float) -> GaborFit:
    """Fit every target of ``(N, kh, kw)`` (float64, checked) with per-target ``(N,)`` fixed/init values."""
    n, kh, kw = targets.shape
    norms = targets.square().sum(dim=(-2, -1))
    results = []
    with _single_threaded_blas():
        for i in range(n):
            objective = _Quadratic(targets[i].reshape(-1), float(norms[i]), None, (kh, kw), amplitude)
            results.append(_fit_one(targets[i], objective, {k: v[i].item() for k, v in fixed_t.items()},
                                    {k: v[i].item() for k, v in init_t.items()}, seed, n_keep=4))
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
    n = kernels.shape[0]
    fixed_t = {"theta": torch.zeros(n, dtype=_DTYPE), "gamma": torch.ones(n, dtype=_DTYPE)}
    return _fit_targets(kernels.to(_DTYPE)[:, None, :], fixed_t, {}, seed, amplitude, True, t0)


def _same_padding(kh: int, kw: int) -> tuple[int, int, int, int]:
    """``F.pad`` amounts (left, right, top, bottom) that reproduce ``F.conv2d(padding="same")``."""
    return (kw - 1) // 2, kw - 1 - (kw - 1) // 2, (kh - 1) // 2, kh - 1 - (kh - 1) // 2


def _normal_equations(x: torch.Tensor, y: torch.Tensor, kh: int, kw: int, pads):
    """``A^T A (P, P)``, ``A^T y (P,)`` and ``y^T y`` for ``y = conv(x, k)``, ``P = kh*kw``."""
    cols = F.unfold(F.pad(x, pads), (kh, kw))           # (B, P, L)
    gram = torch.einsum("bpl,bql->pq", cols, cols)
    rhs = torch.einsum("bpl,bl->p", cols, y.reshape(y.shape[0], -1))
    return gram, rhs, float(y.square().sum())


def fit_response(x: torch.Tensor, y: torch.Tensor, kernel_size, *, padding="same", init: dict | None = None,
                 fixed: dict | None = None, seed: int = 0, amplitude: bool = False) -> GaborFit:
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
        init, fixed, seed, amplitude: as in :func:`fit_kernel` (scalars only).

    Returns:
        :class:`GaborFit`; ``loss`` is ``||conv(x, K) - y||^2 / ||y||^2``.

    Example:
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
    kh, kw = _checks.pair(kernel_size, "kernel_size")
    _check_size(kh, kw, "kernel_size")
    for name, t in (("x", x), ("y", y)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if t.dim() != 4 or t.shape[1] != 1:
            raise ValueError(f"{name} must have shape (B, 1, H, W), got {tuple(t.shape)}")
        if not t.dtype.is_floating_point:
            raise TypeError(f"{name} must be a floating-point tensor, got dtype {t.dtype}")
        if not bool(torch.isfinite(t).all()):
            raise ValueError(f"{name} must be finite, got NaN or inf entries")
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"x and y must have the same batch size, got {x.shape[0]} and {y.shape[0]}")
    if padding == "same":
        pads = _same_padding(kh, kw)
    elif padding == "valid":
        pads = (0, 0, 0, 0)
    elif isinstance(padding, str):
        raise ValueError(f"padding must be 'same', 'valid' or non-negative ints, got {padding!r}")
    else:
        ph, pw = _checks.pair(padding, "padding", minimum=0)
        pads = (pw, pw, ph, ph)
    h, w = x.shape[-2] + pads[2] + pads[3] - kh + 1, x.shape[-1] + pads[0] + pads[1] - kw + 1
    if h < 1 or w < 1:
        raise ValueError(f"kernel_size {(kh, kw)} is larger than the padded input {tuple(x.shape[-2:])}")
    if tuple(y.shape[-2:]) != (h, w):
        raise ValueError(f"y must have shape (B, 1, {h}, {w}) for x {tuple(x.shape)}, kernel_size {(kh, kw)} "
                         f"and padding {padding!r}, got {tuple(y.shape)}")
    fixed_t, init_t = _check_fixed_init(fixed, init, None)
    xd, yd = x.detach().to("cpu", _DTYPE), y.detach().to("cpu", _DTYPE)
    gram, rhs, y_sq = _normal_equations(xd, yd, kh, kw, pads)
    if y_sq == 0:
        raise ValueError("y must not be all zeros")
    p = kh * kw
    ridge = 1e-8 * float(torch.diagonal(gram).mean()) + 1e-300
    estimate = torch.linalg.solve(gram + ridge * torch.eye(p, dtype=_DTYPE), rhs).reshape(kh, kw)
    kernel_loss = _Quadratic(estimate.reshape(-1), float(estimate.square().sum()) or 1.0, None, (kh, kw), amplitude)
    response_loss = _Quadratic(rhs, y_sq, gram, (kh, kw), amplitude)
    with _single_threaded_blas():
        result = _fit_one(estimate, kernel_loss, {k: v[0].item() for k, v in fixed_t.items()},
                          {k: v[0].item() for k, v in init_t.items()}, seed, n_keep=4, polish=response_loss)
    return _package([result], (kh, kw), False, time.perf_counter() - t0)


# -- evaluation: the success criterion shared by tests, benchmark and demo --------------------------
#: Ranges in which a random truth is identifiable in a ``size x size`` window (``sample_params``).
IDENTIFIABLE = {
    "theta": "uniform in [0, 2 pi)",
    "sigma": "uniform in [1.5, size / 4]",
    "lambd": "uniform in [3, max(3, 2 sigma)] (at least half a period inside one sigma)",
    "gamma": "uniform in [0.5, 1.5]",
    "psi": "uniform in [-pi, pi)",
}


def sample_params(n: int, size: int, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
    """``n`` random identifiable truths for a ``size x size`` kernel (ranges in ``IDENTIFIABLE``).

    Returns:
        dict of five float64 tensors of shape ``(n,)``.

    Example:
        >>> p = sample_params(3, 15, torch.Generator().manual_seed(0))
        >>> sorted(p), p["theta"].shape
        (['gamma', 'lambd', 'psi', 'sigma', 'theta'], torch.Size([3]))
    """
    if size < 6:
        raise ValueError(f"size must be >= 6 for sigma in [1.5, size / 4] to be non-empty, got {size}")

    def uniform(lo, hi):
        return lo + (hi - lo) * torch.rand(n, dtype=_DTYPE, generator=generator)

    sigma = uniform(1.5, size / 4)
    return {"theta": uniform(0, 2 * math.pi), "sigma": sigma,
            "lambd": 3 + (torch.clamp(2 * sigma, min=3) - 3) * torch.rand(n, dtype=_DTYPE, generator=generator),
            "gamma": uniform(0.5, 1.5), "psi": uniform(-math.pi, math.pi)}


def recovery_error(fit: dict | GaborFit, truth: dict, size) -> tuple[torch.Tensor, torch.Tensor]:
    """Orientation error in degrees and relative kernel error of a fit against the truth.

    The orientation error is the circular distance modulo ``pi`` between the canonical thetas,
    so the ``theta + pi`` / ``-psi`` twin of the truth counts as exact (the kernel error then
    checks that ``psi`` flipped with it). The kernel error is ``||K_fit - K_true|| / ||K_true||``.

    Returns:
        ``(theta_error_degrees, kernel_relative_error)``, tensors of the parameters' batch shape.

    Example:
        >>> truth = dict(theta=0.1, sigma=2.0, lambd=5.0, gamma=1.0, psi=0.3)
        >>> twin = dict(truth, theta=0.1 + math.pi, psi=-0.3)
        >>> [round(v.item(), 6) for v in recovery_error(twin, truth, 9)]
        [0.0, 0.0]
    """
    fitted = fit.params() if isinstance(fit, GaborFit) else fit
    kh, kw = _checks.pair(size, "size")
    a = [torch.as_tensor(fitted[k], dtype=_DTYPE) for k in PARAM_NAMES]
    b = [torch.as_tensor(truth[k], dtype=_DTYPE) for k in PARAM_NAMES]
    theta_a, _ = canonicalize(a[0], a[4])
    theta_b, _ = canonicalize(b[0], b[4])
    diff = torch.remainder(theta_a - theta_b, math.pi)
    theta_err = torch.rad2deg(torch.minimum(diff, math.pi - diff))
    a = torch.broadcast_tensors(*a)
    b = torch.broadcast_tensors(*b)
    k_a, k_b = _bank(*a, kh, kw), _bank(*b, kh, kw)
    rel = (k_a - k_b).square().sum((-2, -1)).sqrt() / k_b.square().sum((-2, -1)).sqrt()
    return theta_err, rel


def is_recovered(fit: dict | GaborFit, truth: dict, size, *, noisy: bool = False) -> torch.Tensor:
    """The success criterion: theta within 1 degree and kernel within 1% (noise-free), or theta
    within 2 degrees (``noisy``: responses at 20 dB SNR).

    Returns:
        bool tensor of the parameters' batch shape.

    Example:
        >>> truth = dict(theta=0.5, sigma=2.0, lambd=5.0, gamma=1.0, psi=0.0)
        >>> off = dict(truth, theta=0.51)  # 0.57 degrees off, kernel 1.8% off
        >>> bool(is_recovered(off, truth, 9)), bool(is_recovered(off, truth, 9, noisy=True))
        (False, True)
    """
    theta_err, rel = recovery_error(fit, truth, size)
    if noisy:
        return theta_err <= 2.0
    return (theta_err <= 1.0) & (rel <= 0.01)


def add_noise(y: torch.Tensor, snr_db: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """``y`` plus white Gaussian noise at ``snr_db`` (noise variance = var(y) / 10^(snr_db / 10)).

    Example:
        >>> y = torch.randn(1, 1, 64, 64, generator=torch.Generator().manual_seed(0))
        >>> n = add_noise(y, 20.0, torch.Generator().manual_seed(1)) - y
        >>> round((y.var() / n.var()).log10().item() * 10)
        20
    """
    std = y.var().sqrt() * 10 ** (-snr_db / 20)
    return y + std * torch.randn(y.shape, dtype=y.dtype, generator=generator)
