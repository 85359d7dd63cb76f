"""Why 1-D and 3-D banks have no Triton kernel: the bank's cost next to the convolution it feeds.

    python benchmarks/bench_nd.py               # full run (CPU, float32)
    python benchmarks/bench_nd.py --quick       # a few repeats: a smoke test
    python benchmarks/bench_nd.py --threads 1   # steadier on a busy machine
    python benchmarks/bench_nd.py --device cuda

For each typical layer it times, in the same rounds (one call each per round, medians reported):

* ``bank``: building the Gabor bank (``gaborlayer.functional._bank`` with the 1-D / 3-D family, the analytic
  autograd Function) and its backward for a random incoming gradient;
* ``conv``: ``F.conv1d`` / ``F.conv3d`` with that bank as weight, forward and the backward to the
  weight (a first layer: the input needs no gradient).

The ratio ``bank / conv`` is the most a faster bank could save of the layer's training step.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from gaborlayer._family import FAMILIES
from gaborlayer.functional import _bank
from gaborlayer.init import classic_bank2d

# name, dims, (batch, in, out, kernel, spatial), padding
CASES = [
    ("1-D audio front end", 1, (32, 1, 64, 251, (16000,))),
    ("3-D volume", 3, (4, 1, 32, 7, (32, 32, 32))),
]


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def _params(dims, out_c, in_c, k, device):
    base = classic_bank2d(out_c, in_c, (k, k), dtype=torch.float32, device=device)
    values = {**base, "phi": 0.3 * torch.ones_like(base["theta"])}
    return {n: values[n].clone().requires_grad_() for n in FAMILIES[dims].names}


def bench(name, dims, shape, device, repeats):
    batch, in_c, out_c, k, spatial = shape
    params = _params(dims, out_c, in_c, k, device)
    family = FAMILIES[dims]

    def build():
        return _bank(family, params, (k,) * dims)

    conv = family.conv
    x = torch.randn(batch, in_c, *spatial, device=device)
    with torch.no_grad():
        weight_value = build()
    grad_bank = torch.randn_like(weight_value)

    def bank_step():
        bank = build()
        torch.autograd.grad(bank, list(params.values()), grad_bank)

    weight = weight_value.clone().requires_grad_()
    grad_out = None

    def conv_step():
        nonlocal grad_out
        out = conv(x, weight, padding=k // 2)
        if grad_out is None:
            grad_out = torch.randn_like(out)
        torch.autograd.grad(out, weight, grad_out)

    steps = {"bank": bank_step, "conv": conv_step}
    for step in steps.values():  # warm-up
        step()
    times = {n: [] for n in steps}
    for r in range(repeats):
        for n in (list(steps) if r % 2 == 0 else list(steps)[::-1]):
            _sync(device)
            t0 = time.perf_counter()
            steps[n]()
            _sync(device)
            times[n].append(time.perf_counter() - t0)
    ratios = [b / c for b, c in zip(times["bank"], times["conv"])]
    med = {n: statistics.median(t) for n, t in times.items()}
    print(f"{name:22s} B{batch} {in_c}->{out_c} k={k}^{dims} input {'x'.join(map(str, spatial)):>8s}: "
          f"bank fwd+bwd {med['bank'] * 1e3:8.3f} ms, conv fwd+bwd {med['conv'] * 1e3:9.2f} ms, "
          f"bank/conv {statistics.median(ratios):.4f}")
    return statistics.median(ratios)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 repeats, for CI")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    repeats = 2 if args.quick else args.repeats
    print(f"torch {torch.__version__}, device {device}, {torch.get_num_threads()} threads, float32, "
          f"median of {repeats} paired rounds")
    return [bench(name, dims, shape, device, repeats) for name, dims, shape in CASES]


if __name__ == "__main__":
    main()
