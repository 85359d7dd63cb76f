"""Regressing a sub-pixel shift: a Gabor quadrature front end against a plain conv front end.

The question in ``docs/subpixel.md`` regresses offsets of a few pixels between image patches with
shallow convnets, and the optimisation "gets stuck". A quadrature pair of Gabor filters (phases
psi and psi - pi/2) turns a shift ``d`` into a phase difference ``2 pi (d . k) / lambd``, so a front
end of such pairs is a natural prior. This demo measures whether that prior helps.

Data: pairs ``(ref, moved)`` of 28 x 28 grayscale patches, ``moved(x, y) = ref(x - dx, y - dy)``
with ``(dx, dy)`` uniform in [-2, 2]^2 pixels, made by a Fourier shift of a mirror-extended 44 x 44
crop (periodic without a jump, so no wrap-around edge) cropped back to its centre. Training pairs
come from scikit-learn's bundled ``china.jpg``, test pairs from ``china.jpg`` (fresh pairs) and
from ``flower.jpg`` (an image never seen in training). Each pair is normalised by the mean and
standard deviation of ``ref``.

Regressor: a 1 -> 16 channel 11 x 11 front end applied to both patches (shared weights), then a
head, the same for both front ends:

- ``corr``: the normalised zero-lag cross-correlations of the two response stacks, a 16 x 16
  matrix ``<a_i, b_j> / sqrt(<a_i, a_i> <b_j, b_j>)``, into an MLP 256 -> 64 -> 2;
- ``generic``: the two response stacks, each channel divided by its RMS over the ``ref`` response,
  concatenated, 1x1 conv 32 -> 32, ReLU, global average pool, MLP 32 -> 32 -> 2 (what a plain
  shallow convnet does, no built-in product).

Front ends: ``GaborConv2d(1, 16, 11)`` initialised as 8 quadrature pairs (4 orientations x
wavelengths 4 and 8 px, sigma = 0.56 lambd, gamma = 1), all five parameters learning; or
``nn.Conv2d(1, 16, 11)`` from its default random init. Same seeds (the head is initialised
identically), same data order, Adam (lr 3e-3, cosine decay over 400 steps), batch 32 pairs, MSE on (dx, dy) in pixels.
Reference points: predicting 0 (RMSE 4 / sqrt(12) = 1.155 px) and phase correlation with a
parabolic peak fit (no learning).

It prints a table and writes to ``--out``:

- ``subpixel_curves.png``: training loss and test RMSE per step, every run (thin: seed 1),
- ``subpixel_filters.png``: a training pair and the front-end filters before and after training,
- ``subpixel_scatter.png``: predicted against true dx on the unseen image.

Run ``python demos/subpixel_shift.py`` (under two minutes on a shared 2-core CPU) or ``--quick`` (CI).
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

# The 11x11 kernel cuts the wavelength-8 envelopes (sigma 4.5) at about 1.2 sigma, on purpose: the
# same window as the plain conv's; GaborConv2d would warn about it.
if hasattr(gaborlayer, "GaborTruncationWarning"):
    warnings.filterwarnings("ignore", category=gaborlayer.GaborTruncationWarning)

PATCH, MARGIN, MAX_SHIFT = 28, 8, 2.0
STEPS, BATCH = 400, 32
KERNEL, CHANNELS = 11, 16
ORIENTATIONS, WAVELENGTHS = 4, (4.0, 8.0)


# -- data ------------------------------------------------------------------------------------------
@functools.cache
def load_gray(name: str) -> torch.Tensor:
    """A bundled scikit-learn sample image (china.jpg, flower.jpg) as grayscale in [0, 1], ``(H, W)``, float64."""
    from sklearn.datasets import load_sample_images
    images = load_sample_images()
    image = images.images[[os.path.basename(f) for f in images.filenames].index(name)]
    return torch.tensor(image, dtype=torch.float64).mean(-1) / 255


def fourier_shift(img: torch.Tensor, dx: torch.Tensor, dy: torch.Tensor) -> torch.Tensor:
    """``out(x, y) = img(x - dx, y - dy)`` for a periodic ``img`` ``(N, H, W)``: content moves by
    ``+dx`` to the right (columns) and ``+dy`` down (rows). ``dx``, ``dy``: ``(N,)`` pixels."""
    h, w = img.shape[-2:]
    fy = torch.fft.fftfreq(h, dtype=img.dtype)[None, :, None]
    fx = torch.fft.rfftfreq(w, dtype=img.dtype)[None, None, :]
    # The ramp exp(-2 pi i (fx dx + fy dy)) is separable: two small exps instead of one per pixel.
    ramp = torch.exp(-2j * math.pi * fy * dy[:, None, None]) * torch.exp(-2j * math.pi * fx * dx[:, None, None])
    return torch.fft.irfft2(torch.fft.rfft2(img) * ramp, s=(h, w))


def shift_crops(crops: torch.Tensor, dx: torch.Tensor, dy: torch.Tensor, margin: int) -> torch.Tensor:
    """Shift ``(N, S, S)`` crops by (dx, dy) and return their centres ``(N, S - 2 margin, ...)``.

    The crop is mirror-extended to ``2S x 2S`` first, which makes it periodic without a jump, so the
    Fourier shift has no wrap-around edge to ring at; the margin keeps the shifted-in border out.
    """
    top = torch.cat([crops, crops.flip(-1)], -1)
    periodic = torch.cat([top, top.flip(-2)], -2)
    s = crops.shape[-1]
    return fourier_shift(periodic, dx, dy)[:, margin:s - margin, margin:s - margin]


def make_pairs(image: torch.Tensor, n: int, seed: int):
    """``n`` pairs ``(ref, moved)`` of PATCH x PATCH patches, float32 ``(n, 1, P, P)`` each, and the
    shifts ``(n, 2)`` = (dx, dy) in pixels, uniform in [-MAX_SHIFT, MAX_SHIFT]."""
    g = torch.Generator().manual_seed(seed)
    s = PATCH + 2 * MARGIN
    ys = torch.randint(0, image.shape[0] - s + 1, (n,), generator=g).tolist()
    xs = torch.randint(0, image.shape[1] - s + 1, (n,), generator=g).tolist()
    crops = torch.stack([image[y:y + s, x:x + s] for y, x in zip(ys, xs)]).float()  # float32: 1e-6 px is plenty
    d = (2 * torch.rand(n, 2, generator=g, dtype=torch.float64) - 1).float() * MAX_SHIFT
    moved = shift_crops(crops, d[:, 0], d[:, 1], MARGIN)
    ref = crops[:, MARGIN:s - MARGIN, MARGIN:s - MARGIN]
    mean = ref.mean((-2, -1), keepdim=True)
    std = ref.std((-2, -1), keepdim=True).clamp_min(1e-3)
    return ((ref - mean) / std)[:, None], ((moved - mean) / std)[:, None], d


# -- models ----------------------------------------------------------------------------------------
def quadrature_init() -> dict:
    """8 quadrature pairs: 4 orientations x 2 wavelengths, psi 0 and -pi/2, sigma 0.56 lambd, gamma 1."""
    theta, lambd, psi = [], [], []
    for lam in WAVELENGTHS:
        for k in range(ORIENTATIONS):
            for p in (0.0, -math.pi / 2):
                theta.append(math.pi * k / ORIENTATIONS)
                lambd.append(lam)
                psi.append(p)
    t = lambda v: torch.tensor(v)[:, None]  # noqa: E731
    return dict(theta=t(theta), lambd=t(lambd), sigma=0.56 * t(lambd), gamma=1.0, psi=t(psi))


def make_front(kind: str) -> nn.Module:
    if kind == "Gabor":
        return GaborConv2d(1, CHANNELS, KERNEL, **quadrature_init())
    return nn.Conv2d(1, CHANNELS, KERNEL)


class Regressor(nn.Module):
    def __init__(self, front: str, head: str, seed: int):
        super().__init__()
        torch.manual_seed(seed)
        self.front = make_front(front)
        torch.manual_seed(seed + 100)  # the head starts the same whatever the front end
        self.head_kind = head
        if head == "corr":
            self.head = nn.Sequential(nn.Linear(CHANNELS * CHANNELS, 64), nn.ReLU(), nn.Linear(64, 2))
        else:
            self.mix = nn.Conv2d(2 * CHANNELS, 32, 1)
            self.head = nn.Sequential(nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 2))

    def forward(self, ref, moved):
        both = self.front(torch.cat([ref, moved]))   # one call: the bank is built once per step
        a, b = both.chunk(2)
        if self.head_kind == "corr":
            corr = torch.einsum("bihw,bjhw->bij", a, b)
            na = a.square().sum((-2, -1)).clamp_min(1e-8).sqrt()
            nb = b.square().sum((-2, -1)).clamp_min(1e-8).sqrt()
            return self.head((corr / (na[:, :, None] * nb[:, None, :])).flatten(1))
        # Each channel divided by its RMS over the ref response (the same divisor for both patches),
        # so the scale of the filters (Gabor peak 1, the plain init ~0.1) does not set the head's scale.
        rms = a.square().mean((-2, -1), keepdim=True).clamp_min(1e-8).sqrt()
        return self.head(F.relu(self.mix(torch.cat([a / rms, b / rms], 1))).mean((-2, -1)))


def rmse(model, data, batch=512) -> tuple[float, torch.Tensor]:
    ref, moved, d = data
    with torch.no_grad():
        pred = torch.cat([model(ref[i:i + batch], moved[i:i + batch]) for i in range(0, len(d), batch)])
    return float((pred - d).square().mean().sqrt()), pred


def train(front, head, seed, data, tests, steps, batch):
    model = Regressor(front, head, seed)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    ref, moved, d = data
    g = torch.Generator().manual_seed(seed)  # the same batches for every model of a seed
    losses, evals = [], []
    eval_every = max(1, steps // 20)
    t0 = time.perf_counter()
    for step in range(steps):
        idx = torch.randint(0, len(d), (batch,), generator=g)
        opt.zero_grad()
        loss = (model(ref[idx], moved[idx]) - d[idx]).square().mean()
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
        if (step + 1) % eval_every == 0 or step == steps - 1:
            model.eval()
            evals.append((step + 1, rmse(model, tuple(t[:256] for t in tests["flower.jpg (unseen)"]))[0]))
            model.train()
    seconds = time.perf_counter() - t0
    model.eval()
    result = {name: rmse(model, t)[0] for name, t in tests.items()}
    result["train"] = rmse(model, tuple(t[:1024] for t in data))[0]
    return dict(model=model, losses=np.array(losses), evals=np.array(evals), seconds=seconds, **result)


# -- a classical reference: phase correlation --------------------------------------------------
def phase_correlation(ref: torch.Tensor, moved: torch.Tensor) -> torch.Tensor:
    """(dx, dy) of ``moved`` relative to ``ref`` from the phase-correlation peak, refined by a
    parabola through the peak and its two neighbours on each axis. ``(N, 1, P, P)`` -> ``(N, 2)``."""
    a, b = ref[:, 0].double(), moved[:, 0].double()
    window = torch.hann_window(a.shape[-1], periodic=False, dtype=a.dtype)
    window = window[:, None] * window[None, :]
    cross = torch.fft.fft2(b * window) * torch.fft.fft2(a * window).conj()
    r = torch.fft.ifft2(cross / cross.abs().clamp_min(1e-12)).real
    n, h, w = r.shape
    flat = r.reshape(n, -1).argmax(-1)
    iy, ix = flat // w, flat % w
    rows = torch.arange(n)

    def refine(minus, centre, plus):
        denom = minus - 2 * centre + plus
        return torch.where(denom.abs() > 1e-12, 0.5 * (minus - plus) / denom, torch.zeros_like(denom))

    c = r[rows, iy, ix]
    fx = refine(r[rows, iy, (ix - 1) % w], c, r[rows, iy, (ix + 1) % w])
    fy = refine(r[rows, (iy - 1) % h, ix], c, r[rows, (iy + 1) % h, ix])
    dx = (ix + w // 2) % w - w // 2 + fx
    dy = (iy + h // 2) % h - h // 2 + fy
    return torch.stack([dx, dy], -1).float()


# -- plots -----------------------------------------------------------------------------------------
COLORS = {"Gabor": "black", "Conv2d": "tab:blue"}
STYLES = {"corr": "-", "generic": "--"}


def plot_curves(path, runs, zero_rmse):
    """Training loss (log) and test RMSE on the unseen image (linear, from 0, with headroom above
    the predict-0 line) per step; one legend, under the panels."""
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(10, 3.9))
    for (front, head, seed), r in runs.items():
        label = f"{front}, {head} head" if seed == 0 else None
        smooth = np.convolve(r["losses"], np.ones(20) / 20, mode="valid") if len(r["losses"]) > 40 else r["losses"]
        style = dict(color=COLORS[front], ls=STYLES[head], lw=1.2 if seed == 0 else 0.7, alpha=1 if seed == 0 else 0.5)
        ax.semilogy(np.arange(len(smooth)) + 1, smooth, label=label, **style)
        bx.plot(r["evals"][:, 0], r["evals"][:, 1], **style)
    ax.set(xlabel="step", ylabel="training MSE (px², running mean of 20)", title="training loss")
    bx.axhline(zero_rmse, color="0.5", ls=":", lw=1.2, label="predict 0 (test)")
    highest = max([zero_rmse] + [float(r["evals"][:, 1].max()) for r in runs.values()])
    bx.set_ylim(0, 1.15 * highest)  # headroom: the predict-0 line clears the top
    bx.set(xlabel="step", ylabel="RMSE (px)", title="test RMSE on flower.jpg (unseen image)")
    handles, labels = ax.get_legend_handles_labels()
    more, more_labels = bx.get_legend_handles_labels()
    fig.legend(handles + more, labels + more_labels, loc="lower center", ncol=5, fontsize=8, frameon=False,
               handlelength=3)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    fig.savefig(path, dpi=80)
    plt.close(fig)


def plot_filters(path, runs, pair):
    ref, moved, d = pair
    show = [("Gabor", "start", Regressor("Gabor", "corr", 0).front),
            ("Gabor", "trained (corr head)", runs[("Gabor", "corr", 0)]["model"].front),
            ("Conv2d", "start", Regressor("Conv2d", "corr", 0).front),
            ("Conv2d", "trained (corr head)", runs[("Conv2d", "corr", 0)]["model"].front)]
    fig = plt.figure(figsize=(11, 5.4))
    grid = fig.add_gridspec(4, 1 + CHANNELS // 2, width_ratios=[2.2] + [1] * (CHANNELS // 2))
    for row, (img, title) in enumerate(((ref, "ref"), (moved, f"moved by ({d[0]:+.2f}, {d[1]:+.2f}) px"))):
        ax = fig.add_subplot(grid[2 * row:2 * row + 2, 0])
        ax.imshow(img[0].numpy(), cmap="gray")
        ax.set_title(title, fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
    for row, (front, stage, module) in enumerate(show):
        w = module.weight.detach()[:, 0]
        for j in range(CHANNELS // 2):   # the even member of each pair (or every other plain filter)
            ax = fig.add_subplot(grid[row, 1 + j])
            k = w[2 * j]
            ax.imshow(k.numpy(), cmap="RdBu_r", vmin=-k.abs().max(), vmax=k.abs().max())
            ax.set_xticks([])
            ax.set_yticks([])
            if j == 0:
                ax.set_ylabel(f"{front}\n{stage}", fontsize=7)
    fig.suptitle("filters 0, 2, 4, ... of the front end (Gabor: the psi = 0 member of each pair)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def plot_scatter(path, runs, test, pc):
    _, _, d = test
    heads = sorted({h for _, h, _ in runs})
    fig, axes = plt.subplots(1, len(heads) * 2 + 1, figsize=(3.1 * (len(heads) * 2 + 1), 3.2))
    panels = [(f"{front}, {head} head", rmse(runs[(front, head, 0)]["model"], test)[1])
              for head in heads for front in ("Gabor", "Conv2d")] + [("phase correlation", pc)]
    for ax, (title, pred) in zip(axes, panels):
        err = float((pred - d).square().mean().sqrt())
        ax.plot(d[:, 0].numpy(), pred[:, 0].numpy(), ".", ms=2, alpha=0.5)
        ax.plot([-2.2, 2.2], [-2.2, 2.2], color="0.5", lw=0.8)
        ax.set(xlim=(-2.5, 2.5), ylim=(-2.5, 2.5), xlabel="true dx (px)", title=f"{title}\nRMSE {err:.3f} px")
        ax.title.set_fontsize(8)
    axes[0].set_ylabel("predicted dx (px)")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def verdict(runs, head, seeds, zero_rmse, test="flower.jpg (unseen)") -> str:
    """Which front end did better on ``test`` with ``head``, called only when the difference of the
    means over the seeds exceeds the larger of the two seed-to-seed standard deviations; with one
    seed nothing is called, since the spread cannot be measured."""
    gab = np.array([runs[("Gabor", head, s)][test] for s in seeds])
    pla = np.array([runs[("Conv2d", head, s)][test] for s in seeds])
    means = f"Gabor {gab.mean():.3f}, Conv2d {pla.mean():.3f} px"
    chance = f"; predict 0: {zero_rmse:.3f} px"
    if len(seeds) < 2:
        return f"no difference measurable with one seed ({means}{chance})"
    spread = max(gab.std(ddof=1), pla.std(ddof=1))
    diff = abs(gab.mean() - pla.mean())
    if diff <= spread:
        return (f"no clear winner: the difference {diff:.3f} px is within the seed-to-seed spread "
                f"(standard deviation up to {spread:.3f} px; {means}{chance})")
    winner = "Gabor" if gab.mean() < pla.mean() else "Conv2d"
    return (f"{winner} front end wins by {diff:.3f} px, more than the seed-to-seed spread "
            f"(standard deviation up to {spread:.3f} px; {means})")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "out"),
                        help="directory for the PNGs (default demos/out/)")
    parser.add_argument("--quick", action="store_true", help="fewer pairs, steps and seeds (CI)")
    args = parser.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    torch.set_num_threads(1)
    t_start = time.perf_counter()
    steps, seeds = (15, [0]) if args.quick else (STEPS, [0, 1])
    n_train, n_test = (128, 64) if args.quick else (4096, 512)
    heads = ["corr", "generic"]
    china, flower = load_gray("china.jpg"), load_gray("flower.jpg")
    data = make_pairs(china, n_train, seed=1)
    tests = {"china.jpg (fresh pairs)": make_pairs(china, n_test, seed=2),
             "flower.jpg (unseen)": make_pairs(flower, n_test, seed=3)}
    t_data = time.perf_counter() - t_start
    runs = {}
    for seed in seeds:
        for head in heads:
            for front in ("Gabor", "Conv2d"):
                runs[(front, head, seed)] = train(front, head, seed, data, tests, steps, batch=BATCH)

    unseen = tests["flower.jpg (unseen)"]
    zero = {name: float(t[2].square().mean().sqrt()) for name, t in tests.items()}
    pcs = {name: phase_correlation(t[0], t[1]) for name, t in tests.items()}
    pc = {name: float((pcs[name] - t[2]).square().mean().sqrt()) for name, t in tests.items()}

    print(f"{n_train} training pairs {PATCH}x{PATCH} from china.jpg, shifts uniform in [-{MAX_SHIFT:g}, "
          f"{MAX_SHIFT:g}]^2 px (Fourier shift); {n_test} test pairs each; made in {t_data:.1f} s")
    print(f"front end 1 -> {CHANNELS} ch, {KERNEL}x{KERNEL}, shared by both patches; Adam lr 3e-3 (cosine), "
          f"batch {BATCH}, {steps} steps, MSE in px²; seeds {seeds}; {torch.get_num_threads()} thread")
    cols = ["train", *tests]
    head = (f"| {'front end':<11} | {'head':<8} | " + " | ".join(f"{c[:23]:>23}" for c in cols)
            + f" | {'train s':>7} |")
    print("RMSE in px (mean over seeds, min..max when more than one seed)")
    print(head)
    print("|" + "|".join("-" * len(c) for c in head.split("|")[1:-1]) + "|")
    for h in heads:
        for front in ("Gabor", "Conv2d"):
            rs = [runs[(front, h, s)] for s in seeds]
            cells = []
            for c in cols:
                v = [r[c] for r in rs]
                cells.append(f"{np.mean(v):.3f}" + (f" ({min(v):.3f}..{max(v):.3f})" if len(v) > 1 else ""))
            print(f"| {front:<11} | {h:<8} | " + " | ".join(f"{c:>23}" for c in cells)
                  + f" | {np.mean([r['seconds'] for r in rs]):>7.1f} |")
    print(f"| {'predict 0':<11} | {'-':<8} | {'-':>23} | " + " | ".join(f"{zero[c]:>23.3f}" for c in tests)
          + f" | {'-':>7} |")
    print(f"| {'phase corr.':<11} | {'-':<8} | {'-':>23} | " + " | ".join(f"{pc[c]:>23.3f}" for c in tests)
          + f" | {'-':>7} |")
    g = runs[("Gabor", "corr", seeds[0])]["model"].front
    print(f"Gabor front end after training (corr head, seed {seeds[0]}): lambd {g.lambd.min().item():.2f}.."
          f"{g.lambd.max().item():.2f}, sigma {g.sigma.min().item():.2f}..{g.sigma.max().item():.2f}")
    for h in heads:
        print(f"{h} head, unseen image: {verdict(runs, h, seeds, zero['flower.jpg (unseen)'])}")

    plot_curves(os.path.join(args.out, "subpixel_curves.png"), runs, zero["flower.jpg (unseen)"])
    plot_filters(os.path.join(args.out, "subpixel_filters.png"), runs, (data[0][0], data[1][0], data[2][0]))
    plot_scatter(os.path.join(args.out, "subpixel_scatter.png"), runs, unseen, pcs["flower.jpg (unseen)"])
    print(f"\nwrote {', '.join(sorted(f for f in os.listdir(args.out) if f.startswith('subpixel_')))} to "
          f"{args.out}; total {time.perf_counter() - t_start:.1f} s")


if __name__ == "__main__":
    main()
