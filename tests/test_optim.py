"""gaborlayer.optim.param_groups: the Gabor filter parameters in their own learning-rate group."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from gaborlayer import GaborConv2d
from gaborlayer.optim import GABOR_LR_SCALE, param_groups


def model():
    return nn.Sequential(GaborConv2d(1, 4, 5, amplitude=True), nn.ReLU(),
                         nn.Sequential(GaborConv2d(4, 4, 3, learn=("theta", "psi"), bias=False)), nn.Conv2d(4, 2, 1))


def test_groups_split_gabor_parameters_from_the_rest():
    m = model()
    groups = param_groups(m, lr=0.01, weight_decay=0.0)
    assert [g["name"] for g in groups] == ["gabor", "other"]
    gabor, other = groups
    assert gabor["lr"] == 0.01 * GABOR_LR_SCALE and other["lr"] == 0.01 and gabor["weight_decay"] == 0.0
    names = {id(p): n for n, p in m.named_parameters()}
    assert sorted(names[id(p)] for p in gabor["params"]) == sorted(
        ["0.theta", "0.log_sigma", "0.log_lambd_excess", "0.log_gamma", "0.psi", "0.amplitude",
         "2.0.theta", "2.0.psi"])
    assert sorted(names[id(p)] for p in other["params"]) == ["0.bias", "3.bias", "3.weight"]
    # every trainable parameter exactly once
    listed = [id(p) for g in groups for p in g["params"]]
    assert sorted(listed) == sorted(id(p) for p in m.parameters())


def test_the_scaled_group_really_moves_further():
    """Adam moves each parameter by about lr per step: the Gabor group by scale x as much."""
    torch.manual_seed(0)
    x = torch.randn(4, 1, 12, 12)
    moved = {}
    for scale in (1.0, 10.0):
        torch.manual_seed(1)
        m = model()
        theta0 = m[0].theta.detach().clone()
        opt = torch.optim.Adam(param_groups(m, lr=1e-3, scale=scale))
        for _ in range(3):
            opt.zero_grad()
            m(x).square().mean().backward()
            opt.step()
        moved[scale] = (m[0].theta - theta0).abs().mean().item()
    assert 9 < moved[10.0] / moved[1.0] < 11


def test_frozen_and_shared_parameters():
    conv = GaborConv2d(1, 2, 3)
    m = nn.Sequential(conv, conv)
    groups = param_groups(m, lr=1.0)
    assert sum(len(g["params"]) for g in groups) == 6  # five Gabor + bias, once though used twice
    conv.theta.requires_grad_(False)
    assert sum(len(g["params"]) for g in param_groups(m, lr=1.0)) == 5
    only_plain = param_groups(nn.Linear(2, 2), lr=1.0)
    assert [g["name"] for g in only_plain] == ["other"]


@pytest.mark.parametrize("args, error, match", [
    (("net", 1.0), TypeError, "model must be an nn.Module, got str"),
    ((nn.Linear(1, 1), 0.0), ValueError, "lr must be a positive number, got 0.0"),
    ((nn.Linear(1, 1), 1.0, -2.0), ValueError, "scale must be a positive number, got -2.0"),
])
def test_bad_input(args, error, match):
    with pytest.raises(error, match=match):
        param_groups(*args[:2], **({"scale": args[2]} if len(args) > 2 else {}))
