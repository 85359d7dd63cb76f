"""Regenerate the figures of ``docs/math.md``, ``docs/quadrature.md`` and ``docs/truncation.md``
(run from the repository root).

    python docs/make_figures.py            # writes docs/images/*.png

Every kernel shown is built by :func:`gaborlayer.gabor_kernel2d`, so the pictures follow the code.
"""
from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from gaborlayer import GaborConv2d, gabor_kernel2d, suggest_kernel_size  # noqa: E402

OUT = Path(__file__).resolve().parent / "images"


def kernel(theta, sigma, lambd, gamma, psi, size):
    return gabor_kernel2d(torch.tensor(float(theta), dtype=torch.float64), sigma, lambd, gamma, psi, size).numpy()


def _show(ax, k, size, vmax=1.0):
    """Draw a kernel with its pixel coordinates: x to the right, y downward (row order)."""
    kh, kw = k.shape
    half_w, half_h = (kw - 1) / 2, (kh - 1) / 2
    # extent=(left, right, bottom, top): row 0 (y = -half_h) is at the top, as in the array.
    ax.imshow(k, cmap="RdBu_r", vmin=-vmax, vmax=vmax,
              extent=(-half_w - 0.5, half_w + 0.5, half_h + 0.5, -half_h - 0.5), interpolation="nearest")
    ax.set_xticks([-half_w, 0, half_w])
    ax.set_yticks([-half_h, 0, half_h])
    ax.tick_params(labelsize=7, length=2, pad=1)


def kernel_grid(path: Path) -> None:
    size, sigma = 25, 4.0
    thetas = [0.0, math.pi / 4, math.pi / 2, 3 * math.pi / 4]
    theta_names = ["0", "π/4", "π/2", "3π/4"]
    columns = [  # (lambd, gamma, psi, title)
        (10.0, 0.5, 0.0, "λ=10, γ=0.5, ψ=0\n(even)"),
        (10.0, 0.5, -math.pi / 2, "λ=10, γ=0.5, ψ=-π/2\n(odd)"),
        (5.0, 0.5, 0.0, "λ=5, γ=0.5, ψ=0\n(shorter wave)"),
        (10.0, 1.0, 0.0, "λ=10, γ=1, ψ=0\n(round envelope)"),
        (10.0, 2.0, 0.0, "λ=10, γ=2, ψ=0\n(envelope short along y')"),
    ]
    fig, axes = plt.subplots(len(thetas), len(columns), figsize=(2.05 * len(columns), 2.05 * len(thetas) + 0.6),
                             constrained_layout=True)
    for r, (theta, tname) in enumerate(zip(thetas, theta_names)):
        for c, (lambd, gamma, psi, title) in enumerate(columns):
            ax = axes[r, c]
            _show(ax, kernel(theta, sigma, lambd, gamma, psi, size), size)
            # The x' axis (direction of the wave vector): (cos theta, sin theta) in (x, y), y downward.
            L = 9.0
            ax.annotate("", xy=(L * math.cos(theta), L * math.sin(theta)), xytext=(0, 0),
                        arrowprops=dict(arrowstyle="->", color="k", lw=1.4))
            ax.text(L * math.cos(theta) * 1.18, L * math.sin(theta) * 1.18, "x'", fontsize=8,
                    ha="center", va="center")
            if r == 0:
                ax.set_title(title, fontsize=8)
            if c == 0:
                ax.set_ylabel(f"θ = {tname}\ny (row, grows down)", fontsize=8)
            if r == len(thetas) - 1:
                ax.set_xlabel("x (column)", fontsize=8)
    fig.colorbar(axes[0, 0].images[0], ax=axes, shrink=0.5, pad=0.01, label="kernel value")
    fig.suptitle(f"gabor_kernel2d(theta, sigma={sigma:g}, lambd, gamma, psi, size={size}); "
                 "arrow: x' = x cos θ + y sin θ", fontsize=9)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def sampling_grid(path: Path) -> None:
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.6), constrained_layout=True, width_ratios=[5, 6])
    box = dict(boxstyle="square,pad=0.05", fc="white", ec="none")
    for ax, (kh, kw) in zip(axes, [(5, 5), (4, 6)]):
        half_w, half_h = (kw - 1) / 2, (kh - 1) / 2
        # The axes first, under the labels: x to the right, y downward, crossing at the origin.
        ax.annotate("", xy=(half_w + 0.95, 0), xytext=(-half_w - 0.5, 0),
                    arrowprops=dict(arrowstyle="->", color="C3", lw=1.0), zorder=1)
        ax.annotate("", xy=(0, half_h + 0.95), xytext=(0, -half_h - 0.5),
                    arrowprops=dict(arrowstyle="->", color="C3", lw=1.0), zorder=1)
        ax.text(half_w + 1.0, 0, "x", color="C3", fontsize=11, ha="left", va="center")
        ax.text(0, half_h + 1.0, "y", color="C3", fontsize=11, ha="center", va="top")
        ax.plot(0, 0, "P", color="C3", ms=9, zorder=3)
        for i in range(kh):
            for j in range(kw):
                x, y = j - half_w, i - half_h
                ax.add_patch(plt.Rectangle((x - 0.5, y - 0.5), 1, 1, fill=False, lw=0.8, color="0.55", zorder=0))
                ax.plot(x, y, "o", color="C0", ms=4, zorder=2)
                ax.text(x, y - 0.2, f"[{i},{j}]", ha="center", va="bottom", fontsize=7, bbox=box, zorder=4)
                ax.text(x, y + 0.2, f"({x:g}, {y:g})", ha="center", va="top", fontsize=7, bbox=box, zorder=4)
        ax.set_xlim(-half_w - 0.7, half_w + 1.5)
        ax.set_ylim(half_h + 1.5, -half_h - 0.7)  # y grows downward, as the rows do
        ax.set_aspect("equal")
        ax.axis("off")
        ax.set_title(f"kh={kh}, kw={kw}:  [row i, col j]  above,  (x, y)  below", fontsize=9)
    fig.suptitle("Sampling layout: x = j - (kw-1)/2, y = i - (kh-1)/2 (red: the axes, crossing at the origin)",
                 fontsize=10)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def quadrature_pairs(path: Path) -> None:
    """Even and odd filters of three pairs, and their responses on a real image (scikit-learn's
    bundled china.jpg): the real part oscillates across an edge, the magnitude does not."""
    from sklearn.datasets import load_sample_image

    image = torch.tensor(load_sample_image("china.jpg"), dtype=torch.float64).mean(-1)[60:220, 130:330] / 255
    thetas = [0.0, math.pi / 4, math.pi / 2]
    m = GaborConv2d(1, 3, 21, padding="same", padding_mode="reflect", bias=False, dtype=torch.float64,
                    output="complex", zero_mean=True,
                    theta=torch.tensor(thetas)[:, None], sigma=3.0, lambd=8.0, gamma=1.0, psi=0.0)
    with torch.no_grad():
        z = m(image[None, None])[0]
        bank = m.weight[:, 0]
    fig, axes = plt.subplots(3, 5, figsize=(12, 7.2), gridspec_kw={"width_ratios": [1, 1, 2.2, 2.2, 2.2]})
    for row, theta in enumerate(thetas):
        _show(axes[row, 0], bank[row].numpy(), 21)
        _show(axes[row, 1], bank[3 + row].numpy(), 21)
        for col, (data, title, cmap) in enumerate([(z[row].real, "real (even response)", "RdBu_r"),
                                                   (z[row].imag, "imaginary (odd response)", "RdBu_r"),
                                                   (z[row].abs(), "magnitude (energy)", "magma")]):
            ax = axes[row, 2 + col]
            vmax = float(z[row].abs().max())
            ax.imshow(data.numpy(), cmap=cmap, vmin=0 if cmap == "magma" else -vmax, vmax=vmax)
            ax.axis("off")
            if row == 0:
                ax.set_title(title, fontsize=9)
        axes[row, 0].set_ylabel(f"theta = {math.degrees(theta):.0f} deg", fontsize=9)
    axes[0, 0].set_title("even: psi", fontsize=9)
    axes[0, 1].set_title("odd: psi - pi/2", fontsize=9)
    fig.suptitle("GaborConv2d(output='complex'): three zero-mean quadrature pairs (sigma 3, lambd 8) "
                 "on china.jpg, reflect padding", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def truncation(path: Path) -> None:
    """A filter whose envelope the kernel cuts, and the same filter in the suggested kernel."""
    theta, sigma, lambd, gamma = math.pi / 6, 3.0, 6.0, 0.5
    suggested = suggest_kernel_size(theta, sigma, gamma)
    fig, axes = plt.subplots(1, 2, figsize=(8, 4.2), gridspec_kw={"width_ratios": [1, 2.6]})
    for ax, size in zip(axes, [(11, 11), suggested]):
        k = kernel(theta, sigma, lambd, gamma, 0.0, size)
        _show(ax, k, size)
        ax.set_title(f"kernel_size={size}", fontsize=9)
    t = torch.linspace(0, 2 * math.pi, 200, dtype=torch.float64)
    # The 3-sigma contour: x' = 3 sigma cos t, y' = 3 sigma / gamma sin t, rotated back to (x, y).
    xr, yr = 3 * sigma * torch.cos(t), 3 * sigma / gamma * torch.sin(t)
    x, y = xr * math.cos(theta) - yr * math.sin(theta), xr * math.sin(theta) + yr * math.cos(theta)
    for ax in axes:
        ax.plot(x.numpy(), y.numpy(), "k--", lw=1)
    axes[0].set_xlim(-16, 16), axes[0].set_ylim(16, -16)
    fig.suptitle(f"theta={math.degrees(theta):.0f} deg, sigma={sigma:g}, gamma={gamma:g}: the 3-sigma envelope "
                 f"(dashed) needs {suggested[0]} x {suggested[1]}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    figures = {"kernels.png": kernel_grid, "sampling_grid.png": sampling_grid,
               "quadrature_pairs.png": quadrature_pairs, "truncation.png": truncation}
    for name, draw in figures.items():
        draw(OUT / name)
    print(f"wrote {', '.join(figures)} to {OUT}")


if __name__ == "__main__":
    main()
