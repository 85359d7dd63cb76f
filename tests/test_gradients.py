"""Gradients of ``gabor_kernel2d`` with respect to all five parameters, in float64.

Each generated case is checked against numerical derivatives (central differences of a random
scalar loss ``sum(w * K)``, or ``torch.autograd.gradcheck``/``gradgradcheck``) and counted with
``gradient_cases.add()``; under the ci profile these tests generate about 11,000 cases.

The central-difference tolerance (``FD_ATOL`` times ``sum |w|`` per kernel, plus ``FD_RTOL``)
sits about 20x above the largest error seen over 8,000 cases (~1e-8 ``sum |w|``, from theta),
and about 10,000x below the median gradient (~5e-3 ``sum |w|``), so a wrong sign, a missing
factor or a swapped term fails at once.
"""
from __future__ import annotations

import torch
from conftest import RANGES, gabor_params, kernel_sizes, scaled
from hypothesis import given, settings
from hypothesis import strategies as st

from gaborlayer import gabor_kernel2d
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
    assert torch.autograd.gradcheck(_bank_fn(size), leaves, fast_mode=True)
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
