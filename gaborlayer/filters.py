"""scikit-image's and OpenCV's Gabor filters in PyTorch: same names, arguments and results,
differentiable in every float argument, batched over images and over filter banks, on any device,
and in 3-D.

* :func:`gabor_kernel` and :func:`gabor` are ``skimage.filters.gabor_kernel`` and
  ``skimage.filters.gabor`` (the same size rule, normalisation, orientation, sign and border modes);
  :func:`gabor_kernel3d` and :func:`gabor3d` extend them to volumes.
* :func:`get_gabor_kernel` is ``cv2.getGaborKernel`` (OpenCV's point-reflected storage included).
* :func:`from_skimage`, :func:`to_skimage`, :func:`from_opencv` and :func:`to_opencv` translate
  between their parameters and those of :class:`~gaborlayer.GaborConv2d`.

Every kernel here is a Gabor bank of :mod:`gaborlayer` times a constant (the analytic autograd
Function of :func:`~gaborlayer.gabor_kernel2d` / :func:`~gaborlayer.gabor_kernel3d` builds it); the
conventions are tabulated in ``docs/filters.md``. The kernel *size* follows scikit-image's rule and
so depends on the parameters' values; gradients are those of the values at that fixed size.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from . import _checks
from ._checks import Lower
from ._family import FAMILIES, GABOR_2D, GABOR_3D, GaborFamily
from .functional import _bank

#: ``mode`` values, with scipy.ndimage's meanings (the image extended past its edges as
#: ``constant``: cval, ``nearest``: a a a | a b c d, ``reflect``: b a | a b c d (half-sample
#: symmetric), ``mirror``: c b | a b c d (whole-sample symmetric), ``wrap``: c d | a b c d).
MODES = ("constant", "nearest", "reflect", "mirror", "wrap")
#: ``method`` values: ``"direct"`` (``F.conv2d`` / ``F.conv3d``), ``"fft"`` (``torch.fft``), or
#: ``"auto"``: FFT from :data:`FFT_MIN_TAPS` kernel taps.
METHODS = ("auto", "direct", "fft")
#: Kernel taps (kh kw, or kd kh kw) from which ``method="auto"`` convolves by FFT, for one filter
#: (a real and an imaginary kernel) and for a bank of several: where the two took about equal time
#: on CPU in ``python benchmarks/bench_filters.py --crossover``. An FFT costs about the same per
#: output plane whatever the kernel; a direct convolution's cost grows with the taps, and with many
#: output channels it runs several times faster per tap than with two.
FFT_MIN_TAPS = {"one filter": 50, "bank": 700}

_POSITIVE = Lower(0.0)
_SKIMAGE_BOUNDS = {"frequency": _POSITIVE, "bandwidth": _POSITIVE, "sigma_x": _POSITIVE, "sigma_y": _POSITIVE}
_N_STDS = Lower(0.0, inclusive=True)


# -- parameters -----------------------------------------------------------------------------------
def _dtype_of(values: dict, default: torch.dtype) -> torch.dtype:
    """The promoted dtype of the tensors among ``values``, or ``default`` when all are numbers."""
    dtypes = [v.dtype for v in values.values() if isinstance(v, torch.Tensor) and v.dtype.is_floating_point]
    dtype = dtypes[0] if dtypes else default
    for d in dtypes[1:]:
        dtype = torch.promote_types(dtype, d)
    return dtype


def _params(values: dict, bounds: dict, dtype: torch.dtype, device) -> dict[str, torch.Tensor]:
    """``values`` (numbers or tensors) as tensors of ``dtype`` on ``device``, checked and broadcast."""
    tensors = dict(zip(values, _checks.as_param_tensors(values, dtype=dtype, device=device, bounds=bounds)))
    _checks.check_values(tensors, bounds)
    return dict(zip(tensors, _checks.broadcast(tensors)))


def _bandwidth_sigma(frequency, bandwidth):
    """scikit-image's envelope width for ``bandwidth`` octaves at ``frequency``: ``c_b / frequency``."""
    two_b = 2.0 ** bandwidth
    return 1.0 / math.pi * math.sqrt(math.log(2) / 2.0) * (two_b + 1) / (two_b - 1) / frequency


def _skimage_params(values: dict, dtype, device) -> dict[str, torch.Tensor]:
    """scikit-image's arguments (``sigma_x``/``sigma_y`` possibly ``None``) as checked, broadcast
    tensors, with ``sigma_x`` and ``sigma_y`` filled in from ``bandwidth`` and ``bandwidth`` dropped."""
    given = {k: v for k, v in values.items() if v is not None}
    p = _params(given, _SKIMAGE_BOUNDS, dtype, device)
    bandwidth = p.pop("bandwidth")
    for name in ("sigma_x", "sigma_y"):
        if name not in p:
            p[name] = _bandwidth_sigma(p["frequency"], bandwidth)
    return dict(zip(p, torch.broadcast_tensors(*p.values())))


def _build_dtype(values: dict, device) -> torch.dtype:
    """What kernels are built in: float64 (float32 on ``mps``, which has no float64), rounded once to
    their dtype at the end, as scikit-image and OpenCV build theirs. Parameters given as numbers
    stay exact: the phase ``2 pi f x'`` reaches tens of radians, where rounding ``theta`` to float32
    alone moves it by 1e-6."""
    devices = [torch.device(device)] if device is not None else [
        v.device for v in values.values() if isinstance(v, torch.Tensor)]
    return torch.float32 if any(d.type == "mps" for d in devices) else torch.float64


def _n_stds(n_stds) -> float:
    value = _checks.finite_real(n_stds, "n_stds")
    if not _N_STDS.holds(value):
        raise ValueError(f"n_stds must be {_N_STDS}, got {n_stds!r}")
    return value


def _wide(t: torch.Tensor) -> torch.Tensor:
    """Detached, in float64: what kernel sizes are computed from."""
    return t.detach().to(torch.float64)


def _half_sizes(n_stds: float, sigma_x, along, sigma_y, across, rounding=torch.ceil, floor: float = 1.0):
    """One axis's half-size per filter (float64, shape ``S``), scikit-image's rule
    ``ceil(max(|n sigma_x along|, |n sigma_y across|, 1))`` (``along``, ``across``: the axis components
    of the wave direction and of the envelope's other axis, float64)."""
    extent = torch.maximum((n_stds * _wide(sigma_x) * along).abs(), (n_stds * _wide(sigma_y) * across).abs())
    return rounding(extent.clamp_min(floor))


def _truncated(bank: torch.Tensor, halves: list[torch.Tensor]) -> torch.Tensor:
    """``bank (..., *S, *size)`` on the odd size that holds every filter's box (the largest half-size
    per axis), each filter zero outside its own box: scikit-image's kernel, centred and padded."""
    largest = [int(h.max()) if h.numel() else 0 for h in halves]
    dims = len(halves)
    inside = None
    for axis, (h, big) in enumerate(zip(halves, largest)):
        coord = torch.arange(-big, big + 1, dtype=h.dtype, device=h.device).view(
            (-1,) + (1,) * (dims - 1 - axis))
        within = coord.abs() <= h.reshape(*h.shape, *(1,) * dims)
        inside = within if inside is None else inside & within
    return bank * inside.to(bank.dtype)


def _odd_size(halves: list[torch.Tensor]) -> tuple[int, ...]:
    return tuple(2 * (int(h.max()) if h.numel() else 0) + 1 for h in halves)


def _complex_dtype(dtype, values: dict) -> torch.dtype:
    """The complex dtype of a kernel: ``dtype`` if given, else that of the parameter tensors (complex128
    for numbers only, scikit-image's default)."""
    if dtype is None:
        return _dtype_of(values, torch.float64).to_complex()
    if not isinstance(dtype, torch.dtype) or not dtype.is_complex:
        raise TypeError(f"dtype must be a complex torch.dtype (torch.complex64 or torch.complex128), got {dtype!r}")
    return dtype


# -- kernels --------------------------------------------------------------------------------------
def _pair2d(p: dict[str, torch.Tensor], n_stds: float) -> torch.Tensor:
    """scikit-image's complex kernel as a real pair ``(2, *S, kh, kw)``: real part, imaginary part."""
    cos, sin = torch.cos(_wide(p["theta"])), torch.sin(_wide(p["theta"]))
    halves = [_half_sizes(n_stds, p["sigma_y"], cos, p["sigma_x"], sin),
              _half_sizes(n_stds, p["sigma_x"], cos, p["sigma_y"], sin)]
    amplitude = 1 / (2 * math.pi * p["sigma_x"] * p["sigma_y"])
    bank = amplitude[..., None, None] * _bank(GABOR_2D, _layer_params(p, GABOR_2D), _odd_size(halves))
    return _truncated(bank, halves)


def _direction3d(theta, phi) -> tuple[torch.Tensor, ...]:
    """The wave direction's components ``(z, y, x)``: ``u = (cos phi cos theta, cos phi sin theta, sin phi)``
    in ``(x, y, z)``, as :func:`gaborlayer.gabor_kernel3d`."""
    return torch.sin(phi), torch.cos(phi) * torch.sin(theta), torch.cos(phi) * torch.cos(theta)


def _pair3d(p: dict[str, torch.Tensor], n_stds: float) -> torch.Tensor:
    """The 3-D kernel as a real pair ``(2, *S, kd, kh, kw)``."""
    halves = []
    for u in _direction3d(_wide(p["theta"]), _wide(p["phi"])):
        across = torch.sqrt((1 - u * u).clamp_min(0))  # the largest component of a unit vector normal to u
        halves.append(_half_sizes(n_stds, p["sigma_x"], u, p["sigma_y"], across))
    amplitude = 1 / ((2 * math.pi) ** 1.5 * p["sigma_x"] * p["sigma_y"] ** 2)
    bank = amplitude[..., None, None, None] * _bank(GABOR_3D, _layer_params(p, GABOR_3D), _odd_size(halves))
    return _truncated(bank, halves)


def _layer_params(p: dict[str, torch.Tensor], family: GaborFamily) -> dict[str, torch.Tensor]:
    """The layer's parameters, stacked ``(2, *S)``, of the real and the imaginary part of
    ``exp(i (2 pi f x_par + offset))`` times the envelope: phases ``offset`` and ``offset - pi/2``."""
    names = {"sigma": p["sigma_x"], "lambd": 1 / p["frequency"], "gamma": p["sigma_x"] / p["sigma_y"]}
    angles = {name: p[name] for name in family.names if name in ("theta", "phi")}
    one = {**angles, **names}
    pair = {k: torch.stack([v, v]) for k, v in one.items()}
    pair["psi"] = torch.stack([p["offset"], p["offset"] - math.pi / 2])
    return pair


def _kernel(pair_fn, values: dict, n_stds, dtype, device) -> torch.Tensor:
    complex_dtype = _complex_dtype(dtype, values)
    p = _skimage_params(values, _build_dtype(values, device), device)
    pair = pair_fn(p, _n_stds(n_stds)).to(complex_dtype.to_real())
    return torch.complex(pair[0], pair[1])


def gabor_kernel(frequency: float | torch.Tensor, theta: float | torch.Tensor = 0,
                 bandwidth: float | torch.Tensor = 1, sigma_x: float | torch.Tensor | None = None,
                 sigma_y: float | torch.Tensor | None = None, n_stds: float = 3,
                 offset: float | torch.Tensor = 0, *, dtype: torch.dtype | None = None,
                 device: torch.device | str | None = None) -> torch.Tensor:
    r"""scikit-image's complex 2-D Gabor kernel (``skimage.filters.gabor_kernel``), differentiable.

    .. math::
        g(x, y) = \frac{1}{2\pi\sigma_x\sigma_y}
                  \exp\!\Big(-\frac{x'^2}{2\sigma_x^2} - \frac{y'^2}{2\sigma_y^2}\Big)
                  e^{i(2\pi f x' + \text{offset})},\quad
        x' = x\cos\theta + y\sin\theta,\ y' = -x\sin\theta + y\cos\theta,

    on rows ``y = -y0 .. y0`` (y grows downward) and columns ``x = -x0 .. x0``, with
    ``x0 = ceil(max(|n sigma_x cos theta|, |n sigma_y sin theta|, 1))``,
    ``y0 = ceil(max(|n sigma_y cos theta|, |n sigma_x sin theta|, 1))`` and ``n = n_stds``.

    Args:
        frequency: spatial frequency in cycles per pixel, ``> 0``.
        theta: orientation in radians (0: the wave runs along x).
        bandwidth: in octaves, ``> 0``; sets ``sigma_x`` and ``sigma_y`` that are not given, to
            ``c_b / frequency`` with ``c_b = sqrt(ln 2 / 2) (2^b + 1) / (pi (2^b - 1))``.
        sigma_x, sigma_y: envelope widths along and across the wave, in pixels, ``> 0``.
        n_stds: the kernel reaches ``n_stds`` standard deviations, a number ``>= 0``.
        offset: phase offset in radians.
        dtype: ``torch.complex64`` or ``torch.complex128``; default: the complex dtype of the
            parameter tensors, complex128 when all are numbers (scikit-image's default).
        device: default: the parameter tensors'.

    The parameters may be tensors (``n_stds`` excepted), broadcast to one shape ``S``: then the
    result is a bank ``(*S, kh, kw)``, every kernel on the largest size of the bank (each is
    scikit-image's kernel padded with zeros, centred). The size depends on the values; gradients
    are those at that fixed size (``n_stds`` has none).

    Returns:
        Complex tensor ``(*S, 2 y0 + 1, 2 x0 + 1)``.

    Examples:
        >>> import torch
        >>> g = gabor_kernel(0.2, theta=torch.tensor([0.0, 0.5]))
        >>> g.shape, g.dtype
        (torch.Size([2, 19, 19]), torch.complex64)
        >>> gabor_kernel(0.2, sigma_x=2, sigma_y=1).shape  # x0 = ceil(3 * 2), y0 = ceil(3 * 1)
        torch.Size([7, 13])
    """
    values = dict(frequency=frequency, theta=theta, bandwidth=bandwidth, sigma_x=sigma_x, sigma_y=sigma_y,
                  offset=offset)
    return _kernel(_pair2d, values, n_stds, dtype, device)


def gabor_kernel3d(frequency: float | torch.Tensor, theta: float | torch.Tensor = 0, phi: float | torch.Tensor = 0,
                   bandwidth: float | torch.Tensor = 1, sigma_x: float | torch.Tensor | None = None,
                   sigma_y: float | torch.Tensor | None = None, n_stds: float = 3,
                   offset: float | torch.Tensor = 0, *, dtype: torch.dtype | None = None,
                   device: torch.device | str | None = None) -> torch.Tensor:
    r"""The complex 3-D Gabor kernel, :func:`gabor_kernel` extended to volumes, differentiable.

    .. math::
        g(\mathbf r) = \frac{1}{(2\pi)^{3/2}\sigma_x\sigma_y^2}
                  \exp\!\Big(-\frac{x_\parallel^2}{2\sigma_x^2} - \frac{|\mathbf r_\perp|^2}{2\sigma_y^2}\Big)
                  e^{i(2\pi f x_\parallel + \text{offset})},\quad
        x_\parallel = \mathbf u\cdot\mathbf r,\ |\mathbf r_\perp|^2 = |\mathbf r|^2 - x_\parallel^2,

    with the wave direction ``u = (cos phi cos theta, cos phi sin theta, sin phi)`` in ``(x, y, z)``,
    as :func:`gaborlayer.gabor_kernel3d`: ``theta`` the azimuth in the x-y plane (scikit-image's
    ``theta`` when ``phi = 0``), ``phi`` the elevation towards z. ``sigma_x`` is the envelope's
    width along ``u``, ``sigma_y`` across it (the same in every direction normal to ``u``: one
    direction and two widths fix the filter). The normalisation is the 3-D Gaussian's. Index
    ``(d, i, j)`` samples ``z = d - z0``, ``y = i - y0``, ``x = j - x0``, where, per axis with
    ``u_a`` the axis component of ``u``, the half-size is scikit-image's rule
    ``ceil(max(|n sigma_x u_a|, n sigma_y sqrt(1 - u_a^2), 1))`` (in 2-D, ``sqrt(1 - u_a^2)`` is
    ``|sin theta|`` for x and ``|cos theta|`` for y).

    Args:
        frequency, theta, bandwidth, sigma_x, sigma_y, n_stds, offset, dtype, device: as in
            :func:`gabor_kernel`.
        phi: elevation in radians.

    Returns:
        Complex tensor ``(*S, 2 z0 + 1, 2 y0 + 1, 2 x0 + 1)``; a bank as in :func:`gabor_kernel`.

    Examples:
        >>> g = gabor_kernel3d(0.25, theta=0.3, phi=0.2)
        >>> g.shape, g.dtype
        (torch.Size([15, 15, 15]), torch.complex128)
    """
    values = dict(frequency=frequency, theta=theta, phi=phi, bandwidth=bandwidth, sigma_x=sigma_x, sigma_y=sigma_y,
                  offset=offset)
    return _kernel(_pair3d, values, n_stds, dtype, device)


# -- filtering ------------------------------------------------------------------------------------
def _source_index(n: int, before: int, after: int, mode: str, device) -> torch.Tensor:
    """For each position of an axis of length ``n`` extended by ``before`` and ``after``, the index of
    the sample it repeats, as scipy.ndimage extends it (any extension, even longer than ``n``)."""
    i = torch.arange(-before, n + after, device=device)
    if mode == "nearest":
        return i.clamp(0, n - 1)
    if mode == "wrap":
        return i.remainder(n)
    if mode == "mirror" and n == 1:
        return torch.zeros_like(i)
    period = 2 * n if mode == "reflect" else 2 * n - 2
    i = i.remainder(period)
    return torch.where(i < n, i, period - i - (1 if mode == "reflect" else 0))


def _extend(x: torch.Tensor, halves: tuple[int, ...], mode: str, cval) -> torch.Tensor:
    """``x`` (B, 1, *spatial) extended by ``halves`` on both sides of each spatial axis, as
    scipy.ndimage does for ``mode``."""
    dims = len(halves)
    if mode == "constant":
        pads = [h for h in reversed(halves) for _ in range(2)]
        border = F.pad(torch.zeros(x.shape[-dims:], dtype=x.dtype, device=x.device), pads, value=1.0)
        return F.pad(x, pads) + cval * border  # cval differentiable; the image's values exact
    for axis, h in enumerate(halves):
        dim = x.dim() - dims + axis
        x = x.index_select(dim, _source_index(x.shape[dim], h, h, mode, x.device))
    return x


def _fast_length(n: int) -> int:
    """The smallest 2-3-5-smooth integer >= n (fast for FFTs)."""
    while True:
        m = n
        for p in (2, 3, 5):
            while m % p == 0:
                m //= p
        if m == 1:
            return n
        n += 1


def _convolve(x: torch.Tensor, kernels: torch.Tensor, method: str) -> torch.Tensor:
    """True convolution (kernel flipped, as ndi.convolve), 'valid': ``x (B, 1, *ext)`` with
    ``kernels (K, *k)`` -> ``(B, K, *(ext - k + 1))``."""
    dims = kernels.dim() - 1
    ks = kernels.shape[1:]
    threshold = FFT_MIN_TAPS["one filter" if kernels.shape[0] <= 2 else "bank"]
    if method == "direct" or (method == "auto" and math.prod(ks) < threshold):
        return FAMILIES[dims].conv(x, kernels.flip(tuple(range(1, dims + 1))).unsqueeze(1))
    axes = tuple(range(-dims, 0))
    ext = x.shape[-dims:]
    lengths = [_fast_length(n) for n in ext]
    spectrum = torch.fft.rfftn(x, s=lengths, dim=axes) * torch.fft.rfftn(kernels, s=lengths, dim=axes)
    full = torch.fft.irfftn(spectrum, s=lengths, dim=axes)  # circular; wraps only into the first k - 1
    return full[(..., *(slice(k - 1, n) for k, n in zip(ks, ext)))]


def _filter(pair_fn, image, values: dict, n_stds, mode: str, cval, method: str, dims: int, name: str):
    image = _checks.from_numpy(image)
    if not isinstance(image, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(image).__name__}")
    if not image.dtype.is_floating_point:
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {image.dtype} (convert it with "
                        f"{name}.float() or .double())")
    if image.dim() < dims or 0 in image.shape[-dims:]:
        raise ValueError(f"{name} must have shape {'(..., ' + ', '.join('DHW'[-dims:]) + ')'} with non-empty "
                         f"spatial sizes, got {tuple(image.shape)}")
    _checks.one_of(mode, "mode", MODES)
    _checks.one_of(method, "method", METHODS)
    if isinstance(cval, torch.Tensor):
        if cval.dim() != 0 or not cval.dtype.is_floating_point:
            raise ValueError(f"cval must be a number or a 0-d floating-point tensor, got {cval.dtype} tensor of "
                             f"shape {tuple(cval.shape)}")
        _checks.finite(cval, "cval")
    else:
        cval = _checks.finite_real(cval, "cval")
    compute = torch.promote_types(_dtype_of(values, image.dtype), image.dtype)
    compute = torch.promote_types(compute, torch.float32)  # half precision: filter in float32, round once
    p = _skimage_params(values, _build_dtype(values, image.device), image.device)
    pair = pair_fn(p, _n_stds(n_stds)).to(compute)  # (2, *S, *k)
    bank_shape = pair.shape[1:-dims]
    kernels = pair.reshape(-1, *pair.shape[-dims:])
    spatial = image.shape[-dims:]
    x = image.reshape(-1, 1, *spatial).to(compute)
    x = _extend(x, tuple(k // 2 for k in kernels.shape[1:]), mode, cval)
    out = _convolve(x, kernels, method).to(image.dtype)  # (B, 2 * prod(S), *spatial)
    out = out.reshape(*image.shape[:-dims], 2, *bank_shape, *spatial)
    return out.select(-dims - len(bank_shape) - 1, 0), out.select(-dims - len(bank_shape) - 1, 1)


def gabor(image: torch.Tensor, frequency: float | torch.Tensor, theta: float | torch.Tensor = 0,
          bandwidth: float | torch.Tensor = 1, sigma_x: float | torch.Tensor | None = None,
          sigma_y: float | torch.Tensor | None = None, n_stds: float = 3, offset: float | torch.Tensor = 0,
          mode: str = "reflect", cval: float | torch.Tensor = 0, *,
          method: str = "auto") -> tuple[torch.Tensor, torch.Tensor]:
    """scikit-image's Gabor filter (``skimage.filters.gabor``): the image convolved with the real and
    the imaginary part of :func:`gabor_kernel`, batched, differentiable.

    As scikit-image, a true convolution (``ndi.convolve``, the kernel flipped, where ``F.conv2d``
    correlates) of the image extended past its edges by ``mode``.

    Args:
        image: ``(..., H, W)``, floating point, a tensor or a numpy array (any batch shape; half precision is
            filtered in float32).
        frequency, theta, bandwidth, sigma_x, sigma_y, n_stds, offset: as in :func:`gabor_kernel`;
            tensors broadcast to one shape ``S`` give a filter bank.
        mode: how the image is extended past its edges, scipy.ndimage's modes (:data:`MODES`):
            ``"constant"`` (with ``cval``), ``"nearest"``, ``"reflect"`` (half-sample symmetric,
            ``d c b a | a b c d``), ``"mirror"`` (``d c b | a b c d``, torch's and kornia's
            ``"reflect"``) or ``"wrap"``; any kernel size, also larger than the image.
        cval: the value past the edges for ``mode="constant"``, a number or a 0-d tensor
            (differentiable).
        method: ``"direct"`` (``F.conv2d``), ``"fft"`` (``torch.fft``) or ``"auto"``: FFT from
            :data:`FFT_MIN_TAPS` kernel taps (measured on CPU). Both give the same result to rounding.

    Returns:
        ``(real, imag)``, each ``(..., *S, H, W)`` in the image's dtype: every image filtered by
        every filter of the bank (``S = ()`` for numbers: the image's shape, as scikit-image).

    Examples:
        >>> import math, torch
        >>> images = torch.rand(4, 64, 64)
        >>> theta = torch.arange(8) * math.pi / 8
        >>> real, imag = gabor(images, 0.2, theta)
        >>> real.shape
        torch.Size([4, 8, 64, 64])
        >>> frequency = torch.tensor(0.2, requires_grad=True)
        >>> real, imag = gabor(images[0], frequency, mode="wrap")
        >>> (real ** 2 + imag ** 2).mean().backward(); frequency.grad.shape
        torch.Size([])
    """
    values = dict(frequency=frequency, theta=theta, bandwidth=bandwidth, sigma_x=sigma_x, sigma_y=sigma_y,
                  offset=offset)
    return _filter(_pair2d, image, values, n_stds, mode, cval, method, dims=2, name="image")


def gabor3d(volume: torch.Tensor, frequency: float | torch.Tensor, theta: float | torch.Tensor = 0,
            phi: float | torch.Tensor = 0, bandwidth: float | torch.Tensor = 1,
            sigma_x: float | torch.Tensor | None = None, sigma_y: float | torch.Tensor | None = None,
            n_stds: float = 3, offset: float | torch.Tensor = 0, mode: str = "reflect",
            cval: float | torch.Tensor = 0, *, method: str = "auto") -> tuple[torch.Tensor, torch.Tensor]:
    """The 3-D Gabor filter: the volume convolved (``ndi.convolve``'s way) with the real and the
    imaginary part of :func:`gabor_kernel3d`, batched, differentiable.

    Args:
        volume: ``(..., D, H, W)``, floating point, a tensor or a numpy array.
        frequency, theta, phi, bandwidth, sigma_x, sigma_y, n_stds, offset: as in
            :func:`gabor_kernel3d`; tensors broadcast to one shape ``S`` give a filter bank.
        mode: how the image is extended past its edges, scipy.ndimage's modes (:data:`MODES`):
            ``"constant"`` (with ``cval``), ``"nearest"``, ``"reflect"`` (half-sample symmetric,
            ``d c b a | a b c d``), ``"mirror"`` (``d c b | a b c d``, torch's and kornia's
            ``"reflect"``) or ``"wrap"``; any kernel size, also larger than the image.
        cval: the value past the edges for ``mode="constant"``, a number or a 0-d tensor
            (differentiable).
        method: ``"direct"`` (``F.conv3d``), ``"fft"`` (``torch.fft``) or ``"auto"``: FFT from
            :data:`FFT_MIN_TAPS` kernel taps (measured on CPU). Both give the same result to rounding.

    Returns:
        ``(real, imag)``, each ``(..., *S, D, H, W)`` in the volume's dtype.

    Examples:
        >>> volume = torch.rand(2, 24, 24, 24)
        >>> real, imag = gabor3d(volume, 0.25, theta=torch.tensor([0.0, 1.0]), phi=0.5)
        >>> real.shape
        torch.Size([2, 2, 24, 24, 24])
    """
    values = dict(frequency=frequency, theta=theta, phi=phi, bandwidth=bandwidth, sigma_x=sigma_x, sigma_y=sigma_y,
                  offset=offset)
    return _filter(_pair3d, volume, values, n_stds, mode, cval, method, dims=3, name="volume")




# -- OpenCV ---------------------------------------------------------------------------------------
def get_gabor_kernel(ksize: int | tuple[int, int], sigma: float | torch.Tensor, theta: float | torch.Tensor,
                     lambd: float | torch.Tensor, gamma: float | torch.Tensor, psi: float | torch.Tensor = math.pi / 2,
                     *, dtype: torch.dtype | None = None, device: torch.device | str | None = None) -> torch.Tensor:
    r"""OpenCV's real Gabor kernel (``cv2.getGaborKernel``), differentiable.

    .. math::
        v(x, y) = \exp\!\Big(-\frac{x'^2 + \gamma^2 y'^2}{2\sigma^2}\Big)\cos(2\pi x'/\lambda + \psi)

    for integers ``x = -xmax .. xmax``, ``y = -ymax .. ymax``, stored as OpenCV stores it, at
    ``[ymax - y, xmax - x]``: point-reflected, :func:`gaborlayer.gabor_kernel2d` rotated by 180 degrees.

    Args:
        ksize: ``(width, height)`` (OpenCV's order) or one int, each ``>= 0``; ``xmax = width // 2``,
            so an even size gives the next odd one (``(6, 6)``: 7x7), and 0 derives the half-size
            from the envelope, ``round(max(|3 sigma cos theta|, |3 sigma / gamma sin theta|))`` for
            ``xmax`` (``sin``/``cos`` swapped for ``ymax``; the largest over a bank).
        sigma: envelope width along the wave, ``> 0``.
        theta: orientation in radians.
        lambd: wavelength in pixels, ``> 0``.
        gamma: aspect ratio, ``> 0`` (the width across the wave is ``sigma / gamma``).
        psi: phase offset in radians (OpenCV's default ``pi/2``).
        dtype: a floating dtype; default: the parameter tensors', float64 when all are numbers
            (OpenCV's default ``ktype=CV_64F``).
        device: default: the parameter tensors'.

    The parameters may be tensors broadcast to one shape ``S``: a bank ``(*S, kh, kw)``.

    Returns:
        ``(*S, 2 ymax + 1, 2 xmax + 1)``.

    Examples:
        >>> get_gabor_kernel((6, 4), sigma=2.0, theta=0.3, lambd=5.0, gamma=0.5).shape  # cv2's (5, 7)
        torch.Size([5, 7])
    """
    width, height = _checks.ints(ksize, "ksize", 2, minimum=0)
    values = dict(theta=theta, sigma=sigma, lambd=lambd, gamma=gamma, psi=psi)
    _checks.floating_dtype(dtype)
    dtype = dtype or _dtype_of(values, torch.float64)
    p = _params(values, _checks.BANK_BOUNDS, _build_dtype(values, device), device)
    cos, sin = torch.cos(_wide(p["theta"])), torch.sin(_wide(p["theta"]))
    sigma_y = p["sigma"] / p["gamma"]
    given = [torch.full_like(cos, k // 2) for k in (height, width)]
    halves = [given[0] if height else _half_sizes(3, p["sigma"], sin, sigma_y, cos, torch.round, floor=0),
              given[1] if width else _half_sizes(3, p["sigma"], cos, sigma_y, sin, torch.round, floor=0)]
    return _truncated(_bank(GABOR_2D, p, _odd_size(halves)), halves).flip(-2, -1).to(dtype)


# -- conversions ----------------------------------------------------------------------------------
def _converted(values: dict, bounds: dict) -> dict[str, torch.Tensor]:
    """Checked, broadcast tensors of the tensors' dtype (float64 for numbers) on their device."""
    return _params(values, bounds, _dtype_of(values, torch.float64), None)


def from_skimage(frequency: float | torch.Tensor, theta: float | torch.Tensor = 0, bandwidth: float | torch.Tensor = 1,
                 sigma_x: float | torch.Tensor | None = None, sigma_y: float | torch.Tensor | None = None,
                 offset: float | torch.Tensor = 0) -> dict[str, torch.Tensor]:
    """The :class:`~gaborlayer.GaborConv2d` parameters whose response is that of scikit-image's
    filter: ``theta``, ``sigma``, ``lambd``, ``gamma``, ``psi`` and ``amplitude``.

    The layer correlates (as every ``torch.nn`` convolution) with the kernel
    ``amplitude * gabor_kernel2d(theta, sigma, lambd, gamma, psi)``; that kernel is
    ``gabor_kernel(...).real`` flipped on both axes, so the layer's response is the real part of
    :func:`gabor` (``skimage.filters.gabor``), for the same extension of the borders. Here
    ``sigma = sigma_x``, ``lambd = 1 / frequency``, ``gamma = sigma_x / sigma_y``, ``psi = -offset``
    and ``amplitude = 1 / (2 pi sigma_x sigma_y)``. Its imaginary part is the response with phase
    ``psi + pi/2``, i.e. minus the odd channel of the layer's ``output="quadrature"``.

    Args:
        frequency, theta, bandwidth, sigma_x, sigma_y, offset: as in :func:`gabor_kernel`.

    Returns:
        A dict of tensors, broadcast to one shape (float64 for numbers, the tensors' dtype otherwise),
        differentiable in the arguments; to seed a layer, give them the layer's parameter shape
        ``(out_channels, in_channels // groups)``.

    A layer's kernels share one size, whereas scikit-image truncates each filter at its own
    ``n_stds`` box (:func:`gabor_kernel`'s shape): filters whose boxes differ (e.g. other
    orientations of an anisotropic envelope) respond alike only up to the envelope beyond the box.

    Examples:
        >>> import math, torch
        >>> from gaborlayer import GaborConv2d
        >>> theta = torch.tensor([0.0, math.pi / 2])  # a bank tuned with skimage.filters.gabor
        >>> params = from_skimage(frequency=0.25, theta=theta)
        >>> sorted(params)
        ['amplitude', 'gamma', 'lambd', 'psi', 'sigma', 'theta']
        >>> gabor_kernel(0.25, theta).shape  # skimage's size for both filters
        torch.Size([2, 15, 15])
        >>> layer = GaborConv2d(1, 2, 15, padding="same", padding_mode="reflect", bias=False,
        ...                     **{k: v[:, None] for k, v in params.items()})
        >>> image = torch.rand(1, 1, 32, 32)
        >>> real, _ = gabor(image[0, 0], 0.25, theta, mode="mirror")
        >>> bool(torch.allclose(layer(image)[0], real, atol=1e-5))
        True
    """
    values = dict(frequency=frequency, theta=theta, bandwidth=bandwidth, sigma_x=sigma_x, sigma_y=sigma_y,
                  offset=offset)
    dtype = _dtype_of(values, torch.float64)
    p = _skimage_params(values, dtype, None)
    return {"theta": p["theta"], "sigma": p["sigma_x"], "lambd": 1 / p["frequency"],
            "gamma": p["sigma_x"] / p["sigma_y"], "psi": -p["offset"],
            "amplitude": 1 / (2 * math.pi * p["sigma_x"] * p["sigma_y"])}


def to_skimage(theta: float | torch.Tensor, sigma: float | torch.Tensor, lambd: float | torch.Tensor,
               gamma: float | torch.Tensor, psi: float | torch.Tensor) -> dict[str, torch.Tensor]:
    """scikit-image's arguments for a layer's filter: :func:`from_skimage` inverted.

    Returns ``frequency``, ``theta``, ``sigma_x``, ``sigma_y`` and ``offset`` (keyword arguments of
    :func:`gabor` and ``skimage.filters.gabor``), with which the real part of the skimage response
    is ``1 / (2 pi sigma_x sigma_y)`` times the layer's (unit-peak, ``amplitude=1``) response.

    Examples:
        >>> to_skimage(theta=0.5, sigma=2.0, lambd=4.0, gamma=0.5, psi=0.0)["sigma_y"]
        tensor(4., dtype=torch.float64)
    """
    values = dict(theta=theta, sigma=sigma, lambd=lambd, gamma=gamma, psi=psi)
    p = _converted(values, _checks.BANK_BOUNDS)
    return {"frequency": 1 / p["lambd"], "theta": p["theta"], "sigma_x": p["sigma"],
            "sigma_y": p["sigma"] / p["gamma"], "offset": -p["psi"]}


def from_opencv(sigma: float | torch.Tensor, theta: float | torch.Tensor, lambd: float | torch.Tensor,
                gamma: float | torch.Tensor, psi: float | torch.Tensor = math.pi / 2) -> dict[str, torch.Tensor]:
    """The :class:`~gaborlayer.GaborConv2d` parameters whose kernel is ``cv2.getGaborKernel``'s array
    (so the layer's response is ``cv2.filter2D``'s: both correlate): ``psi`` negated, the rest kept.

    OpenCV stores the filter point-reflected; reflecting ``(x', y') -> (-x', -y')`` turns
    ``cos(2 pi x'/lambd + psi)`` into ``cos(2 pi x'/lambd - psi)``. ``amplitude`` is 1.

    Examples:
        >>> params = from_opencv(sigma=2.0, theta=0.3, lambd=5.0, gamma=0.5)
        >>> float(params["psi"])  # OpenCV's default psi = pi/2
        -1.5707963267948966
    """
    values = dict(theta=theta, sigma=sigma, lambd=lambd, gamma=gamma, psi=psi)
    p = _converted(values, _checks.BANK_BOUNDS)
    return {**p, "psi": -p["psi"], "amplitude": torch.ones_like(p["psi"])}


def to_opencv(theta: float | torch.Tensor, sigma: float | torch.Tensor, lambd: float | torch.Tensor,
              gamma: float | torch.Tensor, psi: float | torch.Tensor) -> dict[str, torch.Tensor]:
    """``cv2.getGaborKernel``'s arguments (``sigma``, ``theta``, ``lambd``, ``gamma``, ``psi``) whose
    kernel is the layer's: :func:`from_opencv` inverted (``psi`` negated).

    Examples:
        >>> float(to_opencv(theta=0.3, sigma=2.0, lambd=5.0, gamma=0.5, psi=0.25)["psi"])
        -0.25
    """
    values = dict(theta=theta, sigma=sigma, lambd=lambd, gamma=gamma, psi=psi)
    p = _converted(values, _checks.BANK_BOUNDS)
    return {"sigma": p["sigma"], "theta": p["theta"], "lambd": p["lambd"], "gamma": p["gamma"], "psi": -p["psi"]}
