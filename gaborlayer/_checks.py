"""The check vocabulary: every public entry (functional, layers, fit, init, conversion) checks its
input with these, so the same mistake gets the same message everywhere.

Every check raises at the door with a message that names the argument, echoes the bad value and
states the allowed range, so nothing fails deep inside torch or silently produces NaN. Bounds have
one format, :class:`Lower`; each constant is defined here once.
"""
from __future__ import annotations

import math
import numbers
from typing import NamedTuple, Sequence

import torch

from ._compat import unwrap_functorch

LAMBD_FLOOR = 2.0  # samples: a wavelength below 2 samples aliases (Nyquist)


class Lower(NamedTuple):
    """A lower bound: values must be ``> value`` (or ``>= value`` when ``inclusive``)."""

    value: float
    inclusive: bool = False

    def holds(self, value):
        """Whether ``value`` (a float, or a tensor elementwise) is within the bound."""
        return value >= self.value if self.inclusive else value > self.value

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


def _int_at_least(value, name: str, minimum: int, words: str) -> int:
    if not _is_int(value):
        raise TypeError(f"{name} must be an int, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be {words}, got {value!r}")
    return int(value)


def positive_int(value, name: str) -> int:
    """An int (not a bool) ``>= 1``, e.g. a channel count."""
    return _int_at_least(value, name, 1, "a positive int")


def nonnegative_int(value, name: str) -> int:
    """An int (not a bool) ``>= 0``, e.g. a seed."""
    return _int_at_least(value, name, 0, "a non-negative int")


def boolean(value, name: str) -> bool:
    """``value`` if it is a ``bool`` (or a numpy bool), as a ``bool``: no truthy strings or numbers."""
    if isinstance(value, bool):
        return value
    kind = type(value)
    if kind.__module__ == "numpy" and kind.__name__ in ("bool_", "bool"):  # without importing numpy
        return bool(value)
    raise TypeError(f"{name} must be a bool (True or False), got {value!r}")


def real(value, name: str, what: str = "a float or a floating-point tensor") -> float:
    """A real Python (or numpy) number, not a bool, as a float; ``what`` the argument may be, in the
    message (``"a float"`` for an argument that takes no tensor)."""
    if not isinstance(value, numbers.Real) or isinstance(value, bool):
        raise TypeError(f"{name} must be {what}, got {type(value).__name__}")
    return float(value)


def finite_real(value, name: str) -> float:
    """A finite real number (not a bool), as a float, e.g. a gain."""
    value = real(value, name, "a float")
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return value


def positive_real(value, name: str) -> float:
    """A finite real number ``> 0`` (not a bool), as a float, e.g. a learning rate."""
    value = real(value, name, "a float")
    if not math.isfinite(value):
        raise ValueError(f"{name} must be a finite positive number, got {value!r}")
    if not value > 0:
        raise ValueError(f"{name} must be a positive number, got {value!r}")
    return value


def one_of(value, name: str, allowed: tuple):
    """``value`` if it is one of ``allowed``."""
    if not isinstance(value, str) or value not in allowed:
        raise ValueError(f"{name} must be one of {allowed}, got {value!r}")
    return value


def floating_dtype(dtype: torch.dtype | None, name: str = "dtype") -> None:
    """``None`` or a floating-point ``torch.dtype`` (not a string, a numpy type or a Python type)."""
    if dtype is None:
        return
    if not isinstance(dtype, torch.dtype):
        raise TypeError(f"{name} must be a torch.dtype (a floating-point one, e.g. torch.float32), got {dtype!r} "
                        f"({type(dtype).__name__})")
    if not dtype.is_floating_point:
        raise TypeError(f"{name} must be a floating-point dtype, got {dtype}")


def conv_input(value, name: str = "input") -> torch.Tensor:
    """``value`` if it is a floating-point or complex tensor, what a convolution with a (real)
    Gabor bank can take: an integer or boolean input would have the bank cast to its dtype."""
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    if not (value.dtype.is_floating_point or value.dtype.is_complex):
        raise TypeError(f"{name} must be a floating-point or complex tensor, got dtype {value.dtype}")
    return value


def divisible_by_groups(channels: int, name: str, groups: int) -> None:
    """Raise unless ``groups`` divides ``channels`` (``name``: ``"in_channels"`` or ``"out_channels"``)."""
    if channels % groups:
        raise ValueError(f"{name} ({channels}) must be divisible by groups ({groups})")


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


def from_numpy(value):
    """A numpy array as a tensor (a copy, in its dtype); anything else unchanged, for the checks to
    judge. Wherever the package takes a tensor it takes a numpy array through this."""
    if type(value).__name__ == "ndarray" and type(value).__module__ == "numpy":
        return torch.tensor(value)
    return value


def as_param_tensors(values: dict, *, dtype=None, device=None, bounds: dict[str, Lower] | None = None
                     ) -> list[torch.Tensor]:
    """Turn numbers, tensors or numpy arrays into floating tensors of one dtype and device (not broadcast).

    Tensors keep their autograd history. Integer or boolean tensors are refused rather than
    silently cast, since a filter parameter is never meaningfully an integer. A finite Python number
    that the dtype cannot hold is reported as given: one that overflows it (rounds to inf), or, for a
    parameter with a bound in ``bounds``, one above the bound that rounds to a value that is not
    (``sigma=1e-300`` in float32 rounds to 0, which is not > 0 there).
    """
    values = {name: from_numpy(v) for name, v in values.items()}
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
    if dtype != torch.float64 and not torch.compiler.is_compiling():  # a Python float is a float64
        for name, v in values.items():
            if not isinstance(v, torch.Tensor):
                _representable(float(v), name, dtype, (bounds or {}).get(name))
    return [torch.as_tensor(v, dtype=dtype, device=device) for v in values.values()]


def _representable(value: float, name: str, dtype: torch.dtype, bound: Lower | None) -> None:
    """Raise if the finite number ``value`` (within ``bound``) becomes non-finite, or falls out of
    ``bound``, when rounded to ``dtype``. Values already out of range are left to :func:`check_values`."""
    if not math.isfinite(value) or (bound is not None and not bound.holds(value)):
        return
    rounded = torch.tensor(value, dtype=dtype).item()
    if not math.isfinite(rounded):
        raise ValueError(f"{name} = {value!r} overflows {dtype} (rounds to {rounded}); {name} must be finite "
                         f"there: give a smaller value or parameters of a wider dtype (a float64 tensor)")
    if bound is not None and not bound.holds(rounded):
        how = "underflows" if rounded == 0 else "is rounded out of range in"
        raise ValueError(f"{name} = {value!r} {how} {dtype} (rounds to {rounded}); {name} must be {bound} "
                         f"there: give a larger value or parameters of a wider dtype (a float64 tensor)")


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
            below = ~bound.holds(vd)
            if bool(below.any()):
                raise ValueError(f"{name} must be {bound}, got {vd[below].flatten()[0].item()}")


def checked_params(values: dict, bounds: dict[str, Lower]) -> dict[str, torch.Tensor]:
    """Parameters given as numbers or tensors, by name: tensors of one dtype and device
    (:func:`as_param_tensors`), finite and within ``bounds`` (:func:`check_values`), broadcast to
    one shape (:func:`broadcast`), in ``values``' order."""
    tensors = dict(zip(values, as_param_tensors(values, bounds=bounds)))
    check_values(tensors, bounds)
    return dict(zip(tensors, broadcast(tensors)))


def param_values(values: dict, bounds: dict[str, Lower], shape) -> dict[str, torch.Tensor]:
    """Initial values for a layer (or :func:`~gaborlayer.init.gabor_`): float64 CPU tensors broadcast
    to ``shape``, detached (an init value with autograd history would make a module un-deepcopy-able)
    and checked against ``bounds``; ``None`` entries are left out."""
    given = {k: v for k, v in values.items() if v is not None}
    tensors = dict(zip(given, as_param_tensors(given, dtype=torch.float64, device="cpu")))
    check_values(tensors, bounds)  # before broadcasting: an empty shape would hide a bad value
    for name, t in tensors.items():
        try:
            tensors[name] = torch.broadcast_to(t.detach(), shape).clone()
        except RuntimeError:
            raise ValueError(f"{name} must be broadcastable to (out_channels, in_channels // groups) = "
                             f"{tuple(shape)}, got shape {tuple(t.shape)}") from None
    return tensors


def per_target(values, name: str, names: tuple[str, ...], bounds: dict[str, Lower], n: int, *,
               counts: str | None = None) -> dict[str, torch.Tensor]:
    """A dict of parameter values for ``n`` targets (fitting's ``fixed`` and ``init``): float64 CPU
    tensors of shape ``(n,)``, from floats or tensors of one value or ``n`` values. ``counts`` says
    how many values are allowed, in the message (default: one, or one per kernel)."""
    counts = counts or f"be a scalar or have one value per kernel ({n})"
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
            raise ValueError(f"{label} must {counts}, got {t.numel()} values")
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
