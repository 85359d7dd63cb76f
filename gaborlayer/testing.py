"""The success criterion of Gabor parameter recovery, shared by the tests, the benchmark and the demo.

Not imported by ``import gaborlayer``; import it explicitly::

    from gaborlayer.testing import is_recovered, recovery_error, sample_params, add_noise

:data:`IDENTIFIABLE` and :func:`sample_params` draw random truths from the ranges in which
``theta`` is identifiable in the window; :func:`recovery_error` and :func:`is_recovered` judge a
fit (:class:`~gaborlayer.GaborFit` or a dict of the five parameters) against the truth, modulo the
``theta + pi`` / ``-psi`` twin; :func:`add_noise` makes noisy responses at a given SNR.
See ``docs/recovery.md``.
"""
from __future__ import annotations

import math

import torch

from . import _checks
from ._family import GABOR_2D
from .fit import GaborFit
from .functional import _bank, canonicalize

__all__ = ["IDENTIFIABLE", "sample_params", "recovery_error", "is_recovered", "add_noise"]

_DTYPE = torch.float64

#: Ranges in which a random truth is identifiable in a ``size x size`` window (``sample_params``).
IDENTIFIABLE = {
    "theta": "uniform in [0, 2 pi)",
    "sigma": "uniform in [1.5, size / 4]",
    "lambd": "uniform in [3, max(3, 2 sigma)] (at least half a period inside one sigma)",
    "gamma": "uniform in [0.5, 1.5]",
    "psi": "uniform in [-pi, pi)",
}


def sample_params(n: int, size: int, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
    """``n`` random identifiable truths for a ``size x size`` kernel (ranges in ``IDENTIFIABLE``).

    Returns:
        dict of five float64 tensors of shape ``(n,)``.

    Examples:
        >>> p = sample_params(3, 15, torch.Generator().manual_seed(0))
        >>> sorted(p), p["theta"].shape
        (['gamma', 'lambd', 'psi', 'sigma', 'theta'], torch.Size([3]))
    """
    if size < 6:
        raise ValueError(f"size must be >= 6 for sigma in [1.5, size / 4] to be non-empty, got {size}")

    def uniform(lo, hi):
        return lo + (hi - lo) * torch.rand(n, dtype=_DTYPE, generator=generator)

    sigma = uniform(1.5, size / 4)
    return {"theta": uniform(0, 2 * math.pi), "sigma": sigma,
            "lambd": 3 + (torch.clamp(2 * sigma, min=3) - 3) * torch.rand(n, dtype=_DTYPE, generator=generator),
            "gamma": uniform(0.5, 1.5), "psi": uniform(-math.pi, math.pi)}


def recovery_error(fit: dict | GaborFit, truth: dict, size) -> tuple[torch.Tensor, torch.Tensor]:
    """Orientation error in degrees and relative kernel error of a fit against the truth.

    The orientation error is the circular distance modulo ``pi`` between the canonical thetas,
    so the ``theta + pi`` / ``-psi`` twin of the truth counts as exact (the kernel error then
    checks that ``psi`` flipped with it). The kernel error is ``||K_fit - K_true|| / ||K_true||``.

    Returns:
        ``(theta_error_degrees, kernel_relative_error)``, tensors of the parameters' batch shape.

    Examples:
        >>> truth = dict(theta=0.1, sigma=2.0, lambd=5.0, gamma=1.0, psi=0.3)
        >>> twin = dict(truth, theta=0.1 + math.pi, psi=-0.3)
        >>> [round(v.item(), 6) for v in recovery_error(twin, truth, 9)]
        [0.0, 0.0]
    """
    fitted = fit.params() if isinstance(fit, GaborFit) else fit
    kh, kw = _checks.ints(size, "size", 2)
    names = GABOR_2D.names
    a = {k: torch.as_tensor(fitted[k], dtype=_DTYPE) for k in names}
    b = {k: torch.as_tensor(truth[k], dtype=_DTYPE) for k in names}
    theta_a, _ = canonicalize(a["theta"], a["psi"])
    theta_b, _ = canonicalize(b["theta"], b["psi"])
    diff = torch.remainder(theta_a - theta_b, math.pi)
    theta_err = torch.rad2deg(torch.minimum(diff, math.pi - diff))
    k_a = _bank(GABOR_2D, dict(zip(names, torch.broadcast_tensors(*a.values()))), (kh, kw))
    k_b = _bank(GABOR_2D, dict(zip(names, torch.broadcast_tensors(*b.values()))), (kh, kw))
    rel = (k_a - k_b).square().sum((-2, -1)).sqrt() / k_b.square().sum((-2, -1)).sqrt()
    return theta_err, rel


def is_recovered(fit: dict | GaborFit, truth: dict, size, *, noisy: bool = False) -> torch.Tensor:
    """The success criterion: theta within 1 degree and kernel within 1% (noise-free), or theta
    within 2 degrees (``noisy``: responses at 20 dB SNR).

    Returns:
        bool tensor of the parameters' batch shape.

    Examples:
        >>> truth = dict(theta=0.5, sigma=2.0, lambd=5.0, gamma=1.0, psi=0.0)
        >>> off = dict(truth, theta=0.51)  # 0.57 degrees off, kernel 1.8% off
        >>> bool(is_recovered(off, truth, 9)), bool(is_recovered(off, truth, 9, noisy=True))
        (False, True)
    """
    theta_err, rel = recovery_error(fit, truth, size)
    if noisy:
        return theta_err <= 2.0
    return (theta_err <= 1.0) & (rel <= 0.01)


def add_noise(y: torch.Tensor, snr_db: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """``y`` plus white Gaussian noise at ``snr_db`` (noise variance = var(y) / 10^(snr_db / 10)).

    Examples:
        >>> y = torch.randn(1, 1, 64, 64, generator=torch.Generator().manual_seed(0))
        >>> n = add_noise(y, 20.0, torch.Generator().manual_seed(1)) - y
        >>> round((y.var() / n.var()).log10().item() * 10)
        20
    """
    std = y.var().sqrt() * 10 ** (-snr_db / 20)
    return y + std * torch.randn(y.shape, dtype=y.dtype, generator=generator)
