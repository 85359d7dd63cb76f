"""Extent diagnostics: which filters the kernel cuts off, which near the Nyquist floor, and the
kernel size that would hold them all (for any dimension, through the family's ``half_extents``)."""
from __future__ import annotations

import math
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


class GaborTruncationWarning(UserWarning):
    """A filter's envelope is cut off by the kernel, or its wavelength nears the Nyquist floor."""


def odd_sizes_holding(half_extents) -> tuple[int, ...]:
    """Per axis, the smallest odd number of taps ``k`` with ``k / 2 >=`` every half-extent."""
    return tuple(2 * math.ceil(float(h.max()) - 0.5) + 1 for h in half_extents)


def extent_report(family, values: dict[str, torch.Tensor], kernel_size: tuple[int, ...]) -> dict:
    """``{"cut", "near_nyquist", "suggested_kernel_size"}`` for filters of ``family`` with the given
    constrained ``values`` (float64 tensors of one shape) in kernels of ``kernel_size``.

    A value that is not finite has no extent: its filter counts as cut (a NaN sigma is no envelope
    that fits), and the suggested size is ``None`` when some filter has none.
    """
    halves = family.half_extents(values, CUT_SIGMAS)
    lambd = values["lambd"]
    cut = torch.zeros_like(lambd, dtype=torch.bool)
    for half, k in zip(halves, kernel_size):
        cut |= ~(half <= k / 2 * (1 + 1e-6))  # exactly at the edge (then rounded in float32) is not cut
    extents = family.half_extents(values, EXTENT_SIGMAS)
    finite = all(bool(torch.isfinite(h).all()) for h in extents)
    return {"cut": cut, "near_nyquist": lambd < NYQUIST_MARGIN * LAMBD_FLOOR,
            "suggested_kernel_size": odd_sizes_holding(extents) if finite else None}


def warn_extent(report: dict, family, values: dict, kernel_size, owner: str, warned: set) -> None:
    """Warn (:class:`GaborTruncationWarning`) about each kind of problem in ``report`` not yet in
    ``warned``, naming ``owner``, the first bad filter and the numbers; add the kinds warned."""
    for kind in ("cut", "near_nyquist"):
        bad = report[kind]
        if kind in warned or not bool(bad.any()):
            continue
        warned.add(kind)
        o, i = (int(v) for v in torch.nonzero(bad)[0])
        where = f"{owner}: {int(bad.sum())} of {bad.numel()} filters"
        if kind == "cut":
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
        warnings.warn(message, GaborTruncationWarning, stacklevel=4)

