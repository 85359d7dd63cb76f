"""Quadrature-pair outputs: ``output="complex" | "magnitude" | "quadrature"``.

Each filter's pair is the even filter (phase psi) and the odd one (psi - pi/2), so that
``even + 1j odd`` is the complex Gabor filter ``E exp(i phase)``. Checked against independently
built real banks, against the plane-wave response that pins the sign convention, and, for every
mode, gradients against numerical derivatives in float64.
"""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn
from conftest import scaled
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from torch.func import functional_call

from gaborlayer import GaborConv2d, gabor_conv2d

MODES = ("complex", "magnitude", "quadrature")
pytestmark = pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel lengths:UserWarning")
DT = torch.float64


def real_twin(m: GaborConv2d, psi_shift: float) -> GaborConv2d:
    """A real-output GaborConv2d with m's parameters and psi + psi_shift, built from scratch."""
    return GaborConv2d(m.in_channels, m.out_channels, m.kernel_size, m.stride, m.padding, m.dilation, m.groups,
                       bias=False, padding_mode=m.padding_mode, dtype=m.theta.dtype, zero_mean=m.zero_mean,
                       theta=m.theta.detach(), sigma=m.sigma.detach(), lambd=m.lambd.detach(),
                       gamma=m.gamma.detach(), psi=m.psi.detach() + psi_shift)


@pytest.mark.parametrize("zero_mean", [False, True])
@pytest.mark.parametrize("padding_mode", ["zeros", "reflect"])
def test_every_mode_is_the_pair_of_real_filters(zero_mean, padding_mode):
    torch.manual_seed(0)
    m = GaborConv2d(2, 3, (5, 7), padding=(2, 3), padding_mode=padding_mode, zero_mean=zero_mean, dtype=DT,
                    output="complex")
    x = torch.randn(2, 2, 11, 12, dtype=DT)
    even, odd = real_twin(m, 0.0)(x), real_twin(m, -math.pi / 2)(x)
    bias = m.bias[:, None, None]
    z = m(x)
    assert z.dtype == torch.complex128 and z.shape == (2, 3, 11, 12)
    torch.testing.assert_close(z, torch.complex(even + bias, odd))
    m.output = "magnitude"
    torch.testing.assert_close(m(x), torch.hypot(even, odd) + bias)
    m.output = "quadrature"
    torch.testing.assert_close(m(x), torch.cat([even + bias, odd], dim=1))
    torch.testing.assert_close(m.to_conv2d()(x), m(x))
    assert m.weight.shape == (6, 2, 5, 7)
    if zero_mean:  # DC-free complex filter: both halves sum to zero
        assert m.weight.sum(dim=(-2, -1)).abs().max() < 1e-12


@pytest.mark.parametrize("output", ("real", *MODES))
def test_module_equals_functional(output):
    torch.manual_seed(1)
    m = GaborConv2d(3, 4, 5, stride=2, padding=1, output=output, dtype=DT, amplitude=None)
    x = torch.randn(2, 3, 13, 13, dtype=DT)
    f = gabor_conv2d(x, m.theta, m.sigma, m.lambd, m.gamma, m.psi, 5, m.bias, 2, 1, output=output)
    torch.testing.assert_close(m(x), f, rtol=0, atol=1e-13)
    assert m(x[0]).shape == m(x)[0].shape  # unbatched input, as nn.Conv2d


def test_plane_wave_pins_the_convention():
    """Input cos(k . p) along the filter's own orientation and wavelength: the complex response is
    (sum E / 2) exp(-i k . p) in the interior (F.conv2d is a correlation), so its magnitude is flat
    (the energy model) and its phase follows -k . p: a shift of the image by d turns it by k . d."""
    theta, lambd, sigma = 0.6, 6.0, 4.0
    # 49 taps = 6 sigma each side: the envelope is truncated at 1.5e-8, and its spectrum at 2k is
    # exp(-(2 k sigma)^2 / 2) = 2.5e-8, so the e^{+ik.p} term is below 1e-7 of the response.
    m = GaborConv2d(1, 1, 49, padding="same", bias=False, dtype=DT, output="complex",
                    theta=theta, sigma=sigma, lambd=lambd, gamma=1.0, psi=0.0)
    k = 2 * math.pi / lambd
    ys, xs = torch.meshgrid(torch.arange(96, dtype=DT), torch.arange(96, dtype=DT), indexing="ij")
    along = xs * math.cos(theta) + ys * math.sin(theta)
    inner = (slice(24, 72), slice(24, 72))
    with torch.no_grad():
        z = m(torch.cos(k * along)[None, None])[0, 0][inner]
        envelope_sum = torch.hypot(m.weight[0, 0], m.weight[1, 0]).sum()  # |E e^{i phase}| = E
    magnitude = z.abs()
    assert (magnitude.max() - magnitude.min()) / magnitude.mean() < 1e-6
    torch.testing.assert_close(magnitude.mean(), envelope_sum / 2, rtol=1e-6, atol=0)
    expected = torch.polar(torch.ones_like(along), -k * along)[inner]
    torch.testing.assert_close(z / magnitude, expected, rtol=0, atol=1e-6)


def test_magnitude_gradient_at_zero_response_is_finite():
    m = GaborConv2d(2, 3, 5, padding=2, output="magnitude", dtype=DT)
    x = torch.zeros(1, 2, 8, 8, dtype=DT, requires_grad=True)
    y = m(x)
    grads = torch.autograd.grad(y.sum(), [x, *m.parameters()], create_graph=True)
    for g in grads:
        assert torch.isfinite(g).all()
    named = dict(zip(["x", *(n for n, _ in m.named_parameters())], grads))
    assert named["theta"].abs().max() == 0 and named["bias"].eq(64).all()  # subgradient 0; bias: 8 x 8 pixels
    second = torch.autograd.grad(grads[0].sum(), m.theta, allow_unused=True)[0]
    assert second is None or torch.isfinite(second).all()


@st.composite
def cases(draw):
    output = draw(st.sampled_from(MODES))
    kernel = draw(st.tuples(st.integers(1, 4), st.integers(1, 4)))
    groups = draw(st.integers(1, 2))
    c_in, c_out = groups * draw(st.integers(1, 2)), groups * draw(st.integers(1, 2))
    values = {name: draw(st.floats(lo, hi)) for name, (lo, hi) in
              dict(theta=(-7, 7), sigma=(0.4, 5), lambd=(2.1, 12), gamma=(0.3, 3), psi=(-7, 7)).items()}
    return (output, dict(in_channels=c_in, out_channels=c_out, kernel_size=kernel, groups=groups,
                         padding=draw(st.sampled_from(["same", 0, 1])), bias=draw(st.booleans()),
                         zero_mean=draw(st.booleans()), **values),
            draw(st.integers(0, 999)))


@settings(max_examples=scaled(150), deadline=None)
@given(case=cases())
def test_gradients_of_every_mode_against_numerical(gradient_cases, case):
    output, kwargs, seed = case
    torch.manual_seed(seed)
    m = GaborConv2d(**kwargs, output=output, dtype=DT)
    x = torch.randn(2, kwargs["in_channels"], 6, 5, dtype=DT, requires_grad=True)
    names = [n for n, _ in m.named_parameters()]
    raw = tuple(p.detach().clone().requires_grad_() for p in m.parameters())

    def forward(x, *raw):
        y = functional_call(m, dict(zip(names, raw)), (x,))
        return torch.view_as_real(y) if y.is_complex() else y

    if output == "magnitude":  # |z| is not differentiable at z = 0: stay away from it (bias excluded)
        with torch.no_grad():
            pairs = m._conv_forward(x, m.weight, None).unflatten(1, (m.groups, 2, -1))  # per group: even, odd
            assume(bool(torch.hypot(pairs[:, :, 0], pairs[:, :, 1]).min() > 1e-2))
    assert torch.autograd.gradcheck(forward, (x, *raw))
    gradient_cases.add()


def test_gradgradcheck_magnitude_and_complex():
    torch.manual_seed(3)
    for output in ("magnitude", "complex"):
        m = GaborConv2d(1, 2, 3, padding=1, output=output, dtype=DT)
        x = torch.randn(1, 1, 5, 5, dtype=DT) + 3  # away from zero response
        names = [n for n, _ in m.named_parameters()]
        raw = tuple(p.detach().clone().requires_grad_() for p in m.parameters())

        def forward(*raw, m=m, names=names, x=x):
            y = functional_call(m, dict(zip(names, raw)), (x,))
            return torch.view_as_real(y) if y.is_complex() else y

        assert torch.autograd.gradgradcheck(forward, raw)


def test_low_precision_and_autocast():
    m = GaborConv2d(3, 4, 5, padding=2, output="complex")
    x = torch.randn(2, 3, 12, 12)
    assert m.bfloat16()(x.bfloat16()).dtype == torch.complex64  # no complex bf16: computed in float32
    m = GaborConv2d(3, 4, 5, padding=2, output="magnitude")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = m(x)
    assert y.dtype == torch.bfloat16
    y.float().sum().backward()
    assert torch.isfinite(m.theta.grad).all()


def test_compile_fullgraph_magnitude():
    m = GaborConv2d(1, 4, 5, padding=2, output="magnitude")
    x = torch.randn(2, 1, 10, 10)
    compiled = torch.compile(m, fullgraph=True, backend="aot_eager")
    torch.testing.assert_close(compiled(x), m(x))
    compiled(x).sum().backward()
    assert torch.isfinite(m.log_sigma.grad).all()


def test_errors_and_repr():
    with pytest.raises(ValueError, match=r"output must be one of \('real', 'complex', 'magnitude', 'quadrature'\), "
                                         r"got 'energy'"):
        GaborConv2d(1, 2, 3, output="energy")
    with pytest.raises(ValueError, match=r"output must be one of"):
        gabor_conv2d(torch.randn(1, 1, 5, 5), 0.0, 1.0, 3.0, 1.0, 0.0, 3, output="imag")
    m = GaborConv2d(1, 2, 3, output="magnitude")
    assert repr(m).endswith("output='magnitude')")
    with pytest.raises(ValueError, match=r"to_conv2d needs output='real' or 'quadrature'.*got output='magnitude'"):
        m.to_conv2d()
    q = GaborConv2d(1, 2, 3, output="quadrature").to_conv2d()
    assert isinstance(q, nn.Conv2d) and q.out_channels == 4


# -- the same modes in 1-D and 3-D ---------------------------------------------------------------
def nd_pair(dims: int, zero_mean: bool):
    """A complex GaborConv1d/3d and real twins built from its parameters (psi, psi - pi/2)."""
    from gaborlayer import GaborConv1d, GaborConv3d
    cls, kernel = (GaborConv1d, 9) if dims == 1 else (GaborConv3d, (3, 5, 4))
    m = cls(2, 3, kernel, padding=1, padding_mode="reflect", zero_mean=zero_mean, dtype=DT, output="complex")
    names = m._family.names

    def twin(shift):
        values = {n: getattr(m, n).detach() + (shift if n == "psi" else 0.0) for n in names}
        return cls(2, 3, kernel, padding=1, padding_mode="reflect", zero_mean=zero_mean, dtype=DT, bias=False,
                   **values)

    return m, twin(0.0), twin(-math.pi / 2)


@pytest.mark.parametrize("dims", [1, 3])
@pytest.mark.parametrize("zero_mean", [False, True])
def test_nd_modes_are_the_pair_of_real_filters(dims, zero_mean):
    torch.manual_seed(dims)
    m, even_m, odd_m = nd_pair(dims, zero_mean)
    x = torch.randn(2, 2, *(7,) * dims, dtype=DT)
    even, odd = even_m(x), odd_m(x)
    bias = m.bias.reshape(-1, *(1,) * dims)
    torch.testing.assert_close(m(x), torch.complex(even + bias, odd))
    m.output = "magnitude"
    torch.testing.assert_close(m(x), torch.hypot(even, odd) + bias)
    m.output = "quadrature"
    torch.testing.assert_close(m(x), torch.cat([even + bias, odd], dim=1))
    torch.testing.assert_close(m._to_conv()(x), m(x))
    assert m(x[0]).shape == m(x)[0].shape  # unbatched input


@settings(max_examples=scaled(60), deadline=None)
@given(dims=st.sampled_from([1, 3]), output=st.sampled_from(MODES), seed=st.integers(0, 999))
def test_nd_gradients_of_every_mode_against_numerical(gradient_cases, dims, output, seed):
    from gaborlayer import GaborConv1d, GaborConv3d
    torch.manual_seed(seed)
    cls, kernel, shape = (GaborConv1d, 5, (2, 1, 7)) if dims == 1 else (GaborConv3d, (2, 3, 2), (1, 1, 3, 4, 3))
    m = cls(1, 2, kernel, padding=1, output=output, dtype=DT, zero_mean=bool(seed % 2))
    x = torch.randn(shape, dtype=DT, requires_grad=True)
    if output == "magnitude":
        with torch.no_grad():
            pairs = m._conv_forward(x, m.weight, None).unflatten(1, (m.groups, 2, -1))  # per group: even, odd
            assume(bool(torch.hypot(pairs[:, :, 0], pairs[:, :, 1]).min() > 1e-2))
    names = [n for n, _ in m.named_parameters()]
    raw = tuple(p.detach().clone().requires_grad_() for p in m.parameters())

    def forward(x, *raw):
        y = functional_call(m, dict(zip(names, raw)), (x,))
        return torch.view_as_real(y) if y.is_complex() else y

    assert torch.autograd.gradcheck(forward, (x, *raw))
    gradient_cases.add()


# -- the functional 1-D and 3-D forms ------------------------------------------------------------
def nd_functional(dims: int):
    """(functional, module class, real-bank builder, F.convNd, kernel size, parameters broadcasting to (4, 2))."""
    from gaborlayer import GaborConv1d, GaborConv3d, gabor_conv1d, gabor_conv3d, gabor_kernel1d, gabor_kernel3d
    if dims == 1:
        values = dict(sigma=torch.tensor([[1.5, 2.0], [2.5, 1.2], [1.8, 3.0], [1.1, 2.2]], dtype=DT), lambd=5.0,
                      psi=torch.tensor([[0.3], [-1.1], [2.0], [-2.6]], dtype=DT))
        return gabor_conv1d, GaborConv1d, gabor_kernel1d, torch.nn.functional.conv1d, 7, values
    values = dict(theta=torch.tensor([[0.2], [1.3], [-0.7], [2.4]], dtype=DT),
                  phi=torch.tensor([[0.4, -0.9]], dtype=DT), sigma=1.3, lambd=4.0,
                  gamma=torch.tensor([[0.7, 1.5]], dtype=DT),
                  psi=torch.tensor([[0.5], [-2.0], [1.0], [-0.4]], dtype=DT))
    return gabor_conv3d, GaborConv3d, gabor_kernel3d, torch.nn.functional.conv3d, (3, 4, 3), values


@pytest.mark.parametrize("output", ("real", *MODES))
@pytest.mark.parametrize("dims", [1, 3])
@pytest.mark.parametrize("zero_mean", [False, True])
def test_nd_functional_equals_module_and_the_pair_of_real_banks(dims, output, zero_mean):
    """gabor_conv1d/3d(..., output=) against GaborConv1d/3d(..., output=) of the same parameters and
    against F.conv1d/3d with real banks of phases psi and psi - pi/2 built separately; bias rule."""
    functional, cls, kernel, conv, size, values = nd_functional(dims)
    torch.manual_seed(10 + dims)
    x = torch.randn(2, 2, *((16,) if dims == 1 else (7, 6, 7)), dtype=DT)
    m = cls(2, 4, size, stride=2, padding=1, dilation=(2, 1, 1)[:dims], zero_mean=zero_mean, dtype=DT, output=output,
            **values)
    params = [getattr(m, n).detach() for n in m._family.names]  # the module's constrained parameters
    y = functional(x, *params, size, m.bias, 2, 1, m.dilation, zero_mean=zero_mean, output=output)
    torch.testing.assert_close(y, m(x), rtol=0, atol=1e-13)

    *shared, psi = params
    even_bank = kernel(*shared, psi, size, zero_mean=zero_mean)
    odd_bank = kernel(*shared, psi - math.pi / 2, size, zero_mean=zero_mean)
    even, odd = (conv(x, bank, None, 2, 1, m.dilation) for bank in (even_bank, odd_bank))
    bias = m.bias.reshape(-1, *(1,) * dims)
    expected = {"real": even + bias, "complex": torch.complex(even + bias, odd),
                "magnitude": torch.hypot(even, odd) + bias, "quadrature": torch.cat([even + bias, odd], dim=1)}[output]
    assert y.shape == (2, 8 if output == "quadrature" else 4, *even.shape[2:])
    assert y.dtype == (torch.complex128 if output == "complex" else DT)
    torch.testing.assert_close(y, expected, rtol=1e-12, atol=1e-12)
    no_bias = functional(x, *params, size, None, 2, 1, m.dilation, zero_mean=zero_mean, output=output)
    torch.testing.assert_close(no_bias, {"real": even, "complex": torch.complex(even, odd),
                                         "magnitude": torch.hypot(even, odd),
                                         "quadrature": torch.cat([even, odd], dim=1)}[output], rtol=1e-12, atol=1e-12)
    assert functional(x[0], *params, size, m.bias, 2, 1, m.dilation, output=output).shape == y.shape[1:]  # unbatched


@pytest.mark.parametrize("dims", [1, 3])
def test_nd_functional_magnitude_gradient_at_zero_response_is_finite(dims):
    functional, _, _, _, size, values = nd_functional(dims)
    params = {n: torch.as_tensor(v, dtype=DT).clone().requires_grad_() for n, v in values.items()}
    bias = torch.randn(4, dtype=DT, requires_grad=True)
    x = torch.zeros(1, 2, *(6,) * dims, dtype=DT, requires_grad=True)
    y = functional(x, *params.values(), size, bias, padding=1, output="magnitude")
    grads = torch.autograd.grad(y.sum(), [x, bias, *params.values()], create_graph=True)
    for g in grads:
        assert torch.isfinite(g).all()
    assert all(g.abs().max() == 0 for g in grads[2:])  # subgradient 0 for every filter parameter
    assert grads[1].eq(y[0, 0].numel()).all()  # bias: one per output position
    second = torch.autograd.grad(grads[0].sum(), params["psi"], allow_unused=True)[0]
    assert second is None or torch.isfinite(second).all()


@pytest.mark.parametrize("dims", [1, 3])
@pytest.mark.parametrize("output", MODES)
def test_nd_functional_gradcheck(dims, output):
    functional, _, _, _, size, values = nd_functional(dims)
    torch.manual_seed(20 + dims)
    size = 4 if dims == 1 else (2, 3, 2)
    x = torch.randn(1, 2, *(5,) * dims, dtype=DT, requires_grad=True)
    params = tuple(torch.as_tensor(v, dtype=DT).clone().requires_grad_() for v in values.values())
    bias = torch.randn(4, dtype=DT, requires_grad=True)

    def forward(x, bias, *params):
        y = functional(x, *params, size, bias, padding=1, zero_mean=dims == 3, output=output)
        return torch.view_as_real(y) if y.is_complex() else y

    if output == "magnitude":  # |z| has no derivative at z = 0: these fixed cases stay away from it
        with torch.no_grad():
            assert forward(x, None, *params).min() > 1e-2
    assert torch.autograd.gradcheck(forward, (x, bias, *params))


@pytest.mark.parametrize("dims", [1, 3])
def test_nd_functional_errors_and_low_precision(dims):
    functional, _, _, _, size, values = nd_functional(dims)
    x = torch.randn(1, 2, *(6,) * dims)
    with pytest.raises(ValueError, match=r"output must be one of \('real', 'complex', 'magnitude', 'quadrature'\), "
                                         r"got 'energy'"):
        functional(x, *values.values(), size, output="energy")
    scalars = [1.0] * len(values)
    with pytest.raises(ValueError, match=r"parameters must broadcast to \(C_out, C_in // groups\), got shape \(\)"):
        functional(x, *scalars, size, output="complex")
    params = [torch.as_tensor(v, dtype=torch.float32) for v in values.values()]
    z = functional(x.bfloat16(), *params, size, padding=1, output="complex")
    assert z.dtype == torch.complex64  # no complex bfloat16: the pair is combined in float32
    torch.testing.assert_close(z, functional(x, *params, size, padding=1, output="complex"), rtol=0.05, atol=0.05)


@pytest.mark.parametrize("dims", [1, 2, 3])
@pytest.mark.parametrize("output", MODES)
def test_pair_modes_with_groups(dims, output):
    """With groups > 1 each filter's pair must read its own group's input: F.convNd gives each group
    a contiguous block of output channels, so the bank (and the "quadrature" channels) are laid out
    per group, even then odd. Functional form, module, amplitude and to_convNd against per-group
    convolutions with separately built real banks."""
    from gaborlayer import GaborConv1d, GaborConv3d, gabor_kernel2d
    if dims == 2:
        functional, cls, kernel, conv, size = gabor_conv2d, GaborConv2d, gabor_kernel2d, torch.nn.functional.conv2d, 3
        values = dict(theta=torch.tensor([[0.2], [1.3], [-0.7], [2.4]], dtype=DT), sigma=1.3, lambd=4.0, gamma=0.8,
                      psi=torch.tensor([[0.5], [-2.0], [1.0], [-0.4]], dtype=DT))
    else:
        functional, cls, kernel, conv, size, values = nd_functional(dims)
        assert cls in (GaborConv1d, GaborConv3d)
    torch.manual_seed(30 + dims)
    x = torch.randn(1, 4, *((12,) if dims == 1 else (6,) * dims), dtype=DT)
    bias = torch.randn(4, dtype=DT)
    amplitude = torch.tensor([[1.5], [-0.5], [2.0], [0.7]], dtype=DT)
    params = [torch.broadcast_to(torch.as_tensor(v, dtype=DT), (4, 2)) for v in values.values()]
    *shared, psi = params
    even, odd = (conv(x, kernel(*shared, phase, size), groups=2) for phase in (psi, psi - math.pi / 2))

    def expected(scale, with_bias):
        e, o = even * scale.reshape(4, *(1,) * dims), odd * scale.reshape(4, *(1,) * dims)
        b = bias.reshape(4, *(1,) * dims) if with_bias else 0
        if output == "complex":
            return torch.complex(e + b, o)
        if output == "magnitude":
            return torch.hypot(e, o) + b
        return torch.cat([e[:, :2] + b[:2] if with_bias else e[:, :2], o[:, :2],
                          e[:, 2:] + b[2:] if with_bias else e[:, 2:], o[:, 2:]], dim=1)

    ones = torch.ones(4, dtype=DT)
    torch.testing.assert_close(functional(x, *params, size, groups=2, output=output), expected(ones, False))
    torch.testing.assert_close(functional(x, *params, size, bias, groups=2, output=output), expected(ones, True))
    m = cls(4, 4, size, groups=2, output=output, dtype=DT, amplitude=amplitude, **values)
    with torch.no_grad():
        m.bias.copy_(bias)
    torch.testing.assert_close(m(x), expected(amplitude.reshape(4), True))
    if output == "quadrature":
        plain = getattr(m, f"to_conv{dims}d")()
        torch.testing.assert_close(plain(x), m(x))


def test_pair_modes_need_out_channels_divisible_by_groups():
    x = torch.randn(1, 4, 8, 8)
    with pytest.raises(ValueError, match=r"the pair outputs need C_out \(3\) divisible by groups \(2\)"):
        gabor_conv2d(x, torch.zeros(3, 2), 1.5, 4.0, 1.0, 0.0, 3, groups=2, output="complex")
