"""gaborlayer.init.gabor_: a plain conv's weight filled with a Gabor bank (torch.nn.init style)."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn

import gaborlayer
from gaborlayer import GaborConv2d, gabor_kernel2d
from gaborlayer.init import gabor_


def test_default_is_the_modules_classic_bank():
    conv = nn.Conv2d(3, 16, 7, padding=3)
    out = gabor_(conv.weight)
    assert out is conv.weight and conv.weight.requires_grad and conv.weight.grad_fn is None
    torch.testing.assert_close(conv.weight, GaborConv2d(3, 16, 7).weight, rtol=0, atol=1e-6)
    assert gaborlayer.init.gabor_ is gabor_


def test_given_values_broadcast_gain_and_zero_mean():
    weight = torch.empty(4, 2, 5, 7, dtype=torch.float64)
    theta = torch.linspace(0, math.pi, 4, dtype=torch.float64)[:, None]
    gabor_(weight, theta=theta, sigma=1.5, lambd=3.0, gamma=0.8, psi=0.3, gain=-2.0)
    expected = -2.0 * gabor_kernel2d(theta.expand(4, 2), 1.5, 3.0, 0.8, 0.3, (5, 7))
    torch.testing.assert_close(weight, expected, rtol=0, atol=1e-15)
    gabor_(weight, zero_mean=True)
    assert weight.sum(dim=(-2, -1)).abs().max() < 1e-12


def test_then_trains_freely():
    conv = nn.Conv2d(1, 4, 5)
    gabor_(conv.weight)
    conv(torch.randn(2, 1, 9, 9)).square().sum().backward()
    assert conv.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("tensor, kwargs, error, match", [
    (torch.empty(4, 5, 5), {}, ValueError, r"tensor must be a 2-D convolution weight .* got shape \(4, 5, 5\)"),
    (torch.empty(2, 1, 3, 3, dtype=torch.int64), {}, TypeError,
     r"tensor must be floating point, got dtype torch.int64"),
    ([1.0], {}, TypeError, r"tensor must be a torch.Tensor, got list"),
    (torch.empty(2, 1, 3, 3), {"sigma": -1.0}, ValueError, r"sigma must be > 0.0, got -1.0"),
    (torch.empty(2, 1, 3, 3), {"lambd": 2.0}, ValueError, r"lambd must be > 2.0, got 2.0"),
    (torch.empty(2, 1, 3, 3), {"theta": torch.zeros(3)}, ValueError,
     r"theta must be broadcastable to \(out_channels, in_channels // groups\) = \(2, 1\), got shape \(3,\)"),
    (torch.empty(2, 1, 3, 3), {"gain": "x"}, TypeError, r"gain must be a float"),
])
def test_bad_input(tensor, kwargs, error, match):
    with pytest.raises(error, match=match):
        gabor_(tensor, **kwargs)
