"""gaborlayer.filters.gabor against skimage.filters.gabor, and where the FFT pays.

    python benchmarks/bench_filters.py               # full run (CPU, float32, one thread)
    python benchmarks/bench_filters.py --quick       # small sizes, one repeat: a smoke test
    python benchmarks/bench_filters.py --threads 2   # torch's thread count (scikit-image uses one)
    python benchmarks/bench_filters.py --device cuda # ours on CUDA (scikit-image stays on CPU)

Three tables, each from the same run (medians over the repeats, the baseline timed in the same rounds):

* ``one image``: ``gabor`` on the 512 x 512 camera image (float32) against ``skimage.filters.gabor``,
  at three frequencies (kernels 35x35, 15x15 and 11x11);
* ``batch``: 32 images x 8 orientations, one call against scikit-image looping over the 256 pairs;
* ``crossover``: ``method="direct"`` against ``method="fft"`` over kernel sizes, for one filter and
  for a bank of 8: where ``FFT_MIN_TAPS`` comes from;
* ``kornia``: the same bank through ``kornia.filters.filter2d`` (``--kornia`` runs only this).

Ratios above 1 mean ours is faster. Both sides compute the real and the imaginary response.
"""
from __future__ import annotations

import argparse
import functools
import math
import os
import statistics
import time

import numpy as np
import skimage.filters
import torch
from skimage import data, img_as_float
from skimage.transform import resize

from gaborlayer import filters


def _sync(device):
    if device is not None and device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, device=None) -> float:
    _sync(device)
    start = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - start


def race(baseline, ours, repeats, device):
    """Median seconds of ``baseline`` and ``ours``, alternating in each round (one warm-up call each)."""
    baseline(), ours()
    _sync(device)
    base, mine = [], []
    for _ in range(repeats):
        base.append(timed(baseline))
        mine.append(timed(ours, device))
    return statistics.median(base), statistics.median(mine)


def camera(size: int) -> np.ndarray:
    image = img_as_float(data.camera())
    if size != image.shape[0]:
        image = resize(image, (size, size), anti_aliasing=True)
    return image.astype(np.float32)


def one_image(size, repeats, device):
    print(f"\none image: {size} x {size} float32, real and imaginary response, mode='reflect'")
    print(f"{'frequency':>9} {'kernel':>8} {'method':>6} {'skimage s':>10} {'ours s':>9} {'ratio':>7}")
    image = camera(size)
    x = torch.from_numpy(image).to(device)
    for frequency in (0.1, 0.25, 0.4):
        kernel = tuple(filters.gabor_kernel(frequency).shape)
        taps = math.prod(kernel)
        method = "fft" if taps >= filters.FFT_MIN_TAPS["one filter"] else "direct"
        base, mine = race(functools.partial(skimage.filters.gabor, image, frequency),
                          functools.partial(filters.gabor, x, frequency), repeats, device)
        print(f"{frequency:>9} {'x'.join(map(str, kernel)):>8} {method:>6} {base:>10.4f} {mine:>9.4f} "
              f"{base / mine:>7.1f}")


def batch(n_images, n_orientations, size, frequency, repeats, device):
    print(f"\nbatch: {n_images} images x {n_orientations} orientations, {size} x {size} float32, "
          f"frequency {frequency}")
    rng = np.random.default_rng(0)
    images = np.stack([camera(size)] * n_images) + 0.01 * rng.standard_normal((n_images, size, size)).astype(
        np.float32)
    thetas = [k * math.pi / n_orientations for k in range(n_orientations)]
    x = torch.from_numpy(images).to(device)
    theta = torch.tensor(thetas, device=device)

    def loop():
        return [skimage.filters.gabor(im, frequency, t) for im in images for t in thetas]

    def ours():
        return filters.gabor(x, frequency, theta)

    base, mine = race(loop, ours, repeats, device)
    kernel = "x".join(map(str, filters.gabor_kernel(frequency).shape))
    print(f"kernel {kernel}: skimage loop {base:.3f} s, ours one call {mine:.3f} s, ratio {base / mine:.1f}")
    real, imag = ours()
    ref_real, ref_imag = skimage.filters.gabor(images[-1], frequency, thetas[-1])
    error = max(np.abs(real[-1, -1].cpu().numpy() - ref_real).max() / np.abs(ref_real).max(),
                np.abs(imag[-1, -1].cpu().numpy() - ref_imag).max() / np.abs(ref_imag).max())
    print(f"max relative difference to skimage (last image, last orientation): {error:.1e}")


def crossover(size, repeats, device):
    print(f"\ncrossover: method='direct' against method='fft', {size} x {size} float32, sigma_x = sigma_y")
    print(f"{'filters':>8} {'images':>6} {'kernel':>8} {'taps':>6} {'direct s':>9} {'fft s':>9} {'faster':>7}")
    for n_filters, n_images in ((1, 1), (8, 8)):
        theta = torch.arange(n_filters, device=device) * math.pi / n_filters
        x = torch.rand(n_images, size, size, device=device)
        for sigma in (0.5, 1.0, 1.5, 2.0, 3.0, 4.5):
            kernel = filters.gabor_kernel(0.25, theta, sigma_x=sigma, sigma_y=sigma).shape[-2:]
            run = functools.partial(filters.gabor, x, 0.25, theta, sigma_x=sigma, sigma_y=sigma)
            direct, fft = race(functools.partial(run, method="direct"), functools.partial(run, method="fft"),
                               repeats, device)
            print(f"{n_filters:>8} {n_images:>6} {'x'.join(map(str, kernel)):>8} {math.prod(kernel):>6} "
                  f"{direct:>9.4f} {fft:>9.4f} {'fft' if fft < direct else 'direct':>7}")


def against_kornia(n_images, n_orientations, size, repeats, device):
    """The same bank through ``kornia.filters.filter2d``: kornia applies one kernel per sample to all its
    channels, so each (image, kernel) pair becomes a sample of its own (a grouped convolution)."""
    import kornia

    print(f"\nkornia: {n_images} images x {n_orientations} orientations, {size} x {size} float32, frequency 0.25, "
          "mode 'mirror' (kornia's 'reflect'), direct convolution")
    x = torch.rand(n_images, size, size, device=device)
    theta = torch.arange(n_orientations, device=device) * math.pi / n_orientations
    g = filters.gabor_kernel(0.25, theta, dtype=torch.complex64, device=device)
    kernels = torch.cat([g.real, g.imag])  # (2K, kh, kw)
    pairs = 2 * n_orientations

    def via_kornia():
        inputs = x[:, None].expand(n_images, pairs, size, size).reshape(n_images * pairs, 1, size, size)
        return kornia.filters.filter2d(inputs, kernels.repeat(n_images, 1, 1), border_type="reflect",
                                       behaviour="conv").reshape(n_images, pairs, size, size)

    ours = functools.partial(filters.gabor, x, 0.25, theta, mode="mirror", method="direct")
    theirs, mine = race(via_kornia, ours, repeats, device)
    real, imag = ours()
    same = torch.equal(torch.cat([real, imag], 1), via_kornia())
    print(f"kornia filter2d {theirs:.3f} s, ours {mine:.3f} s, ratio {theirs / mine:.1f}; identical results: {same}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, one repeat (a smoke test)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1, as scikit-image)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--crossover", action="store_true", help="only the direct/FFT crossover table")
    parser.add_argument("--kornia", action="store_true", help="only the comparison with kornia.filters.filter2d")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    print(f"torch {torch.__version__}, scikit-image {skimage.__version__}, device {device}, "
          f"torch threads {torch.get_num_threads()}, load average {os.getloadavg()[0]:.2f} (cpus {os.cpu_count()})")
    if args.quick:
        one_image(64, 1, device)
        batch(2, 2, 64, 0.25, 1, device)
        crossover(64, 1, device)
        against_kornia(2, 2, 64, 1, device)
    elif args.crossover:
        crossover(256, 3, device)
    elif args.kornia:
        against_kornia(8, 8, 256, 3, device)
    else:
        one_image(512, 3, device)
        batch(32, 8, 512, 0.25, 1, device)
        crossover(256, 3, device)
        against_kornia(8, 8, 256, 3, device)
    print(f"\nload average at the end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
