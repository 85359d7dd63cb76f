"""Input checks shared by the functional API and the modules.

Every check raises at the door with a message that names the argument, echoes the bad value and
states the allowed range, so nothing fails deep inside torch or silently produces NaN.
"""
from __future__ import annotations

import numbers
from typing import Sequence

import torch

PARAM_NAMES = ("theta", "sigma", "lambd", "gamma", "psi")
PARAM_NAMES_1D = ("sigma", "lambd", "psi")
PARAM_NAMES_3D = ("theta", "phi", "sigma", "lambd", "gamma", "psi")


def pair(value, name: str, *, minimum: int = 1) -> tuple[int, int]:
    """An int or a pair of ints, each >= minimum, as a tuple ``(h, w)``."""
    return ints(value, name, 2, minimum=minimum)


_TUPLE_WORDS = {1: "a 1-tuple", 2: "a pair", 3: "a triple"}


def ints(value, name: str, n: int, *, minimum: int = 1) -> tuple[int, ...]:
    """An int or ``n`` ints (a ``1-tuple``, pair or triple), each >= minimum, as a tuple."""
    items = tuple(value) if isinstance(value, (tuple, list)) else (value,) * n
    if len(items) != n or not all(isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in items):
        raise TypeError(f"{name} must be an int or {_TUPLE_WORDS[n]} of ints, got {value!r}")
    if any(v < minimum for v in items):
        raise ValueError(f"{name} must be >= {minimum} in every dimension, got {value!r}")
    return tuple(int(v) for v in items)


def positive_int(value, name: str) -> int:
    if not isinstance(value, numbers.Integral) or isinstance(value, bool):
        raise TypeError(f"{name} must be an int, got {value!r}")
    if value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return int(value)


def real(value, name: str) -> float:
    """A real number (not a bool), as a float."""
    if not isinstance(value, numbers.Real) or isinstance(value, bool):
        raise TypeError(f"{name} must be a float or a floating-point tensor, got {type(value).__name__}")
    return float(value)


def floating_dtype(dtype: torch.dtype | None, name: str = "dtype") -> None:
    if dtype is not None and not dtype.is_floating_point:
        raise TypeError(f"{name} must be a floating-point dtype, got {dtype}")


def as_param_tensors(values: dict, *, dtype=None, device=None) -> list[torch.Tensor]:
    """Turn numbers or tensors into floating tensors of one dtype and device (not broadcast).

    Tensors keep their autograd history. Integer or boolean tensors are refused rather than
    silently cast, since a filter parameter is never meaningfully an integer.
    """
    tensors = [v for v in values.values() if isinstance(v, torch.Tensor)]
    for name, v in values.items():
        if isinstance(v, torch.Tensor):
            if not v.dtype.is_floating_point:
                raise TypeError(f"{name} must be a floating-point tensor, got dtype {v.dtype}")
        elif not isinstance(v, numbers.Real) or isinstance(v, bool):
            raise TypeError(f"{name} must be a float or a floating-point tensor, got {type(v).__name__}")
    if dtype is None:
        dtype = tensors[0].dtype if tensors else torch.get_default_dtype()
        for t in tensors[1:]:
            dtype = torch.promote_types(dtype, t.dtype)
    if device is None:
        devices = {t.device for t in tensors}
        if len(devices) > 1:
            raise ValueError(f"parameters must be on one device, got {sorted(map(str, devices))}")
        device = devices.pop() if devices else None
    return [torch.as_tensor(v, dtype=dtype, device=device) for v in values.values()]


def broadcast(values: dict) -> list[torch.Tensor]:
    """Broadcast tensors to one shape, naming their shapes if they cannot be."""
    try:
        return list(torch.broadcast_tensors(*values.values()))
    except RuntimeError:
        shapes = ", ".join(f"{k}={tuple(v.shape)}" for k, v in values.items())
        raise ValueError(f"parameters must have broadcastable shapes, got {shapes}") from None


def _physical(t: torch.Tensor) -> torch.Tensor:
    """The plain tensor under functorch wrappers (vmap, grad, jacrev), whose values can be read.

    Under ``torch.func.vmap`` a parameter is a batched wrapper on which ``bool()`` is data-dependent
    control flow (an error); the tensor it wraps holds every batch's values and can be checked.
    """
    functorch = getattr(torch._C, "_functorch", None)
    if functorch is None or not hasattr(functorch, "is_functorch_wrapped_tensor"):
        return t
    while functorch.is_functorch_wrapped_tensor(t):
        t = functorch.get_unwrapped(t)
    return t


# name -> (lower bound, inclusive?) ; theta and psi are periodic and only need to be finite.
def check_values(values: dict, lower: dict) -> None:
    """Raise if a parameter is NaN/inf or below its lower bound. Skipped while compiling."""
    if torch.compiler.is_compiling():
        return
    for name, v in values.items():
        if not isinstance(v, torch.Tensor) or v.numel() == 0:
            continue
        vd = _physical(v).detach()
        finite = torch.isfinite(vd)
        if not bool(finite.all()):
            bad = vd[~finite].flatten()[0].item()
            raise ValueError(f"{name} must be finite, got {bad}")
        if name in lower:
            bound, inclusive = lower[name]
            below = vd < bound if inclusive else vd <= bound
            if bool(below.any()):
                bad = vd[below].flatten()[0].item()
                op = ">=" if inclusive else ">"
                raise ValueError(f"{name} must be {op} {bound}, got {bad}")


def names_subset(value: Sequence[str] | str, name: str, allowed: tuple[str, ...] = PARAM_NAMES) -> tuple[str, ...]:
    """A subset of ``allowed`` given as names, "all" or "none", in the order of ``allowed``."""
    if isinstance(value, str):
        if value == "all":
            return allowed
        if value == "none":
            return ()
        value = (value,)
    try:
        chosen = tuple(value)
    except TypeError:
        raise TypeError(f"{name} must be 'all', 'none', a parameter name or a sequence of them, "
                        f"got {value!r}") from None
    unknown = [v for v in chosen if v not in allowed]
    if unknown:
        raise ValueError(f"{name} must name parameters among {allowed} (or 'all'/'none'), got {unknown}")
    return tuple(n for n in allowed if n in chosen)
