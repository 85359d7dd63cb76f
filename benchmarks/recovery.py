"""Success rate and time of Gabor parameter recovery, against plain SGD / Adam and a long Adam run.

For each setting, ``--cases`` random truths (kernel sizes cycle through 9, 12, 15, 21, or through
rectangular sizes) are recovered by

- ``fit_kernel`` / ``fit_response`` (the library: global search + refinement from several starts),
- plain SGD and Adam from the given init for ``--steps`` steps on the same relative loss, in the
  parameterisation ``GaborConv2d`` learns (theta, log sigma, log(lambd - 2), log gamma, psi), with
  the learning rate that did best among a sweep on the first ``--calibration`` cases,
- L-BFGS-B from the given init alone (the library's former refinement without its global search:
  an ablation),
- for the harder settings, "long Adam": one random start (all five parameters drawn from the
  truth's ranges, independently of the truth), Adam (lr ``--long-lr``) for up to ``--long-steps``
  steps with theta unconstrained, keeping each case's best iterate; a case stops early once its
  best loss has not improved by a relative ``--long-rtol`` (1e-4) over ``--long-patience`` (500)
  steps, or is below 1e-6 (a kernel within 0.1%, well inside the 1% of the success test).

Truths: ``gaborlayer.testing.sample_params`` (the identifiable ranges), except *cut* (sigma in
[s/4, s/2], lambd in [3, s/2], s the smaller side: the envelope is cut by the border) and *gamma*
(gamma uniform in [0.2, 3]). Success is ``gaborlayer.testing.is_recovered``: theta within 1 degree
(circular, modulo the theta + pi / -psi twin) and kernel within 1% relative error; with 20 dB noise
theta within 2 degrees, with 10 dB within 3 degrees. For the magnitude model (``fit_response(...,
output="magnitude")``, which psi does not change) the fitted psi is set to the truth's (or its
negative, for the theta + pi twin) before the same test. For the quadrature pair (``output="quadrature"``,
y the even and odd responses, two channels), whose theta is identified modulo 2 pi, both filters
must pass the test (the twin's odd filter is negated). Inits: ``opposite`` is theta* - pi/2,
``wrap`` puts truth and start on either side of theta = 0 = pi, ``random`` is uniform in
[0, 2 pi); with all five free the other four start at the centre of their ranges. Responses:
64 x 64 grayscale crops of scikit-learn's ``china.jpg`` in [0, 1] (32 x 32 for the magnitude model),
one image per case, ``padding="same"``; noise: white Gaussian on y.

The SGD/Adam response loss uses the Gram form ``(k^T A^T A k - 2 k^T A^T y + y^T y) / y^T y``,
which equals ``||F.conv2d(x, k) - y||^2 / ||y||^2`` exactly and lets 500 cases train as one batch;
the magnitude loss is computed by FFT correlation, one batch per kernel size.

Usage::

    python benchmarks/recovery.py --cases 500               # the table in docs/recovery.md (long)
    python benchmarks/recovery.py --cases 500 --set new     # the harder settings only
    python benchmarks/recovery.py --quick                   # a smoke run (seconds)
"""
from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from gaborlayer import fit_kernel, fit_response, gabor_conv2d
from gaborlayer._family import GABOR_2D
from gaborlayer.fit import (
    _bounds,
    _Correlator,
    _MagnitudeLoss,
    _normal_equations,
    _pair,
    _pair_normal_equations,
    _PairQuadratic,
    _Quadratic,
    _refine,
    _single_threaded_blas,
)
from gaborlayer.functional import _bank, _pad_amounts
from gaborlayer.testing import IDENTIFIABLE, add_noise, is_recovered, recovery_error, sample_params

PARAM_NAMES = GABOR_2D.names  # theta, sigma, lambd, gamma, psi
SIZES = (9, 12, 15, 21)
RECTANGLES = ((15, 25), (25, 15), (11, 21), (21, 11))
CROP = 64
CROP_MAGNITUDE = 32
SGD_LRS = (0.01, 0.03, 0.1, 0.3, 1.0)
ADAM_LRS = (0.003, 0.01, 0.03, 0.1, 0.3)
GROUP = 512  # cases trained as one batch by SGD / Adam


class Setting(NamedTuple):
    name: str
    data: str            # "kernel", "response", "magnitude" or "quadrature"
    free: str            # "theta" or "all"
    init: str            # "opposite", "wrap" or "random"
    snr_db: float | None = None
    sizes: tuple = SIZES
    truths: str = "identifiable"  # or "cut", "gamma"
    theta_tol: float | None = None  # success: theta within this many degrees (noisy responses)
    new: bool = False     # a harder setting (issue 14): also the long-Adam anchor


SETTINGS = [
    Setting("kernel, theta only, opposite start", "kernel", "theta", "opposite"),
    Setting("kernel, theta only, across the wrap", "kernel", "theta", "wrap"),
    Setting("kernel, theta only, random start", "kernel", "theta", "random"),
    Setting("kernel, all free, random start", "kernel", "all", "random"),
    Setting("kernel, all free, opposite start", "kernel", "all", "opposite"),
    Setting("kernel, all free, across the wrap", "kernel", "all", "wrap"),
    Setting("response, theta only, opposite start", "response", "theta", "opposite"),
    Setting("response, all free, random start", "response", "all", "random"),
    Setting("response 20 dB, theta only, opposite", "response", "theta", "opposite", 20.0, theta_tol=2.0),
    Setting("response 20 dB, all free, random start", "response", "all", "random", 20.0, theta_tol=2.0),
    Setting("response 10 dB, all free, random start", "response", "all", "random", 10.0, theta_tol=3.0, new=True),
    Setting("kernel 15x25 etc., all free, random start", "kernel", "all", "random", sizes=RECTANGLES, new=True),
    Setting("kernel, envelope cut by border, all free", "kernel", "all", "random", truths="cut", new=True),
    Setting("kernel, gamma 0.2 to 3, all free, random", "kernel", "all", "random", truths="gamma", new=True),
    Setting("magnitude (complex cell), all free, random", "magnitude", "all", "random", new=True),
    Setting("quadrature (pair), all free, random", "quadrature", "all", "random", new=True),
]


def load_image() -> torch.Tensor:
    from sklearn.datasets import load_sample_image
    return torch.tensor(load_sample_image("china.jpg"), dtype=torch.float64).mean(-1) / 255


def draw_truth(truths: str, side: int, g: torch.Generator) -> dict:
    """One truth (floats) for a kernel whose smaller side is ``side``."""
    truth = {k: v[0].item() for k, v in sample_params(1, side, g).items()}
    u = torch.rand(3, dtype=torch.float64, generator=g).tolist()
    if truths == "cut":
        truth["sigma"] = side / 4 + u[0] * side / 4
        truth["lambd"] = 3 + u[1] * (side / 2 - 3)
    elif truths == "gamma":
        truth["gamma"] = 0.2 + 2.8 * u[2]
    return truth


def make_cases(n: int, setting: Setting, seed: int, image) -> list[dict]:
    """``n`` cases: truth, kernel size, init, fixed, a random start, and the target (kernel or x, y)."""
    g = torch.Generator().manual_seed(seed)
    cases = []
    for i in range(n):
        size = setting.sizes[i % len(setting.sizes)]
        size = (size, size) if isinstance(size, int) else tuple(size)
        truth = draw_truth(setting.truths, min(size), g)
        u = torch.rand(3, dtype=torch.float64, generator=g).tolist()
        if setting.init == "opposite":
            theta0 = truth["theta"] - math.pi / 2
        elif setting.init == "wrap":
            near_pi, near_zero = (0.95 + 0.08 * (u[0] - 0.5)) * math.pi, (0.05 + 0.08 * (u[1] - 0.5)) * math.pi
            truth["theta"], theta0 = (near_pi, near_zero) if u[2] < 0.5 else (near_zero, near_pi)
        else:
            theta0 = 2 * math.pi * u[0]
        if setting.free == "theta":
            fixed = {k: truth[k] for k in ("sigma", "lambd", "gamma", "psi")}
            init = {"theta": theta0}
        else:
            sigma0 = (1.5 + min(size) / 4) / 2
            fixed = {}
            init = {"theta": theta0, "sigma": sigma0, "lambd": (3 + 2 * sigma0) / 2, "gamma": 1.0, "psi": 0.0}
        random_start = {k: v[0].item() for k, v in sample_params(1, min(size), g).items()}
        case = {"size": size, "truth": truth, "init": init, "fixed": fixed, "random_start": random_start,
                "data": setting.data, "theta_tol": setting.theta_tol}
        params = [torch.tensor([[truth[k]]], dtype=torch.float64) for k in PARAM_NAMES]
        if setting.data == "kernel":
            case["kernel"] = _bank(GABOR_2D, {k: p[0] for k, p in zip(PARAM_NAMES, params)}, size)[0]
        else:
            crop = CROP_MAGNITUDE if setting.data == "magnitude" else CROP
            r0 = int(torch.randint(0, image.shape[0] - crop + 1, (1,), generator=g))
            c0 = int(torch.randint(0, image.shape[1] - crop + 1, (1,), generator=g))
            x = image[r0:r0 + crop, c0:c0 + crop][None, None].clone()
            output = "real" if setting.data == "response" else setting.data
            y = gabor_conv2d(x, *params, size, padding="same", output=output)
            if setting.snr_db is not None:
                y = add_noise(y, setting.snr_db, g)
            case["x"], case["y"] = x, y
        cases.append(case)
    return cases


def objective_of(case: dict):
    """The case's relative loss as an object with ``value_and_grad`` (the library's objectives)."""
    size, pads = case["size"], _pad_amounts("same", case["size"], (1, 1))
    if case["data"] == "kernel":
        t = case["kernel"].reshape(-1)
        return _Quadratic(t, float(t.square().sum()), None, size)
    if case["data"] == "magnitude":
        return _MagnitudeLoss(F.pad(case["x"], pads)[:, 0], case["y"][:, 0], size, False)
    if case["data"] == "quadrature":  # one Gram matrix, both channels' right-hand sides
        gram, rhs, y_sq = _pair_normal_equations(case["x"], case["y"], *size, pads)
        return _PairQuadratic(rhs, y_sq, gram, size)
    gram, rhs, y_sq = _normal_equations(case["x"], case["y"], *size, pads)
    return _Quadratic(rhs, y_sq, gram, size)


# -- the library ------------------------------------------------------------------------------------
def run_library(case: dict):
    t0 = time.perf_counter()
    fixed = case["fixed"] or None
    if case["data"] == "kernel":
        fit = fit_kernel(case["kernel"], init=case["init"], fixed=fixed, progress=False)
    else:
        output = "linear" if case["data"] == "response" else case["data"]
        fit = fit_response(case["x"], case["y"], case["size"], init=case["init"], fixed=fixed, output=output)
    seconds = time.perf_counter() - t0
    return fit.params(), seconds


def run_lbfgs_from_init(case: dict, objective):
    """The ablation: L-BFGS-B from the given init only (psi held for the magnitude, where it plays no part)."""
    start = np.array([{**case["init"], **case["fixed"]}[k] for k in PARAM_NAMES], dtype=np.float64)
    free = [i for i, k in enumerate(PARAM_NAMES) if k not in case["fixed"] and not (
        k == "psi" and case["data"] == "magnitude")]
    with _single_threaded_blas():
        params, _, _ = _refine(objective, start, free, _bounds(free, case["size"]))
    return dict(zip(PARAM_NAMES, params.tolist()))


# -- SGD and Adam, one batch per kernel size ----------------------------------------------------------
def run_first_order(cases: list[dict], objectives: list, optimiser: str, lrs, steps: int, start: str = "init",
                    patience: int | None = None, rtol: float = 1e-4):
    """Final parameters ``(len(cases), 5)`` of SGD or Adam from each case's ``start`` (``"init"`` or
    ``"random_start"``); ``lrs[i]`` is the learning rate of case ``i`` (so a learning-rate sweep is
    one batch too). With ``patience`` each case keeps its best iterate and stops once its best loss
    has not improved by a relative ``rtol`` over ``patience`` steps or is below 1e-6; also returns the
    steps each ran."""
    lrs = torch.as_tensor(lrs, dtype=torch.float64).expand(len(cases))
    out = torch.empty(len(cases), 5, dtype=torch.float64)
    ran = torch.zeros(len(cases), dtype=torch.long)
    for size in sorted({c["size"] for c in cases}):
        idx = [i for i, c in enumerate(cases) if c["size"] == size]
        for lo in range(0, len(idx), GROUP):
            chunk = idx[lo:lo + GROUP]
            out[chunk], ran[chunk] = _first_order_group([cases[i] for i in chunk], [objectives[i] for i in chunk],
                                                        optimiser, lrs[chunk], steps, size, start, patience,
                                                        rtol)
    return out, ran


def _loss_function(cases, objectives, size):
    """Batched relative losses ``(n,)`` of the parameters ``(n, 5)`` (natural), one case per row."""
    norm = torch.tensor([o.c for o in objectives], dtype=torch.float64)
    if cases[0]["data"] == "magnitude":
        pads = _pad_amounts("same", size, (1, 1))
        correlator = _Correlator(torch.cat([F.pad(c["x"], pads)[:, 0] for c in cases]), size)
        spectra = torch.cat(correlator.spectra)[:, None]  # (n, 1, Hp, Wp): one image per case
        target = torch.cat([c["y"][:, 0] for c in cases])

        def losses(params):
            m = correlator.magnitude(_pair(params.unbind(1), size), spectra)[:, 0]
            return (m - target).square().sum((-2, -1)) / norm
        return losses

    def kernels(params):  # (n, P), or the pairs (n, 2, P) for the quadrature
        if cases[0]["data"] == "quadrature":
            return _pair(params.unbind(1), size).reshape(len(cases), 2, -1)
        return _bank(GABOR_2D, dict(zip(PARAM_NAMES, params.unbind(1))), size).reshape(len(cases), -1)

    if objectives[0].gram is None:
        target = torch.stack([o.b for o in objectives])
        return lambda params: (kernels(params) - target).square().sum(-1) / norm
    gram = torch.stack([o.gram for o in objectives])
    rhs = torch.stack([o.b for o in objectives])

    def losses(params):
        k = kernels(params)
        if k.dim() == 3:  # the pair: the two halves' forms summed, rhs (even, then odd)
            quad = torch.einsum("nhp,npq,nhq->n", k, gram, k)
            return (quad - 2 * (k.reshape(len(cases), -1) * rhs).sum(-1) + norm) / norm
        quad = (torch.einsum("np,npq->nq", k, gram) * k).sum(-1)
        return (quad - 2 * (k * rhs).sum(-1) + norm) / norm
    return losses


def _first_order_group(cases, objectives, optimiser, lrs, steps, size, start, patience, rtol, betas=(0.9, 0.999),
                       eps=1e-8):
    """``torch.optim.SGD`` (no momentum) or ``torch.optim.Adam`` (defaults), written out so that
    every case (row) has its own learning rate; the rows are independent problems."""
    begin = torch.tensor([[{**c[start], **c["fixed"]}[k] for k in PARAM_NAMES] for c in cases], dtype=torch.float64)
    # GaborConv2d's storage: theta, log sigma, log(lambd - 2), log gamma, psi.
    z = torch.stack([begin[:, 0], begin[:, 1].log(), (begin[:, 2] - 2).log(), begin[:, 3].log(), begin[:, 4]], 1)
    free = torch.tensor([k not in cases[0]["fixed"] for k in PARAM_NAMES], dtype=torch.float64)
    losses = _loss_function(cases, objectives, size)

    def natural(z):
        return torch.stack([z[:, 0], z[:, 1].exp(), 2 + z[:, 2].exp(), z[:, 3].exp(), z[:, 4]], 1)

    n = len(cases)
    m, v = torch.zeros_like(z), torch.zeros_like(z)
    lr = lrs[:, None]
    best_z, best = z.clone(), torch.full((n,), math.inf, dtype=torch.float64)
    mark = best.clone()
    active = torch.ones(n, dtype=torch.bool)
    ran = torch.zeros(n, dtype=torch.long)
    rows = torch.arange(n)
    for t in range(1, steps + 1):
        if rows.numel() == 0:
            break
        za = z[rows].requires_grad_(True)
        loss = losses(natural(za)).nan_to_num(math.inf)
        (g,) = torch.autograd.grad(loss.clamp_max(1e30).sum(), za)
        g = g.nan_to_num(0.0) * free
        with torch.no_grad():
            improved = loss < best[rows]
            best_z[rows[improved]], best[rows[improved]] = za[improved].detach(), loss[improved].detach()
            ran[rows] = t
            if optimiser == "sgd":
                z[rows] = za.detach() - lr[rows] * g
            else:
                m[rows] = betas[0] * m[rows] + (1 - betas[0]) * g
                v[rows] = betas[1] * v[rows] + (1 - betas[1]) * g * g
                m_hat, v_hat = m[rows] / (1 - betas[0] ** t), v[rows] / (1 - betas[1] ** t)
                z[rows] = za.detach() - lr[rows] * m_hat / (v_hat.sqrt() + eps)
            if patience and t % patience == 0:
                active &= (best <= mark * (1 - rtol)) & (best > 1e-6)  # stalled, or converged
                mark = best.clone()
                if not bool(active.any()):
                    break
                if int(active.sum()) < rows.numel():
                    rows = active.nonzero()[:, 0]
                    losses = _loss_function([cases[i] for i in rows], [objectives[i] for i in rows], size)
    final = best_z if patience else z
    return natural(final.detach()), ran


def recovered(p: dict, case: dict) -> bool:
    """The success test of the case (see the module docstring)."""
    if not all(math.isfinite(float(v)) for v in p.values()):
        return False
    truth = case["truth"]
    if case["data"] == "magnitude":  # psi plays no part: take the truth's (its negative for the twin)
        same = math.cos(float(p["theta"]) - truth["theta"]) >= 0
        p = dict(p, psi=truth["psi"] if same else -truth["psi"])
    if case["data"] == "quadrature":  # no twin: both filters of the pair (the twin's odd one is negated)
        odd = (dict(p, psi=float(p["psi"]) - math.pi / 2), dict(truth, psi=truth["psi"] - math.pi / 2))
        if not bool(is_recovered(*odd, case["size"])):
            return False
    if case["theta_tol"] is not None:
        return float(recovery_error(p, truth, case["size"])[0]) <= case["theta_tol"]
    return bool(is_recovered(p, truth, case["size"]))


def successes(params, cases) -> torch.Tensor:
    """Bool ``(n,)``: :func:`recovered` for each case."""
    if isinstance(params, torch.Tensor):
        params = [dict(zip(PARAM_NAMES, row.tolist())) for row in params]
    return torch.tensor([recovered(p, c) for p, c in zip(params, cases)])


def calibrate(cases, objectives, optimiser, lrs, steps):
    """The learning rate with the most successes on ``cases`` (ties: the smaller rate); one batch."""
    n = len(cases)
    rates = torch.tensor(lrs, dtype=torch.float64).repeat_interleave(n)
    params, _ = run_first_order(cases * len(lrs), objectives * len(lrs), optimiser, rates, steps)
    counts = successes(params, cases * len(lrs)).reshape(len(lrs), n).sum(1).tolist()
    return max(zip(counts, [-lr for lr in lrs]))[1] * -1


def theta_errors(params: list[dict], cases) -> list[float]:
    out = []
    for p, c in zip(params, cases):
        theta = float(p["theta"])
        if c["data"] == "magnitude":  # the magnitude's period is pi whatever psi: compare modulo pi
            theta = c["truth"]["theta"] + (theta - c["truth"]["theta"] + math.pi / 2) % math.pi - math.pi / 2
            p = dict(p, theta=theta, psi=c["truth"]["psi"])
        if c["data"] == "quadrature":  # the pair's theta is identified modulo 2 pi
            out.append(abs(math.degrees(math.remainder(theta - c["truth"]["theta"], 2 * math.pi))))
            continue
        out.append(float(recovery_error(p, c["truth"], c["size"])[0]))
    return out


# -- the landscape of the phase-free loss (docs/recovery.md) ----------------------------------------
def _log_hessian(objective, p: np.ndarray, h: float = 1e-5) -> np.ndarray:
    """The Hessian ``(4, 4)`` of the loss in (theta, log sigma, log lambd, log gamma) at ``p``, by central
    differences of the analytic gradient, symmetrised."""
    def grad(q):
        g = objective.value_and_grad(q)[1]
        return np.array([g[j] * (q[j] if j else 1.0) for j in range(4)])
    rows = []
    for i in range(4):
        up, down = p.copy(), p.copy()
        up[i], down[i] = (p[i] * math.exp(h), p[i] * math.exp(-h)) if i else (p[i] + h, p[i] - h)
        rows.append((grad(up) - grad(down)) / (2 * h))
    hessian = np.array(rows)
    return (hessian + hessian.T) / 2


def landscape(out: str | None) -> None:
    """Print (and with ``out`` draw) the loss over theta of the linear and the magnitude models for one
    truth and one 64 x 64 crop, and the Gauss-Newton curvature of each at the truth."""
    image = load_image()
    size = (21, 21)
    truth = {"theta": math.pi / 4, "sigma": 4.0, "lambd": 8.0, "gamma": 0.5, "psi": 0.5}
    x = image[100:164, 200:264][None, None].clone()
    params = [torch.tensor([[truth[k]]], dtype=torch.float64) for k in PARAM_NAMES]
    pads = _pad_amounts("same", size, (1, 1))
    models = {}
    for name, output, amplitude in (("linear (psi = 0.5)", "real", False), ("magnitude", "magnitude", False),
                                    ("magnitude, best gain", "magnitude", True)):
        y = gabor_conv2d(x, *params, size, padding="same", output=output)
        if output == "real":
            gram, rhs, y_sq = _normal_equations(x, y, *size, pads)
            models[name] = _Quadratic(rhs, y_sq, gram, size, amplitude)
        else:
            models[name] = _MagnitudeLoss(F.pad(x, pads)[:, 0], y[:, 0], size, amplitude)
    thetas = np.linspace(-math.pi, math.pi, 721)
    base = np.array([truth[k] for k in PARAM_NAMES])
    curves = {}
    print(f"truth {truth}, 21 x 21, 64 x 64 crop of china.jpg; loss over theta in [-180, 180) (others at the truth)")
    for name, objective in models.items():
        loss = np.array([objective.value_and_grad(np.r_[t, base[1:]])[0] for t in thetas])
        curves[name] = loss
        inner = (loss[1:-1] < loss[:-2]) & (loss[1:-1] < loss[2:])
        minima = [f"{math.degrees(t):.1f}° ({v:.3f})" for t, v in zip(thetas[1:-1][inner], loss[1:-1][inner])]
        hessian = _log_hessian(objective, base)
        values, vectors = np.linalg.eigh(hessian)
        weakest = ", ".join(f"{n} {c:+.2f}" for n, c in zip(("theta", "log sigma", "log lambd", "log gamma"),
                                                           vectors[:, 0]))
        print(f"{name}: minima at {'; '.join(minima)}; median loss {np.median(loss):.3f}; curvature in theta "
              f"{hessian[0, 0]:.2f}; Hessian eigenvalues {np.array2string(values, precision=3)}, weakest "
              f"direction ({weakest})")
    if out:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        fig, ax = plt.subplots(figsize=(7.5, 3.6), layout="constrained")
        for name, loss in curves.items():
            ax.plot(np.degrees(thetas), loss, label=name)
        ax.axvline(45, color="0.6", lw=0.8, ls=":")
        ax.axvline(-135, color="0.6", lw=0.8, ls=":")
        ax.set(xlabel="theta (degrees); truth 45°", ylabel="relative loss", xlim=(-180, 180),
               title="One filter (sigma 4, lambd 8, gamma 0.5, psi 0.5) on china.jpg: linear vs magnitude")
        ax.legend(frameon=False)
        fig.savefig(out, dpi=110)
        print(f"wrote {out}")


def pct(ok: torch.Tensor) -> str:
    return f"{100 * ok.float().mean().item():.1f}%"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", type=int, default=500, help="random cases per setting (default 500)")
    parser.add_argument("--steps", type=int, default=1000, help="SGD / Adam steps (default 1000)")
    parser.add_argument("--calibration", type=int, default=40, help="cases for the SGD / Adam learning-rate sweep")
    parser.add_argument("--long-steps", type=int, default=20000, help="long-Adam steps at most (default 20000)")
    parser.add_argument("--long-lr", type=float, default=0.01, help="long-Adam learning rate (default 0.01)")
    parser.add_argument("--long-patience", type=int, default=500, help="long-Adam early stop: steps (default 500)")
    parser.add_argument("--long-rtol", type=float, default=1e-4,
                        help="long-Adam early stop: relative improvement of the best loss (default 1e-4)")
    parser.add_argument("--anchor-cases", type=int, default=None,
                        help="run the anchors (not the library) on the first this many cases of each setting "
                             "(default: all)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--set", choices=("all", "old", "new"), default="all", help="which settings")
    parser.add_argument("--only", type=str, default=None, help="run the settings whose name contains this")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (default 1: on a shared 2-core machine small ops ran up to 50x slower "
                             "with 2)")
    parser.add_argument("--quick", action="store_true",
                        help="a smoke run: 4 cases, few steps, three settings (kernel, magnitude, quadrature)")
    parser.add_argument("--landscape", nargs="?", const="", default=None, metavar="PNG",
                        help="instead: print the loss over theta of the linear and magnitude models (and draw it)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.landscape is not None:
        return landscape(args.landscape or None)
    if args.quick:
        args.cases, args.steps, args.calibration, args.long_steps, args.long_patience = 4, 20, 4, 40, 10
    t_start = time.perf_counter()

    image = load_image()
    print(f"gaborlayer recovery benchmark: {args.cases} cases per setting, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")
    print("truth ranges: " + "; ".join(f"{k} {v}" for k, v in IDENTIFIABLE.items()))
    print(f"SGD / Adam: {args.steps} steps, learning rate = best on the first {args.calibration} cases among "
          f"SGD {SGD_LRS}, Adam {ADAM_LRS}; long Adam (harder settings): one random start, lr {args.long_lr}, "
          f"up to {args.long_steps} steps, each case stopped when its best loss falls below 1e-6 or improves by "
          f"less than a relative {args.long_rtol:g} over {args.long_patience} steps")
    if args.anchor_cases:
        print(f"anchors on the first {args.anchor_cases} cases of each setting")
    print()
    header = (f"| {'setting':<42} | library | median s | max s | max theta err | "
              f"SGD (lr) | Adam (lr) | L-BFGS from init only | long Adam (median steps) |")
    print(header)
    print("|" + "|".join("-" * (len(c)) for c in header.split("|")[1:-1]) + "|", flush=True)
    misses = []
    for k, setting in enumerate(SETTINGS):
        if (args.set == "new" and not setting.new) or (args.set == "old" and setting.new):
            continue
        if args.only and args.only not in setting.name:
            continue
        if args.quick and setting.name != SETTINGS[0].name and setting.data not in ("magnitude", "quadrature"):
            continue
        cases = make_cases(args.cases, setting, args.seed + 1000 * k, image)
        clock = [time.perf_counter()]
        library, seconds = zip(*(run_library(c) for c in cases))
        clock.append(time.perf_counter())
        ok_lib = successes(list(library), cases)
        missed = torch.nonzero(~ok_lib)[:, 0].tolist()
        # the library's result before the anchors run (a run cut short still reports it)
        print(f"  {setting.name}: library {clock[-1] - clock[-2]:.0f} s, {pct(ok_lib)}, median "
              f"{statistics.median(seconds):.3f} s, misses {missed}", file=sys.stderr, flush=True)
        misses += [(setting.name, i, cases[i]) for i in missed]
        anchored = cases[:args.anchor_cases] if args.anchor_cases else cases
        objectives = [objective_of(c) for c in anchored]
        calib = slice(0, min(args.calibration, len(anchored)))
        lr_sgd = calibrate(anchored[calib], objectives[calib], "sgd", SGD_LRS, args.steps)
        lr_adam = calibrate(anchored[calib], objectives[calib], "adam", ADAM_LRS, args.steps)
        ok_sgd = successes(run_first_order(anchored, objectives, "sgd", lr_sgd, args.steps)[0], anchored)
        ok_adam = successes(run_first_order(anchored, objectives, "adam", lr_adam, args.steps)[0], anchored)
        clock.append(time.perf_counter())
        ok_ablation = successes([run_lbfgs_from_init(c, o) for c, o in zip(anchored, objectives)], anchored)
        clock.append(time.perf_counter())
        long_adam = "-"
        if setting.new:
            params, ran = run_first_order(anchored, objectives, "adam", args.long_lr, args.long_steps,
                                          start="random_start", patience=args.long_patience, rtol=args.long_rtol)
            long_adam = f"{pct(successes(params, anchored))} ({int(ran.median())})"
        clock.append(time.perf_counter())
        row = (f"| {setting.name:<42} | {pct(ok_lib):>7} | {statistics.median(seconds):>8.3f} | {max(seconds):>5.2f} | "
               f"{max(theta_errors(list(library), cases)):>12.3f}° | {pct(ok_sgd) + f' ({lr_sgd:g})':<8} | "
               f"{pct(ok_adam) + f' ({lr_adam:g})':<9} | {pct(ok_ablation):>21} | {long_adam:>24} |")
        print(row, flush=True)
        spent = [b - a for a, b in zip(clock, clock[1:])]
        print("  wall s: " + ", ".join(f"{what} {t:.0f}" for what, t in zip(
            ("library", "SGD/Adam incl. sweep", "L-BFGS from init", "long Adam"), spent)), file=sys.stderr, flush=True)
    print()
    print("library: fit_kernel / fit_response with the same init (and fixed) as the baselines; "
          "times are wall seconds per case, including the Gram matrix for responses.")
    print(f"library misses: {len(misses)}")
    for name, i, case in misses:
        print(f"  {name}, case {i}: size {case['size']}, truth "
              + ", ".join(f"{k}={v:.4f}" for k, v in case["truth"].items()))
    print(f"total {time.perf_counter() - t_start:.0f} s")


if __name__ == "__main__":
    sys.exit(main())
