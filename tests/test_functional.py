"""Values, shapes, properties and errors of the functional core (``gabor_kernel2d``, ``canonicalize``).

The kernel is checked against an independent NumPy implementation (written with ``np.meshgrid``
straight from the formula), against OpenCV and against scikit-image. The mappings, verified here
over generated parameters and read off both libraries' sources:

OpenCV (``cv2.getGaborKernel``, odd sizes only)::

    np.rot90(cv2.getGaborKernel((kw, kh), sigma, theta, lambd, gamma, psi, ktype=cv2.CV_64F), 2)
        == gabor_kernel2d(theta, sigma, lambd, gamma, psi, (kh, kw))

  OpenCV evaluates the same g(x, y) but stores it at ``kernel[ymax - y, xmax - x]`` (both axes
  reversed), hence the 180-degree rotation. Its ``ksize`` is ``(width, height)``, and an even
  ``ksize`` gives the next odd size (``xmax = width // 2``; ``(8, 6)`` gives a 7 x 9 kernel), so
  OpenCV is compared at odd sizes only; even and rectangular sizes are compared with NumPy.

scikit-image (``skimage.filters.gabor_kernel``)::

    k = gabor_kernel(frequency=1 / lambd, theta=theta, sigma_x=sigma, sigma_y=sigma / gamma,
                     offset=psi, n_stds=n_stds)
    k.real * (2 * pi * sigma * (sigma / gamma)) == gabor_kernel2d(theta, sigma, lambd, gamma, psi, k.shape)

  with no flip and no change of sign: scikit-image's rows are y (growing downward) and its
  columns x, both centred, and it rotates with the same ``x' = x cos t + y sin t``,
  ``y' = -x sin t + y cos t``. Its kernel is normalised by ``1 / (2 pi sigma_x sigma_y)`` (undone
  above), and its size is chosen by ``n_stds``: ``(2 y0 + 1, 2 x0 + 1)`` with
  ``x0 = ceil(max(|n sigma_x cos t|, |n sigma_y sin t|, 1))`` and
  ``y0 = ceil(max(|n sigma_y cos t|, |n sigma_x sin t|, 1))``; we build ours at that shape.
  ``k.imag`` times the same factor is our kernel at ``psi - pi / 2``.

Rotation by a quarter turn (square kernels): ``K(theta + pi/2) == torch.rot90(K(theta), k=-1,
dims=(-2, -1))`` -- a clockwise turn of the array as displayed with row 0 on top, because
``K_{theta + pi/2}(x, y) = K_theta(y, -x)``.

Tolerances are per dtype (``TOL``). float32 kernels are compared with float64 NumPy evaluated at
the float32 parameters, so the tolerance covers float32 arithmetic only.
"""
from __future__ import annotations

import itertools
import math

import cv2
import numpy as np
import pytest
import torch
from conftest import (
    RANGES,
    angles,
    extreme_params,
    float_dtypes,
    gabor_params,
    kernel_sizes,
    odd_kernel_sizes,
    scaled,
    square_kernel_sizes,
)
from hypothesis import given, settings
from hypothesis import strategies as st
from skimage.filters import gabor_kernel as skimage_gabor_kernel

from gaborlayer import canonicalize, gabor_kernel2d

# Kernel values lie in [-1, 1]; the phase reaches ~60 rad with generated parameters, so float32
# carries a few 1e-6 of absolute error.
TOL = {
    torch.float32: dict(rtol=1e-5, atol=3e-5),
    torch.float64: dict(rtol=1e-10, atol=1e-11),
}


def numpy_gabor(theta, sigma, lambd, gamma, psi, kh, kw, *, split_phase=False):
    """One kernel ``(kh, kw)`` in float64 from the formula, independently of the package's code.

    ``split_phase`` expands ``cos(u + psi) = cos u cos psi - sin u sin psi`` so that a huge psi
    is reduced exactly by ``np.cos``/``np.sin`` instead of losing its low bits in ``u + psi``.
    """
    xs = np.arange(kw, dtype=np.float64) - (kw - 1) / 2
    ys = np.arange(kh, dtype=np.float64) - (kh - 1) / 2
    x, y = np.meshgrid(xs, ys)  # 'xy' indexing: x runs along a row, y down a column
    x_rot = x * np.cos(theta) + y * np.sin(theta)
    y_rot = -x * np.sin(theta) + y * np.cos(theta)
    envelope = np.exp(-(x_rot ** 2 + gamma ** 2 * y_rot ** 2) / (2 * sigma ** 2))
    if split_phase:
        u = 2 * np.pi * x_rot / lambd
        return envelope * (np.cos(u) * np.cos(psi) - np.sin(u) * np.sin(psi))
    return envelope * np.cos(2 * np.pi * x_rot / lambd + psi)


def numpy_bank(params, kh, kw, **kwargs):
    """``(*S, kh, kw)`` from five arrays (or floats) broadcast to ``S``, one kernel at a time."""
    arrays = np.broadcast_arrays(*(np.asarray(p, dtype=np.float64) for p in params))
    out = np.empty(arrays[0].shape + (kh, kw))
    for index in np.ndindex(arrays[0].shape):
        out[index] = numpy_gabor(*(float(a[index]) for a in arrays), kh, kw, **kwargs)
    return out


def as_numpy(params):
    return [p.detach().double().numpy() if isinstance(p, torch.Tensor) else p for p in params]


def assert_close(actual, expected, dtype, scale=1.0):
    tol = TOL[dtype]
    torch.testing.assert_close(actual, torch.as_tensor(expected, dtype=actual.dtype), rtol=tol["rtol"],
                               atol=tol["atol"] * scale)


# -- values ---------------------------------------------------------------------------------
@settings(max_examples=scaled(400))
@given(params=gabor_params(), size=kernel_sizes, dtype=float_dtypes)
def test_matches_numpy(params, size, dtype):
    params = [p.to(dtype) for p in params]
    bank = gabor_kernel2d(*params, size)
    assert bank.dtype == dtype and bank.shape == (params[0].shape[0], *size)
    assert_close(bank, numpy_bank(as_numpy(params), *size), dtype)


@settings(max_examples=scaled(300))
@given(params=gabor_params(), size=odd_kernel_sizes)
def test_matches_opencv_rotated_180(params, size):
    kh, kw = size
    bank = gabor_kernel2d(*params, size)
    for n in range(bank.shape[0]):
        theta, sigma, lambd, gamma, psi = (float(p[n]) for p in params)
        ocv = cv2.getGaborKernel((kw, kh), sigma, theta, lambd, gamma, psi, ktype=cv2.CV_64F)
        assert ocv.shape == (kh, kw)
        assert_close(bank[n], np.rot90(ocv, 2).copy(), torch.float64)


def test_opencv_mapping_needs_the_rotation():
    """Guards the test above: for an asymmetric kernel the unrotated OpenCV kernel differs, and an
    even ``ksize`` is silently widened to the next odd size."""
    theta, sigma, lambd, gamma, psi = 0.7, 2.0, 5.0, 0.5, 0.3
    ocv = cv2.getGaborKernel((9, 7), sigma, theta, lambd, gamma, psi, ktype=cv2.CV_64F)
    ours = gabor_kernel2d(torch.tensor(theta, dtype=torch.float64), sigma, lambd, gamma, psi, (7, 9))
    assert np.abs(ocv - ours.numpy()).max() > 0.1
    assert np.abs(np.rot90(ocv, 2) - ours.numpy()).max() < 1e-12
    assert cv2.getGaborKernel((8, 6), sigma, theta, lambd, gamma, psi, ktype=cv2.CV_64F).shape == (7, 9)


@settings(max_examples=scaled(200))
@given(theta=st.floats(-60, 60), sigma=st.floats(0.5, 4.0), lambd=st.floats(1.0, 24.0), gamma=st.floats(0.5, 3.0),
       psi=st.floats(-20, 20), n_stds=st.floats(0.5, 2.5))
def test_matches_skimage(theta, sigma, lambd, gamma, psi, n_stds):
    sigma_y = sigma / gamma
    sk = skimage_gabor_kernel(1 / lambd, theta=theta, sigma_x=sigma, sigma_y=sigma_y, offset=psi, n_stds=n_stds)
    norm = 2 * math.pi * sigma * sigma_y
    to64 = dict(dtype=torch.float64)
    ours = gabor_kernel2d(torch.tensor(theta, **to64), sigma, lambd, gamma, psi, sk.shape)
    assert_close(ours, sk.real * norm, torch.float64)
    ours_sine = gabor_kernel2d(torch.tensor(theta, **to64), sigma, lambd, gamma, psi - math.pi / 2, sk.shape)
    torch.testing.assert_close(ours_sine, torch.as_tensor(sk.imag * norm), rtol=1e-9, atol=1e-10)


@settings(max_examples=scaled(300))
@given(params=gabor_params(), size=kernel_sizes, dtype=float_dtypes, zero_mean=st.booleans())
def test_backends_agree(params, size, dtype, zero_mean):
    """The analytic Function and the plain-autograd reference agree, values and gradients."""
    params = [p.to(dtype).requires_grad_() for p in params]
    weight = torch.randn(params[0].shape[0], *size, dtype=dtype, generator=torch.Generator().manual_seed(0))
    results = []
    for backend in ("torch", "reference"):
        bank = gabor_kernel2d(*params, size, zero_mean=zero_mean, backend=backend)
        results.append((bank, torch.autograd.grad((bank * weight).sum(), params)))
    (bank_t, grads_t), (bank_r, grads_r) = results
    assert_close(bank_t, bank_r, dtype)
    # A gradient is a sum over up to 81 pixels of terms up to ~40 (2 pi x' / lambd): scale atol.
    for g_t, g_r in zip(grads_t, grads_r):
        assert_close(g_t, g_r, dtype, scale=100.0)


def _graph_names(tensor):
    names, stack = set(), [tensor.grad_fn]
    while stack:
        node = stack.pop()
        if node is not None and type(node).__name__ not in names:
            names.add(type(node).__name__)
            stack.extend(next_fn for next_fn, _ in node.next_functions)
    return names


def test_auto_backend_is_the_function():
    theta = torch.tensor([0.3], requires_grad=True)
    assert "GaborKernel2dBackward" in _graph_names(gabor_kernel2d(theta, 2.0, 4.0, 1.0, 0.0, 3))
    assert "GaborKernel2dBackward" not in _graph_names(gabor_kernel2d(theta, 2.0, 4.0, 1.0, 0.0, 3,
                                                                      backend="reference"))


# -- shapes, dtypes, devices -----------------------------------------------------------------
_SHAPE_GEN = torch.Generator().manual_seed(5)


def _t(*shape):
    return torch.rand(shape, dtype=torch.float64, generator=_SHAPE_GEN) + 0.5


SHAPE_CASES = [
    ("python floats", (0.3, 2.0, 4.0, 0.5, 0.1), ()),
    ("python ints", (0, 2, 4, 1, 0), ()),
    ("0-d tensors", (_t(), _t(), _t(), _t(), _t()), ()),
    ("(N,) with floats", (_t(5), 2.0, 4.0, 0.5, 0.1), (5,)),
    ("all (N,)", (_t(5), _t(5), _t(5), _t(5), _t(5)), (5,)),
    ("(A, B)", (_t(2, 3), _t(2, 3), 4.0, _t(2, 3), 0.0), (2, 3)),
    ("(A, 1) with (1, B)", (_t(2, 1), _t(1, 3), 4.0, 1.0, 0.0), (2, 3)),
    ("(B,) with (A, 1)", (_t(3), 2.0, _t(4, 1), 1.0, _t()), (4, 3)),
    ("scalar tensor with (A, B, C)", (_t(), _t(2, 3, 4), 4.0, 1.0, 0.0), (2, 3, 4)),
    ("empty batch", (_t(0), 2.0, 4.0, 1.0, 0.0), (0,)),
]


@pytest.mark.parametrize("params, batch_shape", [c[1:] for c in SHAPE_CASES], ids=[c[0] for c in SHAPE_CASES])
@pytest.mark.parametrize("size", [5, (4, 7), (1, 1)])
def test_shapes_and_broadcasting(params, batch_shape, size):
    kh, kw = (size, size) if isinstance(size, int) else size
    bank = gabor_kernel2d(*params, size)
    assert bank.shape == (*batch_shape, kh, kw)
    dtype = bank.dtype
    torch.testing.assert_close(bank.double(), torch.as_tensor(numpy_bank(as_numpy(params), kh, kw)),
                               **TOL[dtype])


def test_int_size_is_square():
    args = (torch.tensor([0.3, 1.2]), 2.0, 4.0, 0.5, 0.1)
    assert torch.equal(gabor_kernel2d(*args, 5), gabor_kernel2d(*args, (5, 5)))
    assert torch.equal(gabor_kernel2d(*args, [5, 5]), gabor_kernel2d(*args, (5, 5)))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_output_dtype_follows_parameters(dtype):
    theta = torch.tensor([0.1, 0.2], dtype=dtype)
    assert gabor_kernel2d(theta, 2.0, 4.0, 1.0, 0.0, 3).dtype == dtype
    assert gabor_kernel2d(theta, torch.tensor(2.0, dtype=dtype), 4.0, 1.0, 0.0, 3).dtype == dtype


def test_output_dtype_promotes_and_defaults():
    f32, f64 = torch.tensor([0.1], dtype=torch.float32), torch.tensor([2.0], dtype=torch.float64)
    assert gabor_kernel2d(f32, f64, 4.0, 1.0, 0.0, 3).dtype == torch.float64
    assert gabor_kernel2d(0.1, 2.0, 4.0, 1.0, 0.0, 3).dtype == torch.get_default_dtype()
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        assert gabor_kernel2d(0.1, 2.0, 4.0, 1.0, 0.0, 3).dtype == torch.float64
    finally:
        torch.set_default_dtype(previous)


def test_promotion_keeps_the_graph():
    theta = torch.tensor([0.4], dtype=torch.float32, requires_grad=True)
    gabor_kernel2d(theta, torch.tensor([2.0], dtype=torch.float64), 4.0, 1.0, 0.0, 5).sum().backward()
    assert theta.grad is not None and theta.grad.dtype == torch.float32


def test_output_device_is_the_parameters_device():
    bank = gabor_kernel2d(torch.tensor([0.1]), 2.0, 4.0, 1.0, 0.0, 3)
    assert bank.device == torch.device("cpu")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("backend", ["torch", "reference"])
def test_cuda_matches_cpu(backend):
    params = [_t(4) for _ in range(5)]
    cpu = gabor_kernel2d(*params, (5, 6), backend=backend)
    cuda = gabor_kernel2d(*(p.cuda() for p in params), (5, 6), backend=backend)
    assert cuda.device.type == "cuda" and cuda.dtype == torch.float64
    torch.testing.assert_close(cuda.cpu(), cpu, **TOL[torch.float64])
    with pytest.raises(ValueError, match="one device"):
        gabor_kernel2d(params[0].cuda(), params[1], 4.0, 1.0, 0.0, 3)


# -- properties (float64: exact identities up to rounding of the shifted angle) ---------------
PROPERTY_TOL = dict(rtol=0.0, atol=1e-10)


@settings(max_examples=scaled(200))
@given(params=gabor_params(), size=kernel_sizes)
def test_half_turn_equals_negated_phase(params, size):
    theta, sigma, lambd, gamma, psi = params
    torch.testing.assert_close(gabor_kernel2d(theta + math.pi, sigma, lambd, gamma, psi, size),
                               gabor_kernel2d(theta, sigma, lambd, gamma, -psi, size), **PROPERTY_TOL)


@settings(max_examples=scaled(200))
@given(params=gabor_params(), size=kernel_sizes)
def test_full_turn_periods(params, size):
    theta, sigma, lambd, gamma, psi = params
    bank = gabor_kernel2d(theta, sigma, lambd, gamma, psi, size)
    torch.testing.assert_close(gabor_kernel2d(theta + 2 * math.pi, sigma, lambd, gamma, psi, size), bank,
                               **PROPERTY_TOL)
    torch.testing.assert_close(gabor_kernel2d(theta, sigma, lambd, gamma, psi - 2 * math.pi, size), bank,
                               **PROPERTY_TOL)


@settings(max_examples=scaled(200))
@given(params=gabor_params(), n=square_kernel_sizes)
def test_quarter_turn_is_a_clockwise_rot90(params, n):
    theta, sigma, lambd, gamma, psi = params
    turned = gabor_kernel2d(theta + math.pi / 2, sigma, lambd, gamma, psi, n)
    bank = gabor_kernel2d(theta, sigma, lambd, gamma, psi, n)
    torch.testing.assert_close(turned, torch.rot90(bank, k=-1, dims=(-2, -1)), **PROPERTY_TOL)


def test_quarter_turn_direction_is_distinguishable():
    """The other direction fails for an asymmetric kernel, so the test above pins the direction."""
    bank = gabor_kernel2d(torch.tensor(0.3, dtype=torch.float64), 2.0, 5.0, 0.5, 0.7, 7)
    turned = gabor_kernel2d(torch.tensor(0.3 + math.pi / 2, dtype=torch.float64), 2.0, 5.0, 0.5, 0.7, 7)
    assert (turned - torch.rot90(bank, k=1, dims=(-2, -1))).abs().max() > 0.1
    assert (turned - torch.rot90(bank, k=-1, dims=(-2, -1))).abs().max() < 1e-12


@settings(max_examples=scaled(300))
@given(params=gabor_params(), size=kernel_sizes, dtype=float_dtypes)
def test_zero_mean(params, size, dtype):
    """Sums to ~0 and differs from the plain kernel by a multiple of the envelope only."""
    params = [p.to(dtype) for p in params]
    plain = gabor_kernel2d(*params, size).double()
    centred = gabor_kernel2d(*params, size, zero_mean=True)
    assert centred.dtype == dtype
    centred = centred.double()
    theta, sigma, lambd, gamma, psi = as_numpy(params)
    envelope = torch.as_tensor(numpy_bank((theta, sigma, np.inf, gamma, 0.0), *size))
    eps = torch.finfo(dtype).eps
    mass = plain.abs().sum(dim=(-2, -1))
    assert (centred.sum(dim=(-2, -1)).abs() <= 100 * eps * (1 + mass)).all()
    diff = plain - centred
    beta = (diff * envelope).sum(dim=(-2, -1), keepdim=True) / (envelope * envelope).sum(dim=(-2, -1), keepdim=True)
    torch.testing.assert_close(diff, beta * envelope, rtol=0.0, atol=100 * eps)


def test_zero_mean_of_a_known_kernel():
    """psi = pi/2 with theta = 0 is odd in x: already zero-mean, so nothing is subtracted."""
    args = (torch.tensor(0.0, dtype=torch.float64), 2.0, 5.0, 0.7, math.pi / 2, 7)
    torch.testing.assert_close(gabor_kernel2d(*args, zero_mean=True), gabor_kernel2d(*args), rtol=0, atol=1e-15)


# -- canonicalize ---------------------------------------------------------------------------
@settings(max_examples=scaled(600))
@given(theta=angles(), psi=angles(), dtype=float_dtypes, size=kernel_sizes,
       others=st.tuples(*(st.floats(*RANGES[k]) for k in ("sigma", "lambd", "gamma"))))
def test_canonicalize_range_idempotence_and_kernel(theta, psi, dtype, size, others):
    theta_t, psi_t = torch.tensor([theta], dtype=dtype), torch.tensor([psi], dtype=dtype)
    theta_c, psi_c = canonicalize(theta_t, psi_t)
    assert theta_c.dtype == dtype and psi_c.dtype == dtype
    pi = torch.tensor(math.pi, dtype=dtype)  # the dtype's pi (float32's is above the real one)
    assert bool((theta_c >= 0).all() and (theta_c < pi).all()), (theta, theta_c)
    assert bool((psi_c > -pi).all() and (psi_c <= pi).all()), (psi, psi_c)
    again = canonicalize(theta_c, psi_c)
    assert torch.equal(again[0], theta_c) and torch.equal(again[1], psi_c)
    # The kernel of the canonical angles equals the exact kernel of the original (dtype-rounded)
    # ones, however large: compared with float64 NumPy at the original values.
    sigma, lambd, gamma = others
    bank = gabor_kernel2d(theta_c, sigma, lambd, gamma, psi_c, size)
    expected = numpy_bank((theta_t.double().numpy(), sigma, lambd, gamma, psi_t.double().numpy()), *size,
                          split_phase=True)
    assert_close(bank, expected, dtype, scale=10.0)


@pytest.mark.parametrize("theta, psi, expected", [
    (-math.pi / 4, 0.5, (3 * math.pi / 4, -0.5)),
    (math.pi, 0.5, (0.0, -0.5)),
    (-math.pi, 0.5, (0.0, -0.5)),
    (3 * math.pi / 2, 0.25, (math.pi / 2, -0.25)),
    (0.5, -math.pi, (0.5, math.pi)),
    (0.5, 3 * math.pi, (0.5, math.pi)),
    (math.pi, math.pi, (0.0, math.pi)),
    (-1e-300, 0.3, (0.0, 0.3)),
])
def test_canonicalize_known_values(theta, psi, expected):
    theta_c, psi_c = canonicalize(torch.tensor(theta, dtype=torch.float64), torch.tensor(psi, dtype=torch.float64))
    assert theta_c.item() == pytest.approx(expected[0], abs=1e-12)
    assert psi_c.item() == pytest.approx(expected[1], abs=1e-12)


def test_canonicalize_broadcasts_and_rejects_non_finite():
    theta_c, psi_c = canonicalize(torch.tensor([0.1, 4.0, -2.0]), 0.5)
    assert theta_c.shape == psi_c.shape == (3,)
    with pytest.raises(ValueError, match="theta must be finite, got nan"):
        canonicalize(torch.tensor([0.1, math.nan]), 0.0)
    with pytest.raises(ValueError, match="psi must be finite, got -inf"):
        canonicalize(0.0, -math.inf)


# -- errors ---------------------------------------------------------------------------------
GOOD = dict(theta=0.3, sigma=2.0, lambd=4.0, gamma=0.5, psi=0.1, size=5)
ERROR_CASES = [
    (dict(size=0), ValueError, r"size must be >= 1 in every dimension, got 0"),
    (dict(size=-3), ValueError, r"size must be >= 1 .*got -3"),
    (dict(size=(3, 0)), ValueError, r"size must be >= 1 .*got \(3, 0\)"),
    (dict(size=2.5), TypeError, r"size must be an int or a pair of ints, got 2\.5"),
    (dict(size=(3, 4, 5)), TypeError, r"size must be .*got \(3, 4, 5\)"),
    (dict(size=True), TypeError, r"size must be .*got True"),
    (dict(theta=torch.tensor([1, 2])), TypeError, r"theta must be a floating-point tensor, got dtype torch\.int64"),
    (dict(sigma=torch.tensor(2, dtype=torch.int32)), TypeError, r"sigma must be a floating-point.*torch\.int32"),
    (dict(gamma=torch.tensor([True])), TypeError, r"gamma must be a floating-point.*torch\.bool"),
    (dict(theta="0.3"), TypeError, r"theta must be a float or a floating-point tensor, got str"),
    (dict(psi=np.zeros(3, dtype=np.int64)), TypeError, r"psi must be a floating-point tensor, got dtype torch\.int64"),
    (dict(sigma=0.0), ValueError, r"sigma must be > 0(\.0)?, got 0\.0"),
    (dict(sigma=-1.5), ValueError, r"sigma must be > 0(\.0)?, got -1\.5"),
    (dict(lambd=torch.tensor([4.0, 0.0])), ValueError, r"lambd must be > 0(\.0)?, got 0\.0"),
    (dict(gamma=-2.0), ValueError, r"gamma must be > 0(\.0)?, got -2\.0"),
    (dict(sigma=math.nan), ValueError, r"sigma must be finite, got nan"),
    (dict(theta=math.inf), ValueError, r"theta must be finite, got inf"),
    (dict(psi=torch.tensor([0.0, -math.inf])), ValueError, r"psi must be finite, got -inf"),
    (dict(lambd=torch.tensor([2.0, math.nan])), ValueError, r"lambd must be finite, got nan"),
    (dict(theta=torch.zeros(3), sigma=torch.ones(4)), ValueError,
     r"broadcastable shapes, got theta=\(3,\), sigma=\(4,\)"),
]


@pytest.mark.parametrize("bad, error, match", ERROR_CASES, ids=[str(c[0]) for c in ERROR_CASES])
def test_bad_input_names_argument_value_and_range(bad, error, match):
    args = {**GOOD, **bad}
    with pytest.raises(error, match=match):
        gabor_kernel2d(args["theta"], args["sigma"], args["lambd"], args["gamma"], args["psi"], args["size"])


def test_numpy_parameters_are_tensors_of_their_dtype():
    thetas = np.linspace(0, np.pi, 4, endpoint=False)
    bank = gabor_kernel2d(thetas, 2.0, np.float32(4.0), 0.5, np.zeros(4), 5)
    want = gabor_kernel2d(torch.from_numpy(thetas), 2.0, 4.0, 0.5, torch.zeros(4, dtype=torch.float64), 5)
    assert bank.dtype == torch.float64 and bank.shape == (4, 5, 5)
    torch.testing.assert_close(bank, want, rtol=0, atol=0)


def test_bad_backend():
    with pytest.raises(ValueError, match=r"backend must be one of .*got 'cuda'"):
        gabor_kernel2d(**{k: v for k, v in GOOD.items()}, backend="cuda")


# -- no NaN/inf anywhere in the valid range ---------------------------------------------------
def _all_finite(params, size, dtype, zero_mean):
    leaves = [torch.tensor(p, dtype=dtype, requires_grad=True) for p in params]
    bank = gabor_kernel2d(*leaves, size, zero_mean=zero_mean)
    weight = torch.randn(bank.shape, dtype=dtype, generator=torch.Generator().manual_seed(1))
    grads = torch.autograd.grad((bank * weight).sum(), leaves)
    return bool(torch.isfinite(bank).all()) and all(bool(torch.isfinite(g).all()) for g in grads), bank


@settings(max_examples=scaled(400))
@given(params=extreme_params(), size=st.one_of(kernel_sizes, st.just((63, 63)), st.tuples(st.integers(1, 63),
                                                                                         st.integers(1, 63))),
       dtype=float_dtypes, zero_mean=st.booleans())
def test_extreme_parameters_give_finite_values_and_gradients(params, size, dtype, zero_mean):
    finite, bank = _all_finite(params, size, dtype, zero_mean)
    assert finite
    assert bank.abs().max() <= 2.0 + 1e-3  # |K| <= 1; zero_mean subtracts at most the envelope


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("zero_mean", [False, True])
def test_extreme_corners_are_finite(dtype, zero_mean):
    failures = []
    for theta, sigma, lambd, gamma, size in itertools.product(
            [0.3, 1e30], [1e-30, 1e30], [1e-3, 1e30], [1e-30, 1e30], [2, (63, 63)]):
        if not _all_finite((theta, sigma, lambd, gamma, 0.4), size, dtype, zero_mean)[0]:
            failures.append((theta, sigma, lambd, gamma, size))
    assert not failures


@pytest.mark.parametrize("backend", ["torch", "reference"])
@pytest.mark.parametrize("dtype, gamma", [(torch.float32, 1e-39), (torch.float32, 1e-45), (torch.float64, 1e-310)],
                         ids=str)
def test_subnormal_gamma_gives_the_finite_theta_gradient(dtype, gamma, backend):
    """1/gamma overflows for a subnormal gamma (float32 below ~3e-39); the theta gradient must
    still be the finite value that float64, where that gamma is a normal number, gives."""
    params = [torch.tensor(v, dtype=dtype) for v in ([0.3, 2.0], [2.0, 1.5], [5.0, 3.0], [gamma, gamma], [0.4, -1.0])]
    leaves = [p.clone().requires_grad_() for p in params]
    grads = torch.autograd.grad(gabor_kernel2d(*leaves, (7, 6), backend=backend).sum(), leaves)
    want = [p.double().requires_grad_() for p in params]
    expected = torch.autograd.grad(gabor_kernel2d(*want, (7, 6), backend="reference").sum(), want)
    torch.testing.assert_close(grads[0].double(), expected[0], rtol=1e-5, atol=1e-5)
    assert all(bool(torch.isfinite(g).all()) for g in grads)


def test_tiny_sigma_is_a_delta():
    """At the odd-size centre the kernel is cos(psi) and everything else underflows to exactly 0."""
    bank = gabor_kernel2d(torch.tensor(0.3, dtype=torch.float32), 1e-30, 4.0, 1.0, 0.5, 63)
    expected = torch.zeros(63, 63)
    expected[31, 31] = math.cos(0.5)
    torch.testing.assert_close(bank, expected)


# -- transforms: torch.compile, vmap, jacrev ------------------------------------------------
def test_torch_compile_fullgraph_matches_eager():
    def loss(theta, sigma, lambd, gamma, psi, weight):
        return (gabor_kernel2d(theta, sigma, lambd, gamma, psi, (5, 6)) * weight).sum()

    torch._dynamo.reset()
    gen = torch.Generator().manual_seed(2)
    values = [torch.rand(3, dtype=torch.float64, generator=gen) + 0.5 for _ in range(5)]
    weight = torch.randn(3, 5, 6, dtype=torch.float64, generator=gen)
    results = []
    for fn in (torch.compile(loss, fullgraph=True), loss):
        leaves = [v.clone().requires_grad_() for v in values]
        out = fn(*leaves, weight)
        results.append((out.detach(), torch.autograd.grad(out, leaves)))
    torch.testing.assert_close(results[0][0], results[1][0], **TOL[torch.float64])
    for g_c, g_e in zip(results[0][1], results[1][1]):
        torch.testing.assert_close(g_c, g_e, **TOL[torch.float64])


def test_vmap_matches_batched_call():
    gen = torch.Generator().manual_seed(3)
    params = [torch.rand(4, 3, dtype=torch.float64, generator=gen) + 0.5 for _ in range(5)]
    vmapped = torch.func.vmap(lambda *p: gabor_kernel2d(*p, (5, 4)))(*params)
    # (under vmap the PyTorch formula, eagerly the compiled loop: equal to float64 rounding)
    torch.testing.assert_close(vmapped, gabor_kernel2d(*params, (5, 4)), rtol=1e-14, atol=1e-15)
    bad = [p.clone() for p in params]
    bad[1][2, 1] = -1.0
    with pytest.raises(ValueError, match=r"sigma must be > 0(\.0)?, got -1\.0"):
        torch.func.vmap(lambda *p: gabor_kernel2d(*p, (5, 4)))(*bad)


@pytest.mark.parametrize("zero_mean", [False, True])
def test_jacrev_matches_reference(zero_mean):
    gen = torch.Generator().manual_seed(4)
    params = [torch.rand(3, dtype=torch.float64, generator=gen) + 0.5 for _ in range(5)]
    jacobians = [torch.func.jacrev(lambda *p, b=b: gabor_kernel2d(*p, (5, 4), zero_mean=zero_mean, backend=b),
                                   argnums=(0, 1, 2, 3, 4))(*params) for b in ("torch", "reference")]
    for j_t, j_r in zip(*jacobians):
        assert j_t.shape == (3, 5, 4, 3)
        torch.testing.assert_close(j_t, j_r, rtol=1e-9, atol=1e-12)
