"""Truncation and aliasing: ``envelope_extent``, ``suggest_kernel_size`` and the once-per-module
``GaborTruncationWarning``."""
from __future__ import annotations

import copy
import math
import pickle
import warnings

import pytest
import torch
from conftest import scaled
from hypothesis import given, settings
from hypothesis import strategies as st

from gaborlayer import GaborConv2d, GaborTruncationWarning, envelope_extent, suggest_kernel_size


def test_envelope_extent_known_values_and_rotation():
    h, w = envelope_extent(0.0, 2.0, 0.5)  # 3 sigma = 6 along the wave (x), 12 across it (y)
    assert (h.item(), w.item()) == (12.0, 6.0)
    h, w = envelope_extent(math.pi / 2, 2.0, 0.5)
    assert abs(h.item() - 6.0) < 1e-12 and abs(w.item() - 12.0) < 1e-12
    h, w = envelope_extent(math.pi / 4, 1.0, 1.0, n_sigma=2.0)  # a circle does not care
    assert abs(h.item() - 2.0) < 1e-12 and abs(w.item() - 2.0) < 1e-12
    h, w = envelope_extent(None, torch.tensor([1.0, 2.0]), torch.tensor([2.0, 0.25]))
    torch.testing.assert_close(h, torch.tensor([3.0, 24.0])) and torch.testing.assert_close(w, h)


@settings(max_examples=scaled(300))
@given(theta=st.floats(-7, 7), sigma=st.floats(0.05, 20), gamma=st.floats(0.1, 10), n=st.floats(1, 4))
def test_suggested_size_is_the_smallest_that_holds_the_envelope(theta, sigma, gamma, n):
    kh, kw = suggest_kernel_size(theta, sigma, gamma, n_sigma=n)
    half_h, half_w = (float(e) for e in envelope_extent(theta, sigma, gamma, n_sigma=n))
    assert kh % 2 == 1 and kw % 2 == 1
    assert kh / 2 >= half_h - 1e-9 and kw / 2 >= half_w - 1e-9  # it holds
    assert kh == 1 or (kh - 2) / 2 < half_h  # and two taps fewer would not
    assert kw == 1 or (kw - 2) / 2 < half_w
    # Sampled check: outside the suggested kernel the envelope is below exp(-n^2 / 2).
    g = torch.Generator().manual_seed(0)
    pts = (torch.rand(2000, 2, generator=g, dtype=torch.float64) - 0.5) * 4 * max(kh, kw)
    outside = (pts[:, 0].abs() > kh / 2) | (pts[:, 1].abs() > kw / 2)
    y, x = pts[:, 0], pts[:, 1]
    xr, yr = x * math.cos(theta) + y * math.sin(theta), -x * math.sin(theta) + y * math.cos(theta)
    env = torch.exp(-(xr**2 + gamma**2 * yr**2) / (2 * sigma**2))
    inside_contour = env > math.exp(-n * n / 2) * (1 + 1e-9)
    assert not bool((outside & inside_contour).any())


@pytest.mark.parametrize("k", [1, 3, 5, 7, 9, 11, 21, (5, 9)])
@pytest.mark.parametrize("out_channels", [1, 8, 64])
def test_default_bank_does_not_warn(k, out_channels):
    with warnings.catch_warnings():
        warnings.simplefilter("error", GaborTruncationWarning)
        m = GaborConv2d(3, out_channels, k)
        m.train()
        m.eval()
    assert not m.check_extent(warn=False)["near_nyquist"].any()


def test_warns_once_per_kind_naming_the_filter():
    m = GaborConv2d(1, 4, 7)
    with torch.no_grad():
        m.log_sigma[2, 0] = math.log(3.0)
    with pytest.warns(GaborTruncationWarning, match=r"GaborConv2d: 1 of 4 filters have an envelope cut off by "
                      r"kernel_size=\(7, 7\), e\.g\. filter \[2, 0\] \(theta=.*, sigma=3, gamma=1\) reaches "
                      r"15\.0 x 15\.0 px at 2\.5 sigma; kernel_size=\(19, 19\) would hold every filter"):
        m.train()
    with warnings.catch_warnings():
        warnings.simplefilter("error", GaborTruncationWarning)
        m.eval()  # the same kind again: silent
        m.train()
    with torch.no_grad():
        m.log_lambd_excess[1, 0] = math.log(0.1)
    with pytest.warns(GaborTruncationWarning, match=r"1 of 4 filters have lambd within 10% of the Nyquist floor 2 px, "
                      r"e\.g\. filter \[1, 0\] with lambd=2\.1"):
        m.eval()
    report = m.check_extent(warn=False)
    assert report["cut"].tolist() == [[False], [False], [True], [False]]
    assert report["near_nyquist"].tolist() == [[False], [True], [False], [False]]
    assert report["suggested_kernel_size"] == (19, 19)


def test_warns_on_construction_and_load_state_dict():
    with pytest.warns(GaborTruncationWarning, match=r"filter \[0, 1\]"):
        GaborConv2d(2, 1, 5, sigma=torch.tensor([[0.5, 4.0]]))
    big = GaborConv2d(1, 2, 5, sigma=0.5).state_dict()
    big["log_sigma"] = torch.full_like(big["log_sigma"], math.log(5.0))
    m = GaborConv2d(1, 2, 5, sigma=0.5)
    with pytest.warns(GaborTruncationWarning, match="cut off"):
        m.load_state_dict(big)


def test_rotation_matters_for_a_rectangular_kernel():
    """An elongated envelope fits a tall kernel only when it is oriented along it."""
    tall = dict(kernel_size=(25, 9), sigma=1.4, gamma=0.35)  # 3 sigma: 4.2 along x', 12 across
    with warnings.catch_warnings():
        warnings.simplefilter("error", GaborTruncationWarning)
        GaborConv2d(1, 1, theta=0.0, **tall)  # wave along x: the long axis is vertical
    with pytest.warns(GaborTruncationWarning):
        GaborConv2d(1, 1, theta=math.pi / 2, **tall)


def test_copies_warn_afresh():
    m = GaborConv2d(1, 1, 3, sigma=0.4)
    with torch.no_grad():
        m.log_sigma.fill_(math.log(2.0))
    with pytest.warns(GaborTruncationWarning):
        m.train()
    for twin in (copy.deepcopy(m), pickle.loads(pickle.dumps(m))):
        with pytest.warns(GaborTruncationWarning):
            twin.train()
