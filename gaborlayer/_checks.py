"""The check vocabulary: every public entry (functional, layers, fit, init, conversion) checks its
input with these, so the same mistake gets the same message everywhere.

Every check raises at the door with a message that names the argument, echoes the bad value and
states the allowed range, so nothing fails deep inside torch or silently produces NaN. Bounds have
one format, :class:`Lower`; each constant is defined here once.
"""
from __future__ import annotations

import numbers
from typing import NamedTuple, Sequence

import torch

from ._compat import unwrap_functorch

LAMBD_FLOOR = 2.0  # samples: a wavelength below 2 samples aliases (Nyquist)


class Lower(NamedTuple):
    """A lower bound: values must be ``> value`` (or ``>= value`` when ``inclusive``)."""

    value: float
    inclusive: bool = False

    def __str__(self) -> str:
        return f"{'>=' if self.inclusive else '>'} {self.value}"


_POSITIVE = Lower(0.0)
#: The ranges of the bank's own parameters (functional API, fitting's fixed values). theta, phi and
#: psi are angles: any finite value.
BANK_BOUNDS = {"sigma": _POSITIVE, "lambd": _POSITIVE, "gamma": _POSITIVE}
#: The ranges of a layer's parameters (and of fitting's starts): the wavelength above Nyquist.
LAYER_BOUNDS = {**BANK_BOUNDS, "lambd": Lower(LAMBD_FLOOR)}

_TUPLE_WORDS = {1: "a 1-tuple", 2: "a pair", 3: "a triple"}


def _is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def ints(value, name: str, n: int, *, minimum: int = 1) -> tuple[int, ...]:
    """An int or ``n`` ints (a ``1-tuple``, pair or triple), each >= minimum, as a tuple."""
    items = tuple(value) if isinstance(value, (tuple, list)) else (value,) * n
    if len(items) != n or not all(_is_int(v) for v in items):
        raise TypeError(f"{name} must be an int or {_TUPLE_WORDS[n]} of ints, got {value!r}")
    if any(v < minimum for v in items):
        raise ValueError(f"{name} must be >= {minimum} in every dimension, got {value!r}")
    return tuple(int(v) for v in items)


def positive_int(value, name: str) -> int:
    if not _is_int(value):
        raise TypeError(f"{name} must be an int, got {value!r}")
    if value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return int(value)


def real(value, name: str) -> float:
    """A real number (not a bool), as a float."""
    if not isinstance(value, numbers.Real) or isinstance(value, bool):
        raise TypeError(f"{name} must be a float or a floating-point tensor, got {type(value).__name__}")
    return float(value)


def one_of(value, name: str, allowed: tuple):
    """``value`` if it is one of ``allowed``."""
    if not isinstance(value, str) or value not in allowed:
        raise ValueError(f"{name} must be one of {allowed}, got {value!r}")
    return value


def floating_dtype(dtype: torch.dtype | None, name: str = "dtype") -> None:
    if dtype is not None and not dtype.is_floating_point:
        raise TypeError(f"{name} must be a floating-point dtype, got {dtype}")


def tensor(value, name: str, *, shapes: str | None = None, dims: Sequence[int] = ()) -> torch.Tensor:
    """``value`` if it is a floating-point tensor with finite entries (and, given ``dims``, one of
    those numbers of dimensions, described by ``shapes`` such as ``"(kh, kw) or (N, kh, kw)"``)."""
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    if dims and value.dim() not in dims:
        raise ValueError(f"{name} must have shape {shapes}, got {tuple(value.shape)}")
    if not value.dtype.is_floating_point:
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {value.dtype}")
    finite(value, name)
    return value


def finite(value: torch.Tensor, name: str) -> None:
    """Raise if ``value`` holds NaN or inf."""
    if not bool(torch.isfinite(value.detach()).all()):
        raise ValueError(f"{name} must be finite, got NaN or inf entries")


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
        else:
            real(v, name)
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


def check_values(values: dict, bounds: dict[str, Lower]) -> None:
    """Raise if a parameter is NaN/inf or not above its bound. Skipped while compiling."""
    if torch.compiler.is_compiling():
        return
    for name, v in values.items():
        if not isinstance(v, torch.Tensor) or v.numel() == 0:
            continue
        vd = unwrap_functorch(v).detach()
        finite_ = torch.isfinite(vd)
        if not bool(finite_.all()):
            raise ValueError(f"{name} must be finite, got {vd[~finite_].flatten()[0].item()}")
        bound = bounds.get(name)
        if bound is not None:
            below = vd < bound.value if bound.inclusive else vd <= bound.value
            if bool(below.any()):
                raise ValueError(f"{name} must be {bound}, got {vd[below].flatten()[0].item()}")


def param_values(values: dict, bounds: dict[str, Lower], shape) -> dict[str, torch.Tensor]:
    """Initial values for a layer (or :func:`~gaborlayer.init.gabor_`): float64 CPU tensors broadcast
    to ``shape``, detached (an init value with autograd history would make a module un-deepcopy-able)
    and checked against ``bounds``; ``None`` entries are left out."""
    given = {k: v for k, v in values.items() if v is not None}
    tensors = dict(zip(given, as_param_tensors(given, dtype=torch.float64, device="cpu")))
    for name, t in tensors.items():
        try:
            tensors[name] = torch.broadcast_to(t.detach(), shape).clone()
        except RuntimeError:
            raise ValueError(f"{name} must be broadcastable to (out_channels, in_channels // groups) = "
                             f"{tuple(shape)}, got shape {tuple(t.shape)}") from None
    check_values(tensors, bounds)
    return tensors


def per_target(values, name: str, names: tuple[str, ...], bounds: dict[str, Lower], n: int) -> dict[str, torch.Tensor]:
    """A dict of parameter values for ``n`` targets (fitting's ``fixed`` and ``init``): float64 CPU
    tensors of shape ``(n,)``, from floats or tensors of one value or ``n`` values."""
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise TypeError(f"{name} must be a dict of parameter values, got {type(values).__name__}")
    unknown = [k for k in values if k not in names]
    if unknown:
        raise ValueError(f"{name} has unknown parameter names {unknown}; allowed: {names}")
    out = {}
    for key, value in values.items():
        label = f"{name}[{key!r}]"
        t = as_param_tensors({label: value.detach() if isinstance(value, torch.Tensor) else value},
                             dtype=torch.float64, device="cpu")[0].reshape(-1)
        if t.numel() not in (1, n):
            raise ValueError(f"{label} must be a scalar or have one value per kernel ({n}), got {t.numel()} values")
        check_values({label: t}, {label: bounds[key]} if key in bounds else {})
        out[key] = t.expand(n)
    return out


def names_subset(value: Sequence[str] | str, name: str, allowed: tuple[str, ...]) -> tuple[str, ...]:
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
