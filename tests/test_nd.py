"""The 1-D and 3-D Gabor banks and layers: gabor_kernel1d / gabor_kernel3d, GaborConv1d / GaborConv3d.

Values against the plain-autograd reference and against numpy formulas written out here once
more; the 3-D filter's reduction to the 2-D one; symmetries; gradients against numerical
derivatives (gradcheck, counted with ``gradient_cases``) and double backward; the no-NaN contract
at extreme parameters; input errors; the layers against nn.Conv1d / nn.Conv3d; the demo.
"""
from __future__ import annotations

import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn as nn
from conftest import EXTREME_RANGES, NAMES_1D, NAMES_3D, angles, conv_twin, log_uniform, nd_params, scaled
from hypothesis import given, settings
from hypothesis import strategies as st

import gaborlayer
from gaborlayer import (
    GaborConv1d,
    GaborConv3d,
    gabor_conv1d,
    gabor_conv3d,
    gabor_kernel1d,
    gabor_kernel2d,
    gabor_kernel3d,
)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
pytestmark = pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel lengths:UserWarning")

sizes_1d = st.integers(1, 15)
sizes_3d = st.tuples(st.integers(1, 5), st.integers(1, 5), st.integers(1, 5))
TIGHT = dict(rtol=1e-12, atol=1e-13)


# -- numpy formulas, written independently of the package ------------------------------------
def numpy_kernel1d(sigma, lambd, psi, k):
    x = np.arange(k) - (k - 1) / 2
    return np.exp(-x**2 / (2 * sigma**2)) * np.cos(2 * np.pi * x / lambd + psi)


def numpy_kernel3d(theta, phi, sigma, lambd, gamma, psi, size):
    kd, kh, kw = size
    z, y, x = np.meshgrid(np.arange(kd) - (kd - 1) / 2, np.arange(kh) - (kh - 1) / 2, np.arange(kw) - (kw - 1) / 2,
                          indexing="ij")
    u = np.array([np.cos(phi) * np.cos(theta), np.cos(phi) * np.sin(theta), np.sin(phi)])
    x_par = u[0] * x + u[1] * y + u[2] * z
    r_perp = np.stack([x, y, z]) - x_par * u[:, None, None, None]  # r minus its component along u
    envelope = np.exp(-(x_par**2 + gamma**2 * (r_perp**2).sum(0)) / (2 * sigma**2))
    return envelope * np.cos(2 * np.pi * x_par / lambd + psi)


# -- values ---------------------------------------------------------------------------------
@settings(max_examples=scaled(200))
@given(params=nd_params(NAMES_1D), k=sizes_1d, zero_mean=st.booleans())
def test_1d_values_match_reference_and_numpy(params, k, zero_mean):
    bank = gabor_kernel1d(*params, k, zero_mean=zero_mean)
    assert bank.shape == (params[0].shape[0], k) and bank.dtype == torch.float64
    torch.testing.assert_close(bank, gabor_kernel1d(*params, k, zero_mean=zero_mean, backend="reference"), **TIGHT)
    if not zero_mean:
        expected = np.stack([numpy_kernel1d(*(float(p[n]) for p in params), k) for n in range(len(params[0]))])
        np.testing.assert_allclose(bank.numpy(), expected, rtol=1e-11, atol=1e-12)
    else:
        assert bank.sum(-1).abs().max() < 1e-12


@settings(max_examples=scaled(200))
@given(params=nd_params(NAMES_3D), size=sizes_3d, zero_mean=st.booleans())
def test_3d_values_match_reference_and_numpy(params, size, zero_mean):
    bank = gabor_kernel3d(*params, size, zero_mean=zero_mean)
    assert bank.shape == (params[0].shape[0], *size)
    torch.testing.assert_close(bank, gabor_kernel3d(*params, size, zero_mean=zero_mean, backend="reference"),
                               rtol=1e-10, atol=1e-11)
    if not zero_mean:
        expected = np.stack([numpy_kernel3d(*(float(p[n]) for p in params), size) for n in range(len(params[0]))])
        np.testing.assert_allclose(bank.numpy(), expected, rtol=1e-10, atol=1e-11)
    else:
        assert bank.sum((-3, -2, -1)).abs().max() < 1e-12


def test_known_values():
    # 1-D, k = 5: x = -2..2; sigma = 2, lambd = 4, psi = 0 -> exp(-x^2/8) cos(pi x / 2)
    torch.testing.assert_close(gabor_kernel1d(2.0, 4.0, 0.0, 5),
                               torch.tensor([-math.exp(-0.5), 0.0, 1.0, 0.0, -math.exp(-0.5)]), atol=1e-7, rtol=0)
    # 3-D, theta = 0, phi = pi/2: the wave runs along z (the first axis), the envelope is round for gamma = 1
    bank = gabor_kernel3d(0.0, math.pi / 2, 1.0, 4.0, 1.0, 0.0, (3, 1, 3), backend="reference").double()
    z, x = np.meshgrid([-1.0, 0.0, 1.0], [-1.0, 0.0, 1.0], indexing="ij")
    expected = np.exp(-(z**2 + x**2) / 2) * np.cos(np.pi * z / 2)
    np.testing.assert_allclose(bank[:, 0].numpy(), expected, atol=1e-7)


# -- 3-D -> 2-D -------------------------------------------------------------------------------
@settings(max_examples=scaled(200))
@given(params=nd_params(("theta", "sigma", "lambd", "gamma", "psi")), kh=st.integers(1, 9), kw=st.integers(1, 9),
       half_depth=st.integers(0, 3), zero_mean=st.booleans())
def test_3d_at_zero_elevation_reduces_to_2d(params, kh, kw, half_depth, zero_mean):
    """phi = 0, depth 1: exactly the 2-D filter, value and gradient. With depth 2m + 1 the envelope
    factorises, K3(z) = K2 exp(-gamma^2 z^2 / (2 sigma^2)), and the middle slice is K2."""
    theta, sigma, lambd, gamma, psi = (p.requires_grad_() for p in params)
    phi = torch.zeros_like(theta, requires_grad=True)
    flat = gabor_kernel3d(theta, phi, sigma, lambd, gamma, psi, (1, kh, kw), zero_mean=zero_mean)[:, 0]
    plane = gabor_kernel2d(theta, sigma, lambd, gamma, psi, (kh, kw), zero_mean=zero_mean)
    torch.testing.assert_close(flat, plane, rtol=1e-13, atol=1e-14)
    weight = torch.randn(plane.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(kh * 10 + kw))
    grads_3d = torch.autograd.grad((flat * weight).sum(), (theta, sigma, lambd, gamma, psi))
    grads_2d = torch.autograd.grad((plane * weight).sum(), (theta, sigma, lambd, gamma, psi))
    for g3, g2 in zip(grads_3d, grads_2d):
        torch.testing.assert_close(g3, g2, rtol=1e-11, atol=1e-12)
    with torch.no_grad():
        kd = 2 * half_depth + 1
        deep = gabor_kernel3d(theta, phi, sigma, lambd, gamma, psi, (kd, kh, kw))
        plane = gabor_kernel2d(theta, sigma, lambd, gamma, psi, (kh, kw))
        z = torch.arange(kd, dtype=torch.float64) - half_depth
        factor = torch.exp(-(gamma[:, None] * z) ** 2 / (2 * sigma[:, None] ** 2))
        torch.testing.assert_close(deep, plane[:, None] * factor[:, :, None, None], rtol=1e-11, atol=1e-12)
        torch.testing.assert_close(deep[:, half_depth], plane, rtol=1e-13, atol=1e-14)


# -- symmetries -------------------------------------------------------------------------------
@settings(max_examples=scaled(150))
@given(params=nd_params(NAMES_1D), k=sizes_1d, turns=st.integers(-3, 3))
def test_1d_symmetries(params, k, turns):
    sigma, lambd, psi = params
    bank = gabor_kernel1d(sigma, lambd, psi, k)
    # point reflection: K(-x; psi) = K(x; -psi), on a grid symmetric about its centre
    torch.testing.assert_close(bank.flip(-1), gabor_kernel1d(sigma, lambd, -psi, k), **TIGHT)
    torch.testing.assert_close(gabor_kernel1d(sigma, lambd, psi + 2 * math.pi * turns, k), bank, rtol=0, atol=1e-12)
    even, odd = gabor_kernel1d(sigma, lambd, 0.0, k), gabor_kernel1d(sigma, lambd, -math.pi / 2, k)
    torch.testing.assert_close(even, even.flip(-1), rtol=0, atol=0)
    torch.testing.assert_close(odd, -odd.flip(-1), rtol=0, atol=1e-13)  # cos near its zeros: ulps of the phase


@settings(max_examples=scaled(150))
@given(params=nd_params(NAMES_3D), size=sizes_3d)
def test_3d_symmetries(params, size):
    theta, phi, sigma, lambd, gamma, psi = params
    bank = gabor_kernel3d(*params, size)
    # the same u: (theta + pi, pi - phi)
    torch.testing.assert_close(gabor_kernel3d(theta + math.pi, math.pi - phi, sigma, lambd, gamma, psi, size), bank,
                               rtol=0, atol=1e-12)
    # -u: (theta + pi, -phi) flips the phase
    torch.testing.assert_close(gabor_kernel3d(theta + math.pi, -phi, sigma, lambd, gamma, -psi, size), bank,
                               rtol=0, atol=1e-12)
    # point reflection through the centre
    torch.testing.assert_close(bank.flip(-3, -2, -1), gabor_kernel3d(theta, phi, sigma, lambd, gamma, -psi, size),
                               rtol=0, atol=1e-12)
    # at phi = pi/2 the wave runs along z and theta does nothing
    up = gabor_kernel3d(theta, math.pi / 2, sigma, lambd, gamma, psi, size)
    torch.testing.assert_close(gabor_kernel3d(theta + 1.234, math.pi / 2, sigma, lambd, gamma, psi, size), up,
                               rtol=0, atol=1e-12)


@settings(max_examples=scaled(100))
@given(params=nd_params(NAMES_3D[2:]), k=st.integers(1, 6), rest=st.integers(1, 6))
def test_3d_wave_along_z_is_the_wave_along_x_transposed(params, k, rest):
    """u = e_z and u = e_x give the same filter with the x and z axes swapped: the envelope is
    symmetric about u, so nothing but u matters."""
    along_z = gabor_kernel3d(0.0, math.pi / 2, *params, (k, rest, k))
    along_x = gabor_kernel3d(0.0, 0.0, *params, (k, rest, k))
    torch.testing.assert_close(along_z, along_x.transpose(-3, -1), rtol=0, atol=1e-12)


@settings(max_examples=scaled(100))
@given(params=nd_params(NAMES_3D[2:]), k=st.integers(1, 7))
def test_3d_envelope_is_symmetric_about_the_wave_direction(params, k):
    """Why two angles suffice: the filter is unchanged by any rotation about u. Checked with the
    rotations that map a cubic grid onto itself: a quarter turn about u = e_x (y, z) -> (-z, y),
    and a third of a turn about the diagonal u = (1, 1, 1)/sqrt 3, (x, y, z) -> (y, z, x)."""
    along_x = gabor_kernel3d(0.0, 0.0, *params, k)
    torch.testing.assert_close(torch.rot90(along_x, 1, dims=(-3, -2)), along_x, rtol=0, atol=1e-12)
    diagonal = gabor_kernel3d(math.pi / 4, math.asin(1 / math.sqrt(3)), *params, k)
    torch.testing.assert_close(diagonal.permute(0, 2, 3, 1), diagonal, rtol=0, atol=1e-12)
    torch.testing.assert_close(diagonal.permute(0, 3, 1, 2), diagonal, rtol=0, atol=1e-12)


# -- gradients ----------------------------------------------------------------------------------
@settings(max_examples=scaled(300))
@given(params=nd_params(NAMES_1D), k=sizes_1d, zero_mean=st.booleans())
def test_1d_gradcheck(params, k, zero_mean, gradient_cases):
    leaves = [p.requires_grad_() for p in params]
    assert torch.autograd.gradcheck(lambda *p: gabor_kernel1d(*p, k, zero_mean=zero_mean), leaves, fast_mode=True)
    weight = torch.randn(len(params[0]), k, dtype=torch.float64, generator=torch.Generator().manual_seed(k))
    ours = torch.autograd.grad((gabor_kernel1d(*leaves, k, zero_mean=zero_mean) * weight).sum(), leaves)
    ref = torch.autograd.grad((gabor_kernel1d(*leaves, k, zero_mean=zero_mean, backend="reference") * weight).sum(),
                              leaves)
    for a, b in zip(ours, ref):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)
    gradient_cases.add()


@settings(max_examples=scaled(300))
@given(params=nd_params(NAMES_3D), size=sizes_3d, zero_mean=st.booleans())
def test_3d_gradcheck(params, size, zero_mean, gradient_cases):
    leaves = [p.requires_grad_() for p in params]
    assert torch.autograd.gradcheck(lambda *p: gabor_kernel3d(*p, size, zero_mean=zero_mean), leaves, fast_mode=True)
    weight = torch.randn(len(params[0]), *size, dtype=torch.float64, generator=torch.Generator().manual_seed(sum(size)))
    ours = torch.autograd.grad((gabor_kernel3d(*leaves, size, zero_mean=zero_mean) * weight).sum(), leaves)
    ref = torch.autograd.grad((gabor_kernel3d(*leaves, size, zero_mean=zero_mean, backend="reference") * weight).sum(),
                              leaves)
    for a, b in zip(ours, ref):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)
    gradient_cases.add()


@settings(max_examples=scaled(300))
@given(params=nd_params(NAMES_1D, n_max=2), k=sizes_1d, mask=st.lists(st.booleans(), min_size=3, max_size=3))
def test_1d_gradgradcheck_and_subsets(params, k, mask, gradient_cases):
    leaves = [p.requires_grad_(m) for p, m in zip(params, mask)]
    if any(mask):
        assert torch.autograd.gradgradcheck(lambda *p: gabor_kernel1d(*p, k), leaves, fast_mode=True)
    else:
        assert not gabor_kernel1d(*leaves, k).requires_grad
    gradient_cases.add()


@settings(max_examples=scaled(300))
@given(params=nd_params(NAMES_3D, n_max=2), size=sizes_3d, mask=st.lists(st.booleans(), min_size=6, max_size=6))
def test_3d_gradgradcheck_and_subsets(params, size, mask, gradient_cases):
    leaves = [p.requires_grad_(m) for p, m in zip(params, mask)]
    if any(mask):
        assert torch.autograd.gradgradcheck(lambda *p: gabor_kernel3d(*p, size), leaves, fast_mode=True)
    else:
        assert not gabor_kernel3d(*leaves, size).requires_grad
    gradient_cases.add()


def test_backward_saves_only_the_parameters():
    for build, names, size in ((gabor_kernel1d, NAMES_1D, 31), (gabor_kernel3d, NAMES_3D, 9)):
        leaves = [torch.full((4,), 1.5, requires_grad=True) for _ in names]
        node = build(*leaves, size).grad_fn
        while "GaborKernel" not in type(node).__name__:
            node = node.next_functions[0][0]  # through the reshape
        saved = node.saved_tensors
        assert len(saved) == len(names) and all(t.shape == (4,) for t in saved)


def test_vmap_and_jacrev_run_through_the_functions():
    sigma = torch.tensor([[1.0, 2.0], [3.0, 4.0]], dtype=torch.float64)
    batched = torch.func.vmap(lambda s: gabor_kernel1d(s, 5.0, 0.3, 9))(sigma)
    torch.testing.assert_close(batched, gabor_kernel1d(sigma, 5.0, 0.3, 9))
    phi = torch.tensor([0.2, 0.7], dtype=torch.float64)
    jac = torch.func.jacrev(lambda p: gabor_kernel3d(0.4, p, 1.5, 4.0, 0.7, 0.1, 3))(phi)
    ref = torch.autograd.functional.jacobian(
        lambda p: gabor_kernel3d(0.4, p, 1.5, 4.0, 0.7, 0.1, 3, backend="reference"), phi)
    torch.testing.assert_close(jac, ref)


# -- no NaN/inf in the valid range -------------------------------------------------------------
@st.composite
def extreme_1d(draw):
    return (draw(log_uniform(*EXTREME_RANGES["sigma"])), draw(log_uniform(*EXTREME_RANGES["lambd"])),
            draw(st.floats(-1e6, 1e6)))


@st.composite
def extreme_3d(draw):
    return (draw(angles()), draw(angles()),
            *(draw(log_uniform(*EXTREME_RANGES[k])) for k in ("sigma", "lambd", "gamma")),
            draw(st.floats(-1e6, 1e6)))


def _finite_with_gradients(build, params, size, dtype, zero_mean):
    leaves = [torch.tensor(p, dtype=dtype, requires_grad=True) for p in params]
    bank = build(*leaves, size, zero_mean=zero_mean)
    weight = torch.randn(bank.shape, dtype=dtype, generator=torch.Generator().manual_seed(3))
    grads = torch.autograd.grad((bank * weight).sum(), leaves)
    bad = [name for name, g in zip(("bank", *(str(i) for i in range(len(grads)))), (bank, *grads))
           if not bool(torch.isfinite(g).all())]
    assert not bad, f"not finite: {bad} at {params}, size {size}, {dtype}, zero_mean={zero_mean}"


@settings(max_examples=scaled(300))
@given(params=extreme_1d(), k=sizes_1d, dtype=st.sampled_from([torch.float32, torch.float64]),
       zero_mean=st.booleans())
def test_1d_extreme_parameters_stay_finite(params, k, dtype, zero_mean):
    _finite_with_gradients(gabor_kernel1d, params, k, dtype, zero_mean)


@settings(max_examples=scaled(300))
@given(params=extreme_3d(), size=sizes_3d, dtype=st.sampled_from([torch.float32, torch.float64]),
       zero_mean=st.booleans())
def test_3d_extreme_parameters_stay_finite(params, size, dtype, zero_mean):
    _finite_with_gradients(gabor_kernel3d, params, size, dtype, zero_mean)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_tiny_sigma_is_the_centre_delta(dtype):
    bank = gabor_kernel1d(torch.tensor(1e-30, dtype=dtype), 4.0, 0.3, 5)
    torch.testing.assert_close(bank, torch.tensor([0, 0, math.cos(0.3), 0, 0], dtype=dtype))
    bank3 = gabor_kernel3d(0.7, 0.2, torch.tensor(1e-30, dtype=dtype), 4.0, 1e30, 0.3, 3)
    expected = torch.zeros(3, 3, 3, dtype=dtype)
    expected[1, 1, 1] = math.cos(0.3)
    torch.testing.assert_close(bank3, expected)


# -- errors -------------------------------------------------------------------------------------
GOOD_1D = dict(sigma=2.0, lambd=4.0, psi=0.1, size=7)
GOOD_3D = dict(theta=0.3, phi=-0.2, sigma=2.0, lambd=4.0, gamma=0.5, psi=0.1, size=5)
ERRORS_1D = [
    (dict(size=0), ValueError, r"size must be >= 1 in every dimension, got 0"),
    (dict(size=(5, 5)), TypeError, r"size must be an int or a 1-tuple of ints, got \(5, 5\)"),
    (dict(size=2.5), TypeError, r"size must be an int or a 1-tuple of ints, got 2\.5"),
    (dict(sigma=0.0), ValueError, r"sigma must be > 0(\.0)?, got 0\.0"),
    (dict(lambd=torch.tensor([4.0, -1.0])), ValueError, r"lambd must be > 0(\.0)?, got -1\.0"),
    (dict(psi=math.inf), ValueError, r"psi must be finite, got inf"),
    (dict(sigma=torch.tensor([1, 2])), TypeError, r"sigma must be a floating-point tensor, got dtype torch\.int64"),
    (dict(lambd="4"), TypeError, r"lambd must be a float or a floating-point tensor, got str"),
    (dict(sigma=torch.ones(3), psi=torch.ones(4)), ValueError,
     r"broadcastable shapes, got sigma=\(3,\), lambd=\(\), psi=\(4,\)"),
]
ERRORS_3D = [
    (dict(size=(3, 3)), TypeError, r"size must be an int or a triple of ints, got \(3, 3\)"),
    (dict(size=(3, 0, 3)), ValueError, r"size must be >= 1 in every dimension, got \(3, 0, 3\)"),
    (dict(phi=math.nan), ValueError, r"phi must be finite, got nan"),
    (dict(theta=-math.inf), ValueError, r"theta must be finite, got -inf"),
    (dict(gamma=-0.5), ValueError, r"gamma must be > 0(\.0)?, got -0\.5"),
    (dict(sigma=torch.tensor([1.0, 0.0])), ValueError, r"sigma must be > 0(\.0)?, got 0\.0"),
    (dict(lambd=0.0), ValueError, r"lambd must be > 0(\.0)?, got 0\.0"),
    (dict(phi=torch.tensor([True])), TypeError, r"phi must be a floating-point tensor, got dtype torch\.bool"),
]


@pytest.mark.parametrize("bad, error, match", ERRORS_1D, ids=[str(c[0])[:40] for c in ERRORS_1D])
def test_1d_bad_input_names_argument_value_and_range(bad, error, match):
    args = {**GOOD_1D, **bad}
    with pytest.raises(error, match=match):
        gabor_kernel1d(**args)


@pytest.mark.parametrize("bad, error, match", ERRORS_3D, ids=[str(c[0])[:40] for c in ERRORS_3D])
def test_3d_bad_input_names_argument_value_and_range(bad, error, match):
    args = {**GOOD_3D, **bad}
    with pytest.raises(error, match=match):
        gabor_kernel3d(**args)


@pytest.mark.parametrize("build, good, dims", [(gabor_kernel1d, GOOD_1D, 1), (gabor_kernel3d, GOOD_3D, 3)])
def test_backends(build, good, dims):
    torch.testing.assert_close(build(**good, backend="auto"), build(**good, backend="reference"))
    torch.testing.assert_close(build(**good, backend="torch"), build(**good, backend="reference"))
    with pytest.raises(RuntimeError, match=rf"backend='triton' has no kernel for {dims}-D banks: .* of the "
                                           r"convolution it feeds .*use backend='torch'"):
        build(**good, backend="triton")
    with pytest.raises(ValueError, match=r"backend must be one of .*got 'cuda'"):
        build(**good, backend="cuda")


def test_functional_convolutions():
    x1 = torch.randn(2, 3, 40, dtype=torch.float64)
    params = (torch.rand(4, 3, dtype=torch.float64) + 1, 5.0, 0.3)
    expected = torch.nn.functional.conv1d(x1, gabor_kernel1d(*params, 9), None, 2, 4)
    torch.testing.assert_close(gabor_conv1d(x1, *params, 9, stride=2, padding=4), expected, rtol=0, atol=0)
    x3 = torch.randn(1, 2, 6, 7, 8, dtype=torch.float64)
    params3 = (torch.rand(2, 1, dtype=torch.float64), 0.5, 1.5, 4.0, 0.8, 0.0)
    bias = torch.randn(2, dtype=torch.float64)
    expected = torch.nn.functional.conv3d(x3, gabor_kernel3d(*params3, (3, 3, 5)), bias, 1, "same", 1, 2)
    torch.testing.assert_close(gabor_conv3d(x3, *params3, (3, 3, 5), bias, padding="same", groups=2), expected,
                               rtol=0, atol=0)
    with pytest.raises(ValueError, match=r"parameters must broadcast to \(C_out, C_in // groups\), got shape \(4,\)"):
        gabor_conv1d(x1, torch.ones(4), 5.0, 0.0, 9)
    with pytest.raises(ValueError, match=r"parameters must broadcast to \(C_out, C_in // groups\), got shape \(\)"):
        gabor_conv3d(x3, 0.0, 0.0, 1.0, 4.0, 1.0, 0.0, 3)


@pytest.mark.parametrize("dims", [1, 2, 3])
def test_functional_parameters_broadcast_to_the_input_channels(dims):
    """(C_out, 1) parameters serve every input channel, as the layers' initial values do."""
    from gaborlayer import gabor_conv2d, gabor_kernel2d
    conv, kernel, n = {1: (gabor_conv1d, gabor_kernel1d, 3), 2: (gabor_conv2d, gabor_kernel2d, 5),
                       3: (gabor_conv3d, gabor_kernel3d, 6)}[dims]
    gen = torch.Generator().manual_seed(dims)
    params = [torch.rand(4, 1, dtype=torch.float64, generator=gen) + 1 for _ in range(n)]
    x = torch.randn(2, 6, *(7,) * dims, dtype=torch.float64, generator=gen)
    full = [p.expand(4, 3) for p in params]
    torch.testing.assert_close(conv(x, *params, 3, groups=2), conv(x, *full, 3, groups=2), rtol=0, atol=0)
    weight = kernel(*full, 3).reshape(4, 3, *(3,) * dims)
    torch.testing.assert_close(conv(x, *params, 3, groups=2), getattr(torch.nn.functional, f"conv{dims}d")(
        x, weight, None, 1, 0, 1, 2), rtol=0, atol=0)
    with pytest.raises(ValueError, match=r"parameters must broadcast to \(C_out, C_in // groups\) = \(4, 3\) for "
                                         r"an input with 6 channels and groups=2, got shape \(4, 2\)"):
        conv(x, *[p.expand(4, 2) for p in params], 3, groups=2)


# -- the modules -----------------------------------------------------------------------------
PADDING_MODES = ("zeros", "reflect", "replicate", "circular")
MODULES = {1: (GaborConv1d, nn.Conv1d), 3: (GaborConv3d, nn.Conv3d)}


def ints_or_tuple(dims, lo, hi):
    return st.one_of(st.integers(lo, hi), st.tuples(*[st.integers(lo, hi)] * dims))


def as_tuple(v, dims):
    return v if isinstance(v, tuple) else (v,) * dims


@st.composite
def conv_configs(draw, dims):
    """(constructor kwargs, input shape) covering every nn.Conv1d / nn.Conv3d argument."""
    groups = draw(st.integers(1, 2))
    max_kernel = 7 if dims == 1 else 3
    kernel = draw(ints_or_tuple(dims, 1, max_kernel))
    dilation = draw(ints_or_tuple(dims, 1, 2))
    padding = draw(st.one_of(st.sampled_from(["same", "valid"]), ints_or_tuple(dims, 0, 2)))
    stride = 1 if padding == "same" else draw(ints_or_tuple(dims, 1, 3))
    kwargs = dict(in_channels=groups * draw(st.integers(1, 2)), out_channels=groups * draw(st.integers(1, 3)),
                  kernel_size=kernel, stride=stride, padding=padding, dilation=dilation, groups=groups,
                  bias=draw(st.booleans()), padding_mode=draw(st.sampled_from(PADDING_MODES)))
    pad = (0,) * dims if isinstance(padding, str) else as_tuple(padding, dims)
    size = [max(d * (k - 1) + 1, p + 1) + draw(st.integers(0, 2))
            for k, d, p in zip(as_tuple(kernel, dims), as_tuple(dilation, dims), pad)]
    batch = draw(st.sampled_from([(), (2,)]))
    return kwargs, (*batch, kwargs["in_channels"], *size)


def exact(actual, expected):
    torch.testing.assert_close(actual, expected, rtol=0, atol=0)


@pytest.mark.parametrize("dims", [1, 3])
@settings(max_examples=scaled(200))
@given(data=st.data(), dtype=st.sampled_from([torch.float32, torch.float64]), zero_mean=st.booleans(),
       learn=st.sampled_from(["all", "none", ("sigma", "psi")]))
def test_output_equals_nn_conv(dims, data, dtype, zero_mean, learn):
    kwargs, input_shape = data.draw(conv_configs(dims))
    torch.manual_seed(0)
    m = MODULES[dims][0](**kwargs, dtype=dtype, zero_mean=zero_mean, learn=learn)
    ref = conv_twin(m)
    for attr in ("in_channels", "out_channels", "kernel_size", "stride", "padding", "dilation", "groups",
                 "padding_mode", "_reversed_padding_repeated_twice"):
        assert tuple(np.atleast_1d(getattr(m, attr))) == tuple(np.atleast_1d(getattr(ref, attr))), attr
    x = torch.randn(input_shape, dtype=dtype)
    expected = ref(x)
    exact(m(x), expected)
    converted = m.to_conv1d() if dims == 1 else m.to_conv3d()
    assert type(converted) is MODULES[dims][1]
    exact(converted(x), expected)
    m.eval()
    with torch.no_grad():
        exact(m(x), expected)  # built into the cache
        exact(m(x), expected)  # read from it


@pytest.mark.parametrize("dims", [1, 3])
@pytest.mark.parametrize("kwargs", [dict(), dict(stride=2, padding=1, bias=False),
                                    dict(padding="same", dilation=2, padding_mode="reflect"),
                                    dict(padding="valid", groups=2, padding_mode="circular")])
def test_extra_repr_reads_like_nn_conv(dims, kwargs):
    gabor, conv = MODULES[dims]
    assert gabor(4, 6, 3, **kwargs).extra_repr() == conv(4, 6, 3, **kwargs).extra_repr()
    assert repr(gabor(2, 2, 3, learn="sigma", zero_mean=True)).endswith(
        "kernel_size=" + repr((3,) * dims) + ", stride=" + repr((1,) * dims) + ", learn=('sigma',), zero_mean=True)")


@pytest.mark.parametrize("dims", [1, 3])
def test_every_learnable_parameter_gets_a_gradient(dims):
    torch.manual_seed(0)
    gabor = MODULES[dims][0]
    m = gabor(2, 4, 5, padding="same", amplitude=True, dtype=torch.float64)
    x = torch.randn(2, 2, *(9,) * dims, dtype=torch.float64)
    m(x).square().sum().backward()
    names = {n for n, _ in m.named_parameters()}
    expected = {"log_sigma", "log_lambd_excess", "psi", "amplitude", "bias"}
    expected |= {"theta", "phi", "log_gamma"} if dims == 3 else set()
    assert names == expected
    for name, p in m.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name
    # and the output is the functional form's
    values = [getattr(m, n) for n in m._family.names]
    bank = (gabor_kernel1d if dims == 1 else gabor_kernel3d)(*values, m.kernel_size)
    bank = bank * m.amplitude.reshape(*m.amplitude.shape, *(1,) * dims)
    conv = torch.nn.functional.conv1d if dims == 1 else torch.nn.functional.conv3d
    torch.testing.assert_close(conv(x, bank, m.bias, padding="same"), m(x), rtol=1e-12, atol=1e-12)
    if dims == 1:
        functional = gabor_conv1d(x, *values, m.kernel_size, m.bias, padding="same")
        no_amplitude = GaborConv1d(2, 4, 5, padding="same", dtype=torch.float64)
        no_amplitude.load_state_dict({k: v for k, v in m.state_dict().items() if k != "amplitude"})
        torch.testing.assert_close(no_amplitude(x), functional, rtol=0, atol=0)


@pytest.mark.parametrize("dims", [1, 3])
def test_constraints_and_learn(dims):
    gabor = MODULES[dims][0]
    m = gabor(1, 3, 5, learn=("lambd",))
    assert [n for n, _ in m.named_parameters()] == ["log_lambd_excess", "bias"]
    with torch.no_grad():
        m.log_lambd_excess.fill_(-10.0)
        m.log_sigma.fill_(-40.0)
    assert (m.lambd > 2).all() and (m.sigma > 0).all()
    assert torch.isfinite(m.weight).all()
    with pytest.raises(ValueError, match=r"lambd must be > 2\.0, got 2\.0"):
        gabor(1, 3, 5, lambd=2.0)


def test_classic_initial_banks():
    m1 = GaborConv1d(1, 8, 31)
    torch.testing.assert_close(m1.psi[:, 0], torch.tensor([0.0, -math.pi / 2] * 4))
    lambd = m1.lambd[:, 0].detach()
    assert lambd[0] == pytest.approx(2.5) and lambd[-1] == pytest.approx(15.5) and (lambd[::2] == lambd[1::2]).all()
    assert not m1.check_extent(warn=False)["cut"].any()
    m3 = GaborConv3d(2, 26, 7)
    theta, phi = m3.theta[:13, 0].detach(), m3.phi[:13, 0].detach()
    u = torch.stack([torch.cos(phi) * torch.cos(theta), torch.cos(phi) * torch.sin(theta), torch.sin(phi)], 1)
    assert (phi > 0).all() and (phi < math.pi / 2).all()
    cosines = (u @ u.T).abs() - torch.eye(13)
    assert cosines.max() < 0.95  # 13 distinct directions, no two (anti)parallel
    torch.testing.assert_close(m3.psi[13:, 0], torch.full((13,), -math.pi / 2))
    assert not m3.check_extent(warn=False)["cut"].any()
    torch.testing.assert_close(m3.gamma, torch.ones(26, 2))


def test_truncation_warning_names_the_filter():
    with pytest.warns(gaborlayer.GaborTruncationWarning, match=r"GaborConv1d: 1 of 2 filters have an envelope cut off "
                      r"by kernel_size=\(11,\), e\.g\. filter \[1, 0\] \(sigma=4\) reaches 20\.0 samples "
                      r"at 2\.5 sigma; kernel_size=\(25,\) would hold every filter"):
        GaborConv1d(1, 2, 11, sigma=torch.tensor([[1.0], [4.0]]))
    # an envelope long along x (3 sigma = 4.2) and short across (1.05) fits a flat kernel only along x
    report = GaborConv3d(1, 1, (3, 9, 9), theta=0.0, phi=0.0, sigma=1.4, gamma=4.0).check_extent(warn=False)
    assert report["cut"].tolist() == [[False]] and report["suggested_kernel_size"] == (3, 3, 9)
    tilted = GaborConv3d(1, 1, (3, 9, 9), theta=0.0, phi=math.pi / 2, sigma=1.4, gamma=4.0, learn="none")
    assert tilted.check_extent(warn=False)["suggested_kernel_size"] == (9, 3, 3)
    with pytest.warns(gaborlayer.GaborTruncationWarning, match=r"GaborConv3d: .* reaches 15\.0 x 5\.0 x 5\.0 voxels"):
        GaborConv3d(1, 1, 7, theta=0.0, phi=math.pi / 2, sigma=3.0, gamma=3.0)


def test_eval_cache_builds_once(monkeypatch):
    import gaborlayer._weight as _weight

    real = _weight._bank
    for dims in (1, 3):
        calls = []
        monkeypatch.setattr(_weight, "_bank", lambda *a, _calls=calls, **k: _calls.append(1) or real(*a, **k))
        m = MODULES[dims][0](2, 3, 3, padding=1).eval()
        x = torch.randn(1, 2, *(6,) * dims)
        with torch.no_grad():
            first = m(x)
            exact(m(x), first)
        assert len(calls) == 1
        with torch.no_grad():
            m.psi.add_(0.5)  # an in-place write the version counter sees
            assert not torch.equal(m(x), first)
        assert len(calls) == 2


@pytest.mark.parametrize("dims", [1, 3])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision(dims, dtype):
    torch.manual_seed(0)
    m = MODULES[dims][0](2, 3, 5, padding=2)
    x = torch.randn(1, 2, *(8,) * dims)
    expected = m(x)
    half = m.to(dtype)
    out = half(x.to(dtype))
    assert out.dtype == dtype and half.weight.dtype == dtype
    torch.testing.assert_close(out.float(), expected, rtol=0.05, atol=0.1)
    exact(half.weight, MODULES[dims][0](2, 3, 5, padding=2).to(dtype).weight)  # built in float32, rounded


@pytest.mark.parametrize("dims", [1, 3])
def test_state_dict_round_trip_and_deepcopy(dims):
    import copy

    torch.manual_seed(0)
    gabor = MODULES[dims][0]
    m = gabor(2, 4, 3, sigma=1.3, psi=torch.linspace(-1, 1, 4)[:, None])
    other = gabor(2, 4, 3)
    other.load_state_dict(m.state_dict())
    exact(other.weight, m.weight)
    exact(copy.deepcopy(m).weight, m.weight)


MODULE_ERRORS = [
    (1, dict(kernel_size=(3, 3)), TypeError, r"kernel_size must be an int or a 1-tuple of ints, got \(3, 3\)"),
    (1, dict(stride=0), ValueError, r"stride must be >= 1 in every dimension, got 0"),
    (1, dict(padding="same", stride=2), ValueError, r"padding='same' needs stride=1, got stride=2"),
    (1, dict(gamma=1.0), TypeError, r"unexpected keyword argument 'gamma'"),
    (1, dict(learn="theta"), ValueError, r"learn must name parameters among \('sigma', 'lambd', 'psi'\)"),
    (1, dict(sigma=-1.0), ValueError, r"sigma must be > 0.0, got -1.0"),
    (1, dict(backend="triton"), RuntimeError, r"no kernel for 1-D banks"),
    (1, dict(padding_mode="mirror"), ValueError, r"padding_mode must be one of .*got 'mirror'"),
    (3, dict(kernel_size=(3, 3)), TypeError, r"kernel_size must be an int or a triple of ints, got \(3, 3\)"),
    (3, dict(dilation=(1, 0, 1)), ValueError, r"dilation must be >= 1 in every dimension, got \(1, 0, 1\)"),
    (3, dict(phi=math.nan), ValueError, r"phi must be finite, got nan"),
    (3, dict(gamma=0.0), ValueError, r"gamma must be > 0.0, got 0.0"),
    (3, dict(lambd=1.5), ValueError, r"lambd must be > 2.0, got 1.5"),
    (3, dict(phi=torch.ones(5, 1)), ValueError, r"phi must be broadcastable to \(out_channels, in_channels // groups\) "
                                                r"= \(4, 2\), got shape \(5, 1\)"),
    (3, dict(groups=3), ValueError, r"in_channels \(2\) and out_channels \(4\) must both be divisible by groups \(3\)"),
    (3, dict(backend="triton"), RuntimeError, r"no kernel for 3-D banks"),
]


@pytest.mark.parametrize("dims, kwargs, error, match", MODULE_ERRORS,
                         ids=[f"{d}d-{m[:30]}" for d, _, _, m in MODULE_ERRORS])
def test_module_bad_arguments_raise_clear_errors(dims, kwargs, error, match):
    kwargs = {"in_channels": 2, "out_channels": 4, "kernel_size": 3, **kwargs}
    with pytest.raises(error, match=match):
        MODULES[dims][0](**kwargs)


@pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning")  # inside torch
def test_docstring_examples_run():
    import doctest

    import gaborlayer.modules as modules

    for obj in (GaborConv1d, GaborConv3d):
        tests = doctest.DocTestFinder().find(obj, globs=vars(modules).copy())
        assert sum(len(t.examples) for t in tests) >= 2
        runner = doctest.DocTestRunner(optionflags=doctest.NORMALIZE_WHITESPACE)
        for test in tests:
            runner.run(test)
        assert runner.failures == 0


# -- the demo ---------------------------------------------------------------------------------
def test_signal_demo_quick_finds_the_periods():
    result = subprocess.run([sys.executable, os.path.join(ROOT, "demos", "signal_1d.py"), "--quick"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    learned = {}
    for line in result.stdout.splitlines():
        if "learned period" in line:
            learned[len(learned)] = float(line.split("learned period")[1].split()[0])
    assert len(learned) == 2, result.stdout
    assert abs(learned[0] - 52.18) < 1.5, result.stdout  # co2: the annual cycle, in weeks
    assert abs(learned[1] - 11.0) < 1.0, result.stdout  # sunspots: the solar cycle, in years
