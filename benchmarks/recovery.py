"""Success rate and time of Gabor parameter recovery, against plain SGD and Adam from the same start.

For each setting, ``--cases`` random identifiable truths (``gaborlayer.testing.sample_params``; kernel
sizes cycle through 9, 12, 15, 21) are recovered by

- ``fit_kernel`` / ``fit_response`` (the library: global search + L-BFGS-B from several starts),
- plain SGD and Adam from the given init for ``--steps`` steps on the same relative loss, in the
  parameterisation ``GaborConv2d`` learns (theta, log sigma, log(lambd - 2), log gamma, psi), with
  the learning rate that did best among a sweep on the first ``--calibration`` cases,
- L-BFGS-B from the given init alone (the library's refinement without its global search: an
  ablation).

Success is ``gaborlayer.testing.is_recovered``: theta within 1 degree (circular, modulo the
theta + pi / -psi twin) and kernel within 1% relative error; with noisy responses theta within 2
degrees. Inits: ``opposite`` is theta* - pi/2 (the question: truth pi/4, start -pi/4), ``wrap``
puts truth and start on either side of theta = 0 = pi (truth 0.95 pi +- 0.04 pi, start
0.05 pi +- 0.04 pi, or the reverse), ``random`` is uniform in [0, 2 pi). With all five free, the
other four start at the centre of their ranges (sigma0 = (1.5 + size/4)/2, lambd0 = (3 + 2 sigma0)/2,
gamma0 = 1, psi0 = 0). Responses: 64 x 64 grayscale crops of scikit-learn's ``china.jpg`` in [0, 1],
one image per case, ``padding="same"``; noise: white Gaussian at 20 dB SNR on y.

The SGD/Adam response loss uses the Gram form ``(k^T A^T A k - 2 k^T A^T y + y^T y) / y^T y``,
which equals ``||F.conv2d(x, k) - y||^2 / ||y||^2`` exactly and lets 500 cases train as one batch.

Usage::

    python benchmarks/recovery.py --cases 500          # the table in docs/recovery.md (long)
    python benchmarks/recovery.py --cases 20 --steps 200   # a smoke run
"""
from __future__ import annotations

import argparse
import math
import statistics
import sys
import time

import numpy as np
import torch

from gaborlayer import fit_kernel, fit_response, gabor_conv2d
from gaborlayer._family import GABOR_2D
from gaborlayer.fit import _bounds, _normal_equations, _Quadratic, _refine, _single_threaded_blas
from gaborlayer.functional import _bank, _pad_amounts
from gaborlayer.testing import IDENTIFIABLE, add_noise, is_recovered, recovery_error, sample_params

PARAM_NAMES = GABOR_2D.names  # theta, sigma, lambd, gamma, psi
SIZES = (9, 12, 15, 21)
CROP = 64
SNR_DB = 20.0
SGD_LRS = (0.01, 0.03, 0.1, 0.3, 1.0)
ADAM_LRS = (0.003, 0.01, 0.03, 0.1, 0.3)
# (name, data, free, init, snr_db)
SETTINGS = [
    ("kernel, theta only, opposite start", "kernel", "theta", "opposite", None),
    ("kernel, theta only, across the wrap", "kernel", "theta", "wrap", None),
    ("kernel, theta only, random start", "kernel", "theta", "random", None),
    ("kernel, all free, random start", "kernel", "all", "random", None),
    ("kernel, all free, opposite start", "kernel", "all", "opposite", None),
    ("kernel, all free, across the wrap", "kernel", "all", "wrap", None),
    ("response, theta only, opposite start", "response", "theta", "opposite", None),
    ("response, all free, random start", "response", "all", "random", None),
    ("response 20 dB, theta only, opposite", "response", "theta", "opposite", SNR_DB),
    ("response 20 dB, all free, random start", "response", "all", "random", SNR_DB),
]


def load_image() -> torch.Tensor:
    from sklearn.datasets import load_sample_image
    return torch.tensor(load_sample_image("china.jpg"), dtype=torch.float64).mean(-1) / 255


def make_cases(n: int, data: str, free: str, init_mode: str, snr_db, seed: int, image) -> list[dict]:
    """``n`` cases: truth, kernel size, init, fixed, and the target (kernel or x, y)."""
    g = torch.Generator().manual_seed(seed)
    cases = []
    for i in range(n):
        size = SIZES[i % len(SIZES)]
        truth = {k: v[0].item() for k, v in sample_params(1, size, g).items()}
        u = torch.rand(3, dtype=torch.float64, generator=g).tolist()
        if init_mode == "opposite":
            theta0 = truth["theta"] - math.pi / 2
        elif init_mode == "wrap":
            near_pi, near_zero = (0.95 + 0.08 * (u[0] - 0.5)) * math.pi, (0.05 + 0.08 * (u[1] - 0.5)) * math.pi
            truth["theta"], theta0 = (near_pi, near_zero) if u[2] < 0.5 else (near_zero, near_pi)
        else:
            theta0 = 2 * math.pi * u[0]
        if free == "theta":
            fixed = {k: truth[k] for k in ("sigma", "lambd", "gamma", "psi")}
            init = {"theta": theta0}
        else:
            sigma0 = (1.5 + size / 4) / 2
            fixed = {}
            init = {"theta": theta0, "sigma": sigma0, "lambd": (3 + 2 * sigma0) / 2, "gamma": 1.0, "psi": 0.0}
        case = {"size": size, "truth": truth, "init": init, "fixed": fixed, "noisy": snr_db is not None}
        kernel = _bank(GABOR_2D, {k: torch.tensor([truth[k]], dtype=torch.float64) for k in PARAM_NAMES},
                       (size, size))[0]
        if data == "kernel":
            case["kernel"] = kernel
        else:
            r0 = int(torch.randint(0, image.shape[0] - CROP + 1, (1,), generator=g))
            c0 = int(torch.randint(0, image.shape[1] - CROP + 1, (1,), generator=g))
            x = image[r0:r0 + CROP, c0:c0 + CROP][None, None].clone()
            y = gabor_conv2d(x, *(torch.tensor([[truth[k]]], dtype=torch.float64) for k in PARAM_NAMES),
                             size, padding="same")
            if snr_db is not None:
                y = add_noise(y, snr_db, g)
            case["x"], case["y"] = x, y
        cases.append(case)
    return cases


def objective_of(case: dict) -> _Quadratic:
    size = case["size"]
    if "kernel" in case:
        t = case["kernel"].reshape(-1)
        return _Quadratic(t, float(t.square().sum()), None, (size, size))
    gram, rhs, y_sq = _normal_equations(case["x"], case["y"], size, size, _pad_amounts("same", (size, size), (1, 1)))
    return _Quadratic(rhs, y_sq, gram, (size, size))


# -- the library ------------------------------------------------------------------------------------
def run_library(case: dict):
    t0 = time.perf_counter()
    if "kernel" in case:
        fit = fit_kernel(case["kernel"], init=case["init"], fixed=case["fixed"] or None)
    else:
        fit = fit_response(case["x"], case["y"], case["size"], init=case["init"], fixed=case["fixed"] or None)
    seconds = time.perf_counter() - t0
    return fit.params(), seconds


def run_lbfgs_from_init(case: dict, objective: _Quadratic):
    """The ablation: the library's L-BFGS-B refinement from the given init only."""
    start = np.array([{**case["init"], **case["fixed"]}[k] for k in PARAM_NAMES], dtype=np.float64)
    free = [i for i, k in enumerate(PARAM_NAMES) if k not in case["fixed"]]
    with _single_threaded_blas():
        params, _, _ = _refine(objective, start, free, _bounds(free, (case["size"],) * 2))
    return dict(zip(PARAM_NAMES, params.tolist()))


# -- SGD and Adam, one batch per kernel size ----------------------------------------------------------
def run_first_order(cases: list[dict], objectives: list[_Quadratic], optimiser: str, lrs, steps: int):
    """Final parameters ``(len(cases), 5)`` of SGD or Adam from each case's init; ``lrs[i]`` is the
    learning rate of case ``i`` (so a learning-rate sweep is one batch too)."""
    lrs = torch.as_tensor(lrs, dtype=torch.float64).expand(len(cases))
    out = torch.empty(len(cases), 5, dtype=torch.float64)
    for size in SIZES:
        idx = [i for i, c in enumerate(cases) if c["size"] == size]
        for lo in range(0, len(idx), 128):
            chunk = idx[lo:lo + 128]
            out[chunk] = _first_order_group([cases[i] for i in chunk], [objectives[i] for i in chunk],
                                            optimiser, lrs[chunk], steps, size)
    return out


def _first_order_group(cases, objectives, optimiser, lrs, steps, size, betas=(0.9, 0.999), eps=1e-8):
    """``torch.optim.SGD`` (no momentum) or ``torch.optim.Adam`` (defaults), written out so that
    every case (row) has its own learning rate; the rows are independent problems."""
    start = torch.tensor([[{**c["init"], **c["fixed"]}[k] for k in PARAM_NAMES] for c in cases], dtype=torch.float64)
    # GaborConv2d's storage: theta, log sigma, log(lambd - 2), log gamma, psi.
    z = torch.stack([start[:, 0], start[:, 1].log(), (start[:, 2] - 2).log(), start[:, 3].log(), start[:, 4]], 1)
    free = torch.tensor([k not in cases[0]["fixed"] for k in PARAM_NAMES], dtype=torch.float64)
    norm = torch.tensor([o.c for o in objectives], dtype=torch.float64)
    if objectives[0].gram is None:
        target = torch.stack([o.b for o in objectives])

        def losses(k):
            return (k - target).square().sum(-1) / norm
    else:
        gram = torch.stack([o.gram for o in objectives])
        rhs = torch.stack([o.b for o in objectives])

        def losses(k):
            quad = (torch.einsum("np,npq->nq", k, gram) * k).sum(-1)
            return (quad - 2 * (k * rhs).sum(-1) + norm) / norm

    def natural(z):
        return z[:, 0], z[:, 1].exp(), 2 + z[:, 2].exp(), z[:, 3].exp(), z[:, 4]

    m = torch.zeros_like(z)
    v = torch.zeros_like(z)
    lr = lrs[:, None]
    for t in range(1, steps + 1):
        z.requires_grad_(True)
        bank = _bank(GABOR_2D, dict(zip(PARAM_NAMES, natural(z))), (size, size))
        loss = losses(bank.reshape(len(cases), -1)).nan_to_num(0.0).sum()
        (g,) = torch.autograd.grad(loss, z)
        g = g.nan_to_num(0.0) * free
        with torch.no_grad():
            if optimiser == "sgd":
                z = z - lr * g
            else:
                m = betas[0] * m + (1 - betas[0]) * g
                v = betas[1] * v + (1 - betas[1]) * g * g
                m_hat, v_hat = m / (1 - betas[0] ** t), v / (1 - betas[1] ** t)
                z = z - lr * m_hat / (v_hat.sqrt() + eps)
    return torch.stack(natural(z.detach()), dim=1)


def successes(params, cases) -> torch.Tensor:
    """Bool ``(n,)``: is_recovered for each case (NaN parameters fail)."""
    if isinstance(params, torch.Tensor):
        params = [dict(zip(PARAM_NAMES, row.tolist())) for row in params]
    out = []
    for p, c in zip(params, cases):
        if not all(math.isfinite(float(v)) for v in p.values()):
            out.append(False)
            continue
        out.append(bool(is_recovered(p, c["truth"], c["size"], noisy=c["noisy"])))
    return torch.tensor(out)


def calibrate(cases, objectives, optimiser, lrs, steps):
    """The learning rate with the most successes on ``cases`` (ties: the smaller rate); one batch."""
    n = len(cases)
    rates = torch.tensor(lrs, dtype=torch.float64).repeat_interleave(n)
    ok = successes(run_first_order(cases * len(lrs), objectives * len(lrs), optimiser, rates, steps), cases * len(lrs))
    counts = ok.reshape(len(lrs), n).sum(1).tolist()
    return max(zip(counts, [-lr for lr in lrs]))[1] * -1


def theta_error_max(params: list[dict], cases) -> float:
    return max(float(recovery_error(p, c["truth"], c["size"])[0]) for p, c in zip(params, cases))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", type=int, default=500, help="random cases per setting (default 500)")
    parser.add_argument("--steps", type=int, default=1000, help="SGD / Adam steps (default 1000)")
    parser.add_argument("--calibration", type=int, default=40, help="cases for the SGD / Adam learning-rate sweep")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", type=str, default=None, help="run the settings whose name contains this")
    args = parser.parse_args(argv)

    image = load_image()
    print(f"gaborlayer recovery benchmark: {args.cases} cases per setting, kernel sizes {SIZES}, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    print("truth ranges: " + "; ".join(f"{k} {v}" for k, v in IDENTIFIABLE.items()))
    print(f"SGD / Adam: {args.steps} steps, learning rate = best on the first {args.calibration} cases among "
          f"SGD {SGD_LRS}, Adam {ADAM_LRS}\n")
    header = (f"| {'setting':<40} | library | median s | max s | max theta err | "
              f"SGD (lr) | Adam (lr) | L-BFGS from init only |")
    rows = [header, "|" + "|".join("-" * (len(c)) for c in header.split("|")[1:-1]) + "|"]
    print(rows[0])
    print(rows[1])
    for k, (name, data, free, init_mode, snr_db) in enumerate(SETTINGS):
        if args.only and args.only not in name:
            continue
        cases = make_cases(args.cases, data, free, init_mode, snr_db, args.seed + 1000 * k, image)
        objectives = [objective_of(c) for c in cases]
        library, seconds = zip(*(run_library(c) for c in cases))
        ok_lib = successes(list(library), cases)
        calib = slice(0, min(args.calibration, len(cases)))
        lr_sgd = calibrate(cases[calib], objectives[calib], "sgd", SGD_LRS, args.steps)
        lr_adam = calibrate(cases[calib], objectives[calib], "adam", ADAM_LRS, args.steps)
        ok_sgd = successes(run_first_order(cases, objectives, "sgd", lr_sgd, args.steps), cases)
        ok_adam = successes(run_first_order(cases, objectives, "adam", lr_adam, args.steps), cases)
        ok_ablation = successes([run_lbfgs_from_init(c, o) for c, o in zip(cases, objectives)], cases)

        def pct(ok):
            return f"{100 * ok.float().mean().item():.1f}%"

        row = (f"| {name:<40} | {pct(ok_lib):>7} | {statistics.median(seconds):>8.3f} | {max(seconds):>5.2f} | "
               f"{theta_error_max(list(library), cases):>12.3f}° | {pct(ok_sgd) + f' ({lr_sgd:g})':<8} | "
               f"{pct(ok_adam) + f' ({lr_adam:g})':<9} | {pct(ok_ablation):>21} |")
        rows.append(row)
        print(row, flush=True)
    print()
    print("library: fit_kernel / fit_response with the same init (and fixed) as the baselines; "
          "times are wall seconds per case, including the Gram matrix for responses.")


if __name__ == "__main__":
    sys.exit(main())
