"""Bad input at every public door gets a clear error naming the argument, echoing the value and
stating what is allowed (``TypeError`` for a wrong type, ``ValueError`` for a wrong value); and the
edge cases behind some of them (complex input, tiny or huge targets, half-precision banks, empty
weights) do the right thing instead of failing deep inside torch, numpy or scipy.
"""
from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch

from gaborlayer import (
    GaborConv2d,
    _checks,
    envelope_extent,
    fit_kernel,
    fit_response,
    gabor_conv1d,
    gabor_conv2d,
    gabor_conv3d,
    gabor_kernel1d,
    gabor_kernel2d,
    gabor_kernel3d,
    suggest_kernel_size,
)
from gaborlayer.fit import GaborFitWarning
from gaborlayer.init import gabor_
from gaborlayer.optim import param_groups

D = torch.float64

# One call per dimension: (the convolution, its parameters for C_out x C_in // groups filters).
CONVS = {
    1: (gabor_conv1d, lambda c_out, c_in: (torch.full((c_out, c_in), 2.0), 5.0, 0.0)),
    2: (gabor_conv2d, lambda c_out, c_in: (torch.zeros(c_out, c_in), 2.0, 5.0, 1.0, 0.0)),
    3: (gabor_conv3d, lambda c_out, c_in: (torch.zeros(c_out, c_in), 0.3, 2.0, 5.0, 1.0, 0.0)),
}


def _input(dims: int, channels: int = 3, dtype=torch.float32) -> torch.Tensor:
    return torch.randn(2, channels, *(9,) * dims).to(dtype)


# -- 1. input must be a floating-point or complex tensor -----------------------------------------------
@pytest.mark.parametrize("dims", [1, 2, 3])
@pytest.mark.parametrize("bad, error, match", [
    ("img", TypeError, r"input must be a torch\.Tensor, got str"),
    ([[1.0, 2.0]], TypeError, r"input must be a torch\.Tensor, got list"),
    (torch.int64, TypeError, r"input must be a floating-point or complex tensor, got dtype torch\.int64"),
    (torch.uint8, TypeError, r"input must be a floating-point or complex tensor, got dtype torch\.uint8"),
    (torch.bool, TypeError, r"input must be a floating-point or complex tensor, got dtype torch\.bool"),
])
def test_conv_input_must_be_a_floating_or_complex_tensor(dims, bad, error, match):
    conv, params = CONVS[dims]
    x = _input(dims).to(bad) if isinstance(bad, torch.dtype) else bad
    with pytest.raises(error, match=match):
        conv(x, *params(4, 3), 3)


# -- 2. groups must divide the input channels ------------------------------------------------------------
@pytest.mark.parametrize("dims", [1, 2, 3])
def test_conv_groups_must_divide_in_channels(dims):
    conv, params = CONVS[dims]
    with pytest.raises(ValueError, match=r"in_channels \(3\) must be divisible by groups \(2\)"):
        conv(_input(dims, 3), *params(4, 1), 3, groups=2)


@pytest.mark.parametrize("dims", [1, 2, 3])
def test_conv_groups_must_divide_out_channels(dims):
    conv, params = CONVS[dims]
    with pytest.raises(ValueError, match=r"out_channels \(3\) must be divisible by groups \(2\)"):
        conv(_input(dims, 4), *params(3, 2), 3, groups=2)


# -- 3. complex input: every output mode is the response of the complex filter, by linearity ------------
@pytest.mark.parametrize("dims", [1, 2, 3])
@pytest.mark.parametrize("output", ["real", "complex", "quadrature", "magnitude"])
def test_complex_input_is_supported_by_linearity(dims, output):
    conv, params = CONVS[dims]
    re, im = _input(dims, 2, D), _input(dims, 2, D)
    bias = torch.tensor([0.5, -1.0, 2.0, 0.25], dtype=D)
    p = [v.to(D) if isinstance(v, torch.Tensor) else v for v in params(4, 2)]
    z = conv(torch.complex(re, im), *p, 3, bias=bias, padding=1, output=output)
    if output == "magnitude":
        c = conv(torch.complex(re, im), *p, 3, padding=1, output="complex")
        expected = c.abs() + bias.reshape(-1, *(1,) * dims)
    else:
        # the bias is real: it is added to the even (real) response only, once
        lo = conv(re, *p, 3, bias=bias, padding=1, output=output)
        expected = lo + 1j * conv(im, *p, 3, padding=1, output=output)
    assert z.dtype == expected.dtype
    torch.testing.assert_close(z, expected)


def test_complex_input_magnitude_has_finite_gradient_at_zero():
    x = torch.zeros(1, 1, 7, 7, dtype=torch.complex128, requires_grad=True)
    y = gabor_conv2d(x, torch.zeros(2, 1, dtype=D), 2.0, 5.0, 1.0, 0.0, 3, output="magnitude")
    y.sum().backward()
    assert bool(torch.isfinite(torch.view_as_real(x.grad)).all())


# -- 4. dtype must be a torch.dtype ----------------------------------------------------------------------
@pytest.mark.parametrize("dtype", ["float32", np.float32, 32])
def test_layer_dtype_must_be_a_torch_dtype(dtype):
    with pytest.raises(TypeError, match=r"dtype must be a torch\.dtype \(a floating-point one, e\.g\. "
                                        r"torch\.float32\), got .*\((str|type|int)\)"):
        GaborConv2d(3, 4, 5, dtype=dtype)


def test_floating_dtype_check():
    _checks.floating_dtype(None)
    _checks.floating_dtype(torch.bfloat16)
    with pytest.raises(TypeError, match=r"dtype must be a torch\.dtype .*got 'float32' \(str\)"):
        _checks.floating_dtype("float32")
    with pytest.raises(TypeError, match=r"w must be a floating-point dtype, got torch\.int32"):
        _checks.floating_dtype(torch.int32, "w")


# -- 5. a Python number that rounds to a bad value in the parameters' dtype ------------------------------
def test_positive_number_that_underflows_the_dtype_is_reported_as_given():
    with pytest.raises(ValueError, match=r"sigma = 1e-300 underflows torch\.float32 \(rounds to 0\.0\); sigma must be "
                                         r"> 0\.0"):
        gabor_kernel2d(0.0, 1e-300, 4.0, 1.0, 0.0, 5)
    with pytest.raises(ValueError, match=r"lambd = 1e-50 underflows torch\.float32"):
        gabor_kernel1d(1.0, 1e-50, 0.0, 5)
    # in float64 parameters the same value is representable (and positive): no error
    assert torch.isfinite(gabor_kernel2d(torch.tensor(0.0, dtype=D), 1e-300, 4.0, 1.0, 0.0, 5)).all()
    # an angle that rounds to 0 is just rounded; one that overflows is named as given
    gabor_kernel2d(1e-300, 1.0, 4.0, 1.0, 0.0, 5)
    with pytest.raises(ValueError, match=r"theta = 1e\+300 overflows torch\.float32 \(rounds to inf\); theta must be "
                                         r"finite"):
        gabor_kernel3d(1e300, 0.0, 1.0, 4.0, 1.0, 0.0, 5)


# -- 6. fitting targets of any finite scale ---------------------------------------------------------------
TRUTH = dict(theta=0.7, sigma=2.5, lambd=6.0, gamma=0.8, psi=0.4)


@pytest.fixture(scope="module")
def unit_fit():
    kernel = gabor_kernel2d(*(torch.tensor(v, dtype=D) for v in TRUTH.values()), 15)
    return kernel, fit_kernel(kernel, amplitude=True)


NAMES = ("theta", "sigma", "lambd", "gamma", "psi")


@pytest.mark.parametrize("exponent", [-1000, -700, -100, 100, 700, 1000])
def test_fit_kernel_with_amplitude_is_exactly_equivariant_under_powers_of_two(unit_fit, exponent):
    kernel, base = unit_fit
    fit = fit_kernel(math.ldexp(1.0, exponent) * kernel, amplitude=True)
    for name in (*NAMES, "loss"):
        assert torch.equal(getattr(fit, name), getattr(base, name)), name
    assert fit.amplitude.item() == math.ldexp(base.amplitude.item(), exponent)


# Scales that are not powers of two perturb the target by rounding, which moves the fit's end point
# within its precision on an exact target: the unscaled fit is itself 1.8e-8 from the truth, and
# before the change fits at ordinary scales (1e5 * K) differed from it by as much (1.8e-8).
@pytest.mark.parametrize("scale", [1e-200, 1e-30, 1e30, -1e200])
def test_fit_kernel_with_amplitude_fits_any_scale(unit_fit, scale):
    kernel, base = unit_fit
    fit = fit_kernel(scale * kernel, amplitude=True)
    for name in ("theta", "sigma", "lambd", "gamma"):
        assert abs(getattr(fit, name).item() - getattr(base, name).item()) < 1e-7, name
        assert abs(getattr(fit, name).item() - TRUTH[name]) < 1e-7, name
    # a negative gain is psi + pi
    shift = math.pi if scale < 0 else 0.0
    assert abs(math.remainder(fit.psi.item() - base.psi.item() - shift, 2 * math.pi)) < 1e-7
    assert fit.amplitude.item() / abs(scale) == pytest.approx(base.amplitude.item(), rel=1e-7)
    assert fit.loss.item() < 1e-12


def test_fit_response_with_amplitude_fits_any_scale(unit_fit):
    kernel, _ = unit_fit
    x = torch.rand(1, 1, 30, 30, generator=torch.Generator().manual_seed(0), dtype=D)
    y = torch.nn.functional.conv2d(x, kernel[None, None], padding="same")
    base = fit_response(x, y, 15, amplitude=True)
    fit = fit_response(1e-150 * x, 1e150 * y, 15, amplitude=True)
    for name in NAMES:
        assert abs(getattr(fit, name).item() - getattr(base, name).item()) < 1e-7, name
    assert fit.amplitude.item() / 1e300 == pytest.approx(base.amplitude.item(), rel=1e-7)


def test_fit_kernel_without_amplitude_says_why_a_tiny_target_cannot_fit(unit_fit):
    kernel, _ = unit_fit
    with pytest.raises(ValueError, match=r"kernel 0 \(max \|entry\| \S+e-20\d\) is too small .*use amplitude=True"
                       ) as info:
        fit_kernel(1e-200 * kernel)
    assert "all zeros" not in str(info.value)
    with pytest.raises(ValueError, match=r"kernel 1 .*too large.*use amplitude=True"):
        fit_kernel(torch.stack([kernel, 1e160 * kernel]))  # its squared norm overflows float64


# Without a gain the filter peaks at 1: a target of another scale runs (the search scores unit-norm
# targets; it used to overflow float32 above ~1e19) and is not explained, which the fit says.
@pytest.mark.parametrize("scale", [1e-30, 1e-3, 1e3, 1e30])
def test_fit_kernel_without_amplitude_runs_at_any_scale_and_warns_why(unit_fit, scale):
    kernel, _ = unit_fit
    with pytest.warns(GaborFitWarning, match=r"explains .* of the target's energy: without a gain the filter peaks "
                                             r"at 1 but the kernel peaks at .*use amplitude=True"):
        fit = fit_kernel(scale * kernel)
    assert bool(torch.isfinite(torch.stack(list(fit.params().values()))).all())


def test_poor_fit_warns_and_says_why():
    from skimage.filters import gabor_kernel

    small = gabor_kernel(0.1).real  # peak ~0.005: a unit-peak filter cannot match it
    with pytest.warns(GaborFitWarning, match=r"explains \d+\.\d% .*peaks at 0.00504: use amplitude=True"):
        fit_kernel(small)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # with a gain it fits: no warning
        fit = fit_kernel(small, amplitude=True)
    assert fit.loss.item() < 1e-3
    noise = torch.randn(2, 15, 15, generator=torch.Generator().manual_seed(0), dtype=D)
    with pytest.warns(GaborFitWarning, match=r"target 0; 2 of 2 explain less than 50%.*not close to a Gabor filter"):
        fit_kernel(noise, amplitude=True)
    x = torch.rand(1, 1, 32, 32, generator=torch.Generator().manual_seed(1), dtype=D)
    y = torch.randn(1, 1, 32, 32, generator=torch.Generator().manual_seed(2), dtype=D)
    with pytest.warns(GaborFitWarning, match=r"fit_response: .*the least-squares kernel from x to y is not close"):
        fit_response(x, y, 7, amplitude=True)


def test_fitting_takes_numpy_arrays_and_refuses_non_finite_ones(unit_fit):
    kernel, base = unit_fit
    fit = fit_kernel(kernel.numpy(), amplitude=True)
    for name in (*NAMES, "amplitude", "loss"):
        assert torch.equal(getattr(fit, name), getattr(base, name)), name
    x = torch.rand(1, 1, 30, 30, generator=torch.Generator().manual_seed(0), dtype=D)
    y = torch.nn.functional.conv2d(x, kernel[None, None], padding="same")
    from_numpy = fit_response(x.numpy(), y.numpy(), 15)
    assert from_numpy.loss.item() < 1e-10 and abs(from_numpy.theta.item() - TRUTH["theta"]) < 1e-6
    bad = kernel.numpy().copy()
    bad[3, 4] = np.nan
    with pytest.raises(ValueError, match="kernel must be finite"):
        fit_kernel(bad)
    with pytest.raises(ValueError, match="x must be finite"):
        fit_response(np.where(x.numpy() > 0.5, np.inf, x.numpy()), y.numpy(), 15)
    with pytest.raises(ValueError, match="y must be finite"):
        fit_response(x, torch.full_like(y, math.nan), 15)


def test_fit_response_rejects_all_zero_y_but_not_tiny_y(unit_fit):
    kernel, _ = unit_fit
    x = torch.rand(1, 1, 20, 20, generator=torch.Generator().manual_seed(1), dtype=D)
    y = torch.nn.functional.conv2d(x, kernel[None, None], padding="same")
    fit = fit_response(1e-200 * x, 1e-200 * y, 15)  # the same problem, exactly
    assert fit.loss.item() < 1e-9
    with pytest.raises(ValueError, match="y must not be all zeros"):
        fit_response(x, torch.zeros_like(y), 15)


# -- 7. gabor_ on an empty weight is a no-op, as in torch.nn.init ------------------------------------------
@pytest.mark.parametrize("shape", [(0, 3, 5, 5), (4, 0, 5, 5), (4, 3, 0, 5)])
def test_gabor_init_of_empty_tensor_warns_and_returns_it(shape):
    w = torch.empty(shape)
    with pytest.warns(UserWarning, match="Initializing zero-element tensors is a no-op"):
        assert gabor_(w) is w


def test_gabor_init_of_empty_tensor_still_checks_its_arguments():
    with pytest.raises(ValueError, match=r"sigma must be > 0\.0, got -1\.0"):
        gabor_(torch.empty(0, 3, 5, 5), sigma=-1.0)


# -- 8. envelope_extent / suggest_kernel_size ---------------------------------------------------------------
@pytest.mark.parametrize("fn", [envelope_extent, suggest_kernel_size])
@pytest.mark.parametrize("args, kwargs, error, match", [
    ((0.0, 2.0, 0.0), {}, ValueError, r"gamma must be > 0\.0, got 0\.0"),
    ((0.0, -2.0, 1.0), {}, ValueError, r"sigma must be > 0\.0, got -2\.0"),
    ((math.nan, 2.0, 1.0), {}, ValueError, r"theta must be finite, got nan"),
    ((0.0, torch.tensor([2.0, math.inf]), 1.0), {}, ValueError, r"sigma must be finite, got inf"),
    ((0.0, "2", 1.0), {}, TypeError, r"sigma must be a float or a floating-point tensor, got str"),
    ((0.0, torch.tensor([2]), 1.0), {}, TypeError, r"sigma must be a floating-point tensor, got dtype torch\.int64"),
    ((0.0, 2.0, 1.0), {"n_sigma": 0.0}, ValueError, r"n_sigma must be a positive number, got 0\.0"),
    ((0.0, 2.0, 1.0), {"n_sigma": math.inf}, ValueError, r"n_sigma must be a finite positive number, got inf"),
    ((0.0, 2.0, 1.0), {"n_sigma": "3"}, TypeError, r"n_sigma must be a float, got str"),
    ((torch.zeros(3), torch.ones(4), 1.0), {}, ValueError, r"broadcastable shapes, got theta=\(3,\), sigma=\(4,\)"),
])
def test_extent_bad_input(fn, args, kwargs, error, match):
    with pytest.raises(error, match=match):
        fn(*args, **kwargs)


def test_suggest_kernel_size_needs_a_filter():
    with pytest.raises(ValueError, match=r"suggest_kernel_size needs at least one filter, got shape \(0,\)"):
        suggest_kernel_size(torch.zeros(0), 2.0, 1.0)
    with pytest.raises(ValueError, match=r"at least one filter"):
        suggest_kernel_size(None, torch.zeros(0, 3), 1.0)
    assert envelope_extent(torch.zeros(0), 2.0, 1.0)[0].shape == (0,)  # a map: empty in, empty out


# -- 9. seed must be a non-negative int ---------------------------------------------------------------------
@pytest.mark.parametrize("seed, error, match", [
    (-1, ValueError, r"seed must be a non-negative int, got -1"),
    ("a", TypeError, r"seed must be an int, got 'a'"),
    (1.5, TypeError, r"seed must be an int, got 1\.5"),
    (True, TypeError, r"seed must be an int, got True"),
])
def test_fit_seed(unit_fit, seed, error, match):
    kernel, _ = unit_fit
    with pytest.raises(error, match=match):
        fit_kernel(kernel, seed=seed)
    x = torch.rand(1, 1, 20, 20)
    with pytest.raises(error, match=match):
        fit_response(x, x, 5, seed=seed)


# -- 10. fit_response: an empty batch, and per-target values for its one target -------------------------------
def test_fit_response_empty_batch():
    x = torch.rand(0, 1, 20, 20)
    with pytest.raises(ValueError, match=r"x and y must hold at least one image, got B = 0"):
        fit_response(x, x, 5)


@pytest.mark.parametrize("kwargs, match", [
    ({"init": {"theta": torch.zeros(3)}}, r"init\['theta'\] must be a single value \(fit_response fits one filter\), "
                                          r"got 3 values"),
    ({"fixed": {"sigma": torch.ones(2)}}, r"fixed\['sigma'\] must be a single value .*got 2 values"),
    ({"init": {"theta": torch.zeros(0)}}, r"init\['theta'\] must be a single value .*got 0 values"),
])
def test_fit_response_init_and_fixed_take_one_value(kwargs, match):
    x = torch.rand(1, 1, 20, 20)
    with pytest.raises(ValueError, match=match) as info:
        fit_response(x, x, 5, **kwargs)
    assert "None" not in str(info.value)


# -- 11. booleans are bools --------------------------------------------------------------------------------
@pytest.mark.parametrize("call", [
    lambda z: gabor_kernel2d(0.0, 2.0, 5.0, 1.0, 0.0, 5, zero_mean=z),
    lambda z: gabor_kernel1d(2.0, 5.0, 0.0, 5, zero_mean=z),
    lambda z: gabor_kernel3d(0.0, 0.0, 2.0, 5.0, 1.0, 0.0, 5, zero_mean=z),
    lambda z: gabor_conv1d(_input(1), torch.full((2, 3), 2.0), 5.0, 0.0, 3, zero_mean=z),
    lambda z: gabor_conv2d(_input(2), torch.zeros(2, 3), 2.0, 5.0, 1.0, 0.0, 3, zero_mean=z),
    lambda z: gabor_conv3d(_input(3), torch.zeros(2, 3), 0.0, 2.0, 5.0, 1.0, 0.0, 3, zero_mean=z),
], ids=["kernel2d", "kernel1d", "kernel3d", "conv1d", "conv2d", "conv3d"])
def test_zero_mean_must_be_a_bool(call):
    with pytest.raises(TypeError, match=r"zero_mean must be a bool \(True or False\), got 'no'"):
        call("no")
    with pytest.raises(TypeError, match=r"zero_mean must be a bool .*got 1"):
        call(1)
    assert call(np.bool_(True)).shape == call(True).shape


def test_amplitude_must_be_a_bool(unit_fit):
    kernel, _ = unit_fit
    with pytest.raises(TypeError, match=r"amplitude must be a bool \(True or False\), got 'no'"):
        fit_kernel(kernel, amplitude="no")
    x = torch.rand(1, 1, 20, 20)
    with pytest.raises(TypeError, match=r"amplitude must be a bool .*got 1"):
        fit_response(x, x, 5, amplitude=1)


def test_boolean_check():
    assert _checks.boolean(True, "b") is True
    assert _checks.boolean(np.bool_(False), "b") is False
    for bad in ("yes", 1, 0.0, None, torch.tensor(True)):
        with pytest.raises(TypeError, match=r"b must be a bool"):
            _checks.boolean(bad, "b")


# -- 12. learning rates and gains are finite --------------------------------------------------------------
@pytest.mark.parametrize("kwargs, error, match", [
    ({"lr": math.inf}, ValueError, r"lr must be a finite positive number, got inf"),
    ({"lr": math.nan}, ValueError, r"lr must be a finite positive number, got nan"),
    ({"lr": -1.0}, ValueError, r"lr must be a positive number, got -1\.0"),
    ({"lr": "0.1"}, TypeError, r"lr must be a float, got str"),
    ({"lr": 1.0, "scale": math.inf}, ValueError, r"scale must be a finite positive number, got inf"),
    ({"lr": 1.0, "scale": True}, TypeError, r"scale must be a float, got bool"),
])
def test_param_groups_rates(kwargs, error, match):
    with pytest.raises(error, match=match):
        param_groups(torch.nn.Linear(2, 2), **kwargs)


@pytest.mark.parametrize("gain", [math.nan, math.inf, -math.inf])
def test_gabor_init_gain_must_be_finite(gain):
    with pytest.raises(ValueError, match=rf"gain must be finite, got {gain}"):
        gabor_(torch.empty(2, 1, 5, 5), gain=gain)


# -- 13. half-precision banks are built in float32 and rounded once ---------------------------------------------
HALF_ULP_AT_1 = {torch.bfloat16: 2.0 ** -8, torch.float16: 2.0 ** -10}  # one ulp of the dtype at 1


def _half_params(dims: int, dtype, n: int = 6):
    g = torch.Generator().manual_seed(dims)
    angles = lambda: torch.rand(n, generator=g, dtype=D) * math.pi  # noqa: E731
    sigma = 4 + 6 * torch.rand(n, generator=g, dtype=D)
    values = {1: (sigma, torch.full((n,), 3.0, dtype=D), angles()),
              2: (angles(), sigma, torch.full((n,), 3.0, dtype=D), torch.ones(n, dtype=D), angles()),
              3: (angles(), angles(), sigma, torch.full((n,), 3.0, dtype=D), torch.ones(n, dtype=D), angles())}[dims]
    return [v.to(dtype) for v in values]


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("dims, size", [(1, 255), (2, 63), (3, 25)])
def test_half_precision_bank_is_rounded_float32(dtype, dims, size):
    build = {1: gabor_kernel1d, 2: gabor_kernel2d, 3: gabor_kernel3d}[dims]
    params = _half_params(dims, dtype)
    leaves = [p.clone().requires_grad_(True) for p in params]
    bank = build(*leaves, size)
    reference = build(*(p.to(D) for p in params), size)  # the same (rounded) parameters, in float64
    assert bank.dtype == dtype
    # one rounding of a value in [-1, 1] is at most half an ulp at 1; float32 adds ~1e-5
    assert (bank.to(D) - reference).abs().max().item() <= HALF_ULP_AT_1[dtype]
    bank.float().square().sum().backward()
    assert all(leaf.grad is not None and leaf.grad.dtype == dtype for leaf in leaves)


def test_half_precision_conv_uses_the_rounded_float32_bank():
    params = [p[:4, None] for p in _half_params(2, torch.bfloat16)]
    x = torch.randn(1, 1, 70, 70, dtype=torch.bfloat16)
    y = gabor_conv2d(x, *params, 63)
    bank = gabor_kernel2d(*(p.float() for p in params), 63).to(torch.bfloat16)
    torch.testing.assert_close(y, torch.nn.functional.conv2d(x, bank))
