"""Cross-feature property tests of GaborConv1d/2d/3d against an oracle written in this file.

Hypothesis draws a whole layer configuration at once -- dimension, channels and groups (depthwise
included), kernel size (odd, even, rectangular, 1), stride, padding (ints, "same", "valid"),
dilation, padding mode, bias, output mode, zero_mean, amplitude (negative too), learn subsets, the
bank backend, initial values (per filter, broadcast, scalar or the classic bank) and batched or
unbatched input -- and checks the layer's output against:

* the oracle: each filter's real kernels from the textbook formula (``gaborlayer._reference``),
  the zero-mean correction of ``docs/math.md`` section 7 written out here, the amplitude, then an
  explicit ``F.pad`` and one plain ``F.convNd`` per group for the even (``psi``) and the odd
  (``psi - pi/2``) filters, combined as ``docs/quadrature.md`` documents;
* the functional form (with the layer's parameters, and with the values as given where they
  broadcast), ``to_convNd()``, a ``state_dict`` round trip and eval mode (the cached bank, also
  after ``load_state_dict``, a switch of ``output`` and under ``inference_mode``);
* ``reset_parameters()`` after the values moved, and ``check_extent()`` against envelope contours
  sampled here;
* numerical derivatives (``gradcheck``, fewer examples, train and eval mode) w.r.t. the input and
  every learnable parameter.

Bug-hunt record: besides the groups > 1 pair layout (fixed before this file), about 35,000 generated
forward examples (5,000 of them at larger sizes: up to 4 groups, 3 x 4 channels per group) and 4,500
gradcheck examples found no disagreement; deliberately broken copies of the library (the old
pair layout, the odd phase's sign, a mean-removing zero_mean, swapped 'same' padding, the bias on
the magnitude dropped, a cache key without the output mode, another cut contour, swapped 3-D
extent axes) each fail here within 300 examples.

Nothing here calls the library's private helpers: the oracle only shares the reference kernel
formula with it.
"""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from conftest import scaled
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from torch.func import functional_call

from gaborlayer import GaborConv1d, GaborConv2d, GaborConv3d, gabor_conv1d, gabor_conv2d, gabor_conv3d
from gaborlayer._reference import gabor_kernel1d_reference, gabor_kernel2d_reference, gabor_kernel3d_reference

pytestmark = pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel lengths:UserWarning")

DT = torch.float64
OUTPUTS = ("real", "complex", "magnitude", "quadrature")
PADDING_MODES = ("zeros", "reflect", "replicate", "circular")
NAMES = {1: ("sigma", "lambd", "psi"),
         2: ("theta", "sigma", "lambd", "gamma", "psi"),
         3: ("theta", "phi", "sigma", "lambd", "gamma", "psi")}
CLASSES = {1: GaborConv1d, 2: GaborConv2d, 3: GaborConv3d}
FUNCTIONAL = {1: gabor_conv1d, 2: gabor_conv2d, 3: gabor_conv3d}
CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
TO_CONV = {1: "to_conv1d", 2: "to_conv2d", 3: "to_conv3d"}
# lambd > 2 is the layers' Nyquist floor; amplitude is free (negative and 0 included).
RANGES = {"theta": (-60.0, 60.0), "phi": (-60.0, 60.0), "sigma": (0.4, 6.0), "lambd": (2.05, 24.0),
          "gamma": (0.2, 3.0), "psi": (-20.0, 20.0), "amplitude": (-3.0, 3.0)}
# The forward checks also draw from wider ranges: envelopes far narrower than a pixel (down to an
# envelope that underflows on an even grid: zero_mean's clamped denominator) or far wider than the
# kernel, needle-thin or flat 3-D/2-D envelopes, and angles of thousands of radians.
WIDE_RANGES = {**RANGES, "theta": (-1e4, 1e4), "phi": (-1e4, 1e4), "sigma": (0.005, 50.0), "gamma": (0.05, 20.0),
               "lambd": (2.0 + 1e-6, 1e3), "psi": (-1e4, 1e4), "amplitude": (-100.0, 100.0)}
MAX_KERNEL = {1: 6, 2: 4, 3: 3}  # per axis; keeps every example in milliseconds
ORACLE_TOL = dict(rtol=1e-10, atol=1e-10)  # the layer stores lambd as log(lambd - 2): last-bit differences
SAME_TOL = dict(rtol=0, atol=1e-12)  # two routes through the library's own bank


# -- the configuration -----------------------------------------------------------------------
def _floats(lo, hi):
    return st.floats(lo, hi, allow_nan=False, allow_infinity=False)


def per_axis(dims, lo, hi):
    """An int (the same on every axis) or a tuple of ``dims`` ints."""
    return st.one_of(st.integers(lo, hi), st.tuples(*(st.integers(lo, hi),) * dims))


def as_tuple(v, dims):
    return tuple(v) if isinstance(v, tuple) else (v,) * dims


@st.composite
def initial_value(draw, name, shape, allow_none=True, wide=False):
    """What the constructor gets for ``name``: None (the classic bank; for amplitude: no
    amplitude), a float, or a tensor of ``shape`` or broadcastable to it."""
    kinds = ["none", "float", "full", "rows", "cols"] if allow_none else ["float", "full", "rows", "cols"]
    kind = draw(st.sampled_from(kinds))
    if kind == "none":
        return None
    lo, hi = RANGES[name]
    if wide and draw(st.booleans()):
        lo, hi = WIDE_RANGES[name]
    if kind == "float":
        return draw(_floats(lo, hi))
    tensor_shape = {"full": shape, "rows": (shape[0], 1), "cols": (1, shape[1])}[kind]
    n = math.prod(tensor_shape)
    return torch.tensor(draw(st.lists(_floats(lo, hi), min_size=n, max_size=n)), dtype=DT).reshape(tensor_shape)


@st.composite
def configs(draw, dims=None, max_kernel=None, max_extra=2, max_per_group=(2, 3), max_groups=3, wide=False,
            batches=((), (1,), (2,))):
    """(dims, constructor kwargs, given initial values, input shape, seed)."""
    dims = draw(st.sampled_from([1, 2, 3])) if dims is None else dims
    k_max = MAX_KERNEL[dims] if max_kernel is None else max_kernel
    groups = draw(st.integers(1, max_groups))
    in_per_group = draw(st.sampled_from([1, 1] + list(range(2, max_per_group[0] + 1))))  # 1: depthwise
    out_per_group = draw(st.integers(1, max_per_group[1]))
    kernel = draw(per_axis(dims, 1, k_max))
    dilation = draw(per_axis(dims, 1, 2))
    padding = draw(st.one_of(st.sampled_from(["same", "valid"]), per_axis(dims, 0, 2)))
    stride = 1 if padding == "same" else draw(per_axis(dims, 1, 3))  # nn.ConvNd: 'same' needs stride 1
    kwargs = dict(in_channels=groups * in_per_group, out_channels=groups * out_per_group, kernel_size=kernel,
                  stride=stride, padding=padding, dilation=dilation, groups=groups, bias=draw(st.booleans()),
                  padding_mode=draw(st.sampled_from(PADDING_MODES)), output=draw(st.sampled_from(OUTPUTS)),
                  zero_mean=draw(st.booleans()), backend=draw(st.sampled_from(["auto", "torch", "reference"])),
                  dtype=DT)
    shape = (groups * out_per_group, in_per_group)
    values = {name: draw(initial_value(name, shape, wide=wide)) for name in NAMES[dims]}
    amplitude = draw(st.one_of(st.none(), st.just(True),
                               initial_value("amplitude", shape, allow_none=False, wide=wide)))
    kwargs["amplitude"] = amplitude
    names = NAMES[dims] + (() if amplitude is None else ("amplitude",))
    kwargs["learn"] = draw(st.one_of(st.sampled_from(["all", "none"]),
                                     st.lists(st.sampled_from(names), unique=True).map(tuple)))
    # Input big enough for the dilated kernel after padding, and for reflect padding (pad < size).
    pads = oracle_pads(dims, kernel, dilation, padding)
    size = [max(d * (k - 1) + 1 - left - right, max(left, right) + 1) + draw(st.integers(0, max_extra))
            for k, d, (left, right) in zip(as_tuple(kernel, dims), as_tuple(dilation, dims), pads)]
    batch = draw(st.sampled_from(batches))  # (): unbatched input, as nn.ConvNd takes
    return dims, kwargs, values, (*batch, kwargs["in_channels"], *size), draw(st.integers(0, 2**16))


# -- the oracle --------------------------------------------------------------------------------
def oracle_pads(dims, kernel, dilation, padding) -> list[tuple[int, int]]:
    """(left, right) padding per axis, as nn.ConvNd pads: 'same' puts the odd pixel on the right."""
    if padding == "valid":
        return [(0, 0)] * dims
    if padding == "same":
        totals = [d * (k - 1) for k, d in zip(as_tuple(kernel, dims), as_tuple(dilation, dims))]
        return [(t // 2, t - t // 2) for t in totals]
    return [(p, p) for p in as_tuple(padding, dims)]


def grid(k):
    return torch.arange(k, dtype=DT) - (k - 1) / 2


def envelope(dims, p, size):
    """The Gaussian envelope ``E`` of docs/math.md section 7, ``(N, *size)``, written out."""
    sigma = p["sigma"].reshape(-1, *(1,) * dims)
    if dims == 1:
        (x,) = (grid(k) for k in size)
        return torch.exp(-x**2 / (2 * sigma**2))
    gamma, theta = (p[n].reshape(-1, *(1,) * dims) for n in ("gamma", "theta"))
    if dims == 2:
        y, x = grid(size[0])[:, None], grid(size[1])[None, :]
        along = x * torch.cos(theta) + y * torch.sin(theta)
        across = -x * torch.sin(theta) + y * torch.cos(theta)
        return torch.exp(-(along**2 + gamma**2 * across**2) / (2 * sigma**2))
    phi = p["phi"].reshape(-1, 1, 1, 1)
    z, y, x = grid(size[0])[:, None, None], grid(size[1])[None, :, None], grid(size[2])[None, None, :]
    along = torch.cos(phi) * torch.cos(theta) * x + torch.cos(phi) * torch.sin(theta) * y + torch.sin(phi) * z
    across2 = x**2 + y**2 + z**2 - along**2
    return torch.exp(-(along**2 + gamma**2 * across2) / (2 * sigma**2))


def oracle_kernels(dims, values, size, zero_mean, psi_shift):
    """The real bank ``(C_out, C_in // groups, *size)`` of phase ``psi + psi_shift``."""
    shape = values["psi"].shape
    p = {n: v.reshape(-1) for n, v in values.items()}
    psi = p["psi"] + psi_shift
    if dims == 1:
        k = gabor_kernel1d_reference(p["sigma"], p["lambd"], psi, *size)
    elif dims == 2:
        k = gabor_kernel2d_reference(p["theta"], p["sigma"], p["lambd"], p["gamma"], psi, *size)
    else:
        k = gabor_kernel3d_reference(p["theta"], p["phi"], p["sigma"], p["lambd"], p["gamma"], psi, *size)
    if zero_mean:  # K - beta E with beta = sum K / sum E: every kernel sums to 0
        e = envelope(dims, p, size)
        axes = tuple(range(1, dims + 1))
        # (docs/math.md: the denominator is clamped to the smallest normal float, so an envelope
        # that underflowed everywhere gives beta = 0)
        k = k - k.sum(axes, keepdim=True) / e.sum(axes, keepdim=True).clamp_min(torch.finfo(DT).tiny) * e
    if "amplitude" in p:
        k = k * p["amplitude"].reshape(-1, *(1,) * dims)
    return k.reshape(*shape, *size)


def oracle_responses(dims, x, even_k, odd_k, kw, size):
    """Per group, the even and the odd responses of the batched input ``x``: lists of ``groups``
    tensors ``(B, C_out // groups, *spatial)``."""
    pads = oracle_pads(dims, kw["kernel_size"], kw["dilation"], kw["padding"])
    flat = [p for left_right in reversed(pads) for p in left_right]  # F.pad: last axis first
    mode = "constant" if kw["padding_mode"] == "zeros" else kw["padding_mode"]
    xp = F.pad(x, flat, mode=mode)
    g = kw["groups"]
    cin, cout = kw["in_channels"] // g, kw["out_channels"] // g
    conv = CONV[dims]
    stride, dilation = as_tuple(kw["stride"], dims), as_tuple(kw["dilation"], dims)
    evens, odds = [], []
    for j in range(g):
        xg = xp[:, j * cin:(j + 1) * cin]
        evens.append(conv(xg, even_k[j * cout:(j + 1) * cout], stride=stride, dilation=dilation))
        odds.append(conv(xg, odd_k[j * cout:(j + 1) * cout], stride=stride, dilation=dilation))
    return evens, odds


def oracle_output(dims, x, values, bias, kw):
    """The documented output of the layer, built from scratch."""
    size = as_tuple(kw["kernel_size"], dims)
    even_k = oracle_kernels(dims, values, size, kw["zero_mean"], 0.0)
    odd_k = oracle_kernels(dims, values, size, kw["zero_mean"], -math.pi / 2)
    batched = x.dim() == dims + 2
    evens, odds = oracle_responses(dims, x if batched else x[None], even_k, odd_k, kw, size)
    g, cout = kw["groups"], kw["out_channels"] // kw["groups"]
    b = torch.zeros(kw["out_channels"], dtype=DT) if bias is None else bias
    b = b.reshape(-1, *(1,) * dims)
    even, odd = torch.cat(evens, 1), torch.cat(odds, 1)
    output = kw["output"]
    if output == "real":
        y = even + b
    elif output == "complex":
        y = torch.complex(even + b, odd)
    elif output == "magnitude":
        y = torch.hypot(even, odd) + b
    else:  # per group: the group's even responses (+ bias), then its odd ones
        y = torch.cat([t for j in range(g) for t in (evens[j] + b[j * cout:(j + 1) * cout], odds[j])], 1)
    # The documented .weight: the real bank, or for the pair modes per group [even, odd]
    if output == "real":
        weight = even_k
    else:
        weight = torch.cat([t for j in range(g) for t in (even_k[j * cout:(j + 1) * cout],
                                                          odd_k[j * cout:(j + 1) * cout])])
    return (y if batched else y[0]), weight, (even, odd)


def build(dims, kwargs, values, seed):
    """The layer, and the full ``(C_out, C_in // groups)`` values the oracle uses: the given ones,
    broadcast, or the layer's own where none was given (the classic bank is not under test)."""
    torch.manual_seed(seed)
    m = CLASSES[dims](**kwargs, **values)
    shape = (kwargs["out_channels"], kwargs["in_channels"] // kwargs["groups"])
    full = {}
    for name in NAMES[dims]:
        given_value = values[name]
        full[name] = (getattr(m, name).detach().clone() if given_value is None
                      else torch.broadcast_to(torch.as_tensor(given_value, dtype=DT), shape).clone())
    amplitude = kwargs["amplitude"]
    if amplitude is not None:
        full["amplitude"] = torch.broadcast_to(torch.as_tensor(1.0 if amplitude is True else amplitude, dtype=DT),
                                               shape).clone()
    return m, full


def extent_oracle(dims, full, n_sigma):
    """Per kernel axis (``nn.ConvNd``'s order: ``(d,) h, w``), each filter's half-extent of its
    ``n_sigma`` envelope contour, found by sampling the contour densely: the ellipse (ellipsoid of
    revolution) is the unit circle (sphere) mapped by ``A u u^T + B (I - u u^T)``, ``A = n sigma``
    along the wave direction ``u``, ``B = A / gamma`` across it. The layer uses a closed form."""
    along = n_sigma * full["sigma"].reshape(-1)
    if dims == 1:
        return [along]
    across = along / full["gamma"].reshape(-1)
    theta = full["theta"].reshape(-1)
    if dims == 2:
        u = torch.stack([torch.cos(theta), torch.sin(theta)], -1)  # (x, y)
        t = torch.linspace(0, 2 * math.pi, 4001, dtype=DT)
        s = torch.stack([torch.cos(t), torch.sin(t)], -1)  # (P, 2) on the unit circle
    else:
        phi = full["phi"].reshape(-1)
        u = torch.stack([torch.cos(phi) * torch.cos(theta), torch.cos(phi) * torch.sin(theta), torch.sin(phi)], -1)
        lat, lon = torch.meshgrid(torch.linspace(0, math.pi, 121, dtype=DT),
                                  torch.linspace(0, 2 * math.pi, 241, dtype=DT), indexing="ij")
        s = torch.stack([torch.sin(lat) * torch.cos(lon), torch.sin(lat) * torch.sin(lon), torch.cos(lat)],
                        -1).reshape(-1, 3)
    su = s @ u.T  # (P, N): the component of s along u
    along, across = along[:, None], across[:, None]  # (N, 1)
    points = (along - across) * su[..., None] * u + across * s[:, None, :]  # (P, N, dims) = M s
    half = points.abs().amax(0)  # (N, dims) in (x, y[, z])
    return [half[:, i] for i in reversed(range(dims))]


def as_real(y):
    return torch.view_as_real(y) if y.is_complex() else y


# -- the property test -----------------------------------------------------------------------------
@settings(max_examples=scaled(1000), deadline=None)
@given(config=configs(wide=True))
def test_layer_matches_the_oracle_and_its_other_forms(config):
    dims, kw, values, input_shape, seed = config
    m, full = build(dims, kw, values, seed)
    x = torch.randn(input_shape, dtype=DT, generator=torch.Generator().manual_seed(seed))
    bias = None if m.bias is None else m.bias.detach()
    expected, expected_weight, _ = oracle_output(dims, x, full, bias, kw)

    # the layer against the oracle
    y = m(x)
    assert y.dtype == (torch.complex128 if kw["output"] == "complex" else DT)
    assert y.shape == expected.shape
    torch.testing.assert_close(y, expected, **ORACLE_TOL)
    torch.testing.assert_close(m.weight, expected_weight, **ORACLE_TOL)
    for name, _p in m.named_parameters():  # learn= decides what is a parameter
        assert name == "bias" or name.replace("log_", "").replace("_excess", "") in m.learn, name
    assert {n.replace("log_", "").replace("_excess", "") for n, _ in m.named_parameters()} - {"bias"} == set(m.learn)

    # the functional form, with the layer's constrained parameters (it has no padding_mode: pad first;
    # and no amplitude)
    if kw["amplitude"] is None:
        params = [getattr(m, n) for n in NAMES[dims]]
        x_in, padding = x, m.padding
        if kw["padding_mode"] != "zeros":
            pads = oracle_pads(dims, kw["kernel_size"], kw["dilation"], kw["padding"])
            x_in = F.pad(x, [p for lr in reversed(pads) for p in lr], mode=kw["padding_mode"])
            padding = 0
        f = FUNCTIONAL[dims](x_in, *params, m.kernel_size, m.bias, m.stride, padding, m.dilation, m.groups,
                             zero_mean=kw["zero_mean"], backend=kw["backend"], output=kw["output"])
        torch.testing.assert_close(f, y, **SAME_TOL)
        # ... and with the values as given (floats, (C_out, 1), (1, C_in // groups) tensors), where
        # together they have C_out rows (the functional form broadcasts them to the input's
        # channels, C_in // groups); the oracle's lambd is the given one
        given_params = [values[n] if values[n] is not None else full[n] for n in NAMES[dims]]
        shape = torch.broadcast_shapes(*(torch.as_tensor(v).shape for v in given_params))
        if len(shape) == 2 and shape[0] == full["psi"].shape[0]:
            f = FUNCTIONAL[dims](x_in, *given_params, m.kernel_size, m.bias, m.stride, padding, m.dilation, m.groups,
                                 zero_mean=kw["zero_mean"], backend=kw["backend"], output=kw["output"])
            torch.testing.assert_close(f, expected, **ORACLE_TOL)

    # to_convNd: one plain convolution for real and quadrature; the others are not one
    if kw["output"] in ("real", "quadrature"):
        conv = getattr(m, TO_CONV[dims])()
        torch.testing.assert_close(conv(x), y, **SAME_TOL)
    else:
        with pytest.raises(ValueError, match=kw["output"]):
            getattr(m, TO_CONV[dims])()

    # a state_dict round trip into a fresh layer of the same configuration (classic initial values)
    fresh_kw = {**kw, "amplitude": None if kw["amplitude"] is None else 1.0}
    fresh = CLASSES[dims](**fresh_kw)
    fresh.load_state_dict(m.state_dict())
    torch.testing.assert_close(fresh(x), y, rtol=0, atol=0)

    # eval mode: the cached bank gives the train-mode output, built and then read from the cache
    m.eval()
    with torch.no_grad():
        torch.testing.assert_close(m(x), y, rtol=0, atol=0)
        torch.testing.assert_close(m(x), y, rtol=0, atol=0)
    torch.testing.assert_close(m(x), y, rtol=0, atol=0)  # grad mode: cached only if nothing learns
    # the cache is never stale: loading other values, or switching the output mode, rebuilds it
    saved = {k: v.clone() for k, v in m.state_dict().items()}
    with torch.no_grad():
        m.load_state_dict(fresh.state_dict())
        torch.testing.assert_close(m(x), fresh(x), rtol=0, atol=0)
        m.load_state_dict(saved)
        torch.testing.assert_close(m(x), y, rtol=0, atol=0)
        other = OUTPUTS[(OUTPUTS.index(kw["output"]) + 1 + seed % 3) % 4]
        m.output = other  # the tests of test_quadrature.py switch modes this way
        expected_other, _, _ = oracle_output(dims, x, full, bias, {**kw, "output": other})
        torch.testing.assert_close(m(x), expected_other, **ORACLE_TOL)
        m.output = kw["output"]
    with torch.inference_mode():
        torch.testing.assert_close(m(x), y, rtol=0, atol=0)
    m.train()
    torch.testing.assert_close(m(x), y, rtol=0, atol=0)

    # reset_parameters after the values have moved: back to the initial ones (the bias is redrawn)
    with torch.no_grad():
        for t in [*m.parameters(), *m.buffers()]:
            t.add_(0.1)
    m.reset_parameters()
    bias = None if m.bias is None else m.bias.detach()
    torch.testing.assert_close(m(x), oracle_output(dims, x, full, bias, kw)[0], **ORACLE_TOL)

    # check_extent: which envelopes the kernel cuts (2.5 sigma contour), which wavelengths are
    # near Nyquist (< 2.2), and the smallest odd kernel holding every 3 sigma contour
    report = m.check_extent(warn=False)
    size = as_tuple(kw["kernel_size"], dims)
    halves = [h.reshape(full["psi"].shape) for h in extent_oracle(dims, full, 2.5)]
    clear = torch.ones_like(report["cut"])  # away from the edge by more than the sampling error
    cut = torch.zeros_like(report["cut"])
    for h, k in zip(halves, size):
        clear &= (h / (k / 2) - 1).abs() > 1e-3
        cut |= h > k / 2
    assert torch.equal(report["cut"][clear], cut[clear])
    near = full["lambd"] < 2.2
    clear = (full["lambd"] - 2.2).abs() > 1e-9
    assert torch.equal(report["near_nyquist"][clear], near[clear])
    for h, k in zip(extent_oracle(dims, full, 3.0), report["suggested_kernel_size"]):
        width = 2 * float(h.max())  # the smallest odd k >= width, unless width is at an odd integer
        nearest_odd = 2 * round((width - 1) / 2) + 1
        if abs(width - nearest_odd) > 1e-3 * width:
            assert k == max(1, math.ceil(width) + (1 - math.ceil(width) % 2)), (k, width)


# -- gradients -------------------------------------------------------------------------------------
@settings(max_examples=scaled(300), deadline=None)
@given(config=configs(max_kernel=3, max_extra=1, max_per_group=(2, 2), max_groups=2, batches=((), (1,))),
       eval_mode=st.booleans())
def test_gradients_against_numerical(gradient_cases, config, eval_mode):
    """gradcheck of the output w.r.t. the input and every learnable parameter (bias included), in
    train or eval mode (eval: the bank is cached where nothing needs its gradient)."""
    dims, kw, values, input_shape, seed = config
    if dims == 3:  # a smaller 3-D input: gradcheck costs a forward per input element
        kw = {**kw, "kernel_size": tuple(min(k, 2) for k in as_tuple(kw["kernel_size"], 3))}
        input_shape = (*input_shape[:-3], *(min(s, 4) for s in input_shape[-3:]))
        pads = oracle_pads(3, kw["kernel_size"], kw["dilation"], kw["padding"])
        dilated = [d * (k - 1) + 1 for k, d in zip(kw["kernel_size"], as_tuple(kw["dilation"], 3))]
        assume(all(s + left + right >= e and s > max(left, right)
                   for s, (left, right), e in zip(input_shape[-3:], pads, dilated)))
    m, full = build(dims, kw, values, seed)
    m.train(not eval_mode)
    x = torch.randn(input_shape, dtype=DT, generator=torch.Generator().manual_seed(seed), requires_grad=True)
    if kw["output"] == "magnitude":  # |z| is not differentiable at z = 0: stay away from it
        with torch.no_grad():
            _, _, (even, odd) = oracle_output(dims, x.detach(), full, None, kw)
        assume(bool(torch.hypot(even, odd).min() > 1e-2))
    names = [n for n, _ in m.named_parameters()]
    raw = tuple(p.detach().clone().requires_grad_() for p in m.parameters())

    def forward(x, *raw):
        return as_real(functional_call(m, dict(zip(names, raw)), (x,)))

    assert torch.autograd.gradcheck(forward, (x, *raw))
    gradient_cases.add()
