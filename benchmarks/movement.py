"""How far do Gabor parameters travel in training, and what param_groups changes (docs/movement.md).

Trains the drop-in demo's CNN (``demos/dropin.py``: the same data, model, batches, Adam with a
one-cycle schedule, 6 epochs) with a plain ``nn.Conv2d`` first layer and with ``GaborConv2d``
at several learning-rate factors for the Gabor parameters (``gaborlayer.optim.param_groups``;
factor 1 is one learning rate for everything, a standard optimiser). For each it prints, as the
median over the 16 filters and the mean over seeds:

- the relative change of the first layer's weight (the bank), ``||W_end - W_0|| / ||W_0||``, per
  filter: the quantity that is comparable between a free conv and a Gabor layer;
- how far theta (degrees), sigma and lambd (as factors: exp|d log|) travelled;
- the test accuracy.

    python benchmarks/movement.py                 # both tasks, 3 seeds, factors 1, 3, 10, 30
    python benchmarks/movement.py --quick          # seconds
"""
from __future__ import annotations

import argparse
import os
import sys
import time
import warnings

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "demos"))
import dropin  # noqa: E402

from gaborlayer import GaborTruncationWarning  # noqa: E402


@torch.no_grad()
def travel(before: torch.nn.Module, after: torch.nn.Module) -> dict:
    w0, w1 = before.weight.flatten(1), after.weight.flatten(1)
    out = {"weight": float(((w1 - w0).norm(dim=1) / w0.norm(dim=1)).median())}
    if isinstance(after, dropin.GaborConv2d):
        out["theta"] = float(torch.rad2deg((after.theta - before.theta).abs()).median())
        for name in ("sigma", "lambd"):
            ratio = getattr(after, name) / getattr(before, name)
            out[name] = float(torch.exp(torch.log(ratio).abs()).median())
    return out


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--scales", default="1,3,10,30")
    parser.add_argument("--seeds", type=int, default=None)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    scales = [float(s) for s in args.scales.split(",")]
    seeds = args.seeds or (1 if args.quick else 3)
    epochs = 1 if args.quick else 6
    t0 = time.perf_counter()
    print("| task | first layer | Gabor lr factor | weight change | theta moved | sigma factor | lambd factor | "
          "test acc |\n|---|---|---:|---:|---:|---:|---:|---:|")
    for task in ("orientation", "digits"):
        build, n_classes = dropin.TASKS[task]
        train_set, test_set = build(args.quick, torch.Generator().manual_seed(0))
        for first, scale in [("conv", 1.0)] + [("gabor", s) for s in scales]:
            rows = []
            for seed in range(seeds):
                model = dropin.make_model(n_classes, first, seed)
                before = dropin.make_model(n_classes, first, seed)[0]
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", GaborTruncationWarning)
                    result = dropin.train(model, train_set, test_set, epochs, seed, f"{task}/{first}/x{scale:g}",
                                          gabor_lr_scale=scale)
                rows.append({**travel(before, model[0]), "acc": result["accuracy"]})
            mean = {k: sum(r[k] for r in rows) / len(rows) for k in rows[0]}
            name = "nn.Conv2d" if first == "conv" else "GaborConv2d"
            gabor = first == "gabor"
            print(f"| {task} | {name} | {f'{scale:g}' if gabor else '-'} | {100 * mean['weight']:.1f}% | "
                  + (f"{mean['theta']:.1f} deg | x{mean['sigma']:.2f} | x{mean['lambd']:.2f}" if gabor else "- | - | -")
                  + f" | {100 * mean['acc']:.1f}% |", flush=True)
    print(f"\n{seeds} seed(s), {epochs} epochs, Adam one-cycle peak lr {dropin.LR:g}; torch {torch.__version__}; "
          f"{time.perf_counter() - t0:.0f} s", file=sys.stderr)


if __name__ == "__main__":
    main()
