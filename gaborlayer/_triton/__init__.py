"""Triton kernels for the Gabor bank, the one check of whether they can run, the first-use check
of what they compute, and the step that registers the ``torch.library`` op.

Importing this package does not import triton: :func:`unavailable_reason` does, the first time a
Triton backend is asked for, and only then is the kernel module (:mod:`.bank`) imported.
:func:`unavailable_reason` only answers; :func:`register_op` (called by
``gaborlayer.functional.resolve_backend`` when it resolves to ``"triton"``) registers the op. That
keeps ``import gaborlayer`` light, and it lets a test session set ``TRITON_INTERPRET=1`` after
``gaborlayer`` was imported but before the kernels are first used: triton decides between its
compiler and its interpreter when ``@triton.jit`` runs, i.e. when :mod:`.bank` is imported.
"""
from __future__ import annotations

import functools
import os
import threading
import warnings

import torch

CHECK_ENV = "GABORLAYER_TRITON_CHECK"
"""Set to ``0`` to skip the first-use check (``backend="auto"`` then trusts the kernels)."""
# The first-use check: a small bank on benign parameters (envelopes well inside the kernel, so
# every derivative is of the order of sum |grad|), in the dtype the op computes in. Tolerances:
# the bank's entries are in [-1, 1] (absolute), each gradient entry relative to sum |grad| of its
# filter; a right float32 kernel is off by 4e-7 (values) and 8e-8 (gradients) under the
# interpreter, 50 times below the tolerance.
_CHECK_SIZE = (64, 7, 5)  # filters, kh, kw
_CHECK_RANGES = ((-3.2, 3.2), (1.5, 3.0), (4.0, 10.0), (0.5, 1.5), (-3.2, 3.2))  # theta, sigma, lambd, gamma, psi
CHECK_TOLERANCE = {torch.float64: 1e-9, torch.float32: 2e-5}
_VERDICTS: dict[tuple[str, str], bool] = {}  # (device, dtype) -> whether the kernels passed
_VERDICT_LOCK = threading.Lock()


@functools.cache
def _import_error() -> str:
    try:
        import triton  # noqa: F401
    except Exception as exc:  # ImportError, or a broken install failing at import
        return f"{type(exc).__name__}: {exc}"
    return ""


def interpreted() -> bool:
    """Whether the kernels run under the Triton interpreter (imports them; triton must import)."""
    from . import bank

    return bank.INTERPRETED


@torch.compiler.assume_constant_result
def unavailable_reason(device_type: str | None) -> str:
    """Why the Triton kernels cannot build a bank on ``device_type``; ``""`` when they can.

    ``None`` asks only whether triton imports (a module not yet on a device). CUDA tensors need
    triton; CPU tensors need the Triton interpreter (``TRITON_INTERPRET=1`` set before the
    kernels were first imported). torch.compile evaluates this once, at trace time.
    """
    error = _import_error()
    if error:
        return (f"backend='triton' needs the triton package, which failed to import ({error}); "
                f"install it with `pip install 'gaborlayer[triton]'` or use backend='torch'")
    if device_type is None:
        return ""
    if device_type == "cuda" or (device_type == "cpu" and interpreted()):
        return ""
    if device_type == "cpu":
        return ("backend='triton' runs on CUDA tensors, got CPU tensors; on CPU it runs only under the "
                "Triton interpreter (TRITON_INTERPRET=1 set before gaborlayer first uses its Triton "
                "kernels). Use backend='torch' or 'auto' on CPU")
    return f"backend='triton' runs on CUDA tensors, got tensors on {device_type!r}; use backend='torch'"


@torch.compiler.assume_constant_result
def register_op() -> bool:
    """Register ``torch.ops.gaborlayer.gabor_bank`` (and its backward) by importing
    :mod:`gaborlayer._ops`; later calls do nothing. Call it only where :func:`unavailable_reason`
    is ``""``. torch.compile evaluates it once, at trace time."""
    from .. import _ops  # noqa: F401  (the triton_op decorators register the ops at import)

    return True


def check_kernels(device: torch.device, dtype: torch.dtype) -> str:
    """Run the Triton bank (``torch.ops.gaborlayer.gabor_bank``) against the PyTorch Function on a
    small random bank on ``device`` in ``dtype`` (float32 or float64: what the op computes in):
    the values and all five gradients, within :data:`CHECK_TOLERANCE`. Returns ``""`` when they
    agree, else what differed (or what the kernels raised). Registers the op; triton must import."""
    from .. import _ops  # noqa: F401  (registers the op)
    from .._autograd import GaborKernel2d
    from .._family import GABOR_2D

    n, kh, kw = _CHECK_SIZE
    gen = torch.Generator().manual_seed(0)
    values = [lo + (hi - lo) * torch.rand(n, generator=gen, dtype=torch.float64) for lo, hi in _CHECK_RANGES]
    grad = torch.randn(n, kh, kw, generator=gen, dtype=torch.float64).to(device, dtype)
    tolerance = CHECK_TOLERANCE[dtype]
    results = []
    for build in (torch.ops.gaborlayer.gabor_bank, GaborKernel2d._forward_mode.apply):  # Triton, then the Function
        params = [v.to(device, dtype).requires_grad_() for v in values]
        try:
            bank = build(*params, kh, kw)
            results.append((bank.detach(), torch.autograd.grad(bank, params, grad)))
        except Exception as exc:  # a kernel that fails to compile or launch fails the check
            return f"the kernels raised {type(exc).__name__}: {exc}"
    (bank, grads), (want_bank, want_grads) = results
    scale = grad.abs().flatten(1).sum(1)
    errors = [("the bank's values", (bank - want_bank).abs().flatten(1).amax(1))]
    errors += [(f"d_{name}", (g - w).abs() / scale) for name, g, w in zip(GABOR_2D.names, grads, want_grads)]
    failed = []
    for what, error in errors:
        worst = float(error.max()) if torch.isfinite(error).all() else float("inf")
        if not worst <= tolerance:
            failed.append(f"{what} by {worst:.3g}")
    if not failed:
        return ""
    return (f"{', '.join(failed)} (tolerance {tolerance:g}; gradients relative to sum |grad| per filter) on "
            f"{n} filters of {kh} x {kw}")


def kernels_verified(device: torch.device, dtype: torch.dtype) -> bool:
    """Whether ``backend="auto"`` may use the Triton kernels on ``device`` in ``dtype``: the verdict
    of :func:`check_kernels`, run on the first call per (device, dtype) and kept for the process.
    On a failure it warns once, saying what differed, and ``auto`` falls back to the PyTorch Function.
    ``GABORLAYER_TRITON_CHECK=0`` skips the check (``True``). Inside a trace (torch.compile, fx) no
    check runs: a verdict already reached is used, else ``False`` (that graph builds with the
    PyTorch Function; one eager call before compiling lets the check run first)."""
    if os.environ.get(CHECK_ENV, "1").strip() == "0":
        return True
    dtype = torch.promote_types(dtype, torch.float32)  # what the op computes half precision in
    key = (str(torch.device(device)), str(dtype))
    verdict = _recorded_verdict(*key)
    if verdict is not None:
        return verdict
    from .._compat import fx_tracing

    if torch.compiler.is_compiling() or fx_tracing():
        return False
    with _VERDICT_LOCK:
        if key not in _VERDICTS:
            with torch.inference_mode(False), torch.enable_grad():  # first use may be in eval under no_grad
                failure = check_kernels(torch.device(device), dtype)
            if failure:
                warnings.warn(f"gaborlayer: the Triton bank kernels failed their first-use check on {key[0]} in "
                              f"{dtype}: {failure}. backend='auto' builds banks there with the PyTorch Function "
                              f"instead (backend='triton' still runs the kernels; {CHECK_ENV}=0 skips this check)",
                              RuntimeWarning, stacklevel=2)
            _VERDICTS[key] = not failure
        return _VERDICTS[key]


@torch.compiler.assume_constant_result
def _recorded_verdict(device: str, dtype: str) -> bool | None:
    """The verdict kept for ``(device, dtype)``, ``None`` before the check ran. torch.compile
    evaluates this once, at trace time."""
    return _VERDICTS.get((device, dtype))
