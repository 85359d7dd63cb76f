"""The eager CPU kernels of the 2-D bank (``gaborlayer._cpu_kernels``): where they run, that they
compute the PyTorch formula's bank to float rounding at ordinary and extreme parameters without a
floating-point warning, that chunks spread over threads (and over a fork) give the same bank and moment
gradients, and that without numba the plain backward runs.

Their gradients are checked where every gradient is: the generated suites (tests/test_gradients.py,
test_oracle.py, test_numerics.py, test_speed_paths.py) run through them wherever they are taken."""
from __future__ import annotations

import multiprocessing
import warnings

import pytest
import torch
from conftest import RANGES, _floats, scaled
from hypothesis import given, settings
from hypothesis import strategies as st

from gaborlayer import GaborConv2d, gabor_kernel2d
from gaborlayer import _autograd as ag
from gaborlayer import _cpu_kernels as cpu_kernels
from gaborlayer._reference import gabor_kernel2d_reference

NAMES = ("theta", "sigma", "lambd", "gamma", "psi")


def torch_bank(params, kh, kw):
    """The PyTorch formula's bank ``(N, kh, kw)`` (the path torch.compile and functorch take)."""
    return ag._bank_terms2d(*params, kh, kw).t().reshape(-1, kh, kw)


def random_params(n, dtype, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return [lo + (hi - lo) * torch.rand(n, generator=gen, dtype=dtype) for lo, hi in (RANGES[k] for k in NAMES)]


def test_the_eager_cpu_bank_comes_from_the_compiled_loop_and_traced_ones_from_torch(monkeypatch):
    calls = []
    real = cpu_kernels.bank2d
    monkeypatch.setattr(cpu_kernels, "bank2d", lambda *a, **k: calls.append(1) or real(*a, **k))
    p = random_params(6, torch.float32)
    gabor_kernel2d(*p, (5, 4))  # no gradient to build: the plain Function
    assert len(calls) == 1
    q = [t.clone().requires_grad_() for t in p]
    gabor_kernel2d(*q, (5, 4)).sum().backward()  # the moment Function
    assert len(calls) == 2
    torch.func.vmap(lambda *r: gabor_kernel2d(*r, (5, 4)))(*[t.view(2, 3) for t in p])
    torch.compile(lambda *r: gabor_kernel2d(*r, (5, 4)), backend="eager", fullgraph=True)(*p)
    torch.jit.trace(lambda *r: gabor_kernel2d(*r, (5, 4)), tuple(p), check_trace=False)
    assert len(calls) == 2  # (vmap, compile and jit.trace record torch operations)
    assert not cpu_kernels.eligible(torch.zeros(3, dtype=torch.float16))
    assert not cpu_kernels.eligible(torch.zeros(3, requires_grad=True))  # a graph to record
    with torch.no_grad():
        assert cpu_kernels.eligible(torch.zeros(3, requires_grad=True))


@st.composite
def banks(draw):
    n = draw(st.integers(1, 70))
    dtype = draw(st.sampled_from([torch.float32, torch.float64]))

    def column(lo, hi):
        return torch.tensor(draw(st.lists(_floats(lo, hi), min_size=n, max_size=n)), dtype=torch.float64)

    theta = column(-10.0, 10.0)
    sigma = column(-12.0, 6.0).exp()  # e^-12 ~ 6e-6 (an envelope of exact zeros) to e^6 ~ 400
    lambd = column(2.0, 60.0)
    gamma = column(-6.0, 6.0).exp()
    psi = column(-1e4, 1e4)  # reduced first where outside (-2 pi, 2 pi)
    size = draw(st.tuples(st.integers(1, 12), st.integers(1, 12)))
    return [t.to(dtype) for t in (theta, sigma, lambd, gamma, psi)], size


@settings(max_examples=scaled(300))
@given(case=banks())
def test_the_compiled_bank_is_the_torch_formulas_to_rounding_without_warnings(case):
    """Both against each other at the same values: within a few roundings of the bank's scale (the
    phase reaches 2 pi x'/lambd + psi, so its rounding is that of a number of that size), never NaN,
    and no NumPy floating-point warning escapes (overflow to inf and underflow to 0 are intended)."""
    params, (kh, kw) = case
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        bank, sine, _ = cpu_kernels.bank2d(params, kh, kw, sine=True)
    want = torch_bank(params, kh, kw)
    assert not bank.isnan().any() and not sine.isnan().any()
    eps = torch.finfo(bank.dtype).eps
    phase_size = 2 * torch.pi * (max(kh, kw) / params[2].min() + 1) + 2 * torch.pi
    assert (bank - want).abs().max() <= 8 * eps * float(phase_size)
    assert (sine.square() + bank.square()).max() <= 1 + 8 * eps


def test_tiny_sigma_gives_the_centre_tap_alone_and_large_psi_is_reduced():
    params = [torch.tensor(v, dtype=torch.float64) for v in ([0.3, 0.3], [1e-30, 1e-30], [4.0, 4.0], [1e30, 1.0],
                                                             [0.5, 0.5 + 2e6 * torch.pi])]
    bank = cpu_kernels.bank2d(params, 3, 3)[0]
    torch.testing.assert_close(bank[:, 1, 1], torch.cos(torch.tensor([0.5, 0.5], dtype=torch.float64)))
    assert torch.equal(bank.count_nonzero((1, 2)), torch.tensor([1, 1]))
    torch.testing.assert_close(bank[1], bank[0], rtol=0, atol=1e-8)  # psi + 1e6 turns: the same filter


def test_a_subnormal_sigma_gives_the_centre_tap_alone():
    """In float64 1/sigma overflows for a subnormal sigma; the loop reads it as the smallest normal, so
    the centre tap is cos(psi), not 0 * inf, and every other tap 0."""
    params = [torch.tensor(v, dtype=torch.float64) for v in ([0.3, 1.0], [1e-310, 5e-324], [4.0, 3.0], [1.0, 1e300],
                                                             [0.5, -0.25])]
    bank = cpu_kernels.bank2d(params, 3, 3)[0]
    torch.testing.assert_close(bank[:, 1, 1], torch.cos(params[4]))
    assert torch.equal(bank.count_nonzero((1, 2)), torch.tensor([1, 1]))


def test_chunks_over_threads_give_the_bank_and_gradients_of_one_thread(monkeypatch):
    """3000 3 x 5 filters: in one thread three blocks inside the bank loop (1024, 1024, 952) and twelve
    inside the moment loop (256 each but the last), on three threads three chunks; the same bank and
    moment gradients to the bit, and each right."""
    monkeypatch.setattr(cpu_kernels, "PARALLEL_ELEMENTS", 0)
    values = random_params(3000, torch.float32, seed=4)
    grad = torch.randn(3000, 3, 5, generator=torch.Generator().manual_seed(2))
    threads = torch.get_num_threads()
    results = []
    try:
        for count in (1, 3):
            torch.set_num_threads(count)
            bank, sine, inside = cpu_kernels.bank2d(values, 3, 5, sine=True, ranges=(0.0, 1e9, 0.0, 1e9))
            results.append((bank, sine, cpu_kernels.moment_gradients2d(grad, values, bank, sine, False), inside))
    finally:
        torch.set_num_threads(threads)
    assert [(c.start, c.stop) for c in cpu_kernels._filter_chunks(3000, 15, 3)] == [(0, 1024), (1024, 2048),
                                                                                   (2048, 3000)]
    (*one, one_inside), (*several, several_inside) = results
    assert one_inside and several_inside and all(torch.equal(a, b) for a, b in zip(one, several))
    torch.testing.assert_close(one[0], torch_bank(values, 3, 5), rtol=0, atol=1e-5)  # every block right
    exact = [v.double().requires_grad_() for v in values]  # and every block of the moment loop
    gabor_kernel2d_reference(*exact, 3, 5).backward(grad.double())
    torch.testing.assert_close(one[2], torch.stack([v.grad for v in exact]).float(), rtol=1e-4, atol=1e-4)


def _bank_in_child(values, queue):
    torch.set_num_threads(2)
    bank, sine, _ = cpu_kernels.bank2d(values, 3, 5, sine=True)
    grads = cpu_kernels.moment_gradients2d(bank, values, bank, sine, False)  # the compiled kernel, chunked
    queue.put((bank.numpy(), grads.numpy()))  # (by value: the child exits next)


@pytest.mark.skipif("fork" not in multiprocessing.get_all_start_methods(), reason="needs fork")
def test_a_forked_child_builds_banks_with_a_pool_of_its_own(monkeypatch):
    """After the parent has started its chunk pool (and compiled the moment kernel), a forked child
    (as DataLoader workers are) must not wait on the parent's threads, which it does not have, and
    builds the same bank and moment gradients."""
    monkeypatch.setattr(cpu_kernels, "PARALLEL_ELEMENTS", 0)
    values = random_params(500, torch.float32, seed=5)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        bank, sine, _ = cpu_kernels.bank2d(values, 3, 5, sine=True)  # starts the pool here
        want = (bank, cpu_kernels.moment_gradients2d(bank, values, bank, sine, False))
    finally:
        torch.set_num_threads(threads)
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    child = context.Process(target=_bank_in_child, args=(values, queue))
    child.start()
    try:
        got = queue.get(timeout=60)
    finally:
        child.join(timeout=10)
        if child.is_alive():  # (stuck: the failure this test is for)
            child.kill()
    assert child.exitcode == 0
    assert all(torch.equal(torch.from_numpy(g), w) for g, w in zip(got, want))


def test_an_infinite_incoming_gradient_raises_no_numpy_warning():
    """As in torch, the filter it meets gets a non-finite gradient and the others are untouched;
    no floating-point warning escapes the kernels."""
    p = [t.requires_grad_() for t in random_params(8, torch.float32, seed=6)]
    bank = gabor_kernel2d(*p, (3, 3))
    grad = torch.zeros_like(bank)
    grad[0] = float("inf")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        grads = torch.autograd.grad(bank, p, grad)
    assert all(torch.isfinite(g[1:]).all() and not torch.isfinite(g[0]) for g in grads)


def _function_classes(tensor: torch.Tensor) -> set:
    """The autograd Functions in ``tensor``'s graph."""
    todo, seen = [tensor.grad_fn], set()
    while todo:
        node = todo.pop()
        if node is not None and node not in seen:
            seen.add(node)
            todo += [n for n, _ in node.next_functions]
    return {getattr(node, "_forward_cls", None) for node in seen} - {None}


def test_without_numba_the_function_keeps_its_plain_backward(monkeypatch):
    """Where numba cannot be imported (``loops()`` is None) neither compiled kernel runs: the
    Function and a layer keep the plain backward (and the PyTorch formula's bank), with the same
    gradients to rounding."""
    p = [t.requires_grad_() for t in random_params(12, torch.float64, seed=7)]
    conv = GaborConv2d(2, 3, (5, 4), dtype=torch.float64)
    grad = torch.randn(12, 5, 4, dtype=torch.float64)
    with_kernel = torch.autograd.grad(gabor_kernel2d(*p, (5, 4)), p, grad)
    layer_with = torch.autograd.grad(conv.weight.square().sum(), list(conv.parameters())[:5])
    monkeypatch.setattr(cpu_kernels, "loops", lambda: None)
    assert not ag.moments_pay(tuple(p))
    bank = gabor_kernel2d(*p, (5, 4))
    assert ag.GaborKernel2d._forward_mode in _function_classes(bank)
    assert ag._GaborKernel2dMoments not in _function_classes(bank)
    for got, want in zip(torch.autograd.grad(bank, p, grad), with_kernel):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)
    weight = conv.weight
    assert ag._GaborKernel2dMoments not in _function_classes(weight)
    for got, want in zip(torch.autograd.grad(weight.square().sum(), list(conv.parameters())[:5]), layer_with):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)



@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_the_bank_reports_whether_sigma_and_gamma_are_in_the_ranges(dtype):
    values = random_params(200, dtype, seed=8)
    ranges = (0.5, 8.0, 0.25, 4.0)
    values[1].clamp_(0.6, 7.0)
    values[3].clamp_(0.3, 3.0)
    assert cpu_kernels.bank2d(values, 3, 3, ranges=ranges)[2]
    for index, bad in ((1, 9.0), (1, 0.4), (3, 5.0), (3, 0.2), (3, float("nan")), (1, float("nan"))):
        changed = [v.clone() for v in values]
        changed[index][57] = bad
        assert not cpu_kernels.bank2d(changed, 3, 3, ranges=ranges)[2]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_the_bank_reads_stored_log_parameters_as_the_layer_does(dtype):
    """``stored=True`` reads sigma, lambd and gamma as exp of the clamp (lambd above its floor): the
    same bank as from those values, to rounding, also at and beyond the clamp's bounds."""
    logs = [torch.tensor([0.3, -1.0, 80.0, 85.0, -80.0, -90.0], dtype=torch.float64) for _ in range(3)]
    theta, psi = torch.linspace(-3, 3, 6, dtype=torch.float64), torch.linspace(-1, 1, 6, dtype=torch.float64)
    stored = [t.to(dtype) for t in (theta, *logs, psi)]
    read = [torch.exp(t.to(torch.float64).clamp(-80, 80)) for t in stored[1:4]]
    read[1] = read[1] + 2
    got = cpu_kernels.bank2d(stored, 5, 5, stored=True)[0]
    want = cpu_kernels.bank2d([theta, *read, psi], 5, 5)[0]
    assert not got.isnan().any()
    torch.testing.assert_close(got.double(), want, rtol=0, atol=4 * torch.finfo(dtype).eps)


# -- the eval-mode cache's value check ---------------------------------------------------------
@settings(max_examples=60, deadline=None)
@given(dtype=st.sampled_from([torch.float16, torch.float32, torch.float64]),
       sizes=st.lists(st.integers(0, 70), min_size=1, max_size=6), offset=st.integers(0, 3),
       change=st.one_of(st.none(), st.tuples(st.integers(0, 5), st.integers(0, 69))), seed=st.integers(0, 2**16))
def test_the_compiled_value_check_agrees_with_torch_equal(dtype, sizes, offset, change, seed):
    """Every byte counts, the ragged tails and misaligned addresses (a view at an odd offset) included."""
    assert cpu_kernels.loops() is not None  # (the compiled comparison, not the torch.equal fallback)
    gen = torch.Generator().manual_seed(seed)
    tensors = [torch.randn(n + offset, generator=gen).to(dtype)[offset:] for n in sizes]
    check = cpu_kernels.equality_check([t.clone() for t in tensors])
    assert check(tensors)
    if change is not None and sizes[change[0] % len(sizes)] > 0:
        t = tensors[change[0] % len(sizes)]
        t[change[1] % t.numel()] += 1
        assert not check(tensors)


def test_the_value_check_without_numba_or_for_strided_tensors_is_torch_equal(monkeypatch):
    t = torch.arange(12.0).reshape(3, 4).t()  # not contiguous
    check = cpu_kernels.equality_check([t.clone()])
    assert check([t]) and not check([t + 1])
    monkeypatch.setattr(cpu_kernels, "loops", lambda: None)
    u = torch.arange(5.0)
    check = cpu_kernels.equality_check([u.clone()])
    assert check([u]) and not check([u * 2])
