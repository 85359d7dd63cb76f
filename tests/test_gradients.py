"""Gradients of ``gabor_kernel2d`` with respect to all five parameters, in float64; forward mode
(``jvp``) of the 1-D, 2-D and 3-D banks and of the quadrature magnitude.

Each generated case is checked against numerical derivatives (central differences of a random
scalar loss ``sum(w * K)``, or ``torch.autograd.gradcheck``/``gradgradcheck``, in reverse and
forward mode) and counted with ``gradient_cases.add()``; under the ci profile these tests generate
about 12,000 cases. Forward mode is also checked against plain autograd through the reference
formula (``torch.func.jvp``, ``jacfwd``, ``hessian`` = forward over reverse, and reverse over
forward); those comparisons are not counted.

The central-difference tolerance (``FD_ATOL`` times ``sum |w|`` per kernel, plus ``FD_RTOL``)
sits about 20x above the largest error seen over 8,000 cases (~1e-8 ``sum |w|``, from theta),
and about 10,000x below the median gradient (~5e-3 ``sum |w|``), so a wrong sign, a missing
factor or a swapped term fails at once.
"""
from __future__ import annotations

import pytest
import torch
import torch.autograd.forward_ad as fwAD
from conftest import NAMES_1D, NAMES_3D, RANGES, extreme_params, gabor_params, kernel_sizes, nd_params, scaled
from hypothesis import given, settings
from hypothesis import strategies as st

from gaborlayer import gabor_conv1d, gabor_conv2d, gabor_conv3d, gabor_kernel1d, gabor_kernel2d, gabor_kernel3d
from gaborlayer._autograd import QuadratureMagnitude
from gaborlayer._family import GABOR_2D

PARAM_NAMES = GABOR_2D.names

H = 1e-6  # central-difference step; truncation ~H^2 * K''' and rounding ~eps / H are both ~1e-9
FD_ATOL = 2e-7  # times sum |w| of the kernel
FD_RTOL = 1e-6
# The Function against plain autograd through the reference formula: same maths, so tight.
REF_TOL = dict(rtol=1e-9, atol=1e-12)

seeds = st.integers(0, 2**32 - 1)


def random_weight(seed: int, shape) -> torch.Tensor:
    return torch.randn(shape, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))


def analytic_gradients(params, size, weight, *, zero_mean=False, backend="auto"):
    """``(5, N)``: autograd gradients of ``sum(weight * K)``."""
    leaves = [p.detach().clone().requires_grad_() for p in params]
    bank = gabor_kernel2d(*leaves, size, zero_mean=zero_mean, backend=backend)
    return torch.stack(torch.autograd.grad((bank * weight).sum(), leaves))


def central_differences(params, size, weight, *, zero_mean=False):
    """``(5, N)``: d/dp_k[n] of ``sum(weight * K)`` by central differences, in one batched call.

    Kernel ``n`` depends on the parameters ``n`` only, so shifting parameter ``k`` of every
    kernel at once and reading the loss kernel by kernel gives all ``5 N`` partial derivatives
    from ``2 * 5 * N`` kernels.
    """
    base = torch.stack([p.detach() for p in params])  # (5, N)
    shift = H * torch.eye(5, dtype=base.dtype)[:, :, None]  # (shifted parameter, parameter, 1)
    batch = torch.stack([base + shift, base - shift])  # (2, 5, 5, N)
    with torch.no_grad():
        bank = gabor_kernel2d(*batch.unbind(dim=2), size, zero_mean=zero_mean)  # (2, 5, N, kh, kw)
    per_kernel = (bank * weight).sum(dim=(-2, -1))  # (2, 5, N)
    return (per_kernel[0] - per_kernel[1]) / (2 * H)


def assert_matches_differences(grads, numeric, weight, params):
    scale = weight.abs().sum(dim=(-2, -1))  # (N,)
    err = (grads - numeric).abs()
    bound = FD_ATOL * scale + FD_RTOL * numeric.abs()
    if not bool((err <= bound).all()):
        k, n = divmod(int(torch.argmax(err - bound)), err.shape[1])
        values = {name: float(p[n]) for name, p in zip(PARAM_NAMES, params)}
        raise AssertionError(f"d/d{PARAM_NAMES[k]} of kernel {n} at {values}: analytic {float(grads[k, n])!r}, "
                             f"central difference {float(numeric[k, n])!r} (allowed error {float(bound[k, n]):.3g})")


# (a) all five gradients against central differences (and the plain-autograd reference) ------
@settings(max_examples=scaled(4000))
@given(params=gabor_params(), size=kernel_sizes, seed=seeds)
def test_gradients_match_central_differences(params, size, seed, gradient_cases):
    weight = random_weight(seed, (params[0].shape[0], *size))
    grads = analytic_gradients(params, size, weight)
    assert_matches_differences(grads, central_differences(params, size, weight), weight, params)
    torch.testing.assert_close(grads, analytic_gradients(params, size, weight, backend="reference"), **REF_TOL)
    gradient_cases.add()


# (b) gradcheck and (c) gradgradcheck over generated parameters -------------------------------
def _bank_fn(size, zero_mean=False):
    return lambda *p: gabor_kernel2d(*p, size, zero_mean=zero_mean)


@settings(max_examples=scaled(1400))
@given(params=gabor_params(), size=kernel_sizes)
def test_gradcheck(params, size, gradient_cases):
    leaves = [p.requires_grad_() for p in params]
    assert torch.autograd.gradcheck(_bank_fn(size), leaves, fast_mode=True, check_forward_ad=True)
    gradient_cases.add()


@settings(max_examples=scaled(500))
@given(params=gabor_params(n_max=3), size=kernel_sizes)
def test_gradgradcheck(params, size, gradient_cases):
    leaves = [p.requires_grad_() for p in params]
    assert torch.autograd.gradgradcheck(_bank_fn(size), leaves, fast_mode=True)
    gradient_cases.add()


# (d) the same with zero_mean=True --------------------------------------------------------------
@settings(max_examples=scaled(2000))
@given(params=gabor_params(), size=kernel_sizes, seed=seeds)
def test_zero_mean_gradients_match_central_differences(params, size, seed, gradient_cases):
    weight = random_weight(seed, (params[0].shape[0], *size))
    grads = analytic_gradients(params, size, weight, zero_mean=True)
    assert_matches_differences(grads, central_differences(params, size, weight, zero_mean=True), weight, params)
    reference = analytic_gradients(params, size, weight, zero_mean=True, backend="reference")
    torch.testing.assert_close(grads, reference, **REF_TOL)
    gradient_cases.add()


@settings(max_examples=scaled(200))
@given(params=gabor_params(n_max=2), size=kernel_sizes)
def test_zero_mean_gradgradcheck(params, size, gradient_cases):
    leaves = [p.requires_grad_() for p in params]
    assert torch.autograd.gradgradcheck(_bank_fn(size, zero_mean=True), leaves, fast_mode=True)
    gradient_cases.add()


# (e) only some parameters require grad (the needs_input_grad paths) --------------------------
@settings(max_examples=scaled(1700))
@given(params=gabor_params(), size=kernel_sizes, seed=seeds, zero_mean=st.booleans(),
       mask=st.lists(st.booleans(), min_size=5, max_size=5))
def test_gradients_of_a_subset(params, size, seed, zero_mean, mask, gradient_cases):
    weight = random_weight(seed, (params[0].shape[0], *size))
    inputs = [p.detach().clone().requires_grad_(m) for p, m in zip(params, mask)]
    bank = gabor_kernel2d(*inputs, size, zero_mean=zero_mean)
    assert bank.requires_grad == any(mask)
    if any(mask):
        chosen = [t for t, m in zip(inputs, mask) if m]
        grads = torch.autograd.grad((bank * weight).sum(), chosen)
        full = analytic_gradients(params, size, weight, zero_mean=zero_mean)
        numeric = central_differences(params, size, weight, zero_mean=zero_mean)
        picked = [k for k in range(5) if mask[k]]
        torch.testing.assert_close(torch.stack(grads), full[picked], rtol=1e-12, atol=1e-14)
        assert_matches_differences(torch.stack(grads), numeric[picked], weight, [params[k] for k in picked])
    gradient_cases.add()


# (f) broadcast parameters get gradients reduced to their own shapes ---------------------------
FORMS = ("float", "scalar", "row", "column", "full", "vector")


@st.composite
def broadcast_params(draw):
    """Five parameters of mixed forms over a batch ``(A, B)``: python floats, 0-d tensors,
    ``(1, B)``, ``(A, 1)``, ``(A, B)`` and ``(B,)`` tensors (the tensors require grad)."""
    a, b = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    shapes = {"scalar": (), "row": (1, b), "column": (a, 1), "full": (a, b), "vector": (b,)}
    params = []
    for name in PARAM_NAMES:
        lo, hi = RANGES[name]
        form = draw(st.sampled_from(FORMS))
        if form == "float":
            params.append(draw(st.floats(lo, hi)))
        else:
            shape = shapes[form]
            n = 1 if not shape else shape[0] * (shape[1] if len(shape) == 2 else 1)
            values = draw(st.lists(st.floats(lo, hi), min_size=n, max_size=n))
            params.append(torch.tensor(values, dtype=torch.float64).reshape(shape).requires_grad_())
    return params, (a, b)


@settings(max_examples=scaled(1200))
@given(case=broadcast_params(), size=kernel_sizes, seed=seeds)
def test_broadcast_gradients_are_reduced(case, size, seed, gradient_cases):
    params, batch = case
    bank = gabor_kernel2d(*params, size)
    batch_shape = bank.shape[:-2]
    assert len(batch_shape) <= 2 and all(s in (1, n) for s, n in zip(batch_shape[::-1], batch[::-1]))
    weight = random_weight(seed, bank.shape)
    tensors = [k for k, p in enumerate(params) if isinstance(p, torch.Tensor)]
    if not tensors:
        gradient_cases.add()
        return
    grads = torch.autograd.grad((bank * weight).sum(), [params[k] for k in tensors])
    for k, g in zip(tensors, grads):
        assert g.shape == params[k].shape
    # The reduction: each kernel's own gradient (every parameter expanded to the batch shape),
    # summed over the broadcast dimensions.
    expanded = [torch.as_tensor(p, dtype=torch.float64).detach().expand(batch_shape).reshape(-1) for p in params]
    flat_weight = weight.reshape(-1, *size)
    per_kernel = analytic_gradients(expanded, size, flat_weight).reshape(5, *batch_shape)
    for k, g in zip(tensors, grads):
        reduced = per_kernel[k].sum_to_size(params[k].shape) if g.dim() else per_kernel[k].sum()
        torch.testing.assert_close(g, reduced, rtol=1e-10, atol=1e-12)
    # And against central differences of the broadcast call along a random +-1 direction.
    direction_gen = torch.Generator().manual_seed(seed ^ 0x5EED)
    for k, g in zip(tensors, grads):
        v = torch.randint(0, 2, params[k].shape, generator=direction_gen, dtype=torch.float64) * 2 - 1
        shifted = []
        for sign in (1, -1):
            args = list(params)
            args[k] = params[k].detach() + sign * H * v
            with torch.no_grad():
                shifted.append((gabor_kernel2d(*args, size) * weight).sum())
        numeric = (shifted[0] - shifted[1]) / (2 * H)
        assert abs(float((g * v).sum() - numeric)) <= (FD_ATOL * float(weight.abs().sum())
                                                       + FD_RTOL * abs(float(numeric)))
    gradient_cases.add()


# (g) forward mode (jvp) of the 1-D, 2-D and 3-D banks and of the magnitude ----------------------
# The 2-D bank's forward mode is checked by test_gradcheck above (check_forward_ad); the 1-D and
# 3-D cases are those of tests/test_nd.py's gradchecks (which check reverse mode), forward only.
sizes_1d = st.integers(1, 15)
sizes_3d = st.tuples(st.integers(1, 5), st.integers(1, 5), st.integers(1, 5))
FORWARD_ONLY = dict(fast_mode=True, check_forward_ad=True, check_backward_ad=False, check_undefined_grad=False,
                    check_batched_grad=False)


@settings(max_examples=scaled(300))
@given(params=nd_params(NAMES_1D), k=sizes_1d, zero_mean=st.booleans())
def test_1d_forward_mode_gradcheck(params, k, zero_mean, gradient_cases):
    leaves = [p.requires_grad_() for p in params]
    assert torch.autograd.gradcheck(lambda *p: gabor_kernel1d(*p, k, zero_mean=zero_mean), leaves, **FORWARD_ONLY)
    gradient_cases.add()


@settings(max_examples=scaled(300))
@given(params=nd_params(NAMES_3D), size=sizes_3d, zero_mean=st.booleans())
def test_3d_forward_mode_gradcheck(params, size, zero_mean, gradient_cases):
    leaves = [p.requires_grad_() for p in params]
    assert torch.autograd.gradcheck(lambda *p: gabor_kernel3d(*p, size, zero_mean=zero_mean), leaves, **FORWARD_ONLY)
    gradient_cases.add()


@settings(max_examples=scaled(300))
@given(shape=st.lists(st.integers(1, 3), min_size=0, max_size=3), axis=st.integers(0, 3), seed=seeds)
def test_magnitude_gradcheck_forward_and_reverse(shape, axis, seed, gradient_cases):
    axis = min(axis, len(shape))
    gen = torch.Generator().manual_seed(seed)
    pairs = torch.randn(*shape[:axis], 2, *shape[axis:], dtype=torch.float64, generator=gen)
    even = pairs.select(axis, 0)
    even.copy_(torch.where(even < 0, even - 0.3, even + 0.3))  # |z| >= 0.3: away from the kink at 0
    assert torch.autograd.gradcheck(lambda p: QuadratureMagnitude.apply(p, axis), (pairs.requires_grad_(),),
                                    check_forward_ad=True)
    gradient_cases.add()


def test_magnitude_forward_mode_at_zero_response_is_zero():
    pairs = torch.zeros(2, 2, 3, dtype=torch.float64)
    pairs[1, :, 0] = torch.tensor([3.0, -4.0])
    tangent = torch.randn(pairs.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    value, derivative = torch.func.jvp(lambda p: QuadratureMagnitude.apply(p, 1), (pairs,), (tangent,))
    expected = torch.zeros(2, 3, dtype=torch.float64)
    expected[1, 0] = (3 * tangent[1, 0, 0] - 4 * tangent[1, 1, 0]) / 5
    torch.testing.assert_close(value, torch.hypot(pairs[:, 0], pairs[:, 1]), rtol=0, atol=0)
    torch.testing.assert_close(derivative, expected, rtol=1e-15, atol=0)
    # Reverse over forward (masks, as in backward): finite at the zero response too.
    leaf = pairs.clone().requires_grad_()
    with fwAD.dual_level():
        out = fwAD.unpack_dual(QuadratureMagnitude.apply(fwAD.make_dual(leaf, tangent), 1)).tangent
    (grad,) = torch.autograd.grad(out.sum(), leaf)
    assert torch.isfinite(grad).all() and grad[0].abs().max() == 0


@pytest.mark.parametrize("conv, params, size, x_shape", [
    (gabor_conv1d, (1.5, 4.0, 0.3), 5, (1, 2, 9)),
    (gabor_conv2d, (0.4, 1.5, 4.0, 0.8, 0.3), (3, 4), (1, 2, 6, 5)),
    (gabor_conv3d, (0.4, -0.2, 1.5, 4.0, 0.8, 0.3), (3, 2, 3), (1, 2, 4, 3, 4)),
], ids=["1d", "2d", "3d"])
def test_magnitude_convolution_forward_mode_gradcheck(conv, params, size, x_shape):
    gen = torch.Generator().manual_seed(len(x_shape))
    x = (torch.randn(x_shape, dtype=torch.float64, generator=gen) + 3).requires_grad_()
    leaves = [(p + 0.1 * torch.rand(3, 2, dtype=torch.float64, generator=gen)).requires_grad_() for p in params]
    bias = torch.randn(3, dtype=torch.float64, generator=gen).requires_grad_()
    assert torch.autograd.gradcheck(lambda x, b, *p: conv(x, *p, size, b, output="magnitude"), (x, bias, *leaves),
                                    check_forward_ad=True)


# (h) forward mode against plain autograd through the reference formula -------------------------
BUILDS = {1: gabor_kernel1d, 2: gabor_kernel2d, 3: gabor_kernel3d}


@st.composite
def nd_cases(draw, n_max: int = 4):
    """``(dims, params, size)`` for a random dimension, drawn as the gradient tests above draw them."""
    dims = draw(st.sampled_from([1, 2, 3]))
    if dims == 2:
        return dims, draw(gabor_params(n_max=n_max)), draw(kernel_sizes)
    names, sizes = (NAMES_1D, sizes_1d) if dims == 1 else (NAMES_3D, sizes_3d)
    return dims, draw(nd_params(names, n_max=n_max)), draw(sizes)


def dual_tangent(build, params, tangents, size, **kwargs):
    """The bank's tangent through torch.autograd.forward_ad; a ``None`` tangent makes no dual."""
    with fwAD.dual_level():
        duals = [p if t is None else fwAD.make_dual(p, t) for p, t in zip(params, tangents)]
        return fwAD.unpack_dual(build(*duals, size, **kwargs)).tangent


@settings(max_examples=scaled(400))
@given(case=nd_cases(), seed=seeds, zero_mean=st.booleans(), mask=st.lists(st.booleans(), min_size=6, max_size=6))
def test_jvp_and_jacfwd_match_the_reference(case, seed, zero_mean, mask):
    dims, params, size = case
    build, mask = BUILDS[dims], mask[:len(params)]
    gen = torch.Generator().manual_seed(seed)
    tangents = tuple(torch.randn(p.shape, dtype=torch.float64, generator=gen) for p in params)

    def bank(backend):
        return lambda *p: build(*p, size, zero_mean=zero_mean, backend=backend)

    value, tangent = torch.func.jvp(bank("torch"), params, tangents)
    ref_value, ref_tangent = torch.func.jvp(bank("reference"), params, tangents)
    torch.testing.assert_close(value, ref_value, **REF_TOL)
    torch.testing.assert_close(tangent, ref_tangent, **REF_TOL)
    argnums = tuple(range(len(params)))
    jacobians = torch.func.jacfwd(bank("torch"), argnums=argnums)(*params)
    ref_jacobians = torch.func.jacrev(bank("reference"), argnums=argnums)(*params)
    for j, j_ref in zip(jacobians, ref_jacobians):
        torch.testing.assert_close(j, j_ref, **REF_TOL)
    # Tangents for some parameters only: the jvp functions get None for the others.
    some = [t if m else None for t, m in zip(tangents, mask)]
    if any(mask):
        expected = dual_tangent(build, params, some, size, zero_mean=zero_mean, backend="reference")
        torch.testing.assert_close(dual_tangent(build, params, some, size, zero_mean=zero_mean), expected, **REF_TOL)

        def partial(*chosen):
            it = iter(chosen)
            return build(*(next(it) if m else p for p, m in zip(params, mask)), size, zero_mean=zero_mean)

        chosen = [k for k in range(len(params)) if mask[k]]
        _, through_func = torch.func.jvp(partial, tuple(params[k] for k in chosen), tuple(tangents[k] for k in chosen))
        torch.testing.assert_close(through_func, expected, **REF_TOL)


@settings(max_examples=scaled(120))
@given(case=nd_cases(n_max=2), seed=seeds)
def test_hessian_matches_the_reference(case, seed):
    """``torch.func.hessian`` (forward over reverse: the jvp of the analytic backward) and reverse
    over forward (the backward of the jvp functions) against the reference's hessian."""
    dims, params, size = case
    build = BUILDS[dims]
    k, n = len(params), params[0].shape[0]
    weight = random_weight(seed, build(*params, size).shape)
    flat = torch.stack(params).reshape(-1)

    def loss(backend):
        return lambda v: (build(*v.view(k, n).unbind(0), size, backend=backend) * weight).sum()

    expected = torch.func.hessian(loss("reference"))(flat)
    tol = dict(rtol=1e-8, atol=1e-10 * float(weight.abs().sum()))
    torch.testing.assert_close(torch.func.hessian(loss("torch"))(flat), expected, **tol)
    torch.testing.assert_close(torch.func.jacrev(torch.func.jacfwd(loss("torch")))(flat), expected, **tol)


# (i) forward mode at the extremes of the valid range: finite, as the gradients are -------------
@settings(max_examples=scaled(300))
@given(params=extreme_params(), size=st.one_of(kernel_sizes, st.just((63, 63))),
       dtype=st.sampled_from([torch.float32, torch.float64]), zero_mean=st.booleans())
def test_forward_mode_at_extreme_parameters_is_finite(params, size, dtype, zero_mean):
    primals = tuple(torch.tensor([p], dtype=dtype) for p in params)
    tangents = tuple(torch.ones_like(p) for p in primals)
    bank, tangent = torch.func.jvp(lambda *p: gabor_kernel2d(*p, size, zero_mean=zero_mean), primals, tangents)
    assert torch.isfinite(bank).all() and torch.isfinite(tangent).all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_forward_mode_at_tiny_sigma_and_huge_gamma_is_finite(dtype):
    for sigma, gamma in ((1e-30, 1.0), (1e-45 if dtype == torch.float32 else 1e-320, 1.0), (1.0, 1e30),
                         (1e-30, 1e30), (1e30, 1e-30)):
        for build, values, size in ((gabor_kernel1d, (sigma, 4.0, 0.3), 15),
                                    (gabor_kernel2d, (0.4, sigma, 4.0, gamma, 0.3), (9, 8)),
                                    (gabor_kernel3d, (0.4, -0.3, sigma, 4.0, gamma, 0.3), (5, 4, 5))):
            primals = tuple(torch.tensor([v], dtype=dtype) for v in values)
            tangents = tuple(torch.ones_like(p) for p in primals)
            _, tangent = torch.func.jvp(lambda *p, build=build, size=size: build(*p, size), primals, tangents)
            assert torch.isfinite(tangent).all(), (build.__name__, sigma, gamma, dtype)


# (j) the Functions torch.compile traces have no jvp: Dynamo refuses one that has --------------
def test_torch_compile_fullgraph_still_traces_every_function():
    torch._dynamo.reset()
    gen = torch.Generator().manual_seed(7)
    cases = [(lambda *p: gabor_kernel1d(*p, 7), 3), (lambda *p: gabor_kernel2d(*p, (3, 4)), 5),
             (lambda *p: gabor_kernel3d(*p, (2, 3, 2)), 6)]
    for fn, k in cases:
        params = [torch.rand(2, dtype=torch.float64, generator=gen) + 0.5 for _ in range(k)]
        compiled = torch.compile(fn, backend="eager", fullgraph=True)
        # Eagerly on CPU the 2-D bank comes from the compiled loop, compiled from the PyTorch formula:
        # the same formula in other sin, cos and exp, so equal to a few float64 roundings of the phase.
        exact = k != 5
        torch.testing.assert_close(compiled(*params), fn(*params), rtol=0, atol=0 if exact else 1e-14)
    pairs = torch.randn(3, 2, 4, dtype=torch.float64, generator=gen)
    compiled = torch.compile(lambda p: QuadratureMagnitude.apply(p, 1), backend="eager", fullgraph=True)
    torch.testing.assert_close(compiled(pairs), torch.hypot(pairs[:, 0], pairs[:, 1]), rtol=0, atol=0)
