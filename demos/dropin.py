"""GaborConv2d as a drop-in for a CNN's first nn.Conv2d: the same small CNN trained both ways.

The model is a small CNN: a first conv 1 -> 16 channels, 7 x 7, then BatchNorm, ReLU, two 3 x 3
conv blocks, global average pooling and a linear classifier. It is built once with a plain
``nn.Conv2d`` first layer and once, from the same seed, with that layer replaced by
``GaborConv2d`` with the same arguments: every other initial weight, the batches and their order,
the optimiser and its schedule are identical. Both are trained on two tasks built from data
bundled with scikit-learn, each with several seeds:

- ``orientation``: 24 x 24 grayscale patches of ``china.jpg`` (training) and of ``flower.jpg``
  (test: another picture), labelled by their dominant edge orientation (0, 45, 90 or 135
  degrees, from the structure tensor), keeping patches with a clear orientation (coherence > 0.5,
  within 15 degrees of a class, not flat); the 8 rotations and flips of every patch are candidates
  (each relabelled), classes balanced; every patch standardised to mean 0, std 1;
- ``digits``: scikit-learn's 8 x 8 handwritten digits, upsampled to 24 x 24, a stratified 70 / 30
  split.

It prints the held-out accuracy (mean and range over the seeds), the parameter counts and the
time per epoch side by side, and writes to ``--out`` (default ``demos/out/``):
``dropin_gabor_before.png`` (the initial Gabor bank), ``dropin_gabor_after_<task>.png`` and
``dropin_conv_after_<task>.png`` (the first layers after training, seed 0), and
``dropin_curves.png`` (test accuracy per epoch).

Run ``python demos/dropin.py`` (52 s of wall time on a 2-core CPU at load 1 to 2.5; 77 to 143 s
when other jobs share the cores) or ``--quick`` (CI, seconds). The accuracies are the same from run
to run on one machine (one thread or two), but not across machines: the last digit moves with the
convolution kernels the CPU runs (``docs/dropin.md``).
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import time
import warnings

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from gaborlayer import GaborConv2d  # noqa: E402
from gaborlayer.optim import param_groups  # noqa: E402
from gaborlayer.plotting import plot_bank  # noqa: E402

SIZE = 24  # input side, both tasks
FIRST = dict(in_channels=1, out_channels=16, kernel_size=7, padding=3)  # the layer that is swapped
ORIENTATIONS = (0, 45, 90, 135)  # degrees, the orientation task's classes
LR = 3e-3  # Adam, one-cycle schedule (warm-up, then cosine decay to ~0), the same for both models


# -- data ------------------------------------------------------------------------------------------
def _gray(name: str) -> torch.Tensor:
    from sklearn.datasets import load_sample_image
    return torch.tensor(load_sample_image(name), dtype=torch.float32).mean(-1) / 255


def _dihedral(p: torch.Tensor) -> torch.Tensor:
    """The 8 rotations and flips of patches ``(N, h, w)``, stacked ``(8 N, h, w)``."""
    return torch.cat([torch.rot90(q, k, (-2, -1)) for q in (p, p.flip(-1)) for k in range(4)])


def edge_orientation(p: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Dominant edge orientation in degrees, in [0, 180), and coherence in [0, 1] of patches
    ``(N, h, w)``, from the structure tensor averaged over the patch."""
    gy, gx = torch.gradient(p, dim=(-2, -1))
    jxx, jyy, jxy = (gx * gx).mean((-2, -1)), (gy * gy).mean((-2, -1)), (gx * gy).mean((-2, -1))
    gradient = 0.5 * torch.atan2(2 * jxy, jxx - jyy)  # the gradient's direction; edges run across it
    coherence = torch.sqrt((jxx - jyy) ** 2 + 4 * jxy**2) / (jxx + jyy + 1e-12)
    # Rows grow downward, so a y-down angle is mirrored to read counter-clockwise as usual.
    return (-torch.rad2deg(gradient) + 90) % 180, coherence


def orientation_set(name: str, n_per_class: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Balanced oriented patches of one sample image: ``(4 n, 1, 24, 24)`` and labels ``(4 n,)``."""
    image = _gray(name)
    patches = image.unfold(0, SIZE, 6).unfold(1, SIZE, 6).reshape(-1, SIZE, SIZE)
    patches = _dihedral(patches)
    degrees, coherence = edge_orientation(patches)
    energy = patches.var((-2, -1))
    label = torch.round(degrees / 45).long() % 4
    off_centre = (degrees - 45 * torch.round(degrees / 45)).abs()
    keep = (coherence > 0.5) & (energy > energy.quantile(0.25)) & (off_centre < 15)  # clear orientations
    chosen = []
    for c in range(len(ORIENTATIONS)):
        idx = torch.nonzero(keep & (label == c)).flatten()
        chosen.append(idx[torch.randperm(len(idx), generator=gen)[:n_per_class]])
    idx = torch.cat(chosen)
    x = patches[idx, None]
    x = (x - x.mean((-2, -1), keepdim=True)) / x.std((-2, -1), keepdim=True)  # contrast-invariant, as the label
    return x, label[idx]


def orientation_task(quick: bool, gen: torch.Generator):
    train = orientation_set("china.jpg", 100 if quick else 400, gen)
    test = orientation_set("flower.jpg", 50 if quick else 300, gen)
    return train, test


def digits_task(quick: bool, gen: torch.Generator):
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split
    digits = load_digits()
    x = torch.tensor(digits.images, dtype=torch.float32)[:, None] / 16
    x = F.interpolate(x, size=(SIZE, SIZE), mode="bilinear", align_corners=False)
    x = (x - x.mean()) / x.std()
    y = torch.tensor(digits.target)
    i_train, i_test = train_test_split(np.arange(len(y)), test_size=0.3, stratify=digits.target, random_state=0)
    if quick:
        i_train, i_test = i_train[:300], i_test[:200]
    return (x[i_train], y[i_train]), (x[i_test], y[i_test])


TASKS = {"orientation": (orientation_task, len(ORIENTATIONS)), "digits": (digits_task, 10)}


# -- model -----------------------------------------------------------------------------------------
def make_model(n_classes: int, first: str, seed: int) -> nn.Sequential:
    """The CNN; ``first`` is ``"conv"`` or ``"gabor"``. The body (everything after the first layer)
    is drawn from ``seed`` before the first layer is made, so it is the same for both."""
    torch.manual_seed(seed)
    body = [nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, n_classes)]
    layer = nn.Conv2d(**FIRST) if first == "conv" else GaborConv2d(**FIRST)  # the drop-in: same arguments
    return nn.Sequential(layer, *body)


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    with torch.no_grad():
        pred = torch.cat([model(xb).argmax(1) for xb in x.split(512)])
    model.train()
    return float((pred == y).float().mean())


class Progress:
    """A one-line progress bar on a terminal; one line per epoch otherwise (logs, CI)."""

    def __init__(self, label: str, epochs: int, batches: int):
        self.label, self.epochs, self.batches = label, epochs, batches
        self.tty = sys.stderr.isatty()

    def update(self, epoch: int, batch: int, loss: float) -> None:
        if self.tty:
            done = (epoch * self.batches + batch + 1) / (self.epochs * self.batches)
            bar = "#" * round(24 * done) + "-" * (24 - round(24 * done))
            sys.stderr.write(f"\r{self.label:<36} [{bar}] {100 * done:5.1f}%  epoch {epoch + 1}/{self.epochs}  "
                             f"loss {loss:.3f}")
            sys.stderr.flush()

    def epoch_done(self, epoch: int, loss: float, acc: float, seconds: float) -> None:
        if not self.tty:
            sys.stderr.write(f"{self.label:<36} epoch {epoch + 1}/{self.epochs}  loss {loss:.3f}  "
                             f"test {100 * acc:.1f}%  {seconds:.2f} s\n")
        elif epoch + 1 == self.epochs:
            sys.stderr.write(f"  test {100 * acc:.1f}%\n")


def train(model: nn.Module, train_set, test_set, epochs: int, seed: int, label: str,
          gabor_lr_scale: float = 1.0) -> dict:
    """Adam with a one-cycle schedule; ``gabor_lr_scale`` multiplies the Gabor parameters' learning
    rate (:func:`gaborlayer.optim.param_groups`; 1: one learning rate for everything)."""
    x, y = train_set
    gen = torch.Generator().manual_seed(seed)  # the same batches, in the same order, for both models
    batch = 64
    n_batches = math.ceil(len(y) / batch)
    groups = param_groups(model, LR, scale=gabor_lr_scale)
    opt = torch.optim.Adam(groups)
    schedule = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=[g["lr"] for g in groups],
                                                   total_steps=epochs * n_batches, pct_start=0.15)
    progress = Progress(label, epochs, n_batches)
    seconds, cpu_seconds, curve = [], [], []
    for epoch in range(epochs):
        order = torch.randperm(len(y), generator=gen)
        t0, c0 = time.perf_counter(), time.process_time()
        total = 0.0
        for b in range(n_batches):
            idx = order[b * batch:(b + 1) * batch]
            loss = F.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            schedule.step()
            total += loss.item() * len(idx)
            progress.update(epoch, b, loss.item())
        seconds.append(time.perf_counter() - t0)
        cpu_seconds.append(time.process_time() - c0)
        curve.append(accuracy(model, *test_set))
        progress.epoch_done(epoch, total / len(y), curve[-1], seconds[-1])
    return {"accuracy": curve[-1], "curve": curve, "seconds": seconds, "cpu_seconds": cpu_seconds}


# -- report ----------------------------------------------------------------------------------------
@torch.no_grad()
def gabor_summary(before: GaborConv2d, after: GaborConv2d) -> str:
    def span(t: torch.Tensor) -> str:
        lo, hi = float(t.min()), float(t.max())
        return f"{lo:.2f}" if round(lo, 2) == round(hi, 2) else f"{lo:.2f}..{hi:.2f}"

    d_theta = torch.rad2deg((after.theta - before.theta).abs()).flatten()
    moved = "; ".join(f"{name} {span(getattr(before, name))} -> {span(getattr(after, name))}{unit}"
                      for name, unit in (("lambd", " px"), ("sigma", " px"), ("gamma", "")))
    return f"theta moved by median {d_theta.median():.1f}° (max {d_theta.max():.1f}°); {moved}"


def fitted_swap(model: nn.Sequential, test_set) -> str:
    """Fit a trained plain first layer with ``GaborConv2d.from_conv2d`` and test the swapped model
    as it is (no retraining): how Gabor-like the learned filters are, and what the fit keeps."""
    import copy

    swapped = copy.deepcopy(model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a fitted envelope may well exceed 7 x 7: reported below
        swapped[0], fit = GaborConv2d.from_conv2d(model[0], return_fit=True)  # replace_conv2d does this by name
    explained = 1 - fit.loss
    cut = int(swapped[0].check_extent(warn=False)["cut"].sum())
    return (f"fraction of each learned filter's energy a Gabor filter explains: median {explained.median():.2f} "
            f"(min {explained.min():.2f}, max {explained.max():.2f}); the model with that fitted GaborConv2d "
            f"(amplitude=True) in place, not retrained: test {100 * accuracy(swapped, *test_set):.1f}% "
            f"(the trained model: {100 * accuracy(model, *test_set):.1f}%); "
            f"{cut} of 16 fitted envelopes exceed the kernel")


def print_table(rows: list[dict]) -> None:
    """One row per (task, first layer): test accuracy, mean and range over the seeds; the median
    wall-clock and CPU (process) time of a training epoch, over all epochs of all seeds."""
    cols = [("task", 11), ("first layer", 11), ("test acc (mean)", 15), ("min..max over seeds", 19),
            ("first-layer params", 18), ("model params", 12), ("s / epoch", 9), ("CPU s / epoch", 13)]
    print("| " + " | ".join(f"{name:<{w}}" if i < 2 else f"{name:>{w}}" for i, (name, w) in enumerate(cols)) + " |")
    print("| " + " | ".join("-" * w if i < 2 else "-" * (w - 1) + ":" for i, (_, w) in enumerate(cols)) + " |")
    for r in rows:
        acc = 100 * np.array(r["accuracy"])
        values = [r["task"], r["first"], f"{acc.mean():.1f}%", f"{acc.min():.1f}..{acc.max():.1f}%",
                  f"{r['first_params']:,}", f"{r['model_params']:,}", f"{np.median(r['epoch_s']):.2f}",
                  f"{np.median(r['epoch_cpu_s']):.2f}"]
        cells = (f"{v:<{w}}" if i < 2 else f"{v:>{w}}" for i, (v, (_, w)) in enumerate(zip(values, cols)))
        print("| " + " | ".join(cells) + " |")


def plot_curves(path: str, rows: list[dict]) -> None:
    """Test accuracy per epoch, one panel per task: each seed thin, the mean over seeds thick with
    markers (squares for nn.Conv2d, circles for GaborConv2d); one legend, under the panels."""
    from matplotlib.ticker import MaxNLocator

    tasks = list(dict.fromkeys(r["task"] for r in rows))
    fig, axes = plt.subplots(1, len(tasks), figsize=(4.2 * len(tasks), 3.3), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        for r in rows:
            if r["task"] != task:
                continue
            gabor = r["first"] == "GaborConv2d"
            color = "tab:red" if gabor else "tab:blue"
            curves = 100 * np.array(r["curve"])  # (seeds, epochs)
            epochs = np.arange(1, curves.shape[1] + 1)
            if len(curves) > 1:
                for c in curves:
                    ax.plot(epochs, c, "-", color=color, lw=0.7, alpha=0.35)
            mean = f"mean of {len(curves)} seeds" if len(curves) > 1 else "1 seed"
            ax.plot(epochs, curves.mean(0), "-", marker="o" if gabor else "s", ms=4.5 if gabor else 4, color=color,
                    zorder=3 if gabor else 2, label=f"{r['first']} ({mean})")
        ax.set(xlabel="epoch", ylabel="test accuracy (%)", title=task)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole numbers
        ax.margins(x=0.08, y=0.1)  # the first and last points off the frame
        ax.grid(alpha=0.3)
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(labels), fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    fig.savefig(path, dpi=80)
    plt.close(fig)


def save_bank(path: str, layer: nn.Module, title: str) -> None:
    fig = plot_bank(layer, ncols=8, title=title)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "out"),
                        help="directory for the PNGs (default demos/out/)")
    parser.add_argument("--quick", action="store_true", help="small data sets, 2 epochs, 1 seed (CI, seconds)")
    parser.add_argument("--tasks", default="orientation,digits", help="comma-separated: orientation, digits")
    parser.add_argument("--epochs", type=int, default=None, help="epochs per run (default 6, --quick 2)")
    parser.add_argument("--seeds", type=int, default=None,
                        help="runs per model, seeds 0, 1, ... (default 3, --quick 1)")
    parser.add_argument("--gabor-lr-scale", type=float, default=1.0,
                        help="learning-rate factor for the Gabor parameters (gaborlayer.optim.param_groups; "
                             "default 1: one learning rate for every parameter, a standard optimiser)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch.set_num_threads (default 1: on a shared 2-core machine, 2 threads stall "
                             "whenever another process holds a core)")
    args = parser.parse_args(argv)
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    if not tasks or any(t not in TASKS for t in tasks):
        parser.error(f"--tasks takes a comma-separated list of {', '.join(TASKS)}; got {args.tasks!r}")
    epochs = args.epochs if args.epochs is not None else (2 if args.quick else 6)
    seeds = args.seeds if args.seeds is not None else (1 if args.quick else 3)
    if epochs < 1 or seeds < 1 or args.threads < 1:
        parser.error("--epochs, --seeds and --threads must be positive")
    torch.set_num_threads(args.threads)
    os.makedirs(args.out, exist_ok=True)
    t_start = time.perf_counter()

    initial = make_model(2, "gabor", 0)[0].requires_grad_(False)
    save_bank(os.path.join(args.out, "dropin_gabor_before.png"), initial,
              "GaborConv2d(1, 16, 7): initial (classic) bank")
    written, rows, summaries = ["dropin_gabor_before.png"], [], []
    caught: dict[str, list] = {}  # warning category -> [runs that raised it, first message]
    for task in tasks:
        build, n_classes = TASKS[task]
        train_set, test_set = build(args.quick, torch.Generator().manual_seed(0))
        print(f"{task}: {len(train_set[1])} training, {len(test_set[1])} test images of {SIZE} x {SIZE}, "
              f"{n_classes} classes; {epochs} epochs x {seeds} seed(s) per model", file=sys.stderr)
        for first, name in (("conv", "nn.Conv2d"), ("gabor", "GaborConv2d")):
            row = {"task": task, "first": name, "accuracy": [], "curve": [], "epoch_s": [], "epoch_cpu_s": []}
            for seed in range(seeds):
                model = make_model(n_classes, first, seed)
                with warnings.catch_warnings(record=True) as raised:  # summarised once below, not per run
                    warnings.simplefilter("always")
                    result = train(model, train_set, test_set, epochs, seed, f"{task} / {name} / seed {seed}",
                                   gabor_lr_scale=args.gabor_lr_scale)
                for category in dict.fromkeys(w.category.__name__ for w in raised):
                    first_message = next(str(w.message) for w in raised if w.category.__name__ == category)
                    caught.setdefault(category, [[], first_message])[0].append(f"{task}/{name}/{seed}")
                row["accuracy"].append(result["accuracy"])
                row["curve"].append(result["curve"])
                row["epoch_s"] += result["seconds"]
                row["epoch_cpu_s"] += result["cpu_seconds"]
                if seed == 0:  # the pictures: the first seed's run
                    file = f"dropin_{first}_after_{task}.png"
                    save_bank(os.path.join(args.out, file), model[0],
                              f"{name} after training ({task}, seed 0, test {100 * result['accuracy']:.1f}%)")
                    written.append(file)
                    if first == "gabor":
                        summaries.append(f"GaborConv2d on {task}, seed 0: {gabor_summary(initial, model[0])}")
                    else:
                        summaries.append(f"nn.Conv2d on {task}, seed 0, GaborConv2d.from_conv2d: "
                                         f"{fitted_swap(model, test_set)}")
            row.update(first_params=n_params(model[0]), model_params=n_params(model))
            rows.append(row)

    print(f"\nfirst layer nn.Conv2d(1, 16, 7, padding=3) or GaborConv2d(1, 16, 7, padding=3), the rest the "
          f"same; Adam one-cycle lr {LR:g}"
          f"{f' (Gabor parameters x{args.gabor_lr_scale:g})' if args.gabor_lr_scale != 1 else ''}, "
          f"batch 64, {epochs} epochs, seeds 0..{seeds - 1}; test accuracy after "
          f"the last epoch; torch {torch.__version__}, {torch.get_num_threads()} thread(s)")
    print_table(rows)
    for r in rows:
        print(f"{r['task']:<11} {r['first']:<11} per seed: "
              + ", ".join(f"{100 * a:.1f}%" for a in r["accuracy"]))
    for line in summaries:
        print(line)
    for category, (runs, message) in caught.items():
        print(f"{category} in {len(runs)} of {len(rows) * seeds} runs ({', '.join(runs)}); the first: {message}")
    plot_curves(os.path.join(args.out, "dropin_curves.png"), rows)
    written.append("dropin_curves.png")
    print(f"\nwrote {', '.join(written)} to {args.out} in {time.perf_counter() - t_start:.1f} s")


if __name__ == "__main__":
    main()
