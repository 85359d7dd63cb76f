"""gaborlayer.filters: scikit-image's and OpenCV's Gabor filters, differentiable.

Against the libraries themselves: ``skimage.filters.gabor_kernel`` and ``gabor`` (every border mode,
both convolution methods, kernels larger than the image, float32 and float64), ``cv2.getGaborKernel``
(odd, even, square, rectangular and derived sizes), ``scipy.ndimage.convolve`` for the 3-D filter
and kornia's ``filter2d`` for the modes it shares. Banks against one-filter calls; gradients and
forward-mode derivatives against numerical ones (gradcheck, counted with ``gradient_cases``); the
conversions both ways (kernels and layer responses equal); input errors; the benchmark's --quick run.
"""
from __future__ import annotations

import math
import os
import subprocess
import sys

import cv2
import kornia
import numpy as np
import pytest
import skimage.filters
import torch
from conftest import scaled
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st
from scipy import ndimage, signal

from gaborlayer import GaborConv2d, filters, gabor_kernel2d, gabor_kernel3d

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def floats(lo, hi):
    return st.floats(lo, hi, allow_nan=False, allow_infinity=False)


# scikit-image's arguments; frequencies that keep kernels from 3x3 to about 60x60
skimage_args = st.fixed_dictionaries({
    "frequency": floats(0.04, 0.49), "theta": floats(-7.0, 7.0), "bandwidth": floats(0.3, 2.5),
    "sigma_x": st.none() | floats(0.4, 6.0), "sigma_y": st.none() | floats(0.4, 6.0),
    "n_stds": st.sampled_from([0, 1, 2, 2.5, 3]), "offset": floats(-7.0, 7.0)})


def scipy_reflect_is_sound(shape, kernel_shape) -> bool:
    """scipy 1.17's n-D ``ndimage.convolve`` with ``mode="reflect"`` reads past the array (and returns
    garbage) when half a kernel reaches 4 lengths of an axis of length >= 2 (found by these tests; its
    1-D ``convolve1d`` is right). The documented extension, numpy's ``"symmetric"`` padding, is
    tested for every size in ``test_reflect_is_numpys_symmetric_padding_for_any_kernel_size``."""
    return all(n < 2 or k // 2 < 4 * n for n, k in zip(shape, kernel_shape))


def relative_error(ours: torch.Tensor, theirs: np.ndarray, floor: float = 1e-300) -> float:
    """max |ours - theirs| / max |theirs|, the denominator at least ``floor`` (for a response that is
    zero up to rounding, e.g. the imaginary part of a 1x1 image)."""
    return float(np.abs(ours.numpy() - theirs).max() / max(np.abs(theirs).max(), floor))


def skimage_half_sizes(frequency, theta, bandwidth, sigma_x, sigma_y, n_stds, offset):
    """The four products whose ceilings set ``skimage.filters.gabor_kernel``'s half sizes."""
    b = 1 / np.pi * np.sqrt(np.log(2) / 2) * (2.0**bandwidth + 1) / (2.0**bandwidth - 1)
    sigma_x = b / frequency if sigma_x is None else sigma_x
    sigma_y = b / frequency if sigma_y is None else sigma_y
    c, s = abs(math.cos(theta)), abs(math.sin(theta))
    return (n_stds * sigma_x * c, n_stds * sigma_y * s, n_stds * sigma_y * c, n_stds * sigma_x * s)

# -- scikit-image -------------------------------------------------------------------------------------
@settings(max_examples=scaled(400))
@given(args=skimage_args, single=st.booleans())
def test_gabor_kernel_equals_skimage(args, single):
    dtype, np_dtype = (torch.complex64, np.complex64) if single else (torch.complex128, np.complex128)
    theirs = skimage.filters.gabor_kernel(**args, dtype=np_dtype)
    ours = filters.gabor_kernel(**args, dtype=dtype)
    assert ours.shape == theirs.shape and ours.dtype == dtype
    assert relative_error(ours, theirs) < (1e-6 if single else 1e-12)


@settings(max_examples=scaled(300))
@given(args=skimage_args, mode=st.sampled_from(filters.MODES), method=st.sampled_from(filters.METHODS),
       shape=st.tuples(st.integers(1, 24), st.integers(1, 24)), single=st.booleans(), cval=floats(-2.0, 2.0),
       seed=st.integers(0, 2**16))
# found by hypothesis in CI: a 1x1 float32 image under a 9x9 kernel, a response 5e-4 of the largest
@example(args={"frequency": 0.375, "theta": 0.0, "bandwidth": 1.0, "sigma_x": 1.5, "sigma_y": None,
               "n_stds": 2.5, "offset": 0.0}, mode="nearest", method="auto", shape=(1, 1), single=True,
         cval=0.0, seed=0)
def test_gabor_equals_skimage_in_every_mode(args, mode, method, shape, single, cval, seed):
    """Every mode, both methods, images down to 1x1 (kernels far larger than the image)."""
    image = np.random.default_rng(seed).standard_normal(shape).astype(np.float32 if single else np.float64)
    assume(mode != "reflect" or scipy_reflect_is_sound(shape, skimage.filters.gabor_kernel(**args).shape))
    real, imag = skimage.filters.gabor(image, **args, mode=mode, cval=cval)
    ours = filters.gabor(torch.from_numpy(image), **args, mode=mode, cval=cval, method=method)
    tolerance = 1e-5 if single else 1e-11
    # scipy sums in float64 whatever the image's dtype; we sum in the image's dtype. A sum of n products
    # in that dtype is off by up to about sqrt(n) * eps * sum |k_i x_i| (rounding errors add like a
    # random walk), and sum |k_i x_i| <= bound, the largest response any image could give. So the
    # allowed error is relative to skimage's response, or that rounding allowance where it is larger.
    kernel = skimage.filters.gabor_kernel(**args)
    bound = max(np.abs(image).max(), abs(cval)) * np.abs(kernel).sum()
    rounding = math.sqrt(kernel.size) * np.finfo(image.dtype).eps * bound
    for o, t in zip(ours, (real, imag)):
        assert o.dtype == torch.from_numpy(image).dtype and o.shape == t.shape
        assert relative_error(o, t, floor=rounding / tolerance) < tolerance


def test_gabor_on_a_photograph_in_float32():
    """The docs' figure: the camera image, float32, the default mode; the FFT path (35x35 kernel)."""
    from skimage import data, img_as_float

    image = img_as_float(data.camera()).astype(np.float32)[::2, ::2]
    for frequency in (0.1, 0.3):
        theirs = skimage.filters.gabor(image, frequency, theta=0.6)
        ours = filters.gabor(torch.from_numpy(image), frequency, theta=0.6)
        assert max(relative_error(o, t) for o, t in zip(ours, theirs)) < 1e-5


def test_bank_broadcasts_and_each_filter_is_skimages():
    """Parameters of shapes (2, 1) and (3,) give a (2, 3) bank; each filter is the one-filter call,
    on the bank's common kernel size (zero taps add nothing)."""
    images = torch.rand(2, 19, 23, dtype=torch.float64)
    frequency = torch.tensor([[0.1], [0.3]], dtype=torch.float64)
    theta = torch.tensor([0.0, 0.7, 2.0], dtype=torch.float64)
    real, imag = filters.gabor(images, frequency, theta, sigma_y=torch.tensor(2.0, dtype=torch.float64),
                               mode="wrap")
    assert real.shape == imag.shape == (2, 2, 3, 19, 23)
    kernels = filters.gabor_kernel(frequency, theta, sigma_y=2.0)
    assert kernels.shape[:2] == (2, 3)
    for b in range(2):
        for i in range(2):
            for j in range(3):
                f, t = float(frequency[i, 0]), float(theta[j])
                r, m = skimage.filters.gabor(images[b].numpy(), f, t, sigma_y=2.0, mode="wrap")
                assert relative_error(real[b, i, j], r) < 1e-12 and relative_error(imag[b, i, j], m) < 1e-12
                k = skimage.filters.gabor_kernel(f, t, sigma_y=2.0)
                (ph, pw) = ((kernels.shape[-2] - k.shape[0]) // 2, (kernels.shape[-1] - k.shape[1]) // 2)
                assert relative_error(kernels[i, j], np.pad(k, ((ph, ph), (pw, pw)))) < 1e-12


@pytest.mark.parametrize("mode, numpy_mode", [("reflect", "symmetric"), ("mirror", "reflect"), ("wrap", "wrap"),
                                              ("nearest", "edge")])
def test_modes_are_numpys_padding_for_any_kernel_size(mode, numpy_mode):
    """Extensions many times longer than the image (a 67x67 kernel on 2x3, 1x5, 4x1 images): the
    periodic extensions scipy documents, equal to numpy.pad's, then a 'valid' convolution."""
    kernel = filters.gabor_kernel(0.05, 0.3)
    assert kernel.shape == (67, 67)
    for shape in ((2, 3), (1, 5), (4, 1)):
        image = np.random.default_rng(1).standard_normal(shape)
        padded = np.pad(image, 33, mode=numpy_mode)
        real, imag = filters.gabor(torch.from_numpy(image), 0.05, 0.3, mode=mode)
        for ours, part in ((real, kernel.real), (imag, kernel.imag)):
            np.testing.assert_allclose(ours.numpy(), signal.convolve(padded, part.numpy(), mode="valid"), atol=1e-12)


def test_half_precision_image_is_filtered_in_float32():
    image = torch.rand(2, 20, 20)
    for dtype in (torch.float16, torch.bfloat16):
        real, imag = filters.gabor(image.to(dtype), 0.2, 0.4)
        assert real.dtype == imag.dtype == dtype
        reference = filters.gabor(image.to(dtype).float(), 0.2, 0.4)
        torch.testing.assert_close(real.float(), reference[0].to(dtype).float())


def test_empty_batch():
    real, imag = filters.gabor(torch.rand(0, 3, 8, 9), 0.25, torch.tensor([0.0, 1.0]))
    assert real.shape == imag.shape == (0, 3, 2, 8, 9)


def test_methods_agree_on_a_bank():
    images = torch.rand(3, 30, 31, dtype=torch.float64)
    theta = torch.arange(4, dtype=torch.float64) * math.pi / 4
    direct = filters.gabor(images, 0.15, theta, method="direct", mode="reflect")
    fft = filters.gabor(images, 0.15, theta, method="fft", mode="reflect")
    for d, f in zip(direct, fft):
        torch.testing.assert_close(d, f, rtol=0, atol=1e-12)


# -- kornia: the modes it shares ----------------------------------------------------------------------
@pytest.mark.parametrize("ours, border", [("mirror", "reflect"), ("nearest", "replicate"), ("wrap", "circular"),
                                          ("constant", "constant")])
def test_modes_match_kornias_border_types(ours, border):
    """Our mode names are scipy's; kornia's are torch's. Where both exist they agree (kornia's
    ``behaviour="conv"`` flips the kernel as ndi.convolve does)."""
    image = torch.rand(2, 1, 40, 37, dtype=torch.float64)
    kernel = filters.gabor_kernel(0.2, 0.5, dtype=torch.complex128)
    real, imag = filters.gabor(image[:, 0], 0.2, 0.5, mode=ours)
    for part, response in ((kernel.real, real), (kernel.imag, imag)):
        theirs = kornia.filters.filter2d(image, part[None], border_type=border, behaviour="conv")[:, 0]
        torch.testing.assert_close(response, theirs, rtol=0, atol=1e-12)


# -- 3-D ----------------------------------------------------------------------------------------------
@settings(max_examples=scaled(60))
@given(frequency=floats(0.12, 0.45), theta=floats(-4.0, 4.0), phi=floats(-4.0, 4.0),
       sigma_x=st.none() | floats(0.5, 2.5), sigma_y=st.none() | floats(0.5, 2.5), offset=floats(-4.0, 4.0),
       mode=st.sampled_from(filters.MODES), method=st.sampled_from(filters.METHODS),
       shape=st.tuples(st.integers(1, 9), st.integers(1, 9), st.integers(1, 9)), seed=st.integers(0, 2**16))
def test_gabor3d_is_ndimage_convolve_with_the_kernel(frequency, theta, phi, sigma_x, sigma_y, offset, mode, method,
                                                       shape, seed):
    args = dict(frequency=frequency, theta=theta, phi=phi, sigma_x=sigma_x, sigma_y=sigma_y, offset=offset)
    volume = np.random.default_rng(seed).standard_normal(shape)
    kernel = filters.gabor_kernel3d(**args).numpy()
    assume(mode != "reflect" or scipy_reflect_is_sound(shape, kernel.shape))
    real, imag = filters.gabor3d(torch.from_numpy(volume), **args, mode=mode, cval=0.5, method=method)
    floor = 1e-3 * max(np.abs(volume).max(), 0.5) * np.abs(kernel).sum()  # as in the 2-D test
    assert relative_error(real, ndimage.convolve(volume, kernel.real, mode=mode, cval=0.5), floor) < 1e-11
    assert relative_error(imag, ndimage.convolve(volume, kernel.imag, mode=mode, cval=0.5), floor) < 1e-11


def test_gabor_kernel3d_formula_and_size_rule():
    """The written-out formula (numpy), the direction u = (cos phi cos theta, cos phi sin theta, sin phi)
    in (x, y, z), the per-axis size rule, and the 2-D kernel as its z = 0 slice when phi = 0."""
    f, theta, phi, sx, sy, off = 0.2, 0.4, 0.3, 2.0, 1.5, 0.7
    g = filters.gabor_kernel3d(f, theta, phi, sigma_x=sx, sigma_y=sy, offset=off).numpy()
    u = np.array([math.sin(phi), math.cos(phi) * math.sin(theta), math.cos(phi) * math.cos(theta)])  # z, y, x
    halves = [math.ceil(max(abs(3 * sx * c), 3 * sy * math.sqrt(1 - c * c), 1)) for c in u]
    assert g.shape == tuple(2 * h + 1 for h in halves)
    z, y, x = np.meshgrid(*(np.arange(-h, h + 1) for h in halves), indexing="ij")
    along = u[0] * z + u[1] * y + u[2] * x
    across2 = x**2 + y**2 + z**2 - along**2
    expected = np.exp(-along**2 / (2 * sx**2) - across2 / (2 * sy**2) + 1j * (2 * np.pi * f * along + off))
    expected /= (2 * np.pi) ** 1.5 * sx * sy**2
    assert np.abs(g - expected).max() < 1e-15
    flat = filters.gabor_kernel3d(f, theta, 0.0, sigma_x=sx, sigma_y=sy, offset=off).numpy()
    two_d = skimage.filters.gabor_kernel(f, theta, sigma_x=sx, sigma_y=sy, offset=off)
    assert flat.shape[1:] == two_d.shape
    np.testing.assert_allclose(flat[flat.shape[0] // 2] * math.sqrt(2 * math.pi) * sy, two_d, rtol=0, atol=1e-15)


def test_gabor_kernel3d_is_the_layers_bank_times_the_gaussian_normalisation():
    f, theta, phi, sx, sy, off = 0.3, 1.1, -0.4, 1.2, 2.0, 0.3
    g = filters.gabor_kernel3d(f, theta, phi, sigma_x=sx, sigma_y=sy, offset=off)
    a = 1 / ((2 * math.pi) ** 1.5 * sx * sy**2)
    psi = torch.tensor([off, off - math.pi / 2], dtype=torch.float64)
    bank = gabor_kernel3d(theta, phi, sx, 1 / f, sx / sy, psi, tuple(g.shape[-3:]), backend="reference")
    torch.testing.assert_close(g.real, a * bank[0], rtol=0, atol=1e-15)
    torch.testing.assert_close(g.imag, a * bank[1], rtol=0, atol=1e-15)


# -- OpenCV -------------------------------------------------------------------------------------------
@settings(max_examples=scaled(400))
@given(ksize=st.tuples(st.integers(0, 12), st.integers(0, 12)), sigma=floats(0.3, 5.0), theta=floats(-7.0, 7.0),
       lambd=floats(1.0, 15.0), gamma=floats(0.2, 3.0), psi=floats(-7.0, 7.0))
def test_get_gabor_kernel_equals_opencv(ksize, sigma, theta, lambd, gamma, psi):
    """Odd, even, square, rectangular and derived (0) sizes; float64 (cv2's default ktype) to a few ulps
    of the largest phase in the kernel (both round ``2 pi x'/lambd + psi`` before its cosine: at
    lambd = 1.125 on a 97 x 53 kernel the phase reaches 300 rad, one ulp of which is 6e-14)."""
    theirs = cv2.getGaborKernel(ksize, sigma, theta, lambd, gamma, psi)
    ours = filters.get_gabor_kernel(ksize, sigma, theta, lambd, gamma, psi)
    assert theirs.dtype == np.float64 and ours.dtype == torch.float64 and ours.shape == theirs.shape
    phase = 2 * np.pi * np.hypot(*(np.array(theirs.shape) - 1) / 2) / lambd + abs(psi)
    assert np.abs(ours.numpy() - theirs).max() < 4 * np.finfo(np.float64).eps * max(phase, 2 * np.pi)


def test_get_gabor_kernel_float32_and_default_psi():
    theirs = cv2.getGaborKernel((7, 5), 2.0, 0.3, 5.0, 0.5, ktype=cv2.CV_32F)
    ours = filters.get_gabor_kernel((7, 5), 2.0, 0.3, 5.0, 0.5, dtype=torch.float32)
    assert ours.dtype == torch.float32
    np.testing.assert_allclose(ours.numpy(), theirs, rtol=0, atol=1e-7)


# -- gradients ----------------------------------------------------------------------------------------
def _leaf(value):
    return torch.tensor(value, dtype=torch.float64, requires_grad=True)


@settings(max_examples=scaled(60))
@given(frequency=floats(0.25, 0.45), theta=floats(-4.0, 4.0), bandwidth=floats(1.0, 2.5), offset=floats(-4.0, 4.0),
       cval=floats(-1.0, 1.0), mode=st.sampled_from(filters.MODES), method=st.sampled_from(("direct", "fft")),
       shape=st.tuples(st.integers(1, 6), st.integers(1, 6)), seed=st.integers(0, 2**16))
def test_gabor_gradcheck(frequency, theta, bandwidth, offset, cval, mode, method, shape, seed, gradient_cases):
    """Every float argument, reverse and forward mode, against numerical derivatives (float64);
    ``bandwidth`` sets ``sigma_x`` and ``sigma_y``."""
    image = torch.from_numpy(np.random.default_rng(seed).standard_normal(shape)).requires_grad_()
    inputs = (image, *map(_leaf, (frequency, theta, bandwidth, offset, cval)))

    def f(image, frequency, theta, bandwidth, offset, cval):
        return filters.gabor(image, frequency, theta, bandwidth, offset=offset, mode=mode, cval=cval, method=method)

    assert torch.autograd.gradcheck(f, inputs, check_forward_ad=True)
    gradient_cases.add()


@settings(max_examples=scaled(30))
@given(frequency=floats(0.25, 0.45), theta=floats(-4.0, 4.0), sigma_x=floats(0.5, 1.5), sigma_y=floats(0.5, 1.5),
       offset=floats(-4.0, 4.0), phi=floats(-4.0, 4.0), mode=st.sampled_from(filters.MODES),
       shape=st.tuples(st.integers(1, 4), st.integers(1, 4), st.integers(1, 4)), seed=st.integers(0, 2**16))
def test_gabor3d_gradcheck(frequency, theta, sigma_x, sigma_y, offset, phi, mode, shape, seed, gradient_cases):
    volume = torch.from_numpy(np.random.default_rng(seed).standard_normal(shape)).requires_grad_()
    inputs = (volume, *map(_leaf, (frequency, theta, phi, sigma_x, sigma_y, offset)))

    def f(volume, frequency, theta, phi, sigma_x, sigma_y, offset):
        return filters.gabor3d(volume, frequency, theta, phi, sigma_x=sigma_x, sigma_y=sigma_y, n_stds=1.5,
                               offset=offset, mode=mode)

    assert torch.autograd.gradcheck(f, inputs, check_forward_ad=True)
    gradient_cases.add()


@settings(max_examples=scaled(40))
@given(args=skimage_args.filter(lambda a: a["frequency"] > 0.15), ksize=st.tuples(st.integers(1, 7), st.integers(1, 7)))
def test_kernel_gradcheck(args, ksize, gradient_cases):
    """gabor_kernel (sigma_x, sigma_y given or from bandwidth) and get_gabor_kernel, both modes.
    get_gabor_kernel's size is fixed; gabor_kernel's follows skimage's size rule, which steps where
    n_stds * sigma * |cos| or |sin| is an integer (no derivative there, and gradcheck's perturbation
    would change the shape), so the drawn arguments keep clear of those points."""
    n_stds = min(args["n_stds"], 2)
    assume(all(abs(h - round(h)) > 1e-3 for h in skimage_half_sizes(**{**args, "n_stds": n_stds})))
    names = [k for k in ("frequency", "theta", "bandwidth", "sigma_x", "sigma_y", "offset") if args[k] is not None]
    inputs = tuple(_leaf(args[k]) for k in names)

    def kernel(*values):
        return torch.view_as_real(filters.gabor_kernel(**dict(zip(names, values)), n_stds=n_stds))

    assert torch.autograd.gradcheck(kernel, inputs, check_forward_ad=True)
    cv_inputs = tuple(_leaf(v) for v in (1.5, args["theta"], 1 / args["frequency"], 0.8, args["offset"]))
    assert torch.autograd.gradcheck(lambda *v: filters.get_gabor_kernel(ksize, *v), cv_inputs,
                                    check_forward_ad=True)
    gradient_cases.add(2)


# -- conversions --------------------------------------------------------------------------------------
@settings(max_examples=scaled(200))
@given(args=skimage_args)
# found by hypothesis in CI: n_stds * sigma_y = 1 exactly, an integer of skimage's size rule
@example(args={"frequency": 0.25, "theta": 0.0, "bandwidth": 0.3125, "sigma_x": None, "sigma_y": 0.4,
               "n_stds": 2.5, "offset": 0.0})
def test_from_skimage_gives_the_flipped_kernel_and_back(args):
    """The layer's kernel with from_skimage's parameters is skimage's real kernel flipped (a
    correlation with it is skimage's convolution); to_skimage inverts from_skimage."""
    n_stds = args.pop("n_stds")
    kernel = skimage.filters.gabor_kernel(**args, n_stds=n_stds)
    p = filters.from_skimage(**args)
    ours = p["amplitude"] * gabor_kernel2d(*(p[k] for k in ("theta", "sigma", "lambd", "gamma", "psi")),
                                           kernel.shape, backend="reference")
    np.testing.assert_allclose(ours.numpy(), kernel.real[::-1, ::-1], rtol=0, atol=1e-13 * np.abs(kernel).max())
    back = {k: float(v) for k, v in filters.to_skimage(*(p[k] for k in ("theta", "sigma", "lambd", "gamma",
                                                                         "psi"))).items()}
    again = skimage.filters.gabor_kernel(**back, n_stds=n_stds)
    if again.shape != kernel.shape:
        # skimage's size is the ceiling of n_stds * sigma * |cos| or |sin|: where that is an integer, the
        # round trip's last-bit differences change the size by one ring. Then compare the common centre.
        assert any(abs(h - round(h)) < 1e-9 for h in skimage_half_sizes(**args, n_stds=n_stds))
        rows, cols = min(again.shape[0], kernel.shape[0]), min(again.shape[1], kernel.shape[1])
        again, kernel = (k[(k.shape[0] - rows) // 2:][:rows, (k.shape[1] - cols) // 2:][:, :cols]
                         for k in (again, kernel))
    np.testing.assert_allclose(again, kernel, rtol=0, atol=1e-13 * np.abs(kernel).max())




@settings(max_examples=scaled(200))
@given(sigma=floats(0.3, 5.0), theta=floats(-7.0, 7.0), lambd=floats(1.0, 15.0), gamma=floats(0.2, 3.0),
       psi=floats(-7.0, 7.0), ksize=st.tuples(st.integers(0, 6), st.integers(0, 6)).map(lambda t: (2 * t[0] + 1,
                                                                                                 2 * t[1] + 1)))
def test_from_opencv_gives_opencvs_kernel_and_back(sigma, theta, lambd, gamma, psi, ksize):
    theirs = cv2.getGaborKernel(ksize, sigma, theta, lambd, gamma, psi)
    p = filters.from_opencv(sigma, theta, lambd, gamma, psi)
    ours = p["amplitude"] * gabor_kernel2d(*(p[k] for k in ("theta", "sigma", "lambd", "gamma", "psi")),
                                           theirs.shape, backend="reference")
    np.testing.assert_allclose(ours.numpy(), theirs, rtol=0, atol=1e-14)
    back = filters.to_opencv(*(p[k] for k in ("theta", "sigma", "lambd", "gamma", "psi")))
    np.testing.assert_allclose(cv2.getGaborKernel(ksize, **{k: float(v) for k, v in back.items()}), theirs,
                               rtol=0, atol=1e-14)


def test_a_layer_seeded_from_skimage_responds_as_skimage():
    """A GaborConv2d started from skimage's parameters, on skimage's kernel size: its response is
    skimage.filters.gabor's real part (torch's reflect padding = scipy's mirror), and minus its
    quadrature odd channel is the imaginary part. (A layer's kernels share one size, while skimage
    truncates each filter at its own n_stds box: a bank of orientations is one layer per size.)"""
    image = torch.rand(1, 1, 40, 44, dtype=torch.float64)
    for theta in (0.0, 0.5, math.pi / 4, 2.0):
        p = filters.from_skimage(frequency=0.2, theta=theta, sigma_y=3.0, offset=0.4)
        size = tuple(filters.gabor_kernel(0.2, theta, sigma_y=3.0).shape)
        layer = GaborConv2d(1, 1, size, padding="same", padding_mode="reflect", bias=False, dtype=torch.float64,
                            output="quadrature", **p)
        with torch.no_grad():
            even, odd = layer(image)[0]
        real, imag = skimage.filters.gabor(image[0, 0].numpy(), 0.2, theta, sigma_y=3.0, offset=0.4, mode="mirror")
        assert relative_error(even, real) < 1e-10
        assert relative_error(-odd, imag) < 1e-10


def test_a_layer_seeded_from_opencv_responds_as_filter2d():
    args = dict(sigma=2.0, theta=0.7, lambd=6.0, gamma=0.6, psi=0.3)
    kernel = cv2.getGaborKernel((11, 9), **args)
    p = filters.from_opencv(**args)
    layer = GaborConv2d(1, 1, kernel.shape, padding="same", padding_mode="reflect", bias=False, dtype=torch.float64,
                        **p)
    image = np.random.default_rng(0).random((30, 33))
    theirs = cv2.filter2D(image, -1, kernel, borderType=cv2.BORDER_REFLECT_101)
    with torch.no_grad():
        ours = layer(torch.from_numpy(image)[None, None])[0, 0]
    assert relative_error(ours, theirs) < 1e-12


def test_conversions_are_differentiable_and_keep_tensor_dtypes():
    frequency = torch.tensor([0.1, 0.2], requires_grad=True)
    p = filters.from_skimage(frequency, bandwidth=1.5)
    assert all(v.dtype == torch.float32 and v.shape == (2,) for v in p.values())
    p["sigma"].sum().backward()
    assert frequency.grad is not None and bool((frequency.grad < 0).all())  # sigma = c_b / f
    assert filters.to_opencv(0.1, 1.0, 4.0, 1.0, 0.0)["psi"].dtype == torch.float64


def test_numpy_images_and_parameters_are_taken_as_tensors():
    # skimage's users hold numpy arrays: the same call, with the import changed, gives skimage's result
    image = np.random.default_rng(0).random((20, 24))
    thetas = np.array([0.0, 0.7])
    real, imag = filters.gabor(image, 0.2, theta=thetas)
    assert real.shape == (2, 20, 24) and real.dtype == torch.float64
    for i, theta in enumerate(thetas):
        want_real, want_imag = skimage.filters.gabor(image, 0.2, theta=theta)
        assert relative_error(real[i], want_real) < 1e-11 and relative_error(imag[i], want_imag) < 1e-11
    volume = np.random.default_rng(1).random((6, 7, 8)).astype(np.float32)
    assert filters.gabor3d(volume, 0.3)[0].dtype == torch.float32


# -- errors -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("call, error, words", [
    (lambda: filters.gabor([[0.0] * 8] * 8, 0.2), TypeError, "image must be a torch.Tensor"),
    (lambda: filters.gabor(np.zeros((8, 8), dtype=np.uint8), 0.2), TypeError, "image must be a floating-point"),
    (lambda: filters.gabor(torch.zeros(8, 8, dtype=torch.uint8), 0.2), TypeError, "image must be a floating-point"),
    (lambda: filters.gabor(torch.zeros(8), 0.2), ValueError, "image must have shape (..., H, W)"),
    (lambda: filters.gabor(torch.zeros(8, 0), 0.2), ValueError, "non-empty"),
    (lambda: filters.gabor3d(torch.zeros(8, 8), 0.2), ValueError, "volume must have shape (..., D, H, W)"),
    (lambda: filters.gabor(torch.zeros(8, 8), 0.2, mode="symmetric"), ValueError, "mode must be one of"),
    (lambda: filters.gabor(torch.zeros(8, 8), 0.2, method="fast"), ValueError, "method must be one of"),
    (lambda: filters.gabor(torch.zeros(8, 8), 0.0), ValueError, "frequency must be > 0.0"),
    (lambda: filters.gabor(torch.zeros(8, 8), -0.1), ValueError, "frequency must be > 0.0"),
    (lambda: filters.gabor(torch.zeros(8, 8), 0.2, bandwidth=0), ValueError, "bandwidth must be > 0.0"),
    (lambda: filters.gabor(torch.zeros(8, 8), 0.2, sigma_x=-1), ValueError, "sigma_x must be > 0.0"),
    (lambda: filters.gabor(torch.zeros(8, 8), 0.2, theta=math.nan), ValueError, "theta must be finite"),
    (lambda: filters.gabor(torch.zeros(8, 8), 0.2, n_stds=-1), ValueError, "n_stds must be >= 0.0"),
    (lambda: filters.gabor(torch.zeros(8, 8), 0.2, n_stds=torch.tensor(3.0)), TypeError, "n_stds must be a float"),
    (lambda: filters.gabor(torch.zeros(8, 8), 0.2, cval=math.inf), ValueError, "cval must be finite"),
    (lambda: filters.gabor(torch.zeros(8, 8), 0.2, cval=torch.zeros(2)), ValueError, "cval must be a number or a 0-d"),
    (lambda: filters.gabor(torch.zeros(8, 8), torch.tensor([1, 2])), TypeError, "frequency must be a floating-point"),
    (lambda: filters.gabor(torch.zeros(8, 8), torch.ones(2) * 0.2, torch.ones(3)), ValueError, "broadcastable"),
    (lambda: filters.gabor_kernel(0.2, dtype=torch.float64), TypeError, "dtype must be a complex torch.dtype"),
    (lambda: filters.gabor_kernel("0.2"), TypeError, "frequency must be a float"),
    (lambda: filters.get_gabor_kernel((3, -1), 2.0, 0.0, 4.0, 1.0), ValueError, "ksize must be >= 0"),
    (lambda: filters.get_gabor_kernel(3.5, 2.0, 0.0, 4.0, 1.0), TypeError, "ksize must be an int or a pair"),
    (lambda: filters.get_gabor_kernel(3, 2.0, 0.0, 4.0, 0.0), ValueError, "gamma must be > 0.0"),
    (lambda: filters.get_gabor_kernel(3, 2.0, 0.0, 4.0, 1.0, dtype=torch.int32), TypeError, "dtype must be a float"),
    (lambda: filters.from_skimage(0.2, sigma_y=0.0), ValueError, "sigma_y must be > 0.0"),
    (lambda: filters.to_opencv(0.0, 1.0, -4.0, 1.0, 0.0), ValueError, "lambd must be > 0.0"),
])
def test_bad_input_is_named(call, error, words):
    with pytest.raises(error, match=None) as info:
        call()
    assert words in str(info.value)


# -- benchmark ----------------------------------------------------------------------------------------
def test_benchmark_quick_runs():
    result = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "bench_filters.py"), "--quick"],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    assert all(word in result.stdout for word in ("one image", "batch", "crossover", "identical results: True"))
