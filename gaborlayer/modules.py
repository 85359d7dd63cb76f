"""``GaborConv1d``, ``GaborConv2d``, ``GaborConv3d``: drop-ins for ``nn.Conv1d`` / ``nn.Conv2d`` /
``nn.Conv3d`` whose kernels are Gabor filters.

As ``nn.Conv1d/2d/3d`` fill in a shared ``_ConvNd``, the three layers fill in
:class:`_GaborConvNd`, which holds the configuration and ``forward``; everything per-dimension is
the layer's ``_family`` (``gaborlayer._family``). The base composes small pieces, each in its own
module: parameter storage (``_storage``: reparameterisation, ``learn=``), the read-only
``.weight`` and the bank ``forward`` uses (``_weight``), the eval-mode cache (``_cache``), the
extent diagnostics (``_extent``) and the memory-layout probe (``_layout``).
Conversion from and to plain convolutions (``from_conv2d``, ``to_conv2d``, ``replace_conv2d``)
lives in ``gaborlayer.convert``, which sits above the layers and is imported when used.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
import torch.nn as nn
import torch.nn.functional as F

from . import _checks, _storage
from ._cache import BankCache, WriteGuard
from ._extent import GaborTruncationWarning, extent_report, warn_extent
from ._family import GABOR_1D, GABOR_2D, GABOR_3D, GaborFamily
from ._layout import requested_memory_format
from ._weight import WeightFromParameters
from .functional import OUTPUTS, _combine, _pad_amounts, _pair_bias, resolve_backend
from .init import classic_bank1d, classic_bank2d, classic_bank3d

if TYPE_CHECKING:
    from collections.abc import Sequence

    from .fit import GaborFit

__all__ = ["GaborConv1d", "GaborConv2d", "GaborConv3d", "GaborTruncationWarning",
           "classic_bank1d", "classic_bank2d", "classic_bank3d"]

classic_bank = classic_bank2d  # the 2-D classic bank's name in gaborlayer 0.1
_PADDING_MODES = ("zeros", "reflect", "replicate", "circular")


def _conv_config(dims: int, in_channels, out_channels, kernel_size, stride, padding, dilation, groups,
                 padding_mode) -> dict:
    """The ``nn.ConvNd`` arguments, checked and normalised as ``nn.ConvNd`` holds them."""
    config = {"in_channels": _checks.positive_int(in_channels, "in_channels"),
              "out_channels": _checks.positive_int(out_channels, "out_channels"),
              "groups": _checks.positive_int(groups, "groups")}
    if in_channels % groups or out_channels % groups:
        raise ValueError(f"in_channels ({in_channels}) and out_channels ({out_channels}) must both be "
                         f"divisible by groups ({groups})")
    for name, value in (("kernel_size", kernel_size), ("stride", stride), ("dilation", dilation)):
        config[name] = _checks.ints(value, name, dims)
    if isinstance(padding, str):
        if padding not in ("same", "valid"):
            raise ValueError(f"padding must be 'same', 'valid' or non-negative ints, got {padding!r}")
        if padding == "same" and config["stride"] != (1,) * dims:
            raise ValueError(f"padding='same' needs stride=1, got stride={stride!r}")
        config["padding"] = padding
    else:
        config["padding"] = _checks.ints(padding, "padding", dims, minimum=0)
    config["padding_mode"] = _checks.one_of(padding_mode, "padding_mode", _PADDING_MODES)
    return config


class _GaborConvNd(WeightFromParameters, nn.Module):
    """What the Gabor layers share: the configuration and ``forward``. A subclass sets ``_family``
    and gives the constructor its named parameters."""

    _family: GaborFamily

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride, padding, dilation, groups: int,
                 bias: bool, padding_mode: str, device, dtype, init: dict, amplitude, learn, zero_mean: bool,
                 backend: str, output: str = "real"):
        super().__init__()
        family = self._family
        for name, value in _conv_config(family.dims, in_channels, out_channels, kernel_size, stride, padding,
                                        dilation, groups, padding_mode).items():
            setattr(self, name, value)
        self._reversed_padding_repeated_twice = _pad_amounts(self.padding, self.kernel_size, self.dilation)
        _checks.floating_dtype(dtype)
        resolve_backend(backend, dims=family.dims)
        self.backend = backend
        self.zero_mean = _checks.boolean(zero_mean, "zero_mean")
        self.output = _checks.one_of(output, "output", OUTPUTS)
        if isinstance(amplitude, bool):
            amplitude = 1.0 if amplitude else None
        self.has_amplitude = amplitude is not None
        self.learn = _checks.names_subset(learn, "learn", self._names())
        shape = (self.out_channels, self.in_channels // self.groups)
        self._init_values = _checks.param_values({**init, "amplitude": amplitude}, _checks.LAYER_BOUNDS, shape)
        dtype = dtype if dtype is not None else torch.get_default_dtype()
        _storage.register(self, self._names(), self.learn, shape, device=device, dtype=dtype)
        bias = _checks.boolean(bias, "bias")
        self.bias = nn.Parameter(torch.empty(self.out_channels, device=device, dtype=dtype)) if bias else None
        self._cache = BankCache()
        self._write_guard = WriteGuard()
        self._memory_format = None  # set by .to(memory_format=...), see _apply
        self.reset_parameters()

    def _names(self) -> tuple[str, ...]:
        """The per-filter parameters: the family's, plus ``amplitude`` when enabled."""
        return self._family.names + ("amplitude",) if self.has_amplitude else self._family.names

    def reset_parameters(self) -> None:
        """Set the filter parameters to their initial values (given ones, else the classic bank)
        and the bias as the ``nn.ConvNd`` does."""
        shape = (self.out_channels, self.in_channels // self.groups)
        values = {**self._family.classic(*shape, self.kernel_size, dtype=torch.float64), **self._init_values}
        _storage.assign(self, {name: values[name] for name in self._names()})
        if self.bias is not None:
            bound = 1 / math.sqrt((self.in_channels // self.groups) * math.prod(self.kernel_size))
            nn.init.uniform_(self.bias, -bound, bound)
        self.check_extent()

    @property
    def sigma(self) -> torch.Tensor:
        """Envelope width in pixels, ``(out_channels, in_channels // groups)``, always > 0."""
        return _storage.constrained(self, "sigma")

    @property
    def lambd(self) -> torch.Tensor:
        """Wavelength in pixels, ``(out_channels, in_channels // groups)``, always > 2."""
        return _storage.constrained(self, "lambd")

    def train(self, mode: bool = True):
        self._cache.clear()  # frees the bank
        self.check_extent()  # model.train() / model.eval() mark epochs: a cheap moment to look
        return super().train(mode)

    def _load_from_state_dict(self, *args, **kwargs):
        super()._load_from_state_dict(*args, **kwargs)
        self.check_extent()

    def _apply(self, fn, recurse=True):
        """``nn.Module._apply`` (``.to()``, ``.cuda()``, ``.half()``, ...), and the memory layout:
        ``.weight``, and with it the output, follows ``model.to(memory_format=...)`` as
        ``nn.ConvNd``'s do (see ``gaborlayer._layout``)."""
        module = super()._apply(fn, recurse)
        self._cache.clear()
        layout = self._family.memory_format
        if layout is not None:  # 1-D: nn.Module.to converts no 3-D tensor either
            like = _storage.stored(self, self._names()[:1])[0]
            self._memory_format = requested_memory_format(fn, like, layout, self._family.dims, self._memory_format)
        return module

    def check_extent(self, warn: bool = True) -> dict:
        """Look for filters whose envelope the kernel cuts off, or whose wavelength nears Nyquist.

        A filter is cut when the ``2.5 sigma`` contour of its envelope (semi-axes ``2.5 sigma``
        along the wave and ``2.5 sigma / gamma`` across it, oriented by the angles) reaches beyond
        the kernel's edge, where the envelope is then above 4.4% of its peak; it is near Nyquist
        when ``lambd < 2.2`` samples (10% above the floor of 2).
        Called on construction, ``reset_parameters``, ``load_state_dict`` and every ``train()`` /
        ``eval()``; the first time each kind of problem shows, a :class:`GaborTruncationWarning`
        names the filter and the numbers (once per module; silence it with :mod:`warnings` filters).

        Returns:
            dict with ``"cut"``, ``"near_nyquist"`` and ``"non_finite"`` (a parameter is NaN or
            inf: such a filter is skipped by the other two): boolean tensors ``(out_channels,
            in_channels // groups)``, and ``"suggested_kernel_size"``: the smallest odd kernel
            size that holds every finite filter's 3-sigma envelope (``None`` if there is none).
        """
        family = self._family
        first = _storage.stored(self, family.names[:1])[0]
        if torch.compiler.is_compiling() or first.device.type == "meta":
            return {}
        with torch.no_grad():
            values = {name: _storage.constrained(self, name).detach().double().cpu() for name in family.names}
        report = extent_report(family, values, self.kernel_size)
        if warn:
            warned = self.__dict__.setdefault("_warned", set())
            warn_extent(report, family, values, self.kernel_size, type(self).__name__, warned)
        return report

    def _conv_forward(self, input: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        conv = self._family.conv
        if self.padding_mode != "zeros":
            return conv(F.pad(input, self._reversed_padding_repeated_twice, mode=self.padding_mode),
                        weight, bias, self.stride, 0, self.dilation, self.groups)
        return conv(input, weight, bias, self.stride, self.padding, self.dilation, self.groups)

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        y = self._conv_forward(input, self._forward_weight()[0], _pair_bias(self.bias, self.output, self.groups))
        return _combine(y, self.output, self.bias, self._family.dims, self.groups)

    def _to_conv(self) -> nn.Module:
        from .convert import to_conv  # conversion sits above the layers: imported when used

        return to_conv(self)

    @classmethod
    def _from_conv(cls, conv: nn.Module, **options):
        from .convert import from_conv  # it fits (scipy): imported when used

        return from_conv(cls, conv, **options)

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_cache"] = state["_write_guard"] = None
        state.pop("_warned", None)
        return state

    def __setstate__(self, state):
        super().__setstate__(state)
        self._cache = BankCache()
        self._write_guard = WriteGuard()
        self.__dict__.setdefault("_memory_format", None)

    def extra_repr(self) -> str:
        # The nn.ConvNd part is formatted exactly as nn.ConvNd formats it (strings unquoted).
        dims = self._family.dims
        s = f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}"
        shown = [("padding", self.padding, (0,) * dims), ("dilation", self.dilation, (1,) * dims),
                 ("groups", self.groups, 1), ("padding_mode", self.padding_mode, "zeros")]
        s += "".join(f", {name}={value}" for name, value, default in shown if value != default)
        if self.bias is None:
            s += ", bias=False"
        if self.has_amplitude:
            s += ", amplitude=True"
        if self.learn != self._names():
            s += f", learn={self.learn}"
        if self.zero_mean:
            s += ", zero_mean=True"
        shown = [("backend", self.backend, "auto"), ("output", self.output, "real")]
        return s + "".join(f", {name}={value!r}" for name, value, default in shown if value != default)


class GaborConv2d(_GaborConvNd):
    r"""A 2-D convolution whose kernels are Gabor filters with learnable parameters.

    Takes every argument of :class:`torch.nn.Conv2d` with the same meaning, and replaces the free
    weight by one set of ``(theta, sigma, lambd, gamma, psi)`` per filter, each of shape
    ``(out_channels, in_channels // groups)``. The constrained values are read as ``.theta``,
    ``.sigma``, ``.lambd``, ``.gamma``, ``.psi``; ``.weight`` is the built bank, so code that
    reads ``conv.weight`` keeps working. Constraints hold by reparameterisation (no clamping):
    ``sigma = exp(log_sigma) > 0``, ``gamma = exp(log_gamma) > 0``,
    ``lambd = 2 + exp(log_lambd_excess) > 2`` pixels (Nyquist); theta and psi are free.

    In eval mode, when no gradient is needed, the bank is built once and cached; the cache is
    kept while the parameters' values equal those it was built from, so any change (an optimiser
    step, fused ones included, ``load_state_dict``, ``.to()``, a write through ``param.data``)
    rebuilds it. ``.weight`` is read-only (see :attr:`weight`). Half-precision parameters
    (``.half()``, ``.bfloat16()``) build the bank in float32 and round it, so only the convolution
    runs in half precision, as with ``nn.Conv2d.half()``.

    Args:
        in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias,
        padding_mode, device, dtype: as in :class:`torch.nn.Conv2d`.
        theta, sigma, lambd, gamma, psi: initial values (float or tensor broadcastable to
            ``(out_channels, in_channels // groups)``); ``None`` takes the classic bank
            (:func:`~gaborlayer.init.classic_bank2d`). Ranges: sigma > 0, gamma > 0, lambd > 2.
        amplitude: ``None`` (default): every filter peaks at 1, five parameters per filter. A
            float or tensor (broadcastable as above; ``True`` means 1.0): a sixth, free
            parameter ``amplitude`` scales each filter, as a trained conv's filters are scaled
            (:meth:`from_conv2d` fits it).
        learn: the parameters that learn (names, ``"all"`` or ``"none"``); the rest are buffers.
        output: ``"real"`` (default, the drop-in), ``"complex"``, ``"magnitude"`` or
            ``"quadrature"``: each filter's quadrature pair (phases ``psi`` and ``psi - pi/2``, one
            set of parameters), combined as in :func:`~gaborlayer.gabor_conv2d`. The pair modes'
            ``.weight`` holds ``2 * out_channels`` filters, the even ones first (within each group's
            block of channels when ``groups > 1``, as ``nn.Conv2d`` assigns channels to groups);
            ``"quadrature"`` returns ``2 * out_channels`` channels in that order.
        zero_mean: remove each kernel's DC response (Morlet-style, see :func:`gabor_kernel2d`).
        backend: bank backend, see :func:`gaborlayer.functional.resolve_backend`.

    Shape:
        - Input: ``(B, C_in, H, W)`` or ``(C_in, H, W)``
        - Output: ``(B, C_out, H_out, W_out)`` or ``(C_out, H_out, W_out)``, as ``nn.Conv2d``.

    Examples:
        >>> conv = GaborConv2d(3, 16, 7, padding=3)
        >>> conv(torch.randn(2, 3, 32, 32)).shape
        torch.Size([2, 16, 32, 32])
        >>> conv.weight.shape, conv.theta.shape
        (torch.Size([16, 3, 7, 7]), torch.Size([16, 3]))
    """

    _family = GABOR_2D

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int | tuple[int, int],
                 stride: int | tuple[int, int] = 1, padding: str | int | tuple[int, int] = 0,
                 dilation: int | tuple[int, int] = 1, groups: int = 1, bias: bool = True, padding_mode: str = "zeros",
                 device: torch.device | str | None = None, dtype: torch.dtype | None = None, *,
                 theta: float | torch.Tensor | None = None, sigma: float | torch.Tensor | None = None,
                 lambd: float | torch.Tensor | None = None, gamma: float | torch.Tensor | None = None,
                 psi: float | torch.Tensor | None = None, amplitude: float | torch.Tensor | bool | None = None,
                 learn: str | Sequence[str] = "all", zero_mean: bool = False, backend: str = "auto",
                 output: str = "real"):
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias, padding_mode,
                         device, dtype, dict(theta=theta, sigma=sigma, lambd=lambd, gamma=gamma, psi=psi), amplitude,
                         learn, zero_mean, backend, output)

    @property
    def gamma(self) -> torch.Tensor:
        """Spatial aspect ratio, ``(out_channels, in_channels // groups)``, always > 0."""
        return _storage.constrained(self, "gamma")

    def to_conv2d(self) -> nn.Conv2d:
        """A plain ``nn.Conv2d`` holding the current bank, with the same output.

        For ``output="quadrature"`` it has ``2 * out_channels`` channels; ``"complex"`` and
        ``"magnitude"`` are not a single convolution and raise ``ValueError``.
        """
        return self._to_conv()

    @classmethod
    def from_conv2d(cls, conv: nn.Conv2d, *, amplitude: bool = True, learn: str | Sequence[str] = "all",
                    backend: str = "auto", seed: int = 0,
                    return_fit: bool = False, progress: bool = True) -> GaborConv2d | tuple[GaborConv2d, GaborFit]:
        """A GaborConv2d with ``conv``'s configuration, its filters fitted to ``conv``'s weights.

        Every 2-D slice ``conv.weight[o, i]`` is fitted by :func:`~gaborlayer.fit_kernel`
        (with a gain, unless ``amplitude=False``); the bias is copied. A slice that is all zeros
        gets amplitude 0. How well the Gabor bank explains the conv is ``1 - fit.loss``, per
        slice (1: exactly, 0: not at all); learned first-layer filters are often largely
        Gabor-like, random ones are not.

        Args:
            conv: an ``nn.Conv2d`` with a kernel of at least ``3 x 3`` and finite weights.
            amplitude: fit and keep a per-filter gain (see the class). Without it each filter
                has peak 1 and the fit explains only the filters' shapes at that scale.
            learn, backend: as in the constructor.
            seed: the fits' grid offset (see :func:`~gaborlayer.fit_kernel`).
            return_fit: also return the :class:`~gaborlayer.GaborFit` of the ``N = out_channels *
                in_channels // groups`` slices, in ``conv.weight``'s row-major order.
            progress: a progress bar (tqdm, on stderr) when the fit runs longer than two seconds
                and stderr is a terminal; ``False``: never.

        Returns:
            the GaborConv2d, on ``conv``'s device and dtype; with ``return_fit``, ``(module, fit)``.

        Examples:
            >>> from gaborlayer import gabor_kernel2d
            >>> conv = nn.Conv2d(1, 2, 5, padding=2)
            >>> with torch.no_grad():
            ...     bank = gabor_kernel2d(torch.tensor([0.5, 2.0]), 1.5, 4.0, 1.0, 0.0, 5)
            ...     _ = conv.weight.copy_(0.3 * bank[:, None])
            >>> gabor, fit = GaborConv2d.from_conv2d(conv, return_fit=True)
            >>> bool((1 - fit.loss).min() > 0.999999), torch.allclose(gabor.weight, conv.weight, atol=1e-6)
            (True, True)
        """
        return cls._from_conv(conv, amplitude=amplitude, learn=learn, backend=backend, seed=seed,
                              return_fit=return_fit, progress=progress)


class GaborConv1d(_GaborConvNd):
    r"""A 1-D convolution whose kernels are Gabor filters with learnable parameters.

    Takes every argument of :class:`torch.nn.Conv1d` with the same meaning and gives its output
    with ``.weight`` as the weight; the free weight is replaced by ``(sigma, lambd, psi)`` per
    filter, each ``(out_channels, in_channels // groups)``, the kernel being
    ``exp(-x^2 / (2 sigma^2)) cos(2 pi x / lambd + psi)`` with ``x = i - (k-1)/2``
    (:func:`~gaborlayer.gabor_kernel1d`). Everything else is as in :class:`GaborConv2d`:
    ``sigma = exp(log_sigma) > 0`` and ``lambd = 2 + exp(log_lambd_excess) > 2`` samples by
    reparameterisation, ``learn=``, ``amplitude=``, ``zero_mean=``, the eval-mode cache, half
    precision built in float32, :meth:`check_extent`.

    Args:
        in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias,
        padding_mode, device, dtype: as in :class:`torch.nn.Conv1d`.
        sigma, lambd, psi: initial values (float or tensor broadcastable to
            ``(out_channels, in_channels // groups)``); ``None`` takes :func:`~gaborlayer.init.classic_bank1d`.
            Ranges: sigma > 0, lambd > 2.
        amplitude, learn, zero_mean, backend, output: as in :class:`GaborConv2d` (``backend``: no
            ``"triton"`` in 1-D, see :func:`~gaborlayer.functional.resolve_backend`; ``output``:
            e.g. ``"magnitude"``, the envelope of a band, as learnable audio front ends use).

    Shape:
        - Input: ``(B, C_in, L)`` or ``(C_in, L)``
        - Output: ``(B, C_out, L_out)`` or ``(C_out, L_out)``, as ``nn.Conv1d``.

    Examples:
        >>> conv = GaborConv1d(1, 16, 63, padding="same")
        >>> conv(torch.randn(2, 1, 400)).shape
        torch.Size([2, 16, 400])
        >>> conv.weight.shape, conv.lambd.shape
        (torch.Size([16, 1, 63]), torch.Size([16, 1]))
    """

    _family = GABOR_1D

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int | tuple[int],
                 stride: int | tuple[int] = 1, padding: str | int | tuple[int] = 0, dilation: int | tuple[int] = 1,
                 groups: int = 1, bias: bool = True, padding_mode: str = "zeros",
                 device: torch.device | str | None = None, dtype: torch.dtype | None = None, *,
                 sigma: float | torch.Tensor | None = None, lambd: float | torch.Tensor | None = None,
                 psi: float | torch.Tensor | None = None, amplitude: float | torch.Tensor | bool | None = None,
                 learn: str | Sequence[str] = "all", zero_mean: bool = False, backend: str = "auto",
                 output: str = "real"):
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias, padding_mode,
                         device, dtype, dict(sigma=sigma, lambd=lambd, psi=psi), amplitude, learn, zero_mean, backend,
                         output)

    def to_conv1d(self) -> nn.Conv1d:
        """A plain ``nn.Conv1d`` holding the current bank, with the same output."""
        return self._to_conv()

    @classmethod
    def from_conv1d(cls, conv: nn.Conv1d, *, amplitude: bool = True, learn: str | Sequence[str] = "all",
                    backend: str = "auto", seed: int = 0,
                    return_fit: bool = False, progress: bool = True) -> GaborConv1d | tuple[GaborConv1d, GaborFit]:
        """A GaborConv1d with ``conv``'s configuration, its filters fitted to ``conv``'s weights.

        As :meth:`GaborConv2d.from_conv2d`, for 1-D: every slice ``conv.weight[o, i]`` is fitted
        with a gain (unless ``amplitude=False``) by the search and refinement of
        :func:`~gaborlayer.fit_kernel`, run on the slice as a ``1 x k`` kernel with ``theta = 0``
        and ``gamma = 1`` held fixed (the 2-D filter on one row is the 1-D one). The bias is
        copied; an all-zero slice gets amplitude 0.

        Args:
            conv: an ``nn.Conv1d`` with a kernel of at least 3 taps and finite weights.
            amplitude, learn, backend, seed, progress: as in :meth:`GaborConv2d.from_conv2d`.
            return_fit: also return the :class:`~gaborlayer.GaborFit` of the ``N = out_channels *
                in_channels // groups`` slices (its ``size`` is ``(1, k)``, its ``theta`` 0 and its
                ``gamma`` 1; ``1 - fit.loss`` is the fraction of each slice explained).

        Returns:
            the GaborConv1d, on ``conv``'s device and dtype; with ``return_fit``, ``(module, fit)``.

        Examples:
            >>> from gaborlayer import gabor_kernel1d
            >>> conv = nn.Conv1d(1, 2, 15, padding=7)
            >>> with torch.no_grad():
            ...     _ = conv.weight.copy_(-0.3 * gabor_kernel1d(torch.tensor([2.0, 3.0]), 5.0, 0.4, 15)[:, None])
            >>> gabor, fit = GaborConv1d.from_conv1d(conv, return_fit=True)
            >>> bool((1 - fit.loss).min() > 0.999999), torch.allclose(gabor.weight, conv.weight, atol=1e-6)
            (True, True)
        """
        return cls._from_conv(conv, amplitude=amplitude, learn=learn, backend=backend, seed=seed,
                              return_fit=return_fit, progress=progress)


class GaborConv3d(_GaborConvNd):
    r"""A 3-D convolution whose kernels are Gabor filters with learnable parameters.

    Takes every argument of :class:`torch.nn.Conv3d` with the same meaning and gives its output
    with ``.weight`` as the weight; the free weight is replaced by ``(theta, phi, sigma, lambd,
    gamma, psi)`` per filter, each ``(out_channels, in_channels // groups)``: the wave runs along
    ``u = (cos phi cos theta, cos phi sin theta, sin phi)`` in ``(x, y, z)`` (azimuth theta,
    elevation phi) and the envelope is ``sigma`` wide along ``u``, ``sigma / gamma`` across it
    (:func:`~gaborlayer.gabor_kernel3d`; the layout is ``(kd, kh, kw) = (z, y, x)``). Everything
    else is as in :class:`GaborConv2d`: ``sigma``, ``gamma > 0`` and ``lambd > 2`` voxels by
    reparameterisation, ``learn=``, ``amplitude=``, ``zero_mean=``, the eval-mode cache, half
    precision built in float32, :meth:`check_extent`.

    Args:
        in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias,
        padding_mode, device, dtype: as in :class:`torch.nn.Conv3d`.
        theta, phi, sigma, lambd, gamma, psi: initial values (float or tensor broadcastable to
            ``(out_channels, in_channels // groups)``); ``None`` takes :func:`~gaborlayer.init.classic_bank3d`.
            Ranges: sigma > 0, gamma > 0, lambd > 2.
        amplitude, learn, zero_mean, backend, output: as in :class:`GaborConv2d` (``backend``: no
            ``"triton"`` in 3-D, see :func:`~gaborlayer.functional.resolve_backend`).

    Shape:
        - Input: ``(B, C_in, D, H, W)`` or ``(C_in, D, H, W)``
        - Output: ``(B, C_out, D_out, H_out, W_out)`` or ``(C_out, D_out, H_out, W_out)``, as ``nn.Conv3d``.

    Examples:
        >>> conv = GaborConv3d(1, 8, 5, padding=2)
        >>> conv(torch.randn(2, 1, 12, 12, 12)).shape
        torch.Size([2, 8, 12, 12, 12])
        >>> conv.weight.shape, conv.phi.shape
        (torch.Size([8, 1, 5, 5, 5]), torch.Size([8, 1]))
    """

    _family = GABOR_3D

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int | tuple[int, int, int],
                 stride: int | tuple[int, int, int] = 1, padding: str | int | tuple[int, int, int] = 0,
                 dilation: int | tuple[int, int, int] = 1, groups: int = 1, bias: bool = True,
                 padding_mode: str = "zeros", device: torch.device | str | None = None,
                 dtype: torch.dtype | None = None, *, theta: float | torch.Tensor | None = None,
                 phi: float | torch.Tensor | None = None, sigma: float | torch.Tensor | None = None,
                 lambd: float | torch.Tensor | None = None, gamma: float | torch.Tensor | None = None,
                 psi: float | torch.Tensor | None = None, amplitude: float | torch.Tensor | bool | None = None,
                 learn: str | Sequence[str] = "all", zero_mean: bool = False, backend: str = "auto",
                 output: str = "real"):
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias, padding_mode,
                         device, dtype, dict(theta=theta, phi=phi, sigma=sigma, lambd=lambd, gamma=gamma, psi=psi),
                         amplitude, learn, zero_mean, backend, output)

    @property
    def gamma(self) -> torch.Tensor:
        """Aspect ratio (the envelope is ``sigma / gamma`` wide across the wave), always > 0."""
        return _storage.constrained(self, "gamma")

    def to_conv3d(self) -> nn.Conv3d:
        """A plain ``nn.Conv3d`` holding the current bank, with the same output."""
        return self._to_conv()
