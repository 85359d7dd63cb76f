"""Regenerate the figure of ``docs/filters.md`` (run from the repository root).

    python docs/make_filters_figure.py     # writes docs/images/filters_camera.png

scikit-image's ``gabor`` and ours on the camera image (float32), real and imaginary responses at
one frequency and orientation, the kernel, and the difference of the responses (its size is printed
on its panel: float32 rounding).
"""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import skimage.filters  # noqa: E402
import torch  # noqa: E402
from skimage import data, img_as_float  # noqa: E402

from gaborlayer import filters  # noqa: E402

OUT = Path(__file__).resolve().parent / "images"


def main() -> None:
    image = img_as_float(data.camera()).astype(np.float32)
    frequency, theta = 0.1, np.pi / 4
    theirs = skimage.filters.gabor(image, frequency, theta)
    ours = [r.numpy() for r in filters.gabor(torch.from_numpy(image), frequency, theta)]
    kernel = filters.gabor_kernel(frequency, theta).numpy()
    fig, axes = plt.subplots(2, 4, figsize=(14, 7.4))
    for row, (name, t, o, k) in enumerate(zip(("real", "imaginary"), theirs, ours, (kernel.real, kernel.imag))):
        limit = np.percentile(np.abs(t), 99.5)  # the colour scale: edges would leave the texture white
        difference = o - t
        worst = np.abs(difference).max()
        panels = [(k, f"gabor_kernel: {name} part", "RdBu_r", np.abs(k).max()),
                  (t, f"skimage.filters.gabor: {name}", "RdBu_r", limit),
                  (o, f"gaborlayer.filters.gabor: {name}", "RdBu_r", limit),
                  (difference, f"ours - skimage: max {worst:.1e}\n({worst / np.abs(t).max():.1e} of the largest "
                               "response)", "RdBu_r", max(worst, 1e-30))]
        for ax, (values, title, cmap, lim) in zip(axes[row], panels):
            shown = ax.imshow(values, cmap=cmap, vmin=-lim, vmax=lim)
            ax.set_title(title, fontsize=10, pad=16)  # above the colour bar's 1e-k label
            ax.set_xticks([]), ax.set_yticks([])
            bar = fig.colorbar(shown, ax=ax, fraction=0.046, pad=0.02)
            bar.formatter.set_powerlimits((-2, 2))
    size = "x".join(map(str, kernel.shape))
    fig.suptitle(f"camera image (float32, 512 x 512), frequency {frequency}, theta = pi/4 ({size} kernel), "
                 "mode 'reflect'; colour scales clipped at the 99.5th percentile", fontsize=12)
    fig.tight_layout()
    OUT.mkdir(exist_ok=True)
    path = OUT / "filters_camera.png"
    fig.savefig(path, dpi=90)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
