"""Can one conv layer learn the identity filter? GaborConv2d against nn.Conv2d from random init.

The questions in ``docs/identity.md`` (a CNN that cannot learn to output its input image; a dense
net that cannot learn the identity on MNIST) ask why gradient descent does not find the obvious
"zeros everywhere but a 1 in the middle" kernel. This demo trains a single 1-channel 7 x 7 conv
layer (``padding="same"``, with bias) to reproduce its input on real image patches (grayscale
crops of scikit-learn's bundled ``china.jpg`` for training, ``flower.jpg`` for testing, values in
[-1, 1] as in the question), from:

- ``nn.Conv2d``: its default random init (3 seeds),
- ``GaborConv2d``: its default classic bank (for one 7x7 filter: theta 0, psi 0, lambd 2.5,
  sigma 1.17, gamma 1; printed at run time),
- ``GaborConv2d``: random Gabor parameters (3 seeds: theta, psi uniform on the circle, sigma in
  [1, 3], lambd in [3, 8], gamma in [0.5, 1.5]).

The delta kernel is a limit of the Gabor family (sigma -> 0 with psi = 0: the centre tap is
cos(psi) = 1 and every other tap vanishes), and a default ``GaborConv2d`` filter peaks at 1 (no
gain parameter), so the centre tap is exactly 1 whenever psi = 0. The single layer is trained
full-batch (64 patches) on the exact relative MSE ``||conv(x) - x||^2 / ||x||^2`` with Adam and
SGD at a few learning rates (the loss is evaluated through its quadratic form in kernel and bias;
``check_quadratic_form`` compares it with ``F.conv2d`` on the trained modules).

Then the question's own setting: the 7 x 7 layer with a tanh output, and a stack of 4 (3 hidden
layers, hard tanh between) with a tanh output, trained with Adam on mini-batches through
``F.conv2d``. A tanh output needs a gain above 1, which a peak-1 Gabor filter can only get by
widening, so ``GaborConv2d(amplitude=True)`` (a learnable gain per filter) runs there too.

It prints two tables and writes to ``--out``:

- ``identity_curves.png``: test relative error of the output per step, every run,
- ``identity_kernels.png``: learned kernels (and their distance to the delta),
- ``identity_deep.png``: the question's setting, loss curves and output images.

Run ``python demos/identity.py`` (under two minutes on a shared 2-core CPU) or ``--quick`` (CI).
"""
from __future__ import annotations

import argparse
import functools
import math
import os
import time
import warnings

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import gaborlayer  # noqa: E402
from gaborlayer import GaborConv2d  # noqa: E402

# A 7x7 kernel cuts off the wider random envelopes, as it would any wide filter: intended here.
if hasattr(gaborlayer, "GaborTruncationWarning"):
    warnings.filterwarnings("ignore", category=gaborlayer.GaborTruncationWarning)

DT = torch.float64
K = 7                 # kernel size (odd: the delta sits on the centre pixel)
PATCH = 32
THRESHOLDS = (1e-2, 1e-3)  # relative error of the output, ||conv(x) - x|| / ||x||
NETS = ((1, True), (4, True))  # (depth, tanh output): the question's setting
# GaborConv2d(amplitude=True) adds a learnable gain per filter; only the tanh nets need one.
KINDS_Q = ("Conv2d", "Gabor classic", "Gabor random", "Gabor classic + gain")


# -- data ------------------------------------------------------------------------------------------
@functools.cache
def load_gray(name: str) -> torch.Tensor:
    """A bundled scikit-learn sample image (china.jpg, flower.jpg) as grayscale in [-1, 1], ``(H, W)``, float64."""
    from sklearn.datasets import load_sample_images
    images = load_sample_images()
    image = images.images[[os.path.basename(f) for f in images.filenames].index(name)]
    return torch.tensor(image, dtype=torch.float64).mean(-1) / 127.5 - 1


def patches(image: torch.Tensor, n: int, size: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    ys = torch.randint(0, image.shape[0] - size + 1, (n,), generator=g)
    xs = torch.randint(0, image.shape[1] - size + 1, (n,), generator=g)
    return torch.stack([image[y:y + size, x:x + size] for y, x in zip(ys.tolist(), xs.tolist())])[:, None]


def quadratic_form(x: torch.Tensor):
    """``(G, r, c)`` with ``||conv(x, k) + b - x||^2 / ||x||^2 = w^T G w - 2 w^T r + c``, ``w = (k, b)``.

    ``G = A A^T / ||x||^2`` with ``A`` the im2col matrix of the zero-padded patches plus a row of
    ones (the bias), ``r = A x / ||x||^2``, ``c = 1``: the exact full-batch loss of a "same" conv.
    """
    cols = F.unfold(F.pad(x, (K // 2,) * 4), K).permute(1, 0, 2).reshape(K * K, -1)
    a = torch.cat([cols, torch.ones(1, cols.shape[1], dtype=cols.dtype)])
    norm = float(x.square().sum())
    return a @ a.T / norm, a @ x.reshape(-1) / norm, 1.0


def rel_loss(conv: nn.Module, q, weight=None) -> torch.Tensor:
    """Relative MSE of the output, through the quadratic form (same value and gradient as F.conv2d)."""
    gram, rhs, c = q
    w = torch.cat([(conv.weight if weight is None else weight).reshape(-1), conv.bias.reshape(-1)])
    return (w @ gram @ w - 2 * w @ rhs + c).clamp_min(0)


def check_quadratic_form(conv: nn.Module, x: torch.Tensor, q) -> float:
    """Absolute difference between the loss through ``F.conv2d`` and through the quadratic form."""
    with torch.no_grad():
        direct = (conv(x) - x).square().sum() / x.square().sum()
        return abs(direct.item() - rel_loss(conv, q).item())


# -- models ----------------------------------------------------------------------------------------
def delta() -> torch.Tensor:
    d = torch.zeros(K, K, dtype=DT)
    d[K // 2, K // 2] = 1
    return d


def make_model(kind: str, seed: int, dtype=DT) -> nn.Module:
    torch.manual_seed(seed)
    if kind == "Conv2d":
        return nn.Conv2d(1, 1, K, padding="same", dtype=dtype)
    if kind == "Gabor classic":
        return GaborConv2d(1, 1, K, padding="same", dtype=dtype)
    if kind == "Gabor classic + gain":
        return GaborConv2d(1, 1, K, padding="same", dtype=dtype, amplitude=True)
    g = torch.Generator().manual_seed(1000 + seed)
    u = torch.rand(5, generator=g, dtype=DT)
    return GaborConv2d(1, 1, K, padding="same", dtype=dtype, theta=float(math.pi * u[0]),
                       psi=float(2 * math.pi * u[1] - math.pi), sigma=float(1 + 2 * u[2]),
                       lambd=float(3 + 5 * u[3]), gamma=float(0.5 + u[4]))


def kernel_error(conv: nn.Module) -> float:
    return float((conv.weight.detach()[0, 0] - delta()).abs().max())


# -- single layer, full batch ----------------------------------------------------------------------
def train_single(kind, seed, opt_name, lr, steps, q_train, q_test):
    conv = make_model(kind, seed)
    opt = (torch.optim.Adam if opt_name == "Adam" else torch.optim.SGD)(conv.parameters(), lr=lr)
    test_err, kerr = np.empty(steps + 1), np.empty(steps + 1)
    for step in range(steps + 1):
        weight = conv.weight  # built once per step: the training loss and the two records share it
        with torch.no_grad():
            test_err[step] = math.sqrt(rel_loss(conv, q_test, weight.detach()).item())
            kerr[step] = float((weight.detach()[0, 0] - delta()).abs().max())
        if step == steps:
            break
        opt.zero_grad()
        loss = rel_loss(conv, q_train, weight)
        if not torch.isfinite(loss):
            test_err[step + 1:] = kerr[step + 1:] = np.nan
            break
        loss.backward()
        opt.step()
    return conv, test_err, kerr


def first_below(curve: np.ndarray, threshold: float):
    hit = np.nonzero(curve < threshold)[0]
    return int(hit[0]) if len(hit) else None


def single_layer(quick: bool):
    steps = 100 if quick else 1000
    seeds = {"Conv2d": range(1 if quick else 3), "Gabor classic": [0], "Gabor random": range(1 if quick else 3)}
    configs = [("Adam", 0.1), ("Adam", 0.01), ("SGD", 0.01)]
    china, flower = load_gray("china.jpg"), load_gray("flower.jpg")
    x_train = patches(china, 16 if quick else 64, PATCH, 0)
    x_test = patches(flower, 16 if quick else 64, PATCH, 1)
    q_train, q_test = quadratic_form(x_train), quadratic_form(x_test)
    eig = torch.linalg.eigvalsh(2 * q_train[0])  # the Hessian of the loss in (kernel, bias)
    runs = {}
    for opt_name, lr in configs:
        for kind in ("Conv2d", "Gabor classic", "Gabor random"):
            for seed in seeds[kind]:
                t0 = time.perf_counter()
                conv, curve, kerr = train_single(kind, seed, opt_name, lr, steps, q_train, q_test)
                runs[(opt_name, lr, kind, seed)] = dict(conv=conv, curve=curve, kerr=kerr,
                                                        seconds=time.perf_counter() - t0)
    # The loss the optimiser saw is the loss F.conv2d gives, on the trained modules too (absolute:
    # near zero the quadratic form cancels, so curves below ~1e-6 relative error are not resolved).
    worst = max(check_quadratic_form(r["conv"], x_train, q_train) for r in runs.values()
                if np.isfinite(r["curve"][-1]))
    assert worst < 1e-9, worst
    for r in runs.values():  # the final test error directly from F.conv2d
        with torch.no_grad():
            r["final"] = float(((r["conv"](x_test) - x_test).square().sum() / x_test.square().sum()).sqrt())
    return dict(runs=runs, steps=steps, configs=configs, eig=eig, n_train=len(x_train),
                n_test=len(x_test), check=worst, x_test=x_test)


def fmt_steps(values, n):
    hits = [v for v in values if v is not None]
    if not hits:
        return f"{'never':>7} (0/{n})"
    return f"{int(np.median(hits)):>7} ({len(hits)}/{n})"


def print_single(res):
    print(f"single 7x7 conv + bias, identity target; {res['n_train']} train patches {PATCH}x{PATCH} (china.jpg), "
          f"{res['n_test']} test patches (flower.jpg), values in [-1, 1]; full batch, {res['steps']} steps")
    eig = res["eig"]
    print(f"Hessian of the loss in (kernel, bias): eigenvalues {eig.min():.2e} .. {eig.max():.2e} (condition number "
          f"{eig.max() / eig.min():.0f}; plain SGD is stable for lr < {2 / eig.max():.3f}); "
          f"quadratic form = F.conv2d loss to {res['check']:.0e} (absolute)")
    print("rel. err = ||conv(x) - x|| / ||x|| on the test patches (from F.conv2d); max abs(K-delta) over the 49 taps; "
          "medians over seeds; steps: median over the runs that got there (runs that did)")
    head = (f"| {'optimiser':<10} | {'layer':<14} | {'rel. err':>9} | {'max abs(K-delta)':>16} | {'abs(bias)':>9} | "
            f"{'steps to 1e-2':>15} | {'steps to 1e-3':>15} | {'s/run':>5} |")
    print(head)
    print("|" + "|".join("-" * (len(c)) for c in head.split("|")[1:-1]) + "|")
    for opt_name, lr in res["configs"]:
        for kind in ("Conv2d", "Gabor classic", "Gabor random"):
            rs = [r for (o, run_lr, k, _), r in res["runs"].items() if (o, run_lr, k) == (opt_name, lr, kind)]
            final = np.median([r["final"] for r in rs])
            kerr = np.median([r["kerr"][-1] for r in rs])
            bias = np.median([abs(r["conv"].bias.item()) for r in rs])
            s1 = fmt_steps([first_below(r["curve"], THRESHOLDS[0]) for r in rs], len(rs))
            s2 = fmt_steps([first_below(r["curve"], THRESHOLDS[1]) for r in rs], len(rs))
            secs = np.mean([r["seconds"] for r in rs])
            print(f"| {opt_name + ' ' + format(lr, 'g'):<10} | {kind:<14} | {final:>9.2e} | {kerr:>16.2e} | "
                  f"{bias:>9.1e} | {s1:>15} | {s2:>15} | {secs:>5.2f} |")


def gabor_params(conv) -> str:
    return (f"sigma {conv.sigma.item():.2f}, sigma/gamma {conv.sigma.item() / conv.gamma.item():.2f}, "
            f"lambd {conv.lambd.item():.2f}, psi {math.remainder(conv.psi.item(), 2 * math.pi):+.3f}")


# -- the question's setting: tanh output, and a 4-layer stack ---------------------------------------
class Stack(nn.Module):
    """``depth`` 1-channel 7x7 "same" convs, hard tanh between them, tanh (or nothing) at the end."""

    def __init__(self, kind: str, depth: int, out_tanh: bool, seed: int):
        super().__init__()
        self.layers = nn.ModuleList(make_model(kind, seed * 10 + i, torch.float32) for i in range(depth))
        self.out_tanh = out_tanh

    def forward(self, x):
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = F.hardtanh(x)
        return torch.tanh(x) if self.out_tanh else x


def train_stack(kind, depth, out_tanh, seed, steps, lr, image, x_test, batch):
    model = Stack(kind, depth, out_tanh, seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    g = torch.Generator().manual_seed(seed)
    curve = []
    for step in range(steps):
        ys = torch.randint(0, image.shape[0] - PATCH + 1, (batch,), generator=g).tolist()
        xs = torch.randint(0, image.shape[1] - PATCH + 1, (batch,), generator=g).tolist()
        x = torch.stack([image[y:y + PATCH, x:x + PATCH] for y, x in zip(ys, xs)])[:, None]
        opt.zero_grad()
        loss = (model(x) - x).square().sum() / x.square().sum()
        loss.backward()
        opt.step()
        if step % 10 == 0 or step == steps - 1:
            with torch.no_grad():
                curve.append((step + 1, math.sqrt(((model(x_test) - x_test).square().sum()
                                                   / x_test.square().sum()).item())))
    return model, np.array(curve)


def question_setting(quick: bool):
    steps = 10 if quick else 200
    seeds = range(1) if quick else range(2)
    china, flower = load_gray("china.jpg"), load_gray("flower.jpg")
    x_test = patches(flower, 8 if quick else 32, PATCH, 1).to(torch.float32)
    image = china.to(torch.float32)
    out = {}
    for depth, out_tanh in NETS:
        for kind in KINDS_Q:
            for seed in seeds:
                t0 = time.perf_counter()
                model, curve = train_stack(kind, depth, out_tanh, seed, steps, 0.01, image, x_test, 8)
                out[(depth, out_tanh, kind, seed)] = dict(model=model, curve=curve,
                                                          seconds=time.perf_counter() - t0)
    # The best a tanh output can do at all: tanh(a x + b) fitted to x (least squares over a, b).
    best = tanh_floor(x_test)
    return dict(runs=out, steps=steps, seeds=len(seeds), x_test=x_test, floor=best)


def tanh_floor(x):
    """Lowest relative error of ``tanh(a * x)`` against ``x`` over a scale ``a`` (bias 0 by symmetry
    is not assumed: a small grid over a and b), i.e. the best any 1-channel kernel followed by tanh
    could do if its output were a scaled copy of the input."""
    best = float("inf")
    for a in np.linspace(0.5, 4, 141):
        for b in np.linspace(-0.2, 0.2, 21):
            err = ((torch.tanh(a * x + b) - x).square().sum() / x.square().sum()).sqrt().item()
            best = min(best, err)
    return best


def print_question(res):
    print(f"\nthe question's setting: Adam lr 0.01, {res['steps']} steps of 8 random {PATCH}x{PATCH} china.jpg "
          f"patches, relative error on flower.jpg patches; float32; median over {res['seeds']} seed(s)")
    print(f"(a tanh output cannot be the identity: the best tanh(a x + b) is {res['floor']:.3f} away from x; "
          f"sum K1 = DC gain of the first kernel, 1 for the delta)")
    head = (f"| {'network':<36} | {'layer':<20} | {'rel. err':>9} | {'max abs(K1-delta)':>17} | {'sum K1':>6} | "
            f"{'s/run':>5} |")
    print(head)
    print("|" + "|".join("-" * (len(c)) for c in head.split("|")[1:-1]) + "|")
    for depth, out_tanh in NETS:
        name = f"{depth} conv{'s, hardtanh between' if depth > 1 else ''}, {'tanh' if out_tanh else 'linear'} out"
        for kind in KINDS_Q:
            rs = [r for (d, t, k, _), r in res["runs"].items() if (d, t, k) == (depth, out_tanh, kind)]
            final = np.median([r["curve"][-1, 1] for r in rs])
            kerr = np.median([float((r["model"].layers[0].weight.detach()[0, 0].double() - delta()).abs().max())
                              for r in rs])
            gain = np.median([r["model"].layers[0].weight.detach().sum().item() for r in rs])
            print(f"| {name:<36} | {kind:<20} | {final:>9.2e} | {kerr:>17.2e} | {gain:>6.2f} | "
                  f"{np.mean([r['seconds'] for r in rs]):>5.2f} |")


# -- plots -----------------------------------------------------------------------------------------
COLORS = {"Conv2d": "tab:blue", "Gabor classic": "black", "Gabor random": "tab:red",
          "Gabor classic + gain": "tab:green"}


def plot_curves(path, res):
    configs = res["configs"]
    fig, axes = plt.subplots(1, len(configs), figsize=(2.6 * len(configs) + 1, 3.4), sharey=True)
    for ax, (opt_name, lr) in zip(np.atleast_1d(axes), configs):
        for (o, run_lr, kind, seed), r in res["runs"].items():
            if (o, run_lr) != (opt_name, lr):
                continue
            ax.loglog(np.arange(1, len(r["curve"]) + 1), r["curve"], color=COLORS[kind], lw=1.2 if seed == 0 else 0.7,
                      alpha=1 if seed == 0 else 0.5, label=kind if seed == 0 else None)
        for t in THRESHOLDS:
            ax.axhline(t, color="0.6", lw=0.7, ls=":")
        ax.set(title=f"{opt_name} lr={lr:g}", xlabel="step + 1", ylim=(1e-7, 3))
    np.atleast_1d(axes)[0].set_ylabel("||conv(x) - x|| / ||x|| (test)")
    np.atleast_1d(axes)[0].legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def plot_kernels(path, res):
    configs = [c for c in res["configs"] if c[0] == "Adam"][:2] + [c for c in res["configs"] if c[0] == "SGD"][:1]
    kinds = ["Conv2d", "Gabor classic", "Gabor random"]
    fig, axes = plt.subplots(len(configs), 2 * len(kinds), figsize=(11, 1.9 * len(configs) + 0.4))
    axes = np.atleast_2d(axes)
    for row, (opt_name, lr) in enumerate(configs):
        for j, kind in enumerate(kinds):
            r = res["runs"][(opt_name, lr, kind, 0)]
            start = make_model(kind, 0).weight.detach()[0, 0]
            for col, (k, title) in enumerate(((start, f"{kind}\nstart"),
                                              (r["conv"].weight.detach()[0, 0],
                                               f"after {res['steps']} steps\nmax|K-d| {r['kerr'][-1]:.1e}"))):
                ax = axes[row, 2 * j + col]
                ax.imshow(k.numpy(), cmap="RdBu_r", vmin=-1, vmax=1)
                ax.set_xticks([])
                ax.set_yticks([])
                ax.set_title(title, fontsize=7)
                if j == 0 and col == 0:
                    ax.set_ylabel(f"{opt_name} lr={lr:g}", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def plot_deep(path, res):
    cases = NETS
    fig, axes = plt.subplots(2, 4, figsize=(11, 5.2))
    for ax, (depth, out_tanh) in zip(axes[0, :2], cases):
        for (d, t, kind, seed), r in res["runs"].items():
            if (d, t) != (depth, out_tanh):
                continue
            ax.semilogy(r["curve"][:, 0], r["curve"][:, 1], color=COLORS[kind], lw=1.2 if seed == 0 else 0.7,
                        alpha=1 if seed == 0 else 0.5, label=kind if seed == 0 else None)
        if out_tanh:
            ax.axhline(res["floor"], color="0.5", ls=":", lw=1, label="best tanh(a x + b)")
        ax.set(title=f"{depth} conv{'s' if depth > 1 else ''}, {'tanh' if out_tanh else 'linear'} out",
               xlabel="step", ylabel="test rel. error" if depth == 1 else None)
        ax.legend(fontsize=6)
    x = res["x_test"][:1]
    axes[0, 2].imshow(x[0, 0].numpy(), cmap="gray", vmin=-1, vmax=1)
    axes[0, 2].set_title("input (flower.jpg)", fontsize=8)
    k = res["runs"][(4, True, "Conv2d", 0)]["model"].layers[0].weight.detach()[0, 0]
    axes[0, 3].imshow(k.numpy(), cmap="RdBu_r", vmin=-1, vmax=1)
    axes[0, 3].set_title("4 convs, tanh out:\nConv2d's first kernel", fontsize=8)
    for ax, kind in zip(axes[1], COLORS):
        r = res["runs"][(4, True, kind, 0)]
        ax.imshow(r["model"](x).detach()[0, 0].numpy(), cmap="gray", vmin=-1, vmax=1)
        ax.set_title(f"4 convs, tanh: {kind}\nrel. err {r['curve'][-1, 1]:.3f} (this seed)", fontsize=8)
    for ax in list(axes[1]) + list(axes[0, 2:]):
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "out"),
                        help="directory for the PNGs (default demos/out/)")
    parser.add_argument("--quick", action="store_true", help="fewer steps, seeds and patches (CI)")
    args = parser.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    torch.set_num_threads(1)  # tiny 1-channel convs: a second thread only adds overhead on a shared CPU
    t_start = time.perf_counter()
    single = single_layer(args.quick)
    print_single(single)
    print(f"  Gabor classic start: {gabor_params(make_model('Gabor classic', 0))}")
    for kind in ("Gabor classic", "Gabor random"):
        conv = single["runs"][("Adam", 0.1, kind, 0)]["conv"]
        print(f"  {kind}, Adam lr=0.1, seed 0, learned: {gabor_params(conv)}")
    t_single = time.perf_counter() - t_start
    question = question_setting(args.quick)
    print_question(question)
    plot_curves(os.path.join(args.out, "identity_curves.png"), single)
    plot_kernels(os.path.join(args.out, "identity_kernels.png"), single)
    plot_deep(os.path.join(args.out, "identity_deep.png"), question)
    print(f"\nwrote {', '.join(sorted(f for f in os.listdir(args.out) if f.startswith('identity_')))} to "
          f"{args.out}; single layer {t_single:.1f} s, total {time.perf_counter() - t_start:.1f} s "
          f"({torch.get_num_threads()} threads)")


if __name__ == "__main__":
    main()
