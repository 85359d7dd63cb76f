"""``backend="triton"``: the Triton kernels and the ``torch.ops.gaborlayer`` operators.

Without a GPU (CI) every test here runs the real Triton kernels under the Triton interpreter on
CPU tensors (``TRITON_INTERPRET=1``, set below before the kernels are first imported) at small
sizes; with a GPU the same tests run natively on CUDA at full sizes, plus the ``gpu``-marked ones
(bfloat16, which the interpreter cannot do, autocast on CUDA, compile with Triton kernels).
triton is imported unconditionally: where it is missing this file fails to collect, so CI fails
instead of skipping the Triton path.
"""
# ruff: noqa: E402  (imports follow the TRITON_INTERPRET set-up)
from __future__ import annotations

import math
import os
import sys
import warnings

import torch

CUDA = torch.cuda.is_available()
if not CUDA:
    # Must precede the first import of gaborlayer._triton.bank (gaborlayer imports it lazily,
    # only when a Triton backend is first used, so other test files importing gaborlayer is fine).
    os.environ["TRITON_INTERPRET"] = "1"

import pytest
import torch.nn.functional as F
import triton  # noqa: F401  (a missing triton must fail collection, never skip)
from hypothesis import given, settings
from hypothesis import strategies as st

if "gaborlayer._triton.bank" in sys.modules and not CUDA and not sys.modules["gaborlayer._triton.bank"].INTERPRETED:
    raise RuntimeError("gaborlayer._triton.bank was imported before tests/test_triton.py could set "
                       "TRITON_INTERPRET=1 (something used backend='triton' at import time); run with "
                       "TRITON_INTERPRET=1 in the environment")

from conftest import RANGES, gabor_params, kernel_sizes, scaled

import gaborlayer._triton as gtriton
from gaborlayer import (
    GaborConv2d,
    _ops,  # after the env var: it imports the kernels
    gabor_kernel2d,
)
from gaborlayer._reference import gabor_kernel2d_reference
from gaborlayer._triton import bank as kernels
from gaborlayer.functional import resolve_backend

DEVICE = torch.device("cuda" if CUDA else "cpu")
gpu = pytest.mark.gpu
needs_cuda = pytest.mark.skipif(not CUDA, reason="needs a CUDA device")

# Sizes: the interpreter runs each program in numpy, so CPU runs stay small.
N_MAX = 4096 if CUDA else 8
SIZE_MAX = 31 if CUDA else 9
# Tolerances against a float64 reference evaluated at the same (rounded) values. Bank entries
# are in [-1, 1]: an absolute tolerance. A gradient entry is a sum over taps of grad * dK/dp,
# and its rounding error grows with the sum of the absolute terms, which sets its scale.
FORWARD_ATOL = {torch.float64: 1e-12, torch.float32: 5e-5, torch.float16: 1.5e-3, torch.bfloat16: 1e-2}
GRAD_RTOL = {torch.float64: 1e-10, torch.float32: 2e-5, torch.float16: 3e-3, torch.bfloat16: 2e-2}
GRAD_ATOL = {torch.float64: 1e-12, torch.float32: 1e-6, torch.float16: 1e-4, torch.bfloat16: 1e-3}
# The interpreter has no bfloat16 arithmetic.
DTYPES = [torch.float64, torch.float32, torch.float16] + ([torch.bfloat16] if CUDA else [])


# -- helpers --------------------------------------------------------------------------------
def random_params(n: int, seed: int, dtype=torch.float64) -> tuple[torch.Tensor, ...]:
    """Five vectors ``(n,)`` uniform in the conftest ranges."""
    gen = torch.Generator().manual_seed(seed)
    return tuple((lo + (hi - lo) * torch.rand(n, generator=gen, dtype=torch.float64)).to(dtype)
                 for lo, hi in (RANGES[k] for k in ("theta", "sigma", "lambd", "gamma", "psi")))


@st.composite
def bank_cases(draw, dtype=torch.float64):
    """Parameters ``(N,)`` (hypothesis-chosen filters, topped up with seeded random ones up to
    N_MAX), a kernel size and an upstream-gradient seed."""
    chosen = draw(gabor_params(n_max=4, dtype=dtype))
    extra = draw(st.integers(0, N_MAX - chosen[0].shape[0]))
    seed = draw(st.integers(0, 2**31 - 1))
    params = tuple(torch.cat([c, r]) for c, r in zip(chosen, random_params(extra, seed, dtype)))
    size = draw(st.tuples(st.integers(1, SIZE_MAX), st.integers(1, SIZE_MAX)) if CUDA else kernel_sizes)
    return params, size, seed


def on_device(params, requires_grad=False):
    return [p.to(DEVICE).requires_grad_(requires_grad) for p in params]


def reference(params, grad, kh, kw):
    """Bank, the five gradients and their scales (sum over taps of ``|grad| |dK/dp|``), in float64."""
    p64 = [p.detach().double().requires_grad_() for p in params]
    g64 = grad.detach().double()
    bank = gabor_kernel2d_reference(*p64, kh, kw)
    grads = torch.autograd.grad(bank, p64, g64)
    scales = []
    with torch.no_grad():
        for k in range(5):
            # Filters are independent: one forward-mode pass gives dK_n/dp_n for every n.
            tangents = tuple(torch.ones_like(p) if j == k else torch.zeros_like(p) for j, p in enumerate(p64))
            _, d_bank = torch.func.jvp(lambda *p: gabor_kernel2d_reference(*p, kh, kw), tuple(p64), tangents)
            # The quadrature twin's derivative too: where sin(phase) is ~0 (lambd dividing the
            # taps' x'), dK/dp cancels in float64 but the float32 phase's rounding does not.
            _, d_twin = torch.func.jvp(lambda *p: gabor_kernel2d_reference(*p[:4], p[4] + math.pi / 2, kh, kw),
                                       tuple(p64), tangents)
            scales.append((g64.abs() * (d_bank.abs() + d_twin.abs())).sum(dim=(-2, -1)))
    return bank.detach(), grads, scales


def upstream(params, kh, kw, seed):
    gen = torch.Generator().manual_seed(seed + 1)
    return torch.randn(params[0].shape[0], kh, kw, generator=gen, dtype=torch.float64).to(params[0].dtype)


def assert_grads_close(got, want, scales, rtol, atol):
    for name, g, w, scale in zip(("theta", "sigma", "lambd", "gamma", "psi"), got, want, scales):
        excess = (g.detach().double() - w).abs() - (rtol * scale + atol)
        if excess.numel() and excess.max() > 0:
            i = int(excess.argmax())
            raise AssertionError(f"d_{name}[{i}]: got {g[i].item():.9g}, want {w[i].item():.9g}, "
                                 f"scale {scale[i].item():.3g}, rtol {rtol:.1g}, atol {atol:.1g}")


def numerical_grads(params, grad, kh, kw, step=1e-6):
    """Central differences of each filter's ``<grad_n, bank_n>`` in each parameter (float64).

    Filters are independent, so all 10 N perturbed filters go through one Triton launch.
    """
    n = params[0].shape[0]
    steps = [step * (1 + p.abs()) for p in params]
    moved = [[p + sign * steps[k] if j == k else p for j, p in enumerate(params)] for k in range(5) for sign in (1, -1)]
    stacked = [torch.cat([m[j] for m in moved]) for j in range(5)]
    bank = gabor_kernel2d(*stacked, (kh, kw), backend="triton").view(5, 2, n, kh * kw)
    loss = (bank * grad.reshape(1, 1, n, kh * kw)).sum(-1)
    return [(loss[k, 0] - loss[k, 1]) / (2 * steps[k]) for k in range(5)]


# -- the kernel against the reference, over generated cases -----------------------------------
@settings(max_examples=scaled(300))
@given(case=bank_cases())
def test_float64_values_and_gradients(case, gradient_cases):
    """Bank and all five gradients against the reference and against numerical derivatives
    (the cases counted by ``gradient_cases``; the lower precisions below are checked against the
    float64 reference only)."""
    params, (kh, kw), seed = case
    params = on_device(params, requires_grad=True)
    bank = gabor_kernel2d(*params, (kh, kw), backend="triton")
    grad = upstream(params, kh, kw, seed).to(DEVICE)
    grads = torch.autograd.grad(bank, params, grad)
    want_bank, want_grads, scales = reference(params, grad, kh, kw)
    torch.testing.assert_close(bank, want_bank, rtol=0, atol=FORWARD_ATOL[torch.float64])
    assert_grads_close(grads, want_grads, scales, GRAD_RTOL[torch.float64], GRAD_ATOL[torch.float64])
    with torch.no_grad():
        numerical = numerical_grads([p.detach() for p in params], grad, kh, kw)
    assert_grads_close(grads, numerical, scales, rtol=1e-6, atol=1e-8)
    gradient_cases.add()


@pytest.mark.parametrize("dtype", [d for d in DTYPES if d != torch.float64], ids=str)
@settings(max_examples=scaled(150))
@given(data=st.data())
def test_low_precision_values_and_gradients(dtype, data):
    """float32 math behind float32/float16 (bfloat16 on GPU) outputs, against the float64 reference
    at the same values."""
    params, (kh, kw), seed = data.draw(bank_cases(dtype=dtype))
    params = on_device(params, requires_grad=True)
    bank = gabor_kernel2d(*params, (kh, kw), backend="triton")
    assert bank.dtype == dtype
    grad = upstream(params, kh, kw, seed).to(DEVICE)
    grads = torch.autograd.grad(bank, params, grad)
    assert all(g.dtype == dtype for g in grads)
    want_bank, want_grads, scales = reference(params, grad, kh, kw)
    torch.testing.assert_close(bank.double(), want_bank, rtol=0, atol=FORWARD_ATOL[dtype])
    assert_grads_close(grads, want_grads, scales, GRAD_RTOL[dtype], GRAD_ATOL[dtype])


SHAPES = [(1, 1, 1), (3, 1, 9), (2, 8, 2), (4, 6, 6), (5, 31, 31), (7, 16, 31), (3000, 3, 3), (1000, 7, 7)]
if CUDA:
    SHAPES += [(4096, 31, 31), (2500, 5, 11), (65536, 3, 3)]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("n,kh,kw", SHAPES)
def test_shapes(n, kh, kw, dtype):
    """Odd, even, rectangular, 1x1 and up to 31x31 kernels; N from 1 to thousands; every dtype."""
    params = on_device(random_params(n, seed=n * 1000 + kh * 37 + kw, dtype=dtype), requires_grad=True)
    bank = gabor_kernel2d(*params, (kh, kw), backend="triton")
    assert bank.shape == (n, kh, kw) and bank.dtype == dtype and bank.device.type == DEVICE.type
    grad = upstream(params, kh, kw, seed=n).to(DEVICE)
    grads = torch.autograd.grad(bank, params, grad)
    want_bank, want_grads, scales = reference(params, grad, kh, kw)
    torch.testing.assert_close(bank.double(), want_bank, rtol=0, atol=FORWARD_ATOL[dtype])
    assert_grads_close(grads, want_grads, scales, GRAD_RTOL[dtype], GRAD_ATOL[dtype])


# -- properties of the kernels ------------------------------------------------------------------
@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")  # the interpreter's numpy: a*a = inf
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
def test_tiny_sigma_gives_zeros_not_nan(dtype):
    """The envelope underflows to exact zeros; gradients stay finite and equal the Function's."""
    tiny = 1e-30 if dtype == torch.float32 else 1e-300
    params = [torch.tensor(v, dtype=dtype) for v in ([0.3, 2.0], [tiny, tiny], [4.0, 3.0], [0.5, 2.0], [0.1, -1.0])]
    got = on_device(params, requires_grad=True)
    want = on_device(params, requires_grad=True)
    bank = gabor_kernel2d(*got, 7, backend="triton")
    expected = gabor_kernel2d(*want, 7, backend="torch")
    assert torch.isfinite(bank).all()
    torch.testing.assert_close(bank, expected)
    grads = torch.autograd.grad(bank.square().sum() + bank.sum(), got)
    expected_grads = torch.autograd.grad(expected.square().sum() + expected.sum(), want)
    for g, e in zip(grads, expected_grads):
        assert torch.isfinite(g).all()
        torch.testing.assert_close(g, e)


@pytest.mark.parametrize("dtype, gamma", [(torch.float32, 1e-39), (torch.float32, 1e-45), (torch.float64, 1e-310)],
                         ids=str)
def test_subnormal_gamma_gives_the_finite_theta_gradient(dtype, gamma):
    """1/gamma overflows for a subnormal gamma; d_theta must still be the finite float64 value."""
    params = [torch.tensor(v, dtype=dtype) for v in ([0.3, 2.0], [2.0, 1.5], [5.0, 3.0], [gamma, gamma], [0.4, -1.0])]
    got = on_device(params, requires_grad=True)
    bank = gabor_kernel2d(*got, (7, 6), backend="triton")
    grads = torch.autograd.grad(bank.sum(), got)
    want = [p.double().requires_grad_() for p in params]
    expected = torch.autograd.grad(gabor_kernel2d_reference(*want, 7, 6).sum(), want)
    torch.testing.assert_close(grads[0].double().cpu(), expected[0], rtol=1e-5, atol=1e-5)
    assert all(bool(torch.isfinite(g).all()) for g in grads)


def test_zero_mean_matches_torch_backend():
    """zero_mean builds the envelope with lambd = inf through the same op."""
    params = on_device(random_params(6, seed=3), requires_grad=True)
    bank = gabor_kernel2d(*params, (7, 6), zero_mean=True, backend="triton")
    expected = gabor_kernel2d(*params, (7, 6), zero_mean=True, backend="torch")
    torch.testing.assert_close(bank, expected, rtol=0, atol=1e-12)
    assert bank.sum(dim=(-2, -1)).abs().max() < 1e-12
    grad = torch.randn_like(bank)
    torch.testing.assert_close(torch.autograd.grad(bank, params, grad), torch.autograd.grad(expected, params, grad),
                               rtol=1e-10, atol=1e-10)


def test_backward_is_deterministic_and_takes_any_grad_layout():
    params = on_device(random_params(300, seed=5, dtype=torch.float32))
    grad = torch.randn(7, 5, 300, device=DEVICE).permute(2, 1, 0)  # (300, 5, 7), not contiguous
    first = kernels.bank_backward(grad, *params, 5, 7)
    second = kernels.bank_backward(grad.contiguous(), *params, 5, 7)
    for a, b in zip(first, second):
        assert torch.equal(a, b)
    ones = kernels.bank_backward(torch.ones((), device=DEVICE).expand(300, 5, 7), *params, 5, 7)
    dense = kernels.bank_backward(torch.ones(300, 5, 7, device=DEVICE), *params, 5, 7)
    for a, b in zip(ones, dense):
        assert torch.equal(a, b)


def test_broadcast_parameters_and_empty_bank():
    theta = torch.linspace(0, 3, 4, dtype=torch.float64, device=DEVICE, requires_grad=True)
    bank = gabor_kernel2d(theta[:, None], 2.0, 5.0, 0.5, 0.0, (3, 4), backend="triton")
    expected = gabor_kernel2d(theta[:, None], 2.0, 5.0, 0.5, 0.0, (3, 4), backend="torch")
    assert bank.shape == (4, 1, 3, 4)
    torch.testing.assert_close(bank, expected, rtol=0, atol=1e-12)
    empty = torch.zeros(0, dtype=torch.float64, device=DEVICE, requires_grad=True)
    bank = gabor_kernel2d(empty, 2.0, 5.0, 0.5, 0.0, 3, backend="triton")
    assert bank.shape == (0, 3, 3)
    (grad,) = torch.autograd.grad(bank.sum(), empty)
    assert grad.shape == (0,)


def test_op_input_checks():
    params = on_device(random_params(3, seed=0))
    with pytest.raises(RuntimeError, match="all five must be"):
        torch.ops.gaborlayer.gabor_bank(params[0], params[1][:2], *params[2:], 3, 3)
    with pytest.raises(RuntimeError, match="one dtype"):
        torch.ops.gaborlayer.gabor_bank(params[0].float(), *params[1:], 3, 3)
    with pytest.raises(RuntimeError, match="kernel size"):
        torch.ops.gaborlayer.gabor_bank(*params, 0, 3)


_COMPILE_FOR_GPU = """
import sys, triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from gaborlayer._triton import bank
assert not bank.INTERPRETED
params = ["theta_ptr", "sigma_ptr", "lambd_ptr", "gamma_ptr", "psi_ptr"]
meta = ["KH", "KW", "BLOCK_N", "BLOCK_T"]
for dtype, kh, kw, arch in [("fp32", 7, 7, 90), ("bf16", 31, 31, 80), ("fp16", 2, 5, 80), ("fp64", 3, 3, 90)]:
    ptr = "*" + dtype
    for kernel, block, sig in [
        (bank._gabor_bank_fwd_kernel, bank.FORWARD_BLOCK, {**{p: ptr for p in params}, "out_ptr": ptr, "N": "i32"}),
        (bank._gabor_bank_bwd_kernel, bank.BACKWARD_BLOCK,
         {"grad_ptr": ptr, "stride_gn": "i64", "stride_gh": "i64", "stride_gw": "i64", **{p: ptr for p in params},
          **{"d_" + p: ptr for p in params}, "N": "i32"}),
    ]:
        block_n, block_t = bank.block_sizes(kh, kw, block)
        constexprs = dict(zip(meta, (kh, kw, block_n, block_t)))
        source = ASTSource(fn=kernel, signature={**sig, **{m: "constexpr" for m in meta}}, constexprs=constexprs)
        compiled = triton.compile(source, target=GPUTarget("cuda", arch, 32))
        assert compiled.asm["cubin"], (kernel, dtype)
print("compiled")
"""


def test_kernels_compile_for_a_gpu():
    """The interpreter is lenient: compile the real kernels to cubin (sm_80/sm_90), no GPU needed."""
    import subprocess

    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env.setdefault("TRITON_DEFAULT_FP_FUSION", "1")
    done = subprocess.run([sys.executable, "-c", _COMPILE_FOR_GPU], env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0 and "compiled" in done.stdout, done.stderr[-3000:]


# -- backend routing ------------------------------------------------------------------------------
def test_the_kernels_under_test_are_triton(monkeypatch):
    """Without CUDA the op's CPU kernel runs the interpreted Triton kernels, not PyTorch."""
    assert kernels.INTERPRETED == (not CUDA)
    assert gtriton.interpreted() == (not CUDA)
    assert resolve_backend("triton", DEVICE) == "triton"
    calls = []

    def spy(*args):
        calls.append(args)
        return kernels.bank_forward(*args)

    monkeypatch.setattr(_ops, "bank_forward", spy)
    gabor_kernel2d(*on_device(random_params(2, seed=1)), 3, backend="triton")
    assert len(calls) == 1


def test_auto_backend(monkeypatch):
    assert resolve_backend("auto", torch.device("cpu")) == "torch"  # even under the interpreter
    assert resolve_backend("auto") == "torch"
    monkeypatch.setattr(gtriton, "kernels_verified", lambda device, dtype: True)
    assert resolve_backend("auto", torch.device("cuda")) == "triton"  # triton imports here
    with pytest.raises(ValueError, match="backend must be one of"):
        resolve_backend("cuda")


# -- the first-use check behind backend="auto" ---------------------------------------------------
def _broken(monkeypatch, part: str) -> str:
    """Make the op's forward (a value 0.1% off) or backward (d_gamma's sign flipped) wrong; returns
    what the check must name."""
    if part == "forward":
        real_forward = _ops.bank_forward
        monkeypatch.setattr(_ops, "bank_forward", lambda *args: real_forward(*args) * 1.001)
        return "the bank's values"
    real_backward = _ops.bank_backward

    def wrong_backward(*args):
        grads = list(real_backward(*args))
        grads[3] = -grads[3]
        return tuple(grads)

    monkeypatch.setattr(_ops, "bank_backward", wrong_backward)
    return "d_gamma"


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_first_use_check_passes_the_real_kernels(dtype):
    assert gtriton.check_kernels(DEVICE, dtype) == ""


@pytest.mark.parametrize("part", ["forward", "backward"])
def test_first_use_check_catches_a_broken_kernel_warns_once_and_falls_back(monkeypatch, part):
    monkeypatch.setattr(gtriton, "_VERDICTS", {})
    monkeypatch.delenv(gtriton.CHECK_ENV, raising=False)
    what = _broken(monkeypatch, part)
    assert what in gtriton.check_kernels(DEVICE, torch.float32)
    with pytest.warns(RuntimeWarning, match=f"failed their first-use check on {DEVICE.type}.*{what}"):
        assert gtriton.kernels_verified(DEVICE, torch.float32) is False
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # once: the verdict is kept, no second check or warning
        assert gtriton.kernels_verified(DEVICE, torch.float16) is False  # computed in float32: the same verdict
    # float64 is checked on its own: the broken kernel fails there too
    with pytest.warns(RuntimeWarning, match="float64"):
        assert gtriton.kernels_verified(DEVICE, torch.float64) is False


def test_first_use_check_keeps_a_passing_verdict_and_can_be_skipped(monkeypatch):
    monkeypatch.setattr(gtriton, "_VERDICTS", {})
    monkeypatch.delenv(gtriton.CHECK_ENV, raising=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert gtriton.kernels_verified(DEVICE, torch.float32) is True
    monkeypatch.setattr(gtriton, "check_kernels", lambda device, dtype: pytest.fail("checked twice"))
    assert gtriton.kernels_verified(DEVICE, torch.float32) is True
    monkeypatch.setattr(gtriton, "_VERDICTS", {})
    monkeypatch.setenv(gtriton.CHECK_ENV, "0")
    _broken(monkeypatch, "forward")
    assert gtriton.kernels_verified(DEVICE, torch.float32) is True  # skipped: the kernels are trusted


def test_auto_uses_the_first_use_verdict_on_cuda(monkeypatch):
    """resolve_backend("auto") on a CUDA device takes Triton only when the check passes (the check
    itself is faked here: on CPU there is no CUDA device to run it on)."""
    monkeypatch.setattr(gtriton, "_VERDICTS", {})
    monkeypatch.delenv(gtriton.CHECK_ENV, raising=False)
    checked = []

    def fake_check(device, dtype):
        checked.append((str(device), dtype))
        return "d_theta by 0.5 (tolerance 2e-05)" if dtype == torch.float64 else ""

    monkeypatch.setattr(gtriton, "check_kernels", fake_check)
    cuda = torch.device("cuda")
    assert resolve_backend("auto", cuda) == "triton"
    assert resolve_backend("auto", cuda, dtype=torch.bfloat16) == "triton"  # computed in float32: checked once
    with pytest.warns(RuntimeWarning, match="d_theta by 0.5"):
        assert resolve_backend("auto", cuda, dtype=torch.float64) == "torch"
    assert resolve_backend("triton", cuda, dtype=torch.float64) == "triton"  # explicit: never checked
    assert checked == [("cuda", torch.float32), ("cuda", torch.float64)]


def test_first_use_check_does_not_run_inside_a_trace(monkeypatch):
    monkeypatch.setattr(gtriton, "_VERDICTS", {})
    monkeypatch.delenv(gtriton.CHECK_ENV, raising=False)
    monkeypatch.setattr(gtriton, "check_kernels", lambda device, dtype: pytest.fail("checked inside a trace"))
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    assert gtriton.kernels_verified(DEVICE, torch.float32) is False  # no verdict yet: the PyTorch Function
    gtriton._VERDICTS[(str(DEVICE), str(torch.float32))] = True
    assert gtriton.kernels_verified(DEVICE, torch.float32) is True  # a verdict reached eagerly is used


def test_triton_without_triton_raises(monkeypatch):
    monkeypatch.setattr(gtriton, "_import_error", lambda: "ModuleNotFoundError: No module named 'triton'")
    params = random_params(2, seed=0)
    with pytest.raises(RuntimeError, match="needs the triton package"):
        gabor_kernel2d(*params, 3, backend="triton")
    with pytest.raises(RuntimeError, match="needs the triton package"):
        GaborConv2d(1, 2, 3, backend="triton")
    assert resolve_backend("auto", torch.device("cuda")) == "torch"
    assert GaborConv2d(1, 2, 3)(torch.randn(1, 1, 5, 5)).shape == (1, 2, 3, 3)


def test_triton_on_cpu_without_interpreter_raises(monkeypatch):
    monkeypatch.setattr(gtriton, "interpreted", lambda: False)
    with pytest.raises(RuntimeError, match="runs on CUDA tensors, got CPU tensors"):
        gabor_kernel2d(*random_params(2, seed=0), 3, backend="triton")
    with pytest.raises(RuntimeError, match="runs on CUDA tensors"):
        resolve_backend("triton", torch.device("meta"))


# -- the module ------------------------------------------------------------------------------------
def test_module_with_triton_backend_equals_functional():
    torch.manual_seed(0)
    conv = GaborConv2d(3, 6, (5, 4), padding=2, groups=1, dtype=torch.float64, device=DEVICE, backend="triton")
    x = torch.randn(2, 3, 11, 10, dtype=torch.float64, device=DEVICE)
    out = conv(x)
    bank = gabor_kernel2d(conv.theta, conv.sigma, conv.lambd, conv.gamma, conv.psi, (5, 4), backend="torch")
    expected = F.conv2d(x, bank, conv.bias, padding=2)
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-12)
    grads = torch.autograd.grad(out.square().sum(), list(conv.parameters()))
    expected_grads = torch.autograd.grad(expected.square().sum(), list(conv.parameters()))
    torch.testing.assert_close(grads, expected_grads, rtol=1e-10, atol=1e-10)


def test_module_under_autocast():
    """Under autocast the op builds the bank in float32 from the float32 parameters, conv runs in
    the autocast dtype (bfloat16 on CPU, float16 on CUDA); the Function gives the same."""
    amp_dtype = torch.float16 if CUDA else torch.bfloat16
    x = torch.randn(2, 3, 12, 12, generator=torch.Generator().manual_seed(0)).to(DEVICE)
    results = {}
    for backend in ("triton", "torch"):
        torch.manual_seed(0)
        conv = GaborConv2d(3, 4, 5, padding=2, device=DEVICE, backend=backend)
        with torch.autocast(DEVICE.type, dtype=amp_dtype):
            out = conv(x)
        assert out.dtype == amp_dtype
        (grad,) = torch.autograd.grad(out.float().square().sum(), [conv.theta])
        results[backend] = (out.float(), grad)
    torch.testing.assert_close(results["triton"], results["torch"])


# -- torch.library: opcheck and torch.compile ---------------------------------------------------------
@pytest.mark.parametrize("dtype,requires_grad", [(torch.float64, True), (torch.float32, False)], ids=str)
def test_opcheck(dtype, requires_grad):
    """Schema, autograd registration, fake kernel, and eager against AOT-traced.

    Without CUDA, eager runs the interpreted Triton kernels and the traced graph the PyTorch
    formulas: in float32 their sums round differently, hence the tolerance.
    """
    tol = {} if dtype == torch.float64 else {"rtol": 1e-5, "atol": 1e-4}
    params = on_device(random_params(5, seed=2, dtype=dtype), requires_grad=requires_grad)
    torch.library.opcheck(torch.ops.gaborlayer.gabor_bank.default, (*params, 4, 3), **tol)
    grad = upstream(params, 4, 3, seed=2).to(DEVICE)
    torch.library.opcheck(torch.ops.gaborlayer.gabor_bank_backward.default,
                          (grad, *[p.detach() for p in params], 4, 3), **tol)


def _compiled_matches_eager(backend: str, device) -> list:
    """GaborConv2d compiled with fullgraph=True (inductor), forward and backward, against eager."""
    import torch._dynamo
    from torch._dynamo.backends.registry import lookup_backend

    graphs = []

    def recording_inductor(gm, example_inputs):
        graphs.append(gm)
        return lookup_backend("inductor")(gm, example_inputs)

    torch._dynamo.reset()
    torch.manual_seed(0)
    model = torch.nn.Sequential(GaborConv2d(2, 4, 5, padding=2, device=device, backend=backend), torch.nn.ReLU())
    x = torch.randn(2, 2, 10, 10, device=device)
    compiled = torch.compile(model, fullgraph=True, backend=recording_inductor)
    out = compiled(x)
    grads = torch.autograd.grad(out.square().sum(), list(model.parameters()))
    expected = model(x)
    expected_grads = torch.autograd.grad(expected.square().sum(), list(model.parameters()))
    torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-5)
    for g, e in zip(grads, expected_grads):
        torch.testing.assert_close(g, e, rtol=1e-4, atol=1e-4 * (1 + e.abs().max().item()))
    return [node.target for gm in graphs for node in gm.graph.nodes if node.op == "call_function"]


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_compile_fullgraph(backend):
    """On CPU: "torch" compiles the autograd Function, "triton" the registered op (whose traced
    CPU implementation is the PyTorch formula); on CUDA "triton" compiles the Triton kernels."""
    targets = _compiled_matches_eager(backend, DEVICE)
    assert any("gaborlayer.gabor_bank" in str(t) for t in targets) == (backend == "triton")


# -- GPU only -------------------------------------------------------------------------------------------
@gpu
@needs_cuda
def test_auto_picks_triton_on_cuda():
    params = on_device(random_params(4, seed=0, dtype=torch.float32))
    assert resolve_backend("auto", params[0].device) == "triton"
    torch.testing.assert_close(gabor_kernel2d(*params, 7), gabor_kernel2d(*params, 7, backend="triton"), rtol=0, atol=0)


@gpu
@needs_cuda
@pytest.mark.parametrize("amp_dtype", [torch.float16, torch.bfloat16], ids=str)
def test_cuda_autocast_layer(amp_dtype):
    torch.manual_seed(0)
    conv = GaborConv2d(16, 32, 7, padding=3, device="cuda", backend="triton")
    x = torch.randn(4, 16, 32, 32, device="cuda")
    with torch.autocast("cuda", dtype=amp_dtype):
        out = conv(x)
    assert out.dtype == amp_dtype
    grads = torch.autograd.grad(out.float().square().mean(), list(conv.parameters()))
    expected = conv(x)
    expected_grads = torch.autograd.grad(expected.square().mean(), list(conv.parameters()))
    tol = 2e-2 if amp_dtype == torch.bfloat16 else 5e-3
    torch.testing.assert_close(out.float(), expected, rtol=tol, atol=tol * expected.abs().max().item())
    for g, e in zip(grads, expected_grads):
        torch.testing.assert_close(g, e, rtol=5 * tol, atol=5 * tol * (1 + e.abs().max().item()))


@gpu
@needs_cuda
def test_cuda_compile_runs_the_triton_kernels():
    """Inductor's code for a compiled GaborConv2d launches the Triton kernels themselves."""
    import torch._dynamo
    from torch._inductor.utils import run_and_get_code

    torch._dynamo.reset()
    conv = GaborConv2d(4, 8, 5, padding=2, device="cuda", backend="triton")
    x = torch.randn(2, 4, 16, 16, device="cuda")
    compiled = torch.compile(lambda x: conv(x).square().sum(), fullgraph=True)
    loss, code = run_and_get_code(compiled, x)
    assert any("_gabor_bank_fwd_kernel" in c for c in code), "forward kernel not in the generated code"
    torch.testing.assert_close(loss, conv(x).square().sum(), rtol=1e-4, atol=1e-4)
