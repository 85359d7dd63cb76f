"""The functional API: Gabor banks, Gabor convolution and canonical parameters, in 1-D, 2-D and 3-D.

The dispatch layer too: :func:`resolve_backend` picks how a bank is built, and :func:`_bank`, the
one bank builder for every dimension (parameters found by name, per-dimension facts from
``gaborlayer._family``), builds it. The public functions check their input and call it; the layers
call it on parameters they keep valid themselves.
"""
from __future__ import annotations

import math

import torch

from . import _checks
from ._autograd import QuadratureMagnitude
from ._extent import odd_sizes_holding
from ._family import FAMILIES, GABOR_1D, GABOR_2D, GABOR_3D, GaborFamily, half_extents2d

BACKENDS = ("auto", "torch", "triton", "reference")
# What a Gabor convolution returns: the real filter's response, or its quadrature pair's.
OUTPUTS = ("real", "complex", "magnitude", "quadrature")

# Why 1-D and 3-D banks have no Triton kernel: measured by benchmarks/bench_nd.py, see docs/nd.md.
_NO_TRITON_ND = ("backend='triton' has no kernel for {dims}-D banks: there is a Triton kernel for the 2-D bank "
                 "only. Building a {dims}-D bank (forward and backward) costs {share} of the convolution it "
                 "feeds at typical sizes (benchmarks/bench_nd.py, docs/nd.md), so a kernel would not pay; "
                 "use backend='torch' (or 'auto')")
_ND_SHARE = {1: "about 0.1%", 3: "about 1%"}  # on CPU; measured, docs/nd.md


def resolve_backend(backend: str, device: torch.device | None = None, *, dims: int = 2,
                    dtype: torch.dtype = torch.float32) -> str:
    """The concrete backend for ``backend`` on ``device``: ``"torch"``, ``"triton"`` or ``"reference"``.

    ``"auto"`` picks ``"triton"`` (the ``torch.ops.gaborlayer.gabor_bank`` op, Triton kernels)
    for CUDA tensors when triton imports and the kernels pass their first-use check on that device
    in ``dtype`` (the dtype the bank is computed in: float32, or float64), else ``"torch"`` (the
    analytic ``torch.autograd.Function``). The check (``gaborlayer._triton.kernels_verified``) runs
    once per device and dtype: a small random bank's values and five gradients against the
    Function's; on a failure it warns once, saying what differed, and ``"auto"`` keeps to
    ``"torch"`` there. ``GABORLAYER_TRITON_CHECK=0`` skips it; inside torch.compile or fx tracing
    it does not run (a verdict already reached is used, else ``"torch"``). ``"triton"`` is never
    checked and never falls back: it raises ``RuntimeError``
    saying why when triton does not import or the tensors are not on CUDA (CPU tensors run it
    only under the Triton interpreter, ``TRITON_INTERPRET=1``). With ``device=None`` only the
    name (and, for ``"triton"``, the import) is checked. Resolving to ``"triton"`` on a device
    registers the ``torch.library`` op (``gaborlayer._ops``), once.

    For 1-D and 3-D banks (``dims=1`` or ``3``) there is no Triton kernel: ``"auto"`` is
    ``"torch"`` on every device and ``"triton"`` raises ``RuntimeError`` saying so.

    Examples:
        >>> resolve_backend("auto", torch.device("cpu")), resolve_backend("reference", dims=3)
        ('torch', 'reference')
    """
    _checks.one_of(backend, "backend", BACKENDS)
    if not FAMILIES[dims].triton:
        if backend == "triton":
            raise RuntimeError(_NO_TRITON_ND.format(dims=dims, share=_ND_SHARE[dims]))
        return "reference" if backend == "reference" else "torch"
    device_type = None if device is None else torch.device(device).type
    if backend in ("torch", "reference") or (backend == "auto" and device_type != "cuda"):
        return "torch" if backend == "auto" else backend  # without importing _triton (it loads dynamo: ~2 s)
    from . import _triton

    reason = _triton.unavailable_reason(device_type)
    if backend == "auto" and reason:
        return "torch"
    if reason:
        raise RuntimeError(reason)
    if device_type is not None:
        _triton.register_op()
        if backend == "auto" and not _triton.kernels_verified(device, dtype):
            return "torch"
    return "triton"


def _bank(family: GaborFamily, params: dict, size: tuple[int, ...], *, zero_mean: bool = False,
          backend: str = "auto") -> torch.Tensor:
    """Bank ``(*S, *size)`` of ``family`` from ``params``, a dict of its parameter names to
    tensors of one shape ``S``, with no input checks.

    Half-precision parameters give a half-precision bank built in float32 and rounded once (as the
    layers build theirs): half precision cannot hold the phase ``2 pi x' / lambd`` (one bfloat16
    ulp at 20 rad is 0.06 rad), so a bank computed in it is off by far more than its rounding."""
    flat = {name: params[name].reshape(-1) for name in family.names}
    first = flat[family.names[0]]
    dtype = first.dtype
    compute = torch.promote_types(dtype, torch.float32)
    if compute != dtype:
        flat = {name: p.to(compute) for name, p in flat.items()}  # differentiable; cast back below
    resolved = resolve_backend(backend, first.device, dims=family.dims, dtype=compute)
    if resolved == "reference":
        build = family.reference
    elif resolved == "triton":
        build = torch.ops.gaborlayer.gabor_bank  # registered by resolve_backend
    else:
        build = family.function.apply
    bank = build(*flat.values(), *size)
    if zero_mean:
        # Morlet-style DC removal: subtract the multiple of the envelope (the filter with lambd = inf
        # and psi = 0) that makes each kernel sum to zero, so the kernel stays localised.
        envelope_params = {**flat, "lambd": torch.full_like(flat["lambd"], math.inf),
                           "psi": torch.zeros_like(flat["psi"])}
        envelope = build(*envelope_params.values(), *size)
        axes = tuple(range(-family.dims, 0))
        tiny = torch.finfo(bank.dtype).tiny
        beta = bank.sum(dim=axes, keepdim=True) / envelope.sum(dim=axes, keepdim=True).clamp_min(tiny)
        bank = bank - beta * envelope
    return bank.to(dtype).reshape(*params[family.names[0]].shape, *size)


def _pad_amounts(padding, kernel_size: tuple[int, ...], dilation: tuple[int, ...]) -> list[int]:
    """``F.pad``'s amounts (last dimension first) that reproduce a convolution's ``padding``
    (``"same"``, ``"valid"`` or one int per dimension, already checked), as ``nn.ConvNd`` computes
    its ``_reversed_padding_repeated_twice``."""
    if padding == "valid":
        return [0, 0] * len(kernel_size)
    if padding == "same":
        pads = []
        for d, k in zip(reversed(dilation), reversed(kernel_size)):
            total = d * (k - 1)
            pads += [total // 2, total - total // 2]
        return pads
    return [p for p in reversed(padding) for _ in range(2)]


def _checked_params(family: GaborFamily, args) -> dict[str, torch.Tensor]:
    """The parameters (``args`` in ``family.names`` order) as tensors of one dtype and device,
    checked and broadcast to one shape, by name."""
    return _checks.checked_params(dict(zip(family.names, args)), _checks.BANK_BOUNDS)


def _pairs(even: torch.Tensor, odd: torch.Tensor, groups: int) -> torch.Tensor:
    """``(groups, 2, C // groups, ...)`` from two ``(C, ...)`` tensors: each group's even entries,
    then its odd ones. ``F.convNd`` gives each group a contiguous block of output channels, so the
    pair of a filter must sit in the block of its group (with ``groups = 1``: all even, then all odd)."""
    return torch.stack([even.unflatten(0, (groups, -1)), odd.unflatten(0, (groups, -1))], dim=1)


def _pair_bias(bias: torch.Tensor | None, output: str, groups: int = 1) -> torch.Tensor | None:
    """The bias of the convolution for ``output``: itself for real output, on the even half for
    complex / quadrature output, none for magnitude (:func:`_combine` adds it after)."""
    if bias is None or output == "real":
        return bias
    if output == "magnitude":
        return None
    return _pairs(bias, torch.zeros_like(bias), groups).reshape(-1)


def _quadrature_params(params: dict[str, torch.Tensor], groups: int = 1) -> dict[str, torch.Tensor]:
    """Parameters ``(groups, 2, C // groups, ...)`` of the even/odd pairs (see :func:`_pairs`) from
    parameters ``(C, ...)``: the phases ``psi`` and ``psi - pi/2``, so that ``even + 1j * odd`` is
    ``E exp(i phase)``; every other parameter (an ``amplitude`` too) is shared by the pair."""
    pairs = {name: _pairs(p, p, groups) for name, p in params.items()}
    if "psi" in params:
        pairs["psi"] = _pairs(params["psi"], params["psi"] - math.pi / 2, groups)
    return pairs


def _combine(paired: torch.Tensor, output: str, bias: torch.Tensor | None, dims: int = 2,
             groups: int = 1, complex_input: bool = False) -> torch.Tensor:
    """From the output of the convolution with :func:`_pair_bias`'s bias (for the pair modes
    ``(..., 2 C, *spatial)`` in :func:`_pairs`'s channel order, ``dims`` spatial axes) to the
    requested output; ``bias`` is the layer's own, added here only to the magnitude.
    ``complex_input`` is passed by the caller (not read from ``paired``), so that a traced
    ``paired`` (``torch.fx``) meets no data-dependent branch."""
    if output in ("real", "quadrature"):
        return paired
    axis = paired.dim() - dims - 1
    pairs = paired.unflatten(axis, (groups, 2, -1))  # (..., groups, even | odd, C // groups, *spatial)
    if output == "magnitude":
        if complex_input:  # complex input: |even + i odd| (its gradient at 0 is 0, never NaN)
            even, odd = pairs.unbind(axis + 1)
            magnitude = (even + 1j * odd).abs().flatten(axis, axis + 1)
        else:
            magnitude = QuadratureMagnitude.apply(pairs, axis + 1).flatten(axis, axis + 1)
        return magnitude if bias is None else magnitude + bias.to(magnitude.dtype).reshape(-1, *(1,) * dims)
    even, odd = (pairs.select(axis + 1, i).flatten(axis, axis + 1) for i in (0, 1))
    if complex_input:  # the complex filter's response, by linearity
        return even + 1j * odd
    if even.dtype not in (torch.float32, torch.float64):  # no complex half: compute in float32
        even, odd = even.float(), odd.float()
    return torch.complex(even, odd)


def _gabor_conv(family: GaborFamily, input, params, kernel_size, bias, stride, padding, dilation, groups,
                zero_mean: bool, backend: str, output: str) -> torch.Tensor:
    """:func:`gabor_conv1d` / :func:`gabor_conv2d` / :func:`gabor_conv3d`: ``params`` are the raw
    filter parameters in ``family.names`` order. The pair modes build the even and the odd filters in
    one bank of ``2 C_out`` filters (:func:`_pairs`'s order) and run one convolution."""
    _checks.conv_input(input, "input")
    _checks.one_of(output, "output", OUTPUTS)
    zero_mean = _checks.boolean(zero_mean, "zero_mean")
    dims = family.dims
    size = _checks.ints(kernel_size, "kernel_size", dims)
    params = _checked_params(family, params)
    given = tuple(params["psi"].shape)
    if len(given) != 2:
        raise ValueError(f"parameters must broadcast to (C_out, C_in // groups), got shape {given}")
    c_out = given[0]
    groups = _checks.positive_int(groups, "groups")
    if output == "real":  # (the pair outputs say it below)
        _checks.divisible_by_groups(c_out, "out_channels", groups)
    if input.dim() in (dims + 1, dims + 2):  # else F.convNd says what it expects
        _checks.divisible_by_groups(input.shape[-(dims + 1)], "in_channels", groups)
        shape = (c_out, input.shape[-(dims + 1)] // groups)
        try:  # e.g. (C_out, 1) for every input channel, as the layers' init values broadcast
            params = {name: torch.broadcast_to(p, shape) for name, p in params.items()}
        except RuntimeError:
            raise ValueError(f"parameters must broadcast to (C_out, C_in // groups) = {shape} for an input with "
                             f"{input.shape[-(dims + 1)]} channels and groups={groups}, got shape "
                             f"{given}") from None
    if output != "real":
        if c_out % groups:
            raise ValueError(f"the pair outputs need C_out ({c_out}) divisible by groups ({groups})")
        params = _quadrature_params(params, groups)  # (groups, 2, C_out // groups, C_in // groups)
    weight = _bank(family, params, size, zero_mean=zero_mean, backend=backend)
    weight = weight.reshape(-1, params["psi"].shape[-1], *size)
    conv_bias = _pair_bias(bias, output, groups)
    if conv_bias is not None and input.is_complex():  # a real bias on the real part
        conv_bias = conv_bias.to(input.dtype)
    y = family.conv(input, weight.to(input.dtype), conv_bias, stride, padding, dilation, groups)
    return _combine(y, output, bias, dims, groups, complex_input=input.is_complex())


def gabor_kernel2d(theta: float | torch.Tensor, sigma: float | torch.Tensor, lambd: float | torch.Tensor,
                   gamma: float | torch.Tensor, psi: float | torch.Tensor, size: int | tuple[int, int], *,
                   zero_mean: bool = False, backend: str = "auto") -> torch.Tensor:
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
        backend: ``"auto"``, ``"torch"`` (the analytic autograd Function), ``"triton"`` (CUDA, see
            :func:`resolve_backend`) or ``"reference"`` (the formula in plain autograd).

    Returns:
        Tensor of shape ``(*S, kh, kw)`` with the parameters' (promoted) dtype and device.

    Examples:
        >>> import math, torch
        >>> theta = torch.linspace(0, math.pi, 4, requires_grad=True)
        >>> bank = gabor_kernel2d(theta, 2.0, 5.0, 0.5, 0.0, 7)
        >>> bank.shape
        torch.Size([4, 7, 7])
        >>> bank.sum().backward(); theta.grad.shape
        torch.Size([4])
    """
    size = _checks.ints(size, "size", 2)
    params = _checked_params(GABOR_2D, (theta, sigma, lambd, gamma, psi))
    zero_mean = _checks.boolean(zero_mean, "zero_mean")
    return _bank(GABOR_2D, params, size, zero_mean=zero_mean, backend=backend)


def gabor_conv2d(input: torch.Tensor, theta: float | torch.Tensor, sigma: float | torch.Tensor,
                 lambd: float | torch.Tensor, gamma: float | torch.Tensor, psi: float | torch.Tensor,
                 kernel_size: int | tuple[int, int], bias: torch.Tensor | None = None,
                 stride: int | tuple[int, int] = 1, padding: str | int | tuple[int, int] = 0,
                 dilation: int | tuple[int, int] = 1, groups: int = 1, *, zero_mean: bool = False,
                 backend: str = "auto", output: str = "real") -> torch.Tensor:
    """Convolve ``input`` with the Gabor bank of the given parameters (``F.conv2d`` semantics).

    Args:
        input: ``(B, C_in, H, W)`` or ``(C_in, H, W)``, floating point or complex (a complex
            input gives, by linearity, the responses to its real part plus ``1j`` times those to
            its imaginary part: for ``"complex"`` the complex filter's response ``even + 1j odd``,
            for ``"magnitude"`` its modulus).
        theta, sigma, lambd, gamma, psi: shape ``(C_out, C_in // groups)`` (or broadcastable).
        kernel_size: ``int`` or ``(kh, kw)``.
        bias, stride, padding, dilation, groups: as in :func:`torch.nn.functional.conv2d`.
        zero_mean, backend: as in :func:`gabor_kernel2d`.
        output: ``"real"``: the response of the filters with phase ``psi``. The other modes use
            each filter's quadrature pair, the even filter (phase ``psi``) and the odd one (phase
            ``psi - pi/2``), i.e. the complex Gabor filter ``E exp(i phase)``:
            ``"complex"``: ``even + 1j odd`` (complex64 for half-precision input);
            ``"magnitude"``: ``|even + 1j odd|`` (the local energy, shift-invariant within the
            envelope; its gradient at a zero response is 0, never NaN);
            ``"quadrature"``: both real responses as channels: the even ones, then the odd
            ones (with ``groups > 1``, so within each group's block of channels). ``bias`` is added
            to the even response, or to the magnitude.

    Returns:
        ``(B, C_out, H_out, W_out)``, as ``F.conv2d(input, bank, ...)``; ``2 C_out`` channels
        for ``"quadrature"``.

    Examples:
        >>> x = torch.randn(2, 3, 16, 16)
        >>> theta = torch.zeros(8, 3)
        >>> gabor_conv2d(x, theta, 2.0, 4.0, 1.0, 0.0, 5, padding="same").shape
        torch.Size([2, 8, 16, 16])
        >>> gabor_conv2d(x, theta, 2.0, 4.0, 1.0, 0.0, 5, padding="same", output="complex").dtype
        torch.complex64
    """
    return _gabor_conv(GABOR_2D, input, (theta, sigma, lambd, gamma, psi), kernel_size, bias, stride, padding, dilation,
                       groups, zero_mean, backend, output)


def gabor_kernel1d(sigma: float | torch.Tensor, lambd: float | torch.Tensor, psi: float | torch.Tensor,
                   size: int | tuple[int], *, zero_mean: bool = False, backend: str = "auto") -> torch.Tensor:
    r"""Build a bank of real 1-D Gabor kernels, differentiable in all three parameters.

    .. math::
        g(x) = \exp\!\Big(-\frac{x^2}{2\sigma^2}\Big) \cos\!\Big(2\pi \frac{x}{\lambda} + \psi\Big)

    Entry ``i`` samples ``x = i - (k-1)/2`` (see ``docs/nd.md``).

    Args:
        sigma: envelope width in samples, ``> 0``, tensor of shape ``S`` (or a float).
        lambd: wavelength in samples, ``> 0``, broadcastable with ``S``.
        psi: phase offset in radians (any real value).
        size: kernel length ``int`` or ``(k,)``, ``>= 1``.
        zero_mean: subtract the multiple of the envelope that makes each kernel sum to zero.
        backend: ``"auto"`` or ``"torch"`` (the analytic autograd Function), ``"reference"`` (the
            formula in plain autograd). There is no ``"triton"`` kernel in 1-D (it raises; see
            :func:`resolve_backend`).

    Returns:
        Tensor of shape ``(*S, k)`` with the parameters' (promoted) dtype and device.

    Examples:
        >>> lambd = torch.tensor([4.0, 8.0, 16.0], requires_grad=True)
        >>> bank = gabor_kernel1d(2.0 * lambd, lambd, 0.0, 51)
        >>> bank.shape
        torch.Size([3, 51])
        >>> bank.sum().backward(); lambd.grad.shape
        torch.Size([3])
    """
    size = _checks.ints(size, "size", 1)
    params = _checked_params(GABOR_1D, (sigma, lambd, psi))
    zero_mean = _checks.boolean(zero_mean, "zero_mean")
    return _bank(GABOR_1D, params, size, zero_mean=zero_mean, backend=backend)


def gabor_kernel3d(theta: float | torch.Tensor, phi: float | torch.Tensor, sigma: float | torch.Tensor,
                   lambd: float | torch.Tensor, gamma: float | torch.Tensor, psi: float | torch.Tensor,
                   size: int | tuple[int, int, int], *, zero_mean: bool = False,
                   backend: str = "auto") -> torch.Tensor:
    r"""Build a bank of real 3-D Gabor kernels, differentiable in all six parameters.

    .. math::
        g(\mathbf r) = \exp\!\Big(-\frac{x_\parallel^2 + \gamma^2 |\mathbf r_\perp|^2}{2\sigma^2}\Big)
                       \cos\!\Big(2\pi \frac{x_\parallel}{\lambda} + \psi\Big),\quad
        x_\parallel = \mathbf u \cdot \mathbf r,\ |\mathbf r_\perp|^2 = |\mathbf r|^2 - x_\parallel^2

    with the wave direction ``u = (cos phi cos theta, cos phi sin theta, sin phi)`` in
    ``(x, y, z)``: ``theta`` is the azimuth in the x-y plane (the 2-D layer's theta when
    ``phi = 0``), ``phi`` the elevation towards z. The envelope is symmetric about ``u``, so the
    two angles fix the filter (see ``docs/nd.md``). The layout is ``nn.Conv3d``'s: index
    ``(d, i, j)`` samples ``z = d - (kd-1)/2``, ``y = i - (kh-1)/2``, ``x = j - (kw-1)/2``.

    Args:
        theta: azimuth in radians (any real value), tensor of shape ``S`` (or a float).
        phi: elevation in radians (any real value), broadcastable with ``S``.
        sigma: envelope width along ``u`` in voxels, ``> 0``.
        lambd: wavelength in voxels, ``> 0``.
        gamma: aspect ratio (the envelope's width across ``u`` is ``sigma / gamma``), ``> 0``.
        psi: phase offset in radians (any real value).
        size: kernel size ``int`` or ``(kd, kh, kw)``, each ``>= 1``.
        zero_mean: subtract the multiple of the envelope that makes each kernel sum to zero.
        backend: ``"auto"``, ``"torch"`` or ``"reference"``, as :func:`gabor_kernel1d`.

    Returns:
        Tensor of shape ``(*S, kd, kh, kw)`` with the parameters' (promoted) dtype and device.

    Examples:
        >>> phi = torch.tensor([0.0, 0.5, 1.2], requires_grad=True)
        >>> bank = gabor_kernel3d(0.3, phi, 2.0, 5.0, 0.5, 0.0, 7)
        >>> bank.shape
        torch.Size([3, 7, 7, 7])
        >>> bank.sum().backward(); phi.grad.shape
        torch.Size([3])
    """
    size = _checks.ints(size, "size", 3)
    params = _checked_params(GABOR_3D, (theta, phi, sigma, lambd, gamma, psi))
    zero_mean = _checks.boolean(zero_mean, "zero_mean")
    return _bank(GABOR_3D, params, size, zero_mean=zero_mean, backend=backend)


def gabor_conv1d(input: torch.Tensor, sigma: float | torch.Tensor, lambd: float | torch.Tensor,
                 psi: float | torch.Tensor, kernel_size: int | tuple[int], bias: torch.Tensor | None = None,
                 stride: int | tuple[int] = 1, padding: str | int | tuple[int] = 0, dilation: int | tuple[int] = 1,
                 groups: int = 1, *, zero_mean: bool = False, backend: str = "auto",
                 output: str = "real") -> torch.Tensor:
    """Convolve ``input`` with the 1-D Gabor bank of the given parameters (``F.conv1d`` semantics).

    Args:
        input: ``(B, C_in, L)`` or ``(C_in, L)``, floating point or complex (as in :func:`gabor_conv2d`).
        sigma, lambd, psi: shape ``(C_out, C_in // groups)`` (or broadcastable).
        kernel_size: ``int`` or ``(k,)``.
        bias, stride, padding, dilation, groups: as in :func:`torch.nn.functional.conv1d`.
        zero_mean, backend: as in :func:`gabor_kernel1d`.
        output: ``"real"``, ``"complex"``, ``"magnitude"`` or ``"quadrature"``, as in
            :func:`gabor_conv2d`: the even filter has phase ``psi``, the odd one ``psi - pi/2``
            (``"magnitude"``: the envelope of each band); ``bias`` is added to the even response,
            or to the magnitude.

    Returns:
        ``(B, C_out, L_out)``, as ``F.conv1d(input, bank, ...)``; ``2 C_out`` channels for
        ``"quadrature"``.

    Examples:
        >>> x = torch.randn(2, 1, 100)
        >>> gabor_conv1d(x, torch.full((4, 1), 3.0), 6.0, 0.0, 15, padding="same").shape
        torch.Size([2, 4, 100])
        >>> gabor_conv1d(x, torch.full((4, 1), 3.0), 6.0, 0.0, 15, padding="same", output="complex").dtype
        torch.complex64
    """
    return _gabor_conv(GABOR_1D, input, (sigma, lambd, psi), kernel_size, bias, stride, padding, dilation, groups,
                       zero_mean, backend, output)


def gabor_conv3d(input: torch.Tensor, theta: float | torch.Tensor, phi: float | torch.Tensor,
                 sigma: float | torch.Tensor, lambd: float | torch.Tensor, gamma: float | torch.Tensor,
                 psi: float | torch.Tensor, kernel_size: int | tuple[int, int, int],
                 bias: torch.Tensor | None = None, stride: int | tuple[int, int, int] = 1,
                 padding: str | int | tuple[int, int, int] = 0, dilation: int | tuple[int, int, int] = 1,
                 groups: int = 1, *, zero_mean: bool = False, backend: str = "auto",
                 output: str = "real") -> torch.Tensor:
    """Convolve ``input`` with the 3-D Gabor bank of the given parameters (``F.conv3d`` semantics).

    Args:
        input: ``(B, C_in, D, H, W)`` or ``(C_in, D, H, W)``, floating point or complex (as in
            :func:`gabor_conv2d`).
        theta, phi, sigma, lambd, gamma, psi: shape ``(C_out, C_in // groups)`` (or broadcastable).
        kernel_size: ``int`` or ``(kd, kh, kw)``.
        bias, stride, padding, dilation, groups: as in :func:`torch.nn.functional.conv3d`.
        zero_mean, backend: as in :func:`gabor_kernel3d`.
        output: ``"real"``, ``"complex"``, ``"magnitude"`` or ``"quadrature"``, as in
            :func:`gabor_conv2d`: the even filter has phase ``psi``, the odd one ``psi - pi/2``
            (the pair along the wave direction); ``bias`` is added to the even response, or to
            the magnitude.

    Returns:
        ``(B, C_out, D_out, H_out, W_out)``, as ``F.conv3d(input, bank, ...)``; ``2 C_out``
        channels for ``"quadrature"``.

    Examples:
        >>> x = torch.randn(1, 2, 8, 8, 8)
        >>> gabor_conv3d(x, torch.zeros(4, 2), 0.0, 1.5, 4.0, 1.0, 0.0, 5, padding="same").shape
        torch.Size([1, 4, 8, 8, 8])
        >>> gabor_conv3d(x, torch.zeros(4, 2), 0.0, 1.5, 4.0, 1.0, 0.0, 5, padding="same", output="quadrature").shape
        torch.Size([1, 8, 8, 8, 8])
    """
    return _gabor_conv(GABOR_3D, input, (theta, phi, sigma, lambd, gamma, psi), kernel_size, bias, stride, padding,
                       dilation, groups, zero_mean, backend, output)


def envelope_extent(theta: float | torch.Tensor | None, sigma: float | torch.Tensor, gamma: float | torch.Tensor,
                    n_sigma: float = 3.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Half-height and half-width in pixels of the box around each filter's ``n_sigma`` envelope.

    The envelope's ``n_sigma`` contour is an ellipse with semi-axes ``n_sigma * sigma`` along the
    wave (x') and ``n_sigma * sigma / gamma`` across it (y'), rotated by theta.

    Args:
        theta, sigma, gamma: tensors (or floats) of broadcastable shapes ``S``; ``theta=None``
            takes the worst orientation (the long semi-axis in both directions). theta finite,
            sigma > 0, gamma > 0.
        n_sigma: the contour, in envelope widths (finite, > 0).

    Returns:
        ``(half_h, half_w)``, each of shape ``S``.

    Examples:
        >>> envelope_extent(0.0, 2.0, 0.5)
        (tensor(12.), tensor(6.))
    """
    return half_extents2d(*_checked_extent_args(theta, sigma, gamma, n_sigma))


def _checked_extent_args(theta, sigma, gamma, n_sigma) -> tuple:
    """``(theta or None, sigma, gamma, n_sigma)``: the parameters as tensors of one dtype, checked
    and broadcast, and ``n_sigma`` as a float."""
    given = {"theta": theta, "sigma": sigma, "gamma": gamma}
    if theta is None:
        del given["theta"]
    values = _checks.checked_params(given, _checks.BANK_BOUNDS)
    return values.get("theta"), values["sigma"], values["gamma"], _checks.positive_real(n_sigma, "n_sigma")


def suggest_kernel_size(theta: float | torch.Tensor | None, sigma: float | torch.Tensor, gamma: float | torch.Tensor,
                        n_sigma: float = 3.0) -> tuple[int, int]:
    """The smallest odd ``(kh, kw)`` whose kernel holds every filter's ``n_sigma`` envelope.

    A kernel of ``k`` taps spans ``k`` pixels, so it holds a half-extent ``e`` when ``k >= 2 e``.

    Args:
        theta, sigma, gamma: as in :func:`envelope_extent` (``theta=None``: any orientation).
        n_sigma: the contour that must fit, in envelope widths (3: the envelope is below 1.1%
            of its peak outside).

    Returns:
        ``(kh, kw)``, odd ints.

    Examples:
        >>> suggest_kernel_size(0.0, 2.0, 0.5), suggest_kernel_size(None, 2.0, 1.0)
        ((25, 13), (13, 13))
    """
    theta, sigma, gamma, n_sigma = _checked_extent_args(theta, sigma, gamma, n_sigma)
    if sigma.numel() == 0:
        raise ValueError(f"suggest_kernel_size needs at least one filter, got shape {tuple(sigma.shape)}")
    return odd_sizes_holding(half_extents2d(theta, sigma, gamma, n_sigma))


def canonicalize(theta: float | torch.Tensor, psi: float | torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
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

    Examples:
        >>> t, p = canonicalize(torch.tensor(-math.pi / 4), torch.tensor(0.5))
        >>> round(t.item(), 4), round(p.item(), 4)
        (2.3562, -0.5)
    """
    theta, psi = _checks.checked_params({"theta": theta, "psi": psi}, {}).values()
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
