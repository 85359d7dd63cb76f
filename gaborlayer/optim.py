"""Optimiser parameter groups that let Gabor parameters move as far as the weights around them.

Adam (and its kin) moves every parameter by about ``lr`` per step, whatever its gradient. A free
convolution weight is small (about ``1 / sqrt(fan_in)``), so one step changes it by several
percent; ``theta`` (radians) and ``log sigma`` change by ``lr`` in absolute terms, which moves the
bank they build by a fraction of a percent. With one learning rate for the whole model the
filters barely change: ``docs/movement.md`` measures it and the effect of :func:`param_groups`.
"""
from __future__ import annotations

from typing import Any

import torch.nn as nn

from . import _checks
from .modules import _GaborConvNd

#: The default factor on the learning rate of the Gabor parameters; see ``docs/movement.md``.
GABOR_LR_SCALE = 3.0


def param_groups(model: nn.Module, lr: float, *, scale: float = GABOR_LR_SCALE,
                 **group_options: Any) -> list[dict]:
    """Two optimiser parameter groups: the Gabor filter parameters at ``scale * lr``, the rest at ``lr``.

    The Gabor parameters are every learnable parameter of every Gabor layer in ``model`` except its
    bias (``theta``, ``log_sigma``, ``log_lambd_excess``, ``log_gamma``, ``psi``, ``amplitude``, ...);
    biases and all other parameters form the second group. Parameters shared between modules are
    listed once.

    Args:
        model: any ``nn.Module``.
        lr: the learning rate of the ordinary parameters (finite, > 0).
        scale: the factor on the Gabor parameters' learning rate (finite, > 0).
        **group_options: added to both groups (e.g. ``weight_decay=0.0``).

    Returns:
        a list of two dicts ``{"params": [...], "lr": ..., "name": "gabor" | "other", **group_options}``
        for ``torch.optim`` (an empty group is left out).

    Examples:
        >>> import torch
        >>> from gaborlayer import GaborConv2d
        >>> model = nn.Sequential(GaborConv2d(3, 8, 7), nn.ReLU(), nn.Conv2d(8, 4, 3))
        >>> groups = param_groups(model, lr=1e-3)
        >>> {g["name"]: (len(g["params"]), g["lr"]) for g in groups}
        {'gabor': (5, 0.003), 'other': (3, 0.001)}
        >>> opt = torch.optim.Adam(groups)
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    lr = _checks.positive_real(lr, "lr")
    scale = _checks.positive_real(scale, "scale")
    gabor_ids = set()
    for module in model.modules():
        if isinstance(module, _GaborConvNd):
            gabor_ids.update(id(p) for name, p in module.named_parameters(recurse=False) if name != "bias")
    gabor, other, seen = [], [], set()
    for p in model.parameters():  # model.parameters() lists a shared parameter once
        if not p.requires_grad or id(p) in seen:
            continue
        seen.add(id(p))
        (gabor if id(p) in gabor_ids else other).append(p)
    groups = [{"params": gabor, "lr": lr * scale, "name": "gabor", **group_options},
              {"params": other, "lr": lr, "name": "other", **group_options}]
    return [g for g in groups if g["params"]]
