"""The functional API: Gabor banks, Gabor convolution and canonical parameters.

One place resolves the backend (:func:`resolve_backend`); every other module builds banks
through :func:`gabor_kernel2d` or its unchecked twin :func:`_bank`.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from . import _checks
from ._autograd import GaborKernel2d
from ._reference import gabor_kernel2d_reference

BACKENDS = ("auto", "torch", "triton", "reference")

# Allowed ranges of the functional API (the module adds the Nyquist floor lambd >= 2).
_LOWER_BOUNDS = {"sigma": (0.0, False), "lambd": (0.0, False), "gamma": (0.0, False)}


def resolve_backend(backend: str, device: torch.device | None = None) -> str:
    """The concrete backend for ``backend`` on ``device``: ``"torch"``, ``"triton"`` or ``"reference"``.

    ``"auto"`` picks ``"triton"`` (the ``torch.ops.gaborlayer.gabor_bank`` op, Triton kernels)
    for CUDA tensors when triton imports, else ``"torch"`` (the analytic
    ``torch.autograd.Function``). ``"triton"`` never falls back: it raises ``RuntimeError``
    saying why when triton does not import or the tensors are not on CUDA (CPU tensors run it
    only under the Triton interpreter, ``TRITON_INTERPRET=1``). With ``device=None`` only the
    name (and, for ``"triton"``, the import) is checked.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    from . import _triton  # light: imports triton only when asked below

    device_type = None if device is None else torch.device(device).type
    if backend == "auto":
        usable = device_type == "cuda" and not _triton.unavailable_reason(device_type)
        return "triton" if usable else "torch"
    if backend == "triton":
        reason = _triton.unavailable_reason(device_type)
        if reason:
            raise RuntimeError(reason)
    return backend


def _bank(theta, sigma, lambd, gamma, psi, kh: int, kw: int, *, zero_mean: bool = False, backend: str = "auto"):
    """Bank ``(*S, kh, kw)`` from parameters of one shape ``S``, with no input checks."""
    shape = theta.shape
    flat = [p.reshape(-1) for p in (theta, sigma, lambd, gamma, psi)]
    resolved = resolve_backend(backend, theta.device)
    if resolved == "reference":
        build = gabor_kernel2d_reference
    elif resolved == "triton":
        build = torch.ops.gaborlayer.gabor_bank  # registered by resolve_backend (gaborlayer._ops)
    else:
        build = GaborKernel2d.apply
    bank = build(*flat, kh, kw)
    if zero_mean:
        # Morlet-style DC removal: subtract the multiple of the envelope that makes the sum zero,
        # so the kernel stays localised (a constant offset would not). The envelope is the same
        # bank with lambd = inf and psi = 0.
        envelope = build(flat[0], flat[1], torch.full_like(flat[2], math.inf), flat[3], torch.zeros_like(flat[4]), kh, kw)
        tiny = torch.finfo(bank.dtype).tiny
        beta = bank.sum(dim=(-2, -1), keepdim=True) / envelope.sum(dim=(-2, -1), keepdim=True).clamp_min(tiny)
        bank = bank - beta * envelope
    return bank.reshape(*shape, kh, kw)


def gabor_kernel2d(theta, sigma, lambd, gamma, psi, size, *, zero_mean: bool = False, backend: str = "auto") -> torch.Tensor:
    r"""Build a bank of real 2-D Gabor kernels, differentiable in all five parameters.

    .. math::
        g(x, y) = \exp\!\Big(-\frac{x'^2 + \gamma^2 y'^2}{2\sigma^2}\Big)
                  \cos\!\Big(2\pi \frac{x'}{\lambda} + \psi\Big),\quad
        x' = x\cos\theta + y\sin\theta,\ y' = -x\sin\theta + y\cos\theta

    Row ``i`` of a kernel samples ``y = i - (kh-1)/2`` (y grows downward) and column ``j``
    samples ``x = j - (kw-1)/2``. For odd sizes this is OpenCV's ``getGaborKernel`` rotated by
    180 degrees (see ``docs/math.md``).

    Args:
        theta: orientation in radians (any real value; period 2 pi), tensor of shape ``S``.
        sigma: envelope width in pixels, ``> 0``, shape broadcastable with ``S``.
        lambd: wavelength in pixels, ``> 0``.
        gamma: spatial aspect ratio, ``> 0``.
        psi: phase offset in radians (any real value).
        size: kernel size ``int`` or ``(kh, kw)``, each ``>= 1``.
        zero_mean: subtract the multiple of the envelope that makes each kernel sum to zero.
        backend: ``"auto"``, ``"torch"`` (the analytic autograd Function), ``"triton"`` (CUDA, see :func:`resolve_backend`) or ``"reference"``
            (the formula in plain autograd).

    Returns:
        Tensor of shape ``(*S, kh, kw)`` with the parameters' (promoted) dtype and device.

    Example:
        >>> import math, torch
        >>> theta = torch.linspace(0, math.pi, 4, requires_grad=True)
        >>> bank = gabor_kernel2d(theta, 2.0, 5.0, 0.5, 0.0, 7)
        >>> bank.shape
        torch.Size([4, 7, 7])
        >>> bank.sum().backward(); theta.grad.shape
        torch.Size([4])
    """
    kh, kw = _checks.pair(size, "size")
    values = dict(zip(_checks.PARAM_NAMES, (theta, sigma, lambd, gamma, psi)))
    tensors = _checks.as_param_tensors(values)
    values = dict(zip(_checks.PARAM_NAMES, tensors))
    _checks.check_values(values, _LOWER_BOUNDS)
    return _bank(*_checks.broadcast(values), kh, kw, zero_mean=zero_mean, backend=backend)


def gabor_conv2d(input, theta, sigma, lambd, gamma, psi, kernel_size, bias=None, stride=1, padding=0,
                 dilation=1, groups=1, *, zero_mean: bool = False, backend: str = "auto") -> torch.Tensor:
    """Convolve ``input`` with the Gabor bank of the given parameters (``F.conv2d`` semantics).

    Args:
        input: ``(B, C_in, H, W)`` or ``(C_in, H, W)``.
        theta, sigma, lambd, gamma, psi: shape ``(C_out, C_in // groups)`` (or broadcastable).
        kernel_size: ``int`` or ``(kh, kw)``.
        bias, stride, padding, dilation, groups: as in :func:`torch.nn.functional.conv2d`.

    Returns:
        ``(B, C_out, H_out, W_out)``, as ``F.conv2d(input, bank, ...)``.

    Example:
        >>> x = torch.randn(2, 3, 16, 16)
        >>> theta = torch.zeros(8, 3)
        >>> gabor_conv2d(x, theta, 2.0, 4.0, 1.0, 0.0, 5, padding="same").shape
        torch.Size([2, 8, 16, 16])
    """
    weight = gabor_kernel2d(theta, sigma, lambd, gamma, psi, kernel_size, zero_mean=zero_mean, backend=backend)
    if weight.dim() != 4:
        raise ValueError(f"parameters must broadcast to (C_out, C_in // groups), got shape {tuple(weight.shape[:-2])}")
    return F.conv2d(input, weight.to(input.dtype), bias, stride, padding, dilation, groups)


def canonicalize(theta, psi) -> tuple[torch.Tensor, torch.Tensor]:
    """The unique equivalent ``(theta, psi)`` with ``theta`` in ``[0, pi)`` and ``psi`` in ``(-pi, pi]``.

    Uses ``K(theta + pi, psi) = K(theta, -psi)`` and the ``2 pi`` periods of both angles; the
    other three parameters are unchanged by it. ``pi`` is the parameters' dtype's ``pi`` (in
    float32 that is 3.1415927, a little above the real pi). Angles already in range are returned
    unchanged (so canonicalizing twice changes nothing); the others are reduced through
    ``atan2(sin, cos)``, whose argument reduction is exact, so even a huge theta or psi keeps its
    kernel (``theta - k * pi`` in floating point would not).

    Args:
        theta, psi: tensors (or floats) of broadcastable shapes, finite.

    Returns:
        ``(theta, psi)`` broadcast to one shape.

    Example:
        >>> t, p = canonicalize(torch.tensor(-math.pi / 4), torch.tensor(0.5))
        >>> round(t.item(), 4), round(p.item(), 4)
        (2.3562, -0.5)
    """
    values = dict(zip(("theta", "psi"), _checks.as_param_tensors({"theta": theta, "psi": psi})))
    _checks.check_values(values, {})
    theta, psi = _checks.broadcast(values)
    # (-pi, pi], with exact argument reduction; an angle already there is kept bit for bit.
    theta = torch.where((theta > -math.pi) & (theta <= math.pi), theta, torch.atan2(torch.sin(theta), torch.cos(theta)))
    psi = torch.where((psi > -math.pi) & (psi <= math.pi), psi, torch.atan2(torch.sin(psi), torch.cos(psi)))
    # Fold theta into [0, pi), flipping psi once per half turn. theta + pi can round up to pi.
    under = theta < 0
    theta_c = torch.where(under, theta + math.pi, theta)
    over = theta_c >= math.pi
    theta_c = torch.where(over, theta_c - math.pi, theta_c)
    psi = torch.where(under ^ over, -psi, psi)
    # atan2 may return -pi (and -(pi) is -pi): that end belongs to +pi.
    psi_c = torch.where(psi <= -math.pi, psi + 2 * math.pi, psi)
    return theta_c, psi_c
