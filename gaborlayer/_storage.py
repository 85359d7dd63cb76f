"""Where a Gabor layer keeps its filter parameters: reparameterised tensors registered on the layer.

Each parameter is stored unconstrained and read through a map onto its allowed range, so every
gradient stays alive at the bounds (clamping would zero it): ``sigma = exp(log_sigma)``,
``gamma = exp(log_gamma)``, ``lambd = LAMBD_FLOOR + exp(log_lambd_excess)``; the angles and the
amplitude are stored as they are. The registered names (``theta``, ``log_sigma``, ...) are the
layer's ``state_dict`` keys. A parameter that does not learn is a buffer of the same name.
"""
from __future__ import annotations

from typing import Callable, NamedTuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from ._checks import LAMBD_FLOOR
from ._compat import fx_tracing

# Log-parameters are read through exp(clamp(r, -LOG_LIMIT, LOG_LIMIT)): beyond e^80 ~ 5.5e34 a
# float32 sigma or gamma would overflow to inf (or underflow to 0) and the bank turn NaN; no
# training that is going anywhere stores a raw value of 80. The clamp is F.hardtanh: the same
# values, and a backward of one fused kernel where clamp's takes five operations (a training step
# of a small layer runs it three times; the gradient is 0 outside (-LOG_LIMIT, LOG_LIMIT), the
# bounds included).
LOG_LIMIT = 80.0


def _bounded_exp(r: torch.Tensor) -> torch.Tensor:
    return torch.exp(F.hardtanh(r, -LOG_LIMIT, LOG_LIMIT))


def _same(v: torch.Tensor) -> torch.Tensor:
    return v


class Storage(NamedTuple):
    """How one parameter is stored: its registered name and the maps both ways."""

    name: str
    to_stored: Callable[[torch.Tensor], torch.Tensor]
    from_stored: Callable[[torch.Tensor], torch.Tensor]


STORAGE = {
    "theta": Storage("theta", _same, _same),
    "phi": Storage("phi", _same, _same),
    "sigma": Storage("log_sigma", torch.log, _bounded_exp),
    "lambd": Storage("log_lambd_excess", lambda v: torch.log(v - LAMBD_FLOOR), lambda r: LAMBD_FLOOR + _bounded_exp(r)),
    "gamma": Storage("log_gamma", torch.log, _bounded_exp),
    "psi": Storage("psi", _same, _same),
    "amplitude": Storage("amplitude", _same, _same),
}


def register(module: nn.Module, names: tuple[str, ...], learn: tuple[str, ...], shape, **factory) -> None:
    """Register an uninitialised tensor of ``shape`` on ``module`` for each of ``names``: a
    parameter for those in ``learn``, a buffer for the rest."""
    for name in names:
        tensor = torch.empty(shape, **factory)
        if name in learn:
            module.register_parameter(STORAGE[name].name, nn.Parameter(tensor))
        else:
            module.register_buffer(STORAGE[name].name, tensor)


def stored(module: nn.Module, names: tuple[str, ...]) -> list[torch.Tensor]:
    """The stored tensors of ``names``, as registered. Read from the module's parameter and buffer
    dicts (a forward reads them on every call, and ``nn.Module.__getattr__`` costs a microsecond or
    two each), except while ``torch.fx`` traces, which records parameters by intercepting
    ``getattr``, and for a name in neither dict (a parametrised one, ``torch.nn.utils.parametrize``)."""
    if fx_tracing():
        return [getattr(module, STORAGE[name].name) for name in names]
    found = []
    for name in names:
        key = STORAGE[name].name
        tensor = module._parameters.get(key)
        if tensor is None:
            tensor = module._buffers.get(key)
            if tensor is None:
                tensor = getattr(module, key)
        found.append(tensor)
    return found


def constrained(module: nn.Module, name: str, dtype: torch.dtype | None = None) -> torch.Tensor:
    """The value of parameter ``name`` in its allowed range (computed in ``dtype`` if given)."""
    raw = getattr(module, STORAGE[name].name)
    return STORAGE[name].from_stored(raw if dtype is None else raw.to(dtype))


def assign(module: nn.Module, values: dict[str, torch.Tensor]) -> None:
    """Set the parameters in ``values`` (constrained values) by writing their stored form in place."""
    with torch.no_grad():
        for name, value in values.items():
            getattr(module, STORAGE[name].name).copy_(STORAGE[name].to_stored(value))
