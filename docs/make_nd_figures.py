"""Regenerate the figures of ``docs/nd.md`` (run from the repository root).

    python docs/make_nd_figures.py         # writes docs/images/nd_*.png

Every kernel shown is built by :func:`gaborlayer.gabor_kernel1d` / :func:`gaborlayer.gabor_kernel3d`
(the 1-D bank is the default initial bank of ``GaborConv1d``), so the pictures follow the code.
"""
from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from gaborlayer import gabor_kernel1d, gabor_kernel3d  # noqa: E402
from gaborlayer.init import classic_bank1d  # noqa: E402

OUT = Path(__file__).resolve().parent / "images"


def bank1d(path: Path, out_channels: int = 8, k: int = 63) -> None:
    """A 1-D classic bank: the kernels, and the magnitude of their frequency responses."""
    params = classic_bank1d(out_channels, 1, (k,), dtype=torch.float64)
    bank = gabor_kernel1d(params["sigma"][:, 0], params["lambd"][:, 0], params["psi"][:, 0], k).numpy()
    x = np.arange(k) - (k - 1) / 2
    n_fft = 4096
    freq = np.fft.rfftfreq(n_fft)
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 3.6))
    for i, kernel in enumerate(bank):
        color = f"C{i // 2}"
        style = "-" if i % 2 == 0 else "--"
        lambd = params["lambd"][i, 0].item()
        left.plot(x, kernel + 2.2 * (i // 2), color=color, ls=style, lw=1)
        response = np.abs(np.fft.rfft(kernel, n=n_fft))
        right.plot(freq, response, color=color, ls=style, lw=1,
                   label=f"lambd {lambd:.1f}, psi {abs(params['psi'][i, 0].item()) * (-1 if i % 2 else 1):.2f}")
        if i % 2 == 0:
            right.axvline(1 / lambd, color=color, lw=0.5, ls=":")
    left.set(title=f"GaborConv1d(1, {out_channels}, {k}) initial bank (even -, odd --)",
             xlabel="x (samples)", yticks=[])
    right.set(title="|frequency response| (dotted: 1 / lambd)", xlabel="frequency (cycles / sample)", xlim=(0, 0.5))
    right.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def filter3d(path: Path, k: int = 15) -> None:
    """Slices z = const of one 3-D filter, and of the same filter with phi = 0 (the 2-D one times a
    Gaussian in z)."""
    theta, sigma, lambd, gamma, psi = math.pi / 6, 3.0, 6.0, 0.6, 0.0
    rows = [(math.pi / 5, "theta = pi/6, phi = pi/5"), (0.0, "theta = pi/6, phi = 0")]
    slices = np.linspace(0, k - 1, 7).round().astype(int)
    fig, axes = plt.subplots(2, len(slices), figsize=(1.6 * len(slices), 3.7))
    for (phi, label), row in zip(rows, axes):
        bank = gabor_kernel3d(theta, phi, sigma, lambd, gamma, psi, k).numpy()
        for ax, d in zip(row, slices):
            ax.imshow(bank[d], cmap="RdBu_r", vmin=-1, vmax=1, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(f"z = {d - (k - 1) / 2:+.0f}", fontsize=8)
        row[0].set_ylabel(label, fontsize=8)
    fig.suptitle(f"3-D Gabor filter, {k}^3, sigma {sigma}, lambd {lambd}, gamma {gamma}, psi 0: slices along z "
                 f"(x right, y down)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


if __name__ == "__main__":
    OUT.mkdir(exist_ok=True)
    bank1d(OUT / "nd_bank1d.png")
    filter3d(OUT / "nd_filter3d.png")
    print("wrote", OUT / "nd_bank1d.png", OUT / "nd_filter3d.png")
