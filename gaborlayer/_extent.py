"""Extent diagnostics: which filters the kernel cuts off, which near the Nyquist floor, which have
a non-finite parameter, and the kernel size that would hold them all (for any dimension, through
the family's ``half_extents``)."""
from __future__ import annotations

import inspect
import math
import os
import warnings

import torch

from ._checks import LAMBD_FLOOR

# A filter is "cut" when its envelope's CUT_SIGMAS contour leaves the kernel (the envelope is above
# 4.4% of its peak at the edge: a visible step), and "near Nyquist" when lambd < NYQUIST_MARGIN *
# LAMBD_FLOOR; either warns once (GaborTruncationWarning). The suggested kernel and the initial banks
# hold the EXTENT_SIGMAS contour (1.1%), so sigma can grow by a fifth in training before a warning.
CUT_SIGMAS = 2.5
EXTENT_SIGMAS = 3.0
NYQUIST_MARGIN = 1.1
_LIBRARY_DIRS = tuple(os.path.dirname(m.__file__) + os.sep for m in (torch,)) + (os.path.dirname(__file__) + os.sep,)


class GaborTruncationWarning(UserWarning):
    """A filter's envelope is cut off by the kernel, its wavelength nears the Nyquist floor, or one
    of its parameters is not finite."""


def odd_sizes_holding(half_extents) -> tuple[int, ...]:
    """Per axis, the smallest odd number of taps ``k`` with ``k / 2 >=`` every half-extent."""
    return tuple(2 * math.ceil(float(h.max()) - 0.5) + 1 for h in half_extents)


def extent_report(family, values: dict[str, torch.Tensor], kernel_size: tuple[int, ...]) -> dict:
    """``{"cut", "near_nyquist", "non_finite", "suggested_kernel_size"}`` for filters of ``family``
    with the given constrained ``values`` (float64 tensors of one shape) in kernels of
    ``kernel_size``. A filter with a non-finite parameter has no extent: it is neither cut nor near
    Nyquist, and the suggested size holds the others (``None`` when there are none)."""
    non_finite = torch.zeros_like(values["lambd"], dtype=torch.bool)
    for value in values.values():
        non_finite |= ~torch.isfinite(value)
    finite = {name: torch.where(non_finite, torch.ones_like(value), value) for name, value in values.items()}
    cut = torch.zeros_like(non_finite)
    for half, k in zip(family.half_extents(finite, CUT_SIGMAS), kernel_size):
        cut |= half > k / 2 * (1 + 1e-6)  # exactly at the edge (then rounded in float32) is not cut
    extents = [h[~non_finite] for h in family.half_extents(finite, EXTENT_SIGMAS)]
    return {"cut": cut & ~non_finite, "near_nyquist": (finite["lambd"] < NYQUIST_MARGIN * LAMBD_FLOOR) & ~non_finite,
            "non_finite": non_finite,
            "suggested_kernel_size": odd_sizes_holding(extents) if extents[0].numel() else None}


def _caller_stacklevel() -> int:
    """The ``stacklevel`` that points a warning at the first frame outside gaborlayer and torch:
    the user's line, however deep the call came (a constructor, ``model.eval()``, ``load_state_dict``)."""
    frame, level = inspect.currentframe(), 1
    while frame is not None and frame.f_code.co_filename.startswith(_LIBRARY_DIRS):
        frame, level = frame.f_back, level + 1
    return max(level - 1, 1)  # warnings.warn counts from its caller


def warn_extent(report: dict, family, values: dict, kernel_size, owner: str, warned: set) -> None:
    """Warn (:class:`GaborTruncationWarning`, at the user's line) about each kind of problem in
    ``report`` not yet in ``warned``, naming ``owner``, the first bad filter and the numbers; add the
    kinds warned, so each kind warns once per layer."""
    for kind in ("non_finite", "cut", "near_nyquist"):
        bad = report[kind]
        if kind in warned or not bool(bad.any()):
            continue
        warned.add(kind)
        o, i = (int(v) for v in torch.nonzero(bad)[0])
        where = f"{owner}: {int(bad.sum())} of {bad.numel()} filters"
        if kind == "non_finite":
            names = [name for name, value in values.items() if not bool(torch.isfinite(value[o, i]))]
            message = (f"{where} have a non-finite parameter, e.g. filter [{o}, {i}] with "
                       + ", ".join(f"{name}={float(values[name][o, i])}" for name in names)
                       + ": their kernels are not finite; the extent check skips them")
        elif kind == "cut":
            shown = ", ".join(f"{n}={values[n][o, i]:.3g}" for n in ("theta", "phi", "sigma", "gamma") if n in values)
            extent = " x ".join(f"{2 * h[o, i]:.1f}" for h in family.half_extents(values, CUT_SIGMAS))
            hint = " (gaborlayer.suggest_kernel_size)" if family.dims == 2 else ""
            message = (f"{where} have an envelope cut off by kernel_size={kernel_size}, e.g. filter "
                       f"[{o}, {i}] ({shown}) reaches {extent} {family.unit} at {CUT_SIGMAS:g} sigma; "
                       f"kernel_size={report['suggested_kernel_size']} would hold every filter{hint}")
        else:
            message = (f"{where} have lambd within {NYQUIST_MARGIN - 1:.0%} of the Nyquist floor "
                       f"{LAMBD_FLOOR:g} {family.unit}, e.g. filter [{o}, {i}] with lambd={values['lambd'][o, i]:.4g}: "
                       f"their oscillation is barely sampled")
        warnings.warn(message, GaborTruncationWarning, stacklevel=_caller_stacklevel())
