"""The eager CPU path of the 2-D bank: ``GaborKernel2d`` with the moment backward
(``gaborlayer._autograd._GaborKernel2dMoments``), where it is taken and where not, its gradients
against the plain Function's and the oracle's, what it saves, and the cached sampling grid.

The generated gradient suite (tests/test_gradients.py, test_oracle.py, test_numerics.py) goes
through this path wherever it is taken (eager, CPU, a gradient to build), so the checks against
central differences and the float32 accuracy bounds cover it; here is what is particular to it.
"""
from __future__ import annotations

import math

import pytest
import torch
from conftest import RANGES, _floats, scaled
from hypothesis import given, settings
from hypothesis import strategies as st

from gaborlayer import GaborConv2d, gabor_kernel2d
from gaborlayer import _autograd as ag
from gaborlayer import _cpu_kernels as cpu_kernels
from gaborlayer._autograd import MOMENT_GAMMA_RANGE, MOMENT_SIGMA_RANGE, GaborKernel2d
from gaborlayer._reference import gabor_kernel2d_reference

NAMES = ("theta", "sigma", "lambd", "gamma", "psi")
MOMENTS, PLAIN = "moments", "plain"


def params(n=6, dtype=torch.float64, seed=0, gamma=None, sigma=None, requires_grad=True):
    gen = torch.Generator().manual_seed(seed)
    values = [lo + (hi - lo) * torch.rand(n, generator=gen, dtype=torch.float64)
              for lo, hi in (RANGES[k] for k in NAMES)]
    if gamma is not None:
        values[3] = torch.full((n,), gamma, dtype=torch.float64)
    if sigma is not None:
        values[1] = torch.full((n,), sigma, dtype=torch.float64)
    return [v.to(dtype).requires_grad_(requires_grad) for v in values]


def path(bank: torch.Tensor) -> str | None:
    """Which backward ``bank`` gets: ``"moments"`` (the moment Function, inside its ranges),
    ``"plain"`` (the plain Function, or the moment Function outside its ranges: both named
    GaborKernel2d), or None."""
    todo, seen = [bank.grad_fn], set()
    while todo:  # the first GaborKernel2d node in the graph (the bank may be a view or product of it)
        node = todo.pop(0)
        if node is None or node in seen:
            continue
        seen.add(node)
        if node.name() == "GaborKernel2dBackward":
            return MOMENTS if node._forward_cls is ag._GaborKernel2dMoments and node.moments else PLAIN
        todo += [next_node for next_node, _ in node.next_functions]
    return None


# -- where the path is taken ---------------------------------------------------------------------
def test_the_moment_path_is_taken_eagerly_with_a_gradient_to_build():
    for dtype in (torch.float32, torch.float64):
        assert path(GaborKernel2d.apply(*params(dtype=dtype), 5, 4)) == MOMENTS
    low, high = MOMENT_GAMMA_RANGE
    assert path(GaborKernel2d.apply(*params(gamma=low), 5, 4)) == MOMENTS  # the range's ends are in it
    assert path(GaborKernel2d.apply(*params(gamma=high), 5, 4)) == MOMENTS


@pytest.mark.parametrize("case", ["no_grad", "no requires_grad", "gamma above", "gamma below", "sigma below",
                                  "sigma above", "nan gamma", "forward AD", "half"])
def test_the_plain_function_everywhere_else(case):
    kwargs = {"no requires_grad": {"requires_grad": False}, "gamma above": {"gamma": MOMENT_GAMMA_RANGE[1] * 1.01},
              "gamma below": {"gamma": MOMENT_GAMMA_RANGE[0] / 1.01},
              "sigma below": {"sigma": MOMENT_SIGMA_RANGE[0] / 1.01},
              "sigma above": {"sigma": MOMENT_SIGMA_RANGE[1] * 1.01}, "nan gamma": {"gamma": math.nan},
              "half": {"dtype": torch.float16}}.get(case, {})
    p = params(**kwargs)
    if case == "no_grad":
        with torch.no_grad():
            assert path(GaborKernel2d.apply(*p, 5, 4)) is None
        return
    if case == "forward AD":
        with torch.autograd.forward_ad.dual_level():
            dual = torch.autograd.forward_ad.make_dual(p[0], torch.ones_like(p[0]))
            bank = GaborKernel2d.apply(dual, *p[1:], 5, 4)
            assert path(bank) == PLAIN
            assert torch.autograd.forward_ad.unpack_dual(bank).tangent is not None
        return
    bank = GaborKernel2d.apply(*p, 5, 4)
    assert path(bank) in (None, PLAIN)


def test_the_plain_function_under_jit_trace():
    p = params(dtype=torch.float32)
    rest = [t.detach() for t in p[1:]]
    seen = []

    def build(theta):
        bank = GaborKernel2d.apply(theta, *rest, 3, 3)
        seen.append(path(bank))
        return bank

    torch.jit.trace(build, (p[0],), check_trace=False)
    assert seen == [PLAIN]  # no host read of gamma and sigma recorded into the trace


def test_the_plain_function_under_functorch():
    p = [t.detach() for t in params()]
    grads = torch.func.grad(lambda *q: (GaborKernel2d.apply(*q, 5, 4) ** 2).sum(), argnums=tuple(range(5)))(*p)
    p64 = [t.clone().requires_grad_() for t in p]
    expected = torch.autograd.grad((gabor_kernel2d_reference(*p64, 5, 4) ** 2).sum(), p64)
    torch.testing.assert_close(grads, expected)
    banks = torch.vmap(lambda *q: GaborKernel2d.apply(*q, 3, 3))(*[t[None] for t in p])
    torch.testing.assert_close(banks[0], gabor_kernel2d_reference(*p, 3, 3))


# -- what it computes ----------------------------------------------------------------------------
@st.composite
def moment_cases(draw):
    """Parameters over the whole range the moment path takes (gamma and sigma to its ends)."""
    n = draw(st.integers(1, 5))
    log_gamma = [math.log(v) for v in MOMENT_GAMMA_RANGE]
    theta = torch.tensor(draw(st.lists(_floats(*RANGES["theta"]), min_size=n, max_size=n)), dtype=torch.float64)
    sigma = torch.tensor(draw(st.lists(_floats(0.3, 12.0), min_size=n, max_size=n)), dtype=torch.float64)
    lambd = torch.tensor(draw(st.lists(_floats(1.0, 40.0), min_size=n, max_size=n)), dtype=torch.float64)
    gamma = torch.tensor(draw(st.lists(_floats(*log_gamma), min_size=n, max_size=n)), dtype=torch.float64).exp()
    psi = torch.tensor(draw(st.lists(_floats(*RANGES["psi"]), min_size=n, max_size=n)), dtype=torch.float64)
    size = draw(st.tuples(st.integers(1, 11), st.integers(1, 11)))
    return [theta, sigma, lambd, gamma, psi], size, draw(st.integers(0, 2**31 - 1))


@settings(max_examples=scaled(400))
@given(case=moment_cases())
def test_moment_gradients_are_the_plain_functions_to_float64_rounding(case, gradient_cases):
    values, size, seed = case
    grad = torch.randn(values[0].shape[0], *size, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    p = [v.clone().requires_grad_() for v in values]
    bank = GaborKernel2d.apply(*p, *size)
    assert path(bank) == MOMENTS
    got = torch.autograd.grad(bank, p, grad)
    q = [v.clone().requires_grad_() for v in values]
    plain = GaborKernel2d._forward_mode.apply(*q, *size)
    assert torch.equal(bank, plain)  # the forwards share their terms: the same bank to the bit
    want = torch.autograd.grad(plain, q, grad)
    # Relative to the sum over taps of |grad| times the largest per-tap factor of a derivative
    # (x'^2 gamma^2 / sigma^3 and the like, bounded through the envelope by ~1/sigma max(1, gamma^2)).
    sigma, gamma = values[1], values[3]
    scale = grad.abs().flatten(1).sum(1) * (1 + 1 / sigma) * torch.maximum(gamma, 1 / gamma) ** 2 * 10
    for name, g, w in zip(NAMES, got, want):
        assert ((g - w).abs() <= 1e-12 * scale).all(), (name, (g - w).abs().max())
    gradient_cases.add()


def test_moment_gradients_at_float32_are_as_accurate_as_the_plain_ones():
    """Both against the float64 oracle at the same (float32) values, at gamma up to 64: the moment
    algebra runs in float64, so the float32 error is the forward's rounding, as in the plain path."""
    gen = torch.Generator().manual_seed(5)
    for gamma in (0.02, 0.3, 1.0, 3.0, 60.0):
        p32 = params(n=64, dtype=torch.float32, seed=int(gamma * 100), gamma=gamma)
        grad = torch.randn(64, 7, 6, generator=gen)
        p64 = [t.detach().double().requires_grad_() for t in p32]
        want = torch.autograd.grad(gabor_kernel2d_reference(*p64, 7, 6), p64, grad.double())
        errors = {}
        for name, build in (("moments", GaborKernel2d.apply), ("plain", GaborKernel2d._forward_mode.apply)):
            bank = build(*p32, 7, 6)
            got = torch.autograd.grad(bank, p32, grad)
            errors[name] = [float(((g.double() - w).abs() / grad.abs().flatten(1).sum(1)).max())
                            for g, w in zip(got, want)]
        # Both come from the float32 forward's rounding of K and S (up to ~1e-6 of sum |grad| at
        # gamma = 3 for both paths).
        for name, m, pl in zip(NAMES, errors["moments"], errors["plain"]):
            assert m <= 4 * pl + 1e-6, (gamma, name, m, pl)


def test_double_backward_and_create_graph_take_the_differentiable_backward():
    p = params()
    assert torch.autograd.gradgradcheck(lambda *q: GaborKernel2d.apply(*q, 4, 3), p)
    bank = GaborKernel2d.apply(*p, 4, 3)
    (d_theta,) = torch.autograd.grad(bank.square().sum(), p[:1], create_graph=True)
    assert d_theta.grad_fn is not None


@pytest.mark.parametrize("layer", [False, True])
def test_the_moment_path_saves_one_bank_beyond_the_parameters(layer):
    """S = E sin(phase), beyond the inputs and the output, for the Function and for a layer's bank
    (whose constrained values are read again from the stored parameters in the backward)."""
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        if layer:
            conv = _layer(dtype=torch.float32)
            p = list(conv.parameters())
            bank = conv.weight
        else:
            p = params(n=32, dtype=torch.float32)
            bank = GaborKernel2d.apply(*p, 7, 5)
    assert path(bank) == MOMENTS
    own = {t.data_ptr() for t in p} | {bank.data_ptr()}  # the output itself costs nothing extra
    extra = sum(t.numel() * t.element_size() for t in saved if t.data_ptr() not in own)
    assert extra == bank.numel() * bank.element_size()


def test_inputs_without_a_gradient_and_an_unused_output():
    p = params()
    p[2] = p[2].detach()
    bank = GaborKernel2d.apply(*p, 3, 3)
    grads = torch.autograd.grad(bank.sum(), p[:2] + p[3:])
    assert all(torch.isfinite(g).all() for g in grads)


# -- the cached sampling grid -----------------------------------------------------------------------
def test_the_grid_cache_outlives_inference_mode_and_serves_training():
    """The PyTorch formula's cached coordinate tables (used where the compiled loop does not run:
    torch.compile, functorch, other devices) are built outside inference mode even when first asked
    for inside it, so a later gradient may save tensors made from them; and the layer's own sequence,
    a bank in inference mode and then a training step, works."""
    ag._tap_grids.cache_clear()
    p = params(dtype=torch.float32)
    detached = [t.detach() for t in p]
    with torch.inference_mode():
        tables = ag._tap_coordinates(5, 4, detached[0])  # the first use builds the cached tables
        gabor_kernel2d(*detached, (5, 4))
    assert ag._tap_grids.cache_info().currsize == 1
    assert not any(t.is_inference() for t in tables)
    bank = gabor_kernel2d(*p, (5, 4))
    assert all(torch.isfinite(g).all() for g in torch.autograd.grad(bank.sum(), p))


def test_the_layer_trains_under_cpu_autocast_on_the_moment_path():
    torch.manual_seed(0)
    conv = GaborConv2d(3, 4, 5, padding=2)
    x = torch.randn(2, 3, 12, 12)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = conv(x)
        grads = torch.autograd.grad(out.float().square().sum(), [conv.theta, conv.log_sigma])
    assert path(out) == MOMENTS
    assert all(torch.isfinite(g).all() and g.abs().sum() > 0 for g in grads)


def test_the_stored_log_parameters_read_as_exp_of_their_clamp():
    """``_storage._bounded_exp`` (hardtanh for the clamp: a one-kernel backward) gives exp(clamp(r))
    to the bit, the exact gradient inside the bounds (gradcheck) and 0 beyond them."""
    from gaborlayer._storage import LOG_LIMIT, _bounded_exp

    r = torch.linspace(-2 * LOG_LIMIT, 2 * LOG_LIMIT, 1001, dtype=torch.float64)
    assert torch.equal(_bounded_exp(r), torch.exp(r.clamp(-LOG_LIMIT, LOG_LIMIT)))
    assert torch.equal(_bounded_exp(r.float()), torch.exp(r.float().clamp(-LOG_LIMIT, LOG_LIMIT)))
    inside = torch.tensor([-70.0, -1.0, 0.0, 2.5, 70.0], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(_bounded_exp, (inside,))
    assert torch.autograd.gradgradcheck(_bounded_exp, (inside,))
    beyond = torch.tensor([-1e4, -81.0, 81.0, 1e4], dtype=torch.float64, requires_grad=True)
    _bounded_exp(beyond).sum().backward()
    assert torch.equal(beyond.grad, torch.zeros_like(beyond))


# -- the layer's bank as one Function call (the stored parameters read inside it) -----------------
def _unfolded_bank(conv: GaborConv2d) -> torch.Tensor:
    """The layer's bank as it is built without the folded path: the constraints by autograd
    (gaborlayer._storage), then the moment Function on the constrained values."""
    from gaborlayer import _storage

    values = [_storage.constrained(conv, name).reshape(-1) for name in NAMES]
    return GaborKernel2d.apply(*values, *conv.kernel_size).view(conv.out_channels, -1, *conv.kernel_size)


def _layer(dtype=torch.float64, seed=0, **kwargs):
    torch.manual_seed(seed)
    return GaborConv2d(3, 4, (5, 4), dtype=dtype, **kwargs)


def test_the_layer_builds_its_training_bank_in_one_function_call():
    conv = _layer(dtype=torch.float32)
    bank = conv.weight
    assert path(bank) == MOMENTS and bank.grad_fn._forward_cls is ag._GaborKernel2dMoments
    # no autograd node between the stored tensors and the Function: no transform, no reshape
    assert {type(node).__name__ for node, _ in bank.grad_fn.next_functions} == {"AccumulateGrad"}
    # The bank through autograd's transforms, to a rounding: the folded read keeps sigma, lambd and
    # gamma in float64, the transforms round them to float32 first.
    torch.testing.assert_close(bank, _unfolded_bank(conv), rtol=0, atol=16 * torch.finfo(torch.float32).eps)
    with torch.no_grad():
        assert torch.equal(bank, conv.weight)  # the same to the bit as the bank built without a graph
    conv.eval()
    assert torch.equal(bank, conv.weight)  # and as the eval bank (from the cache)


@settings(max_examples=scaled(100))
@given(case=moment_cases(), learn=st.sampled_from(["all", ("theta", "sigma", "gamma"), ("lambd", "psi")]))
def test_the_folded_layer_gradients_are_the_unfolded_ones_and_exact(case, learn, gradient_cases):
    """Gradients by the stored parameters equal those through autograd's transforms (to float64
    rounding) and central differences (gradcheck), for the parameters that learn."""
    values, size, seed = case
    values[2] = values[2].clamp(min=2.1)  # a layer's lambd is above 2
    n = values[0].shape[0]
    conv = GaborConv2d(1, n, size, dtype=torch.float64, learn=learn,
                       **{name: v.view(n, 1) for name, v in zip(NAMES, values)})
    stored = [p for p in conv.parameters() if p is not conv.bias]
    grad = torch.randn(n, 1, *size, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    got = torch.autograd.grad(conv.weight, stored, grad)
    want = torch.autograd.grad(_unfolded_bank(conv), stored, grad)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=1e-9, atol=1e-12 * float(grad.abs().sum()))

    def weight(*tensors):
        with torch.nn.utils.stateless._reparametrize_module(conv, dict(zip(
                [name for name, p in conv.named_parameters() if p is not conv.bias], tensors))):
            return conv.weight

    assert torch.autograd.gradcheck(weight, tuple(t.detach().requires_grad_() for t in stored))
    gradient_cases.add()


def test_the_folded_layer_at_the_clamp_bounds_and_beyond():
    """exp(clamp(r, -80, 80)): the gradient is 0 at and beyond the bounds, as through hardtanh."""
    conv = _layer()
    with torch.no_grad():
        conv.log_sigma[0, 0] = 80.0
        conv.log_gamma[1, 0] = -81.0
        conv.log_lambd_excess[2, 1] = 200.0
    grad = torch.randn(conv.weight.shape, dtype=torch.float64)
    stored = [conv.theta, conv.log_sigma, conv.log_lambd_excess, conv.log_gamma, conv.psi]
    got = torch.autograd.grad(conv.weight, stored, grad)
    want = torch.autograd.grad(_unfolded_bank(conv), stored, grad)
    assert path(conv.weight) == PLAIN  # sigma = e^80 is outside the moment range: the plain backward
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=1e-9, atol=1e-12)
    assert got[1][0, 0] == 0 and got[3][1, 0] == 0 and got[2][2, 1] == 0


def test_the_compiled_kernel_reads_lambd_at_its_clamp_bound_and_beyond():
    """On the moment path (sigma and gamma inside its ranges) a log_lambd_excess at or beyond the
    clamp's bound gets a gradient of exactly 0, and the rest are the unfolded bank's."""
    conv = _layer()
    with torch.no_grad():
        conv.log_lambd_excess[0, 0] = 80.0
        conv.log_lambd_excess[1, 2] = 200.0
        conv.log_lambd_excess[2, 1] = -1e4
    bank = conv.weight
    assert path(bank) == MOMENTS
    grad = torch.randn(bank.shape, dtype=torch.float64)
    stored = [conv.theta, conv.log_sigma, conv.log_lambd_excess, conv.log_gamma, conv.psi]
    got = torch.autograd.grad(bank, stored, grad)
    want = torch.autograd.grad(_unfolded_bank(conv), stored, grad)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=1e-9, atol=1e-12)
    assert got[2][0, 0] == 0 and got[2][1, 2] == 0 and got[2][2, 1] == 0
    assert (got[2].count_nonzero() == got[2].numel() - 3)


def test_the_folded_layer_double_backward():
    conv = _layer(amplitude=0.7)
    stored = tuple(p.detach().clone().requires_grad_() for p in (conv.theta, conv.log_sigma, conv.log_lambd_excess,
                                                                 conv.log_gamma, conv.psi, conv.amplitude))
    names = ("theta", "log_sigma", "log_lambd_excess", "log_gamma", "psi", "amplitude")

    def weight(*tensors):
        with torch.nn.utils.stateless._reparametrize_module(conv, dict(zip(names, tensors))):
            bank = conv.weight
        assert path(bank) in (MOMENTS, PLAIN) and bank.grad_fn is not None
        return bank

    assert torch.autograd.gradgradcheck(weight, stored)


# -- a large bank, chunk by chunk ------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_the_chunked_moment_path_is_the_unchunked_one(dtype, monkeypatch):
    """On four threads (a bank of 200 3 x 5 filters: four chunks of 64 filters, the last of 8), the
    bank is the unchunked one to the bit and the gradients are its to float rounding."""
    p = params(n=200, dtype=dtype, seed=3)
    whole = GaborKernel2d.apply(*p, 3, 5)
    grad = torch.randn(whole.shape, generator=torch.Generator().manual_seed(1), dtype=dtype)
    want = torch.autograd.grad(whole, p, grad)
    monkeypatch.setattr(cpu_kernels, "PARALLEL_ELEMENTS", 0)
    assert len(cpu_kernels._filter_chunks(200, 15, 4)) == 4
    q = [t.detach().clone().requires_grad_() for t in p]
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(4)
        bank = GaborKernel2d.apply(*q, 3, 5)
        got = torch.autograd.grad(bank, q, grad)
    finally:
        torch.set_num_threads(threads)
    assert path(bank) == MOMENTS
    assert torch.equal(bank, whole)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=1e-5 if dtype == torch.float32 else 1e-12, atol=1e-6)
