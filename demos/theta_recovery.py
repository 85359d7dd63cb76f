"""Why gradient descent on a Gabor filter's orientation cycles, and what recovers it.

Reproduces the question in ``docs/recovery.md``: a conv layer constrained to Gabor filters
(:class:`gaborlayer.GaborConv2d`, only ``theta`` learning) must reproduce the response of a
fixed Gabor filter with ``theta = pi/4`` on a real image (scikit-learn's ``china.jpg``, bundled
with the package), starting from ``theta = -pi/4``. It runs plain SGD (a small and a large
learning rate), SGD with momentum, Adam and L-BFGS, then :func:`gaborlayer.fit_response`, and
repeats the comparison where the truth (0.95 pi) sits across ``theta = 0 = pi`` from the start
(0.05 pi). That wrap case is *not* one where gradient descent fails: with ``psi = 0``,
``theta - pi`` is the same filter as the truth and lies 0.1 pi from the start, so the small-step
methods converge to it (compare angles only after ``canonicalize``); only the large step cycles,
as in the first case. Starts across the wrap that do defeat gradient descent are measured by
``benchmarks/recovery.py`` (``docs/recovery.md``, section 6). It prints a table and writes four
PNGs to ``--out``:

- ``recovery_landscape.png``: the loss over theta (response and kernel loss) and over theta x psi,
- ``recovery_trajectories.png``: the iterates of every method on the loss curve, and loss per step,
- ``recovery_kernels.png``: target, start and recovered kernels,
- ``recovery_basin.png``: the width of the basin and the largest stable SGD step against sigma / lambd.

Run ``python demos/theta_recovery.py`` (under a minute on a laptop CPU) or ``--quick`` (CI).
"""
from __future__ import annotations

import argparse
import math
import os
import time
import warnings

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from gaborlayer import GaborConv2d, GaborTruncationWarning, canonicalize, fit_response, gabor_kernel2d  # noqa: E402

DT = torch.float64
# The question's filter: only theta differs between target and learner.
KERNEL, SIGMA, LAMBD, GAMMA, PSI = 21, 4.0, 8.0, 0.5, 0.0
FIXED = {"sigma": SIGMA, "lambd": LAMBD, "gamma": GAMMA, "psi": PSI}
CASES = {  # name: (true theta, initial theta)
    "question": (math.pi / 4, -math.pi / 4),
    "wrap": (0.95 * math.pi, 0.05 * math.pi),
}
COLORS = {"SGD lr=0.05": "tab:blue", "SGD lr=0.5": "tab:orange", "SGD+mom lr=0.05": "tab:purple",
          "Adam lr=0.05": "tab:green", "L-BFGS (line search)": "tab:brown", "fit_response": "black"}


def load_image(quick: bool) -> torch.Tensor:
    """A grayscale crop in [0, 1] of scikit-learn's bundled china.jpg, ``(1, 1, H, W)``."""
    from sklearn.datasets import load_sample_image
    image = torch.tensor(load_sample_image("china.jpg"), dtype=DT).mean(-1) / 255
    crop = image[160:224, 160:224] if quick else image[128:256, 128:256]
    return crop[None, None].contiguous()


def bank(theta, psi=PSI, sigma=SIGMA, lambd=LAMBD, gamma=GAMMA):
    return gabor_kernel2d(torch.as_tensor(theta, dtype=DT), sigma, lambd, gamma, psi, KERNEL)


def normal_equations(x, y):
    """``A^T A``, ``A^T y``, ``y^T y`` with ``A`` the im2col matrix of ``x``: the response loss
    ``||conv(x, k) - y||^2`` is the quadratic form ``k^T A^T A k - 2 k^T A^T y + y^T y``."""
    cols = F.unfold(F.pad(x, (KERNEL // 2,) * 4), KERNEL)[0]   # (P, L)
    return cols @ cols.T, cols @ y.reshape(-1), float(y.square().sum())


def response_loss(kernels, gram, rhs, y_sq):
    """Relative response loss ``||conv(x, K) - y||^2 / ||y||^2`` of kernels ``(..., kh, kw)``."""
    k = kernels.reshape(*kernels.shape[:-2], -1)
    return (((k @ gram) * k).sum(-1) - 2 * k @ rhs + y_sq) / y_sq


def kernel_loss(kernels, target):
    return (kernels - target).square().sum((-2, -1)) / target.square().sum()


# -- training as in the question -------------------------------------------------------------------
def train(normal, theta0, optimiser: str, lr: float, steps: int, momentum: float = 0.0):
    """A 1-filter GaborConv2d learning only theta by SGD/Adam/L-BFGS on the relative MSE; the iterates.

    ``normal`` is ``normal_equations(x, y)``: the loss ``||conv(x) - y||^2 / ||y||^2`` is evaluated
    through its quadratic form in the kernel, the same value and gradient (checked in
    ``run_case``) without a 1-channel 21 x 21 ``F.conv2d`` per step, which is slow on CPU.
    """
    with warnings.catch_warnings():
        # The question's filter (sigma 4, gamma 0.5: 20 px across at 2.5 sigma) is cut by its 21 x 21
        # kernel, for the truth and the model alike, so the truncation warning says nothing new here.
        warnings.simplefilter("ignore", GaborTruncationWarning)
        conv = GaborConv2d(1, 1, KERNEL, padding="same", bias=False, dtype=DT, theta=theta0, learn="theta",
                           **FIXED)
    if optimiser == "lbfgs":
        opt = torch.optim.LBFGS(conv.parameters(), lr=lr, max_iter=steps, line_search_fn="strong_wolfe")
    elif optimiser == "adam":
        opt = torch.optim.Adam(conv.parameters(), lr=lr)
    else:
        opt = torch.optim.SGD(conv.parameters(), lr=lr, momentum=momentum)
    thetas, losses = [], []
    gram, rhs, y_sq = normal

    def closure():
        opt.zero_grad()
        loss = response_loss(conv.weight[0, 0], gram, rhs, y_sq)
        loss.backward()
        thetas.append(conv.theta.item())
        losses.append(loss.item())
        return loss

    for _ in range(1 if optimiser == "lbfgs" else steps):  # L-BFGS: one call, every evaluation recorded
        opt.step(closure)
    return np.array(thetas), np.array(losses)


def run_case(x, truth, theta0, steps):
    y = F.conv2d(x, bank(truth)[None, None], padding="same")
    normal = normal_equations(x, y)
    start = bank(theta0)
    direct = (F.conv2d(x, start[None, None], padding="same") - y).square().sum() / normal[2]
    assert math.isclose(response_loss(start, *normal).item(), direct.item(), rel_tol=1e-9)
    runs = {}
    for name, (opt, lr, mom) in {"SGD lr=0.05": ("sgd", 0.05, 0.0), "SGD lr=0.5": ("sgd", 0.5, 0.0),
                                 "SGD+mom lr=0.05": ("sgd", 0.05, 0.9), "Adam lr=0.05": ("adam", 0.05, 0.0),
                                 "L-BFGS (line search)": ("lbfgs", 1.0, 0.0)}.items():
        t0 = time.perf_counter()
        thetas, losses = train(normal, theta0, opt, lr, steps if opt != "lbfgs" else 50, mom)
        runs[name] = {"theta": thetas, "loss": losses, "seconds": time.perf_counter() - t0}
    t0 = time.perf_counter()
    fit = fit_response(x, y, KERNEL, fixed=FIXED, init={"theta": theta0})
    runs["fit_response"] = {"theta": fit.history["theta"].numpy(), "loss": fit.history["loss"].numpy(),
                            "seconds": time.perf_counter() - t0, "fit": fit}
    t0 = time.perf_counter()
    free = fit_response(x, y, KERNEL, init={"theta": theta0})
    runs["fit_response, all 5 free"] = {"theta": np.array([free.theta.item()]), "loss": free.loss.numpy()[None],
                                        "seconds": time.perf_counter() - t0, "fit": free, "psi": free.psi.item()}
    return normal, runs


def theta_error(theta, truth, psi=PSI, psi_true=PSI):
    """Degrees between the canonical orientations (modulo the theta + pi / -psi twin)."""
    a, _ = canonicalize(torch.tensor(theta, dtype=DT), torch.tensor(psi, dtype=DT))
    b, _ = canonicalize(torch.tensor(truth, dtype=DT), torch.tensor(psi_true, dtype=DT))
    d = float(torch.remainder(a - b, math.pi))
    return math.degrees(min(d, math.pi - d))


def print_table(results):
    print(f"{'case':<9} {'method':<25} {'final theta':>11} {'canonical':>9} {'error':>7} {'loss':>9} {'time':>6}")
    for case, (truth, theta0, _, runs) in results.items():
        print(f"{case:<9} truth {math.degrees(truth):.1f} deg, start {math.degrees(theta0):.1f} deg")
        for name, run in runs.items():
            theta = run["theta"][-1]
            psi = run.get("psi", PSI)
            canon = math.degrees(float(canonicalize(torch.tensor(theta), torch.tensor(psi))[0]))
            error = theta_error(theta, truth, psi)
            print(f"{'':<9} {name:<25} {math.degrees(theta):>10.1f}° {canon:>8.1f}° {error:>6.2f}° "
                  f"{run['loss'][-1]:>9.2e} {run['seconds']:>5.2f}s")


# -- plots ---------------------------------------------------------------------------------------------
def wrap(theta):
    """Angles into [-pi, pi) for plotting on one period of the 2 pi-periodic axis."""
    return (np.asarray(theta) + math.pi) % (2 * math.pi) - math.pi


def local_minima(values):
    v = np.asarray(values)
    return np.nonzero((v < np.roll(v, 1)) & (v < np.roll(v, -1)))[0]


def plot_landscape(path, x, truth, theta0, n_theta, n_grid):
    y = F.conv2d(x, bank(truth)[None, None], padding="same")
    gram, rhs, y_sq = normal_equations(x, y)
    thetas = torch.linspace(-math.pi, math.pi, n_theta + 1, dtype=DT)[:-1]
    resp = response_loss(bank(thetas), gram, rhs, y_sq).numpy()
    kern = kernel_loss(bank(thetas), bank(truth)).numpy()
    coarse = torch.linspace(-math.pi, math.pi, n_grid[0] + 1, dtype=DT)[:-1]
    psis = torch.linspace(-math.pi, math.pi, n_grid[1] + 1, dtype=DT)[:-1]
    grid = response_loss(bank(coarse[:, None], psis[None, :]), gram, rhs, y_sq).numpy()

    fig, (ax, bx) = plt.subplots(1, 2, figsize=(10, 3.6), gridspec_kw={"width_ratios": [1.25, 1]})
    deg = np.degrees(thetas.numpy())
    ax.plot(deg, resp, color="black", lw=1.3, label="response loss (image)")
    ax.plot(deg, kern, color="tab:gray", lw=1.0, ls="--", label="kernel loss")
    mins = local_minima(resp)
    ax.plot(deg[mins], resp[mins], "v", color="tab:red", ms=5, label=f"local minima ({len(mins)})")
    for value, label, style in ((truth, "truth", "-"), (truth - math.pi, "twin (theta - pi)", ":"),
                                (theta0, "start", "-.")):
        ax.axvline(math.degrees(wrap(value)), color="tab:green" if label != "start" else "tab:orange",
                   ls=style, lw=1, label=label)
    top = float(max(resp.max(), kern.max()))
    ax.set(xlabel="theta (degrees)", ylabel="||y_hat - y||² / ||y||²", xlim=(-180, 180), ylim=(-0.05 * top, 1.5 * top),
           title=f"loss over theta (sigma={SIGMA:g}, lambd={LAMBD:g}, gamma={GAMMA:g}, psi=0)")
    ax.set_xticks(range(-180, 181, 45))
    ax.legend(fontsize=7, loc="upper center", ncol=3)  # in the headroom above the curves
    im = bx.imshow(np.log10(grid.T + 1e-3), origin="lower", aspect="auto", cmap="viridis",
                   extent=(-180, 180, -180, 180))
    bx.plot([math.degrees(truth), math.degrees(truth - math.pi)], [0, 0], "w*", ms=9)
    bx.plot([math.degrees(theta0)], [0], "o", color="tab:orange", ms=6)
    bx.set(xlabel="theta (degrees)", ylabel="psi (degrees)", title="log10 loss over theta x psi")
    bx.set_xticks(range(-180, 181, 90))
    bx.set_yticks(range(-180, 181, 90))
    fig.colorbar(im, ax=bx, fraction=0.05)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return resp, kern, deg, mins


# Line style and marker per method, so runs that end on the same loss stay apart (a colour each too).
STYLES = {"SGD lr=0.05": ("-", "o"), "SGD lr=0.5": ("-", None), "SGD+mom lr=0.05": ("--", "s"),
          "Adam lr=0.05": ("-.", "^"), "L-BFGS (line search)": (":", "D"), "fit_response": ("-", "*")}


FLOOR = 1e-16  # a loss of exactly 0 is drawn here on the log axis


def plot_trajectories(path, results, n_theta):
    """Top: every method's iterates on the loss over theta, its end point marked (nested markers, so
    methods that end together all show); bottom: loss per step. One legend, under the panels."""
    fig, axes = plt.subplots(2, len(results), figsize=(10, 7.0))
    thetas = torch.linspace(-math.pi, math.pi, n_theta + 1, dtype=DT)[:-1]
    names = [name for name in COLORS]
    end_size = {name: 15 - 2 * k for k, name in enumerate(names)}  # drawn largest first: nested, all visible
    end_size["fit_response"] = 15
    for col, (case, (truth, theta0, normal, runs)) in enumerate(results.items()):
        curve = response_loss(bank(thetas), *normal).numpy()
        ax, bx = axes[0, col], axes[1, col]
        ax.plot(np.degrees(thetas.numpy()), curve, color="0.6", lw=1, zorder=1)
        for k, name in enumerate(names):
            run = runs[name]
            style, marker = STYLES[name]
            th = np.degrees(wrap(run["theta"]))
            wanderer = name == "SGD lr=0.5"  # goes underneath, faint: the others on top
            top = 10 if name == "fit_response" else 3 + k
            ax.plot(th, run["loss"], ".", ms=2.5, color=COLORS[name], alpha=0.3 if wanderer else 0.8,
                    zorder=2 if wanderer else top)
            ax.plot(th[-1:], run["loss"][-1:], marker or "X", ms=end_size[name], color=COLORS[name], mec="white",
                    mew=0.8, ls="none", zorder=top, label=f"{name} (end)")
            steps = np.arange(len(run["loss"]))
            # Markers every tenth of the run, staggered per method so that curves on top of each
            # other still show every marker; fit_response (a few iterations) marks each one.
            every = max(1, len(steps) // 10)
            bx.semilogy(steps, np.maximum(run["loss"], FLOOR), color=COLORS[name], ls=style,
                        lw=0.8 if wanderer else (2.0 if name == "fit_response" else 1.4),
                        alpha=0.6 if wanderer else 1.0, marker=marker,
                        markevery=(min(k * every // len(names), len(steps) - 1), every) if marker else None,
                        ms=11 if name == "fit_response" else 5, mec="white" if name == "fit_response" else None,
                        zorder=top, label=name)
        # Methods that end at the same point (the markers nest there): named beside it.
        ends = {}
        for name in names:
            end = (round(float(np.degrees(wrap(runs[name]["theta"][-1])))), round(float(runs[name]["loss"][-1]), 2))
            ends.setdefault(end, []).append(name)
        for (theta_end, loss_end), together in ends.items():
            if len(together) > 1:
                # The text high between the two peaks, where the curve never comes (the loss is
                # high only around theta* + 90 degrees and its twin).
                ax.annotate("\n".join(together) + "\nend here", (theta_end, loss_end), xytext=(theta_end, 0.5),
                            textcoords=("data", "axes fraction"), ha="center", va="bottom", fontsize=7, zorder=20,
                            bbox=dict(boxstyle="round,pad=0.2", fc="white", ec="0.7", alpha=0.9),
                            arrowprops=dict(arrowstyle="-", color="0.4", lw=0.8))
        ax.axvline(math.degrees(wrap(truth)), color="tab:green", lw=1, zorder=0, label="truth")
        ax.axvline(math.degrees(wrap(theta0)), color="tab:orange", lw=1, ls=(0, (6, 2, 1, 2)), zorder=0,
                   label="start")
        ax.set(xlabel="theta (degrees)", ylabel="loss", xlim=(-180, 180),
               title=f"{case}: truth {math.degrees(truth):.0f}°, start {math.degrees(theta0):.0f}°")
        ax.set_xticks(range(-180, 181, 45))
        bx.set(xlabel="step (L-BFGS: evaluation; fit_response: iteration)", ylabel="loss (0 drawn at 1e-16)",
               ylim=(FLOOR / 10, 10),
               title=f"{case}: loss per step")
    # One legend for all four panels, below them: line style and marker of each method, and the
    # vertical lines of the top panels.
    handles, labels = axes[1, 0].get_legend_handles_labels()
    extra, extra_labels = axes[0, 0].get_legend_handles_labels()
    keep = [i for i, label in enumerate(extra_labels) if label in ("truth", "start")]
    fig.legend(handles + [extra[i] for i in keep], labels + [extra_labels[i] for i in keep], loc="lower center",
               ncol=4, fontsize=8, frameon=False, handlelength=3.2)
    fig.tight_layout(rect=(0, 0.09, 1, 1))
    fig.savefig(path, dpi=80)
    plt.close(fig)


def plot_kernels(path, results):
    names = ["target", "start", "SGD lr=0.05", "SGD lr=0.5", "Adam lr=0.05", "fit_response"]
    fig, axes = plt.subplots(len(results), len(names), figsize=(10, 3.6))
    for row, (case, (truth, theta0, _, runs)) in enumerate(results.items()):
        for col, name in enumerate(names):
            if name == "target":
                k, err = bank(truth), 0.0
            elif name == "start":
                k, err = bank(theta0), theta_error(theta0, truth)
            else:
                th = runs[name]["theta"][-1]
                k, err = bank(th), theta_error(th, truth)
            ax = axes[row, col]
            ax.imshow(k.numpy(), cmap="RdBu_r", vmin=-1, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(name if name in ("target", "start") else f"{name}\nerror {err:.1f}°", fontsize=8)
            if col == 0:
                ax.set_ylabel(case, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def basin_measurements(ratios, gamma, n_theta):
    """For each sigma / lambd: basin half-width (to the nearest local maximum of the kernel loss,
    degrees), the width at half depth (degrees) and the curvature L''(theta*) of the kernel loss."""
    lambd, truth, size = 4.0, 0.3, 81  # a window wide enough that the envelope is not truncated
    # One side of theta*; the other mirrors it up to the sampling grid.
    thetas = torch.linspace(truth, truth + math.pi / 2, n_theta + 1, dtype=DT)
    out = []
    for r in ratios:
        sigma = r * lambd
        target = gabor_kernel2d(torch.tensor(truth, dtype=DT), sigma, lambd, gamma, 0.0, size)
        loss = kernel_loss(gabor_kernel2d(thetas, sigma, lambd, gamma, 0.0, size), target).numpy()
        j = 0  # climb to the nearest local maximum
        while j + 1 < len(loss) and loss[j + 1] > loss[j]:
            j += 1
        half = 0  # up to half the plateau's height
        while half + 1 < len(loss) and loss[half] < 0.5 * np.median(loss):
            half += 1
        h = 1e-4
        t3 = torch.tensor([truth - h, truth, truth + h], dtype=DT)
        l3 = kernel_loss(gabor_kernel2d(t3, sigma, lambd, gamma, 0.0, size), target).numpy()
        out.append((math.degrees(thetas[j] - truth), math.degrees(thetas[half] - truth),
                    (l3[0] - 2 * l3[1] + l3[2]) / h**2))
    return np.array(out)


def plot_basin(path, n_theta):
    ratios = np.linspace(0.3, 2.5, 12)
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(10, 3.4))
    for gamma, color in ((1.0, "tab:blue"), (0.5, "tab:red")):
        m = basin_measurements(ratios, gamma, n_theta)
        ax.plot(ratios, m[:, 0], "o-", color=color, ms=3, label=f"to nearest maximum, gamma={gamma:g}")
        ax.plot(ratios, m[:, 1], "s--", color=color, ms=3, label=f"half depth, gamma={gamma:g}")
        ax.plot(ratios, np.degrees(0.265 * gamma / ratios), ":", color=color, lw=1,
                label=f"half depth, theory, gamma={gamma:g}")
        bx.semilogy(ratios, 2 / m[:, 2], "o-", color=color, ms=3, label=f"2 / L''(theta*), gamma={gamma:g}")
        bx.semilogy(ratios, gamma**2 / (2 * math.pi**2 * ratios**2), ":", color=color, lw=1,
                    label=f"theory, gamma={gamma:g}")
    ax.set(xlabel="sigma / lambd", ylabel="degrees", ylim=(0, 135), yticks=range(0, 91, 15),
           title="basin of theta* (kernel loss, psi = 0)")
    ax.legend(fontsize=6.5, loc="upper center", ncol=2)  # above the curves (at most 90 degrees)
    bx.set(xlabel="sigma / lambd", ylabel="learning rate",
           title="largest stable SGD step at theta* (relative loss)")
    bx.legend(fontsize=6.5)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "out"),
                        help="directory for the PNGs (default demos/out/)")
    parser.add_argument("--quick", action="store_true", help="a smaller image, fewer steps and samples (CI)")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    os.makedirs(args.out, exist_ok=True)
    t_start = time.perf_counter()
    steps = 60 if args.quick else 300
    n_theta = 180 if args.quick else 720
    n_grid = (90, 30) if args.quick else (240, 72)  # theta x psi

    x = load_image(args.quick)
    results = {}
    for case, (truth, theta0) in CASES.items():
        normal, runs = run_case(x, truth, theta0, steps)
        results[case] = (truth, theta0, normal, runs)
    print(f"image {tuple(x.shape[-2:])} from china.jpg; kernel {KERNEL}, sigma {SIGMA:g}, lambd {LAMBD:g}, "
          f"gamma {GAMMA:g}, psi {PSI:g} fixed; {steps} SGD/Adam steps on ||y_hat - y||² / ||y||²")
    print_table(results)
    for case, (truth, _, _, runs) in results.items():
        gradient = [name for name in COLORS if name != "fit_response"]
        found = [name for name in gradient if theta_error(runs[name]["theta"][-1], truth) < 1.0]
        missed = [name for name in gradient if name not in found]
        print(f"{case}: {len(found)} of {len(gradient)} gradient methods recover theta (within 1°)"
              + (f"; not {', '.join(missed)}" if found and missed else "")
              + f"; fit_response error {theta_error(runs['fit_response']['theta'][-1], truth):.2f}°")
    truth, theta0 = CASES["wrap"]
    print(f"  (wrap: start {math.degrees(theta0):.0f}° and truth {math.degrees(truth):.0f}° lie on either side of "
          f"theta = 0 = 180°, but with psi = 0 the truth's twin {math.degrees(truth - math.pi):.0f}° is the same\n"
          f"  filter, {math.degrees(abs(truth - math.pi - theta0)):.0f}° from the start. Starts across the wrap "
          f"where gradient descent does fail: benchmarks/recovery.py.)")

    truth, theta0 = CASES["question"]
    resp, kern, deg, mins = plot_landscape(os.path.join(args.out, "recovery_landscape.png"), x, truth, theta0,
                                           n_theta, n_grid)
    step = 360 / n_theta
    slope = np.gradient(resp, math.radians(step))
    i_start = int(np.argmin(np.abs(deg - math.degrees(theta0))))
    i_truth = int(np.argmin(np.abs(deg - math.degrees(truth))))
    curvature = np.gradient(slope, math.radians(step))[i_truth]
    print(f"\nlandscape (question): {len(mins)} local minima of the response loss over [-180, 180) at "
          f"{', '.join(f'{d:.1f}°' for d in deg[mins])}; kernel loss: {len(local_minima(kern))} minima")
    print(f"  at the start: loss {resp[i_start]:.3f}, slope {slope[i_start]:+.3f} per rad; at the truth: "
          f"curvature {curvature:.1f}, so plain SGD is stable only for lr < 2 / {curvature:.1f} = {2 / curvature:.3f}")

    plot_trajectories(os.path.join(args.out, "recovery_trajectories.png"), results, n_theta)
    plot_kernels(os.path.join(args.out, "recovery_kernels.png"), results)
    plot_basin(os.path.join(args.out, "recovery_basin.png"), 90 if args.quick else 360)
    print(f"\nwrote {', '.join(sorted(f for f in os.listdir(args.out) if f.startswith('recovery_')))} "
          f"to {args.out} in {time.perf_counter() - t_start:.1f} s")


if __name__ == "__main__":
    main()
