"""Fitting at scale: batched fit_kernel, whole conv layers, and fit_response's memory, from one run.

Prints, each next to its in-run baseline where there is one:

1. ``fit_kernel`` on ``--n`` random identifiable 21 x 21 Gabor kernels (``gaborlayer.testing.
   sample_params``) as one batch, per kernel, next to the same kernels fitted one call each (the
   per-target path: a loop over single targets), the ratio, and the success rate of both
   (``is_recovered``: theta within 1 degree, kernel within 1%).
2. ``GaborConv2d.from_conv2d`` of a fresh ``nn.Conv2d(3, 64, 7)`` (random weights, torch's default
   init): seconds, slices, and the median share of the weights' energy explained.
3. With ``--hardnet``: ``replace_conv2d(fit=True)`` of every conv of kornia's HardNet
   (``kornia.feature.HardNet(pretrained=False)``, random weights): seconds and slices.
4. ``fit_response`` on ``B = 2`` random ``512 x 512`` images, ``kernel_size = 21``: seconds for the
   normal equations (``A^T A``, ``A^T y``) and for the whole fit, and the peak extra memory, measured
   in a fresh subprocess as its peak resident set during the fit (``VmHWM``, reset before it through
   ``/proc/self/clear_refs``) less its resident set before (``VmRSS``), next to the bytes the im2col
   matrix alone would take (what ``fit_response`` built before).

Usage::

    python benchmarks/bench_fit.py              # the numbers in docs/recovery.md
    python benchmarks/bench_fit.py --hardnet    # and HardNet (about a minute more)
    python benchmarks/bench_fit.py --quick      # a smoke run (seconds)

The machine load (``os.getloadavg``) and torch's thread count are printed first: wall times on a
shared machine are only comparable within one run. Each time is also given as the process's CPU
time (``time.process_time``, all its threads together), which other jobs on the machine inflate
far less: with ``--threads 1`` it is about the wall time on an idle core.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
import warnings

import torch
import torch.nn as nn

from gaborlayer import GaborConv2d, fit_kernel, replace_conv2d
from gaborlayer._family import GABOR_2D
from gaborlayer.functional import _bank
from gaborlayer.testing import is_recovered, sample_params

_MEMORY_CHILD = r"""
import sys, time, torch
from gaborlayer import fit_response
from gaborlayer.functional import gabor_kernel2d

def status(key):  # kB, from the kernel's account of this process
    return next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith(key))

b, side, k, threads = (int(v) for v in sys.argv[1:5])
torch.set_num_threads(threads)
g = torch.Generator().manual_seed(0)
x = torch.rand(b, 1, side, side, generator=g, dtype=torch.float64)
truth = gabor_kernel2d(*(torch.tensor(v, dtype=torch.float64) for v in (0.7, 3.0, 6.0, 0.8, 0.3)), k)
y = torch.nn.functional.conv2d(x, truth[None, None], padding="same")
fit_response(x[:, :, :32, :32], y[:, :, :32, :32], k)  # warm-up: imports, allocator
before = status("VmRSS:")
with open("/proc/self/clear_refs", "w") as f:  # reset the peak (VmHWM) to the current resident set
    f.write("5")
t, c = time.perf_counter(), time.process_time()
fit = fit_response(x, y, k)
seconds, cpu = time.perf_counter() - t, time.process_time() - c
print(seconds, cpu, (status("VmHWM:") - before) * 1024, fit.loss.item())
"""


class Clock:
    """Wall and CPU seconds of a ``with`` block."""

    def __enter__(self):
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc):
        self.wall, self.cpu = time.perf_counter() - self.wall, time.process_time() - self.cpu

    def per(self, n: int, unit: float = 1000.0, digits: int = 1) -> str:
        return f"{unit * self.wall / n:.{digits}f} (CPU {unit * self.cpu / n:.{digits}f})"


def batched_vs_single(n: int, size: int, n_single: int) -> None:
    truth = sample_params(n, size, torch.Generator().manual_seed(0))
    kernels = _bank(GABOR_2D, truth, (size, size))
    fit_kernel(kernels[:2])  # warm-up
    with Clock() as batched:
        fit = fit_kernel(kernels)
    ok = is_recovered(fit, truth, size)
    with Clock() as single:
        singles = [fit_kernel(kernels[i]) for i in range(n_single)]
    ok_single = torch.stack([is_recovered(f, {k: v[i] for k, v in truth.items()}, size) for i, f in enumerate(singles)])
    ratio = (single.wall / n_single) / (batched.wall / n)
    print(f"fit_kernel, N = {n}, {size} x {size}: batched {batched.per(n)} ms per kernel, one call per kernel "
          f"{single.per(n_single)} ms per kernel (first {n_single}), ratio {ratio:.1f}x; success batched "
          f"{100 * ok.double().mean():.1f}% ({int(ok.sum())}/{n}), one at a time "
          f"{100 * ok_single.double().mean():.1f}%")


def from_conv(out_channels: int) -> None:
    torch.manual_seed(0)
    conv = nn.Conv2d(3, out_channels, 7)
    with warnings.catch_warnings(), Clock() as clock:
        warnings.simplefilter("ignore")  # random weights: envelopes cut by the 7 x 7 window, as it says
        _, fit = GaborConv2d.from_conv2d(conv, return_fit=True)
    print(f"from_conv2d, nn.Conv2d(3, {out_channels}, 7), random weights: {clock.per(1, 1, 2)} s for "
          f"{fit.loss.numel()} slices ({clock.per(fit.loss.numel())} ms per slice); median explained "
          f"{100 * float((1 - fit.loss).median()):.1f}%")


def hardnet() -> None:
    import kornia

    torch.manual_seed(0)
    model = kornia.feature.HardNet(pretrained=False)
    slices = sum(m.weight.shape[0] * m.weight.shape[1] for m in model.modules() if isinstance(m, nn.Conv2d))
    with warnings.catch_warnings(), Clock() as clock:
        warnings.simplefilter("ignore")  # random weights: every layer is a poor fit, as it says
        swapped = replace_conv2d(model, lambda name, m: True, fit=True, progress=False)
    print(f"HardNet (kornia, random weights): {len(swapped)} convs, {slices} slices fitted in {clock.per(1, 1)} s "
          f"({clock.per(slices, 1000, 2)} ms per slice)")


def response_memory(b: int, side: int, k: int) -> None:
    threads = torch.get_num_threads()
    from gaborlayer.fit import _normal_equations
    from gaborlayer.functional import _pad_amounts

    x = torch.rand(b, 1, side, side, dtype=torch.float64)
    y = torch.rand(b, 1, side, side, dtype=torch.float64)
    pads = _pad_amounts("same", (k, k), (1, 1))
    _normal_equations(x[:, :, :32, :32], y[:, :, :32, :32], k, k, pads)
    with Clock() as normal:
        _normal_equations(x, y, k, k, pads)
    child = subprocess.run([sys.executable, "-c", _MEMORY_CHILD, *(str(v) for v in (b, side, k, threads))],
                           capture_output=True, text=True, check=True)
    seconds, cpu, extra, loss = (float(v) for v in child.stdout.split())
    im2col = b * k * k * side * side * 8
    print(f"fit_response, B = {b}, {side} x {side}, k = {k}: normal equations {normal.per(1, 1, 2)} s, "
          f"whole fit {seconds:.2f} (CPU {cpu:.2f}) s (loss {loss:.1e}); peak extra memory {extra / 2**20:.0f} MB "
          f"(peak resident set growth in a fresh process) vs im2col alone {im2col / 2**20:.0f} MB")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=64, help="kernels in the batch")
    parser.add_argument("--single", type=int, default=64, help="of them, fitted one call each (the baseline)")
    parser.add_argument("--hardnet", action="store_true", help="also fit every conv of kornia's HardNet")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--quick", action="store_true", help="a smoke run: small sizes")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    print(f"machine: {os.cpu_count()} CPUs, load average {load}; torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")
    if args.quick:
        batched_vs_single(8, 15, 2)
        from_conv(4)
        response_memory(1, 96, 9)
        return
    batched_vs_single(args.n, 21, min(args.single, args.n))
    from_conv(64)
    if args.hardnet:
        hardnet()
    response_memory(2, 512, 21)


if __name__ == "__main__":
    main()
