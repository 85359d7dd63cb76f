"""The private torch APIs gaborlayer uses, each behind one guarded helper.

Private APIs move between torch releases. Each helper here checks that the API exists and, when it
does not, degrades to the safe answer (the slower path that is still correct), never to an error.
"""
from __future__ import annotations

import torch
import torch.fx

_C = torch._C  # read through this name, so a test can take the APIs away



def functorch_active() -> bool:
    """Whether a functorch transform (``vmap``, ``grad``, ``jacrev``) is running. Unknown (the API
    moved): ``True``, so that callers take the path that is correct under a transform."""
    active = getattr(_C, "_are_functorch_transforms_active", None)
    return True if active is None else bool(active())


def unwrap_functorch(t: torch.Tensor) -> torch.Tensor:
    """The plain tensor under functorch wrappers (vmap, grad, jacrev), whose values can be read.

    Under ``torch.func.vmap`` a parameter is a batched wrapper on which ``bool()`` is data-dependent
    control flow (an error); the tensor it wraps holds every batch's values and can be checked.
    Unknown (the API moved): ``t`` itself.
    """
    functorch = getattr(_C, "_functorch", None)
    if functorch is None or not hasattr(functorch, "is_functorch_wrapped_tensor") \
            or not hasattr(functorch, "get_unwrapped"):
        return t
    while functorch.is_functorch_wrapped_tensor(t):
        t = functorch.get_unwrapped(t)
    return t


def version_counter(t: torch.Tensor) -> int | None:
    """``t``'s version counter (bumped by every in-place write autograd sees); ``None`` when the
    tensor has none (an inference tensor) or the attribute moved, so callers must not rely on it."""
    try:
        return int(t._version)
    except (AttributeError, RuntimeError):
        return None


def forward_ad_active() -> bool:
    """Whether a ``torch.autograd.forward_ad.dual_level`` is open (dual tensors may flow). Unknown
    (the API moved): ``True``, so that callers take the path that has forward-mode AD."""
    level = getattr(torch.autograd.forward_ad, "_current_level", None)
    return True if not isinstance(level, int) else level >= 0


_symbolic_trace = getattr(torch.fx, "_symbolic_trace", None)
# is_fx_symbolic_tracing in newer torch; is_fx_tracing (which also answers for export) before
_is_fx_tracing = (getattr(_symbolic_trace, "is_fx_symbolic_tracing", None)
                  or getattr(_symbolic_trace, "is_fx_tracing", None))


def fx_tracing() -> bool:
    """Whether ``torch.fx.symbolic_trace`` is tracing. Unknown (the API moved): ``False``. (The
    predicate is looked up once, at import: a layer's forward asks on every call.)"""
    return bool(_is_fx_tracing()) if _is_fx_tracing is not None else False


def register_default_fusers(mapping: dict) -> bool:
    """Add ``mapping`` (module-type tuples -> fuser methods, for our own types only) to the defaults
    of ``torch.ao.quantization.fuse_modules``, so that a plain ``fuse_modules(model, [[conv, bn]])``
    fuses a Gabor layer too. The table is private; when it moved, nothing is added (``False``) and
    ``fuse_modules`` takes ``fuse_custom_config_dict`` as documented."""
    try:
        from torch.ao.quantization import fuser_method_mappings
    except ImportError:
        return False
    defaults = getattr(fuser_method_mappings, "_DEFAULT_OP_LIST_TO_FUSER_METHOD", None)
    if not isinstance(defaults, dict):
        return False
    for types, method in mapping.items():
        defaults.setdefault(types, method)
    return True
