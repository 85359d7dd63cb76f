"""Write ``gaborconv2d_v0_1.pt``: a state_dict of a fixed small model with GaborConv2d, an input
and the output that state_dict gives, as saved by gaborlayer 0.1.

tests/test_ecosystem.py loads it into a freshly built ``build_model()`` and checks the output, so
renaming, reshaping or re-parameterising a stored tensor breaks that test. Regenerate only for a
deliberate format change (and then keep a converter for old checkpoints):

    .venv/bin/python tests/data/make_checkpoint.py
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn

import gaborlayer
from gaborlayer import GaborConv2d

PATH = Path(__file__).with_name("gaborconv2d_v0_1.pt")


def build_model() -> nn.Sequential:
    """Three GaborConv2d covering the stored layouts: every parameter learnable with a bias; a learn
    subset (the rest are buffers, also in the state_dict) with groups and no bias; an amplitude."""
    f64 = {"dtype": torch.float64}
    return nn.Sequential(
        GaborConv2d(2, 4, (3, 5), padding="same", padding_mode="reflect", zero_mean=True, **f64),
        nn.Tanh(),
        GaborConv2d(4, 2, 3, groups=2, bias=False, learn=("theta", "sigma", "psi"), **f64),
        GaborConv2d(2, 2, 3, padding=1, amplitude=True, **f64),
    )


def main() -> None:
    torch.manual_seed(2024)
    model = build_model()
    with torch.no_grad():  # away from the initial values, so that loading them is what is tested
        for tensor in model.state_dict().values():
            tensor.add_(0.2 * torch.randn_like(tensor))
    x = torch.randn(1, 2, 6, 7, dtype=torch.float64)
    with torch.no_grad():
        y = model(x)
    torch.save({"version": gaborlayer.__version__, "state_dict": model.state_dict(), "input": x, "output": y}, PATH)
    print(f"wrote {PATH} ({PATH.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
