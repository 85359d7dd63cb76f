"""Triton kernels for the Gabor bank, the one check of whether they can run, and the step that
registers the ``torch.library`` op.

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

import torch


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
