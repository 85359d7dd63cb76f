"""``GaborConv1d``, ``GaborConv2d``, ``GaborConv3d``: drop-ins for ``nn.Conv1d`` / ``nn.Conv2d`` /
``nn.Conv3d`` whose kernels are Gabor filters.

The machinery they share (argument checks, reparameterised storage, ``learn=``, the eval-mode
cache, half precision, padding modes, ``extra_repr``, the truncation check, conversion to the
plain conv) lives once, in the private base class :class:`_GaborConvNd`; each public class says
only its parameter names, its bank builder, its convolution and its initial bank.
"""
from __future__ import annotations

import math
import warnings

import torch
import torch.nn as nn
import torch.nn.functional as F

from . import _checks
from .fit import GaborFit, _fit_kernel1d, fit_kernel
from .functional import (_bank, _bank1d, _bank3d, _check_output, _combine, _odd_sizes_holding, _pair_bias,
                         _pairs, _quadrature_params, envelope_extent, resolve_backend)

PARAM_NAMES = _checks.PARAM_NAMES
LAMBD_FLOOR = 2.0  # pixels: a wavelength below 2 samples aliases (Nyquist)
_PADDING_MODES = ("zeros", "reflect", "replicate", "circular")
# Log-parameters are read through exp(clamp(r, -LOG_LIMIT, LOG_LIMIT)): beyond e^80 ~ 5.5e34 a
# float32 sigma or gamma would overflow to inf (or underflow to 0) and the bank turn NaN; no
# training that is going anywhere stores a raw value of 80.
LOG_LIMIT = 80.0


def _bounded_exp(r: torch.Tensor) -> torch.Tensor:
    return torch.exp(r.clamp(-LOG_LIMIT, LOG_LIMIT))


# Where each parameter is stored: (registered name, constrained -> stored, stored -> constrained).
# Reparameterisation rather than clamping keeps every gradient alive at the bounds.
_STORAGE = {
    "theta": ("theta", lambda v: v, lambda r: r),
    "phi": ("phi", lambda v: v, lambda r: r),
    "sigma": ("log_sigma", torch.log, _bounded_exp),
    "lambd": ("log_lambd_excess", lambda v: torch.log(v - LAMBD_FLOOR), lambda r: LAMBD_FLOOR + _bounded_exp(r)),
    "gamma": ("log_gamma", torch.log, _bounded_exp),
    "psi": ("psi", lambda v: v, lambda r: r),
    "amplitude": ("amplitude", lambda v: v, lambda r: r),
}
# A filter is "cut" when its envelope's CUT_SIGMAS contour leaves the kernel (the envelope is above
# 4.4% of its peak at the edge: a visible step), and "near Nyquist" when lambd < NYQUIST_MARGIN *
# LAMBD_FLOOR; either warns once (GaborTruncationWarning). The suggested kernel and the initial banks
# hold the EXTENT_SIGMAS contour (1.1%), so sigma can grow by a fifth in training before a warning.
CUT_SIGMAS = 2.5
EXTENT_SIGMAS = 3.0
NYQUIST_MARGIN = 1.1
_UNITS = {1: "samples", 2: "px", 3: "voxels"}


class GaborTruncationWarning(UserWarning):
    """A filter's envelope is cut off by the kernel, or its wavelength nears the Nyquist floor."""


# Allowed initial values (lower bound, inclusive?).
_INIT_BOUNDS = {"sigma": (0.0, False), "gamma": (0.0, False), "lambd": (LAMBD_FLOOR, False)}


def _scales(index: torch.Tensor, n_scales: int, kernel_size) -> tuple[torch.Tensor, torch.Tensor]:
    """``(lambd, sigma)`` for scale ``index`` of ``n_scales``: wavelengths geometric from 2.5 to half the
    smaller kernel side, ``sigma = 0.56 lambd`` (one octave) capped at a sixth of that side, so that
    3 sigma fits the kernel."""
    lo, hi = 2.5, max(2.5, min(kernel_size) / 2)
    lambd = lo * (hi / lo) ** (index / max(n_scales - 1, 1))
    return lambd, torch.clamp(0.56 * lambd, max=min(kernel_size) / (2 * EXTENT_SIGMAS))


def _per_filter(values: dict, out_channels: int, in_per_group: int, dtype, device) -> dict:
    return {k: v[:, None].expand(out_channels, in_per_group).to(dtype=dtype, device=device) for k, v in values.items()}


def classic_bank(out_channels: int, in_per_group: int, kernel_size: tuple[int, int], dtype=None, device=None) -> dict:
    """The default initial parameters: a classic multi-orientation, multi-scale bank.

    Output channel ``o`` gets orientation ``pi * (o mod n) / n`` with ``n = min(8, out_channels)``,
    phase ``0`` or ``-pi/2`` (even / odd filter) alternating every ``n`` channels, and a scale
    cycling every ``2n`` channels. Scales are spread geometrically over wavelengths from 2.5 pixels
    up to half the smaller kernel side, with ``sigma = 0.56 lambd`` (a one-octave bandwidth) capped
    at a sixth of the smaller kernel side, so that the envelope's 3-sigma extent fits the kernel
    (sigma can grow by a fifth in training before a :class:`GaborTruncationWarning`), and
    ``gamma = 1``. Every input channel of an output
    channel gets the same filter.

    Returns:
        dict of five tensors ``(out_channels, in_per_group)``.
    """
    o = torch.arange(out_channels, dtype=torch.float64)
    n_orient = min(8, out_channels)
    n_scales = max(1, math.ceil(out_channels / (2 * n_orient)))
    lambd, sigma = _scales(torch.div(o, 2 * n_orient, rounding_mode="floor") % n_scales, n_scales, kernel_size)
    values = {
        "theta": math.pi * (o % n_orient) / n_orient,
        "sigma": sigma,
        "lambd": lambd,
        "gamma": torch.ones_like(o),
        "psi": -math.pi / 2 * (torch.div(o, n_orient, rounding_mode="floor") % 2),
    }
    return _per_filter(values, out_channels, in_per_group, dtype, device)


def classic_bank1d(out_channels: int, in_per_group: int, kernel_size: tuple[int], dtype=None, device=None) -> dict:
    """The default initial parameters of :class:`GaborConv1d`: even/odd pairs over scales.

    Output channel ``o`` gets phase ``0`` (even) for even ``o`` and ``-pi/2`` (odd) for odd ``o``,
    and scale ``(o // 2) mod n`` of ``n = ceil(out_channels / 2)`` scales, spread as in
    :func:`classic_bank` (wavelengths geometric from 2.5 samples to half the kernel,
    ``sigma = 0.56 lambd`` capped at a sixth of the kernel).

    Returns:
        dict of three tensors ``(out_channels, in_per_group)``: ``sigma``, ``lambd``, ``psi``.
    """
    o = torch.arange(out_channels, dtype=torch.float64)
    n_scales = max(1, math.ceil(out_channels / 2))
    lambd, sigma = _scales(torch.div(o, 2, rounding_mode="floor") % n_scales, n_scales, kernel_size)
    values = {"sigma": sigma, "lambd": lambd, "psi": -math.pi / 2 * (o % 2)}
    return _per_filter(values, out_channels, in_per_group, dtype, device)


def classic_bank3d(out_channels: int, in_per_group: int, kernel_size: tuple[int, int, int], dtype=None,
                   device=None) -> dict:
    """The default initial parameters of :class:`GaborConv3d`: directions over the half sphere.

    With ``n = min(13, out_channels)`` directions, channel ``o`` gets direction ``j = o mod n`` of a
    Fibonacci lattice on the upper half sphere (elevation ``phi = asin((j + 1/2) / n)``, azimuth
    ``theta = j`` times the golden angle), evenly spread since ``u`` and ``-u`` are the same
    direction up to the phase; phase ``0`` or ``-pi/2`` alternating every ``n`` channels; and a
    scale cycling every ``2n`` channels, spread as in :func:`classic_bank`; ``gamma = 1``.

    Returns:
        dict of six tensors ``(out_channels, in_per_group)``.
    """
    o = torch.arange(out_channels, dtype=torch.float64)
    n_dir = min(13, out_channels)
    n_scales = max(1, math.ceil(out_channels / (2 * n_dir)))
    j = o % n_dir
    lambd, sigma = _scales(torch.div(o, 2 * n_dir, rounding_mode="floor") % n_scales, n_scales, kernel_size)
    values = {
        "theta": torch.remainder(j * math.pi * (3 - math.sqrt(5)), 2 * math.pi),
        "phi": torch.asin((j + 0.5) / n_dir),
        "sigma": sigma,
        "lambd": lambd,
        "gamma": torch.ones_like(o),
        "psi": -math.pi / 2 * (torch.div(o, n_dir, rounding_mode="floor") % 2),
    }
    return _per_filter(values, out_channels, in_per_group, dtype, device)


class _GaborConvNd(nn.Module):
    """What the Gabor layers share. A subclass sets the class attributes below and implements
    :meth:`_build_bank` and :meth:`_half_extents` (and :meth:`_fit_slices` for ``from_convNd``)."""

    _dims: int  # 1, 2 or 3
    _gabor_names: tuple[str, ...]  # the filter parameters, in the bank builder's order
    _conv_class: type  # nn.Conv1d, nn.Conv2d, nn.Conv3d
    _conv = staticmethod(F.conv2d)  # F.conv1d, F.conv2d, F.conv3d
    _classic = staticmethod(classic_bank)  # the default initial bank: classic_bank1d, classic_bank, classic_bank3d

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride, padding, dilation, groups: int,
                 bias: bool, padding_mode: str, device, dtype, init: dict, amplitude, learn, zero_mean: bool,
                 backend: str, output: str = "real"):
        super().__init__()
        dims = self._dims
        self.in_channels = _checks.positive_int(in_channels, "in_channels")
        self.out_channels = _checks.positive_int(out_channels, "out_channels")
        self.groups = _checks.positive_int(groups, "groups")
        if in_channels % groups or out_channels % groups:
            raise ValueError(f"in_channels ({in_channels}) and out_channels ({out_channels}) must both be "
                             f"divisible by groups ({groups})")
        self.kernel_size = _checks.ints(kernel_size, "kernel_size", dims)
        self.stride = _checks.ints(stride, "stride", dims)
        self.dilation = _checks.ints(dilation, "dilation", dims)
        if isinstance(padding, str):
            if padding not in ("same", "valid"):
                raise ValueError(f"padding must be 'same', 'valid' or non-negative ints, got {padding!r}")
            if padding == "same" and self.stride != (1,) * dims:
                raise ValueError(f"padding='same' needs stride=1, got stride={stride!r}")
            self.padding = padding
        else:
            self.padding = _checks.ints(padding, "padding", dims, minimum=0)
        if padding_mode not in _PADDING_MODES:
            raise ValueError(f"padding_mode must be one of {_PADDING_MODES}, got {padding_mode!r}")
        self.padding_mode = padding_mode
        self._reversed_padding_repeated_twice = self._reversed_padding()
        _checks.floating_dtype(dtype)
        resolve_backend(backend, dims=dims)
        self.backend = backend
        self.zero_mean = bool(zero_mean)
        self.output = _check_output(output)
        if amplitude is True:
            amplitude = 1.0
        elif amplitude is False:
            amplitude = None
        self.has_amplitude = amplitude is not None
        self.learn = _checks.names_subset(learn, "learn", self._names())

        shape = (self.out_channels, self.in_channels // self.groups)
        factory = {"device": device, "dtype": dtype if dtype is not None else torch.get_default_dtype()}
        self._init_values = self._check_init({**init, "amplitude": amplitude}, shape)
        for name in self._names():
            stored, _, _ = _STORAGE[name]
            tensor = torch.empty(shape, **factory)
            if name in self.learn:
                self.register_parameter(stored, nn.Parameter(tensor))
            else:
                self.register_buffer(stored, tensor)
        self.bias = nn.Parameter(torch.empty(self.out_channels, **factory)) if bias else None
        self._cache = None
        self.reset_parameters()

    # -- what each dimension says -----------------------------------------------------------
    def _build_bank(self, params: list[torch.Tensor]) -> torch.Tensor:
        """The bank ``(*extra, out_channels, in_per_group, *kernel_size)`` from the constrained
        filter parameters (in ``_gabor_names`` order)."""
        raise NotImplementedError

    def _initial_bank(self, shape: tuple[int, int]) -> dict:
        """The default initial values, float64 tensors of ``shape``, one per ``_gabor_names``."""
        return self._classic(*shape, self.kernel_size, dtype=torch.float64)

    @classmethod
    def _fit_slices(cls, slices: torch.Tensor, amplitude: bool, seed: int) -> GaborFit:
        """The fit of ``slices`` ``(N, *kernel_size)`` (float64), for :meth:`_from_conv`."""
        raise NotImplementedError

    def _half_extents(self, values: dict, n_sigma: float) -> tuple[torch.Tensor, ...]:
        """Per kernel axis, the half-extent of each filter's ``n_sigma`` envelope contour (float64)."""
        raise NotImplementedError

    # -- construction helpers -------------------------------------------------------------
    def _names(self) -> tuple[str, ...]:
        """The per-filter parameters: the Gabor ones, plus ``amplitude`` when enabled."""
        return self._gabor_names + ("amplitude",) if self.has_amplitude else self._gabor_names

    def _reversed_padding(self) -> list[int]:
        """F.pad's padding for non-zero padding modes, as nn.ConvNd computes it."""
        if self.padding == "valid":
            return [0, 0] * self._dims
        if self.padding == "same":
            pads = []
            for d, k in zip(reversed(self.dilation), reversed(self.kernel_size)):
                total = d * (k - 1)
                pads += [total // 2, total - total // 2]
            return pads
        return [p for p in reversed(self.padding) for _ in range(2)]

    @staticmethod
    def _check_init(values: dict, shape) -> dict:
        given = {k: v for k, v in values.items() if v is not None}
        tensors = dict(zip(given, _checks.as_param_tensors(given, dtype=torch.float64, device="cpu")))
        for name, t in tensors.items():
            try:
                # Detached: an init value with autograd history would make the module un-deepcopy-able.
                tensors[name] = torch.broadcast_to(t.detach(), shape).clone()
            except RuntimeError:
                raise ValueError(f"{name} must be broadcastable to (out_channels, in_channels // groups) = "
                                 f"{tuple(shape)}, got shape {tuple(t.shape)}") from None
        _checks.check_values(tensors, _INIT_BOUNDS)
        return tensors

    def reset_parameters(self) -> None:
        """Set the filter parameters to their initial values (given ones, else the classic bank)
        and the bias as the ``nn.ConvNd`` does."""
        shape = (self.out_channels, self.in_channels // self.groups)
        values = {**self._initial_bank(shape), **self._init_values}
        with torch.no_grad():
            for name in self._names():
                stored, to_stored, _ = _STORAGE[name]
                target = getattr(self, stored)
                target.copy_(to_stored(values[name]))
            if self.bias is not None:
                fan_in = (self.in_channels // self.groups) * math.prod(self.kernel_size)
                bound = 1 / math.sqrt(fan_in)
                nn.init.uniform_(self.bias, -bound, bound)
        self.check_extent()

    # -- the constrained parameters ---------------------------------------------------------
    def _constrained(self, name: str) -> torch.Tensor:
        stored, _, from_stored = _STORAGE[name]
        return from_stored(getattr(self, stored))

    @property
    def sigma(self) -> torch.Tensor:
        """Envelope width in pixels, ``(out_channels, in_channels // groups)``, always > 0."""
        return self._constrained("sigma")

    @property
    def lambd(self) -> torch.Tensor:
        """Wavelength in pixels, ``(out_channels, in_channels // groups)``, always > 2."""
        return self._constrained("lambd")

    def _stored(self) -> list[torch.Tensor]:
        return [getattr(self, _STORAGE[n][0]) for n in self._names()]

    def _build_weight(self) -> torch.Tensor:
        stored = self._stored()
        # Half precision cannot hold the phase 2 pi x'/lambd (one bf16 ulp at 20 rad is 0.06 rad):
        # build in float32 and round the bank, as a half nn.ConvNd holds a rounded weight.
        compute = torch.promote_types(stored[0].dtype, torch.float32)
        params = [_STORAGE[n][2](t.to(compute)) for n, t in zip(self._names(), stored)]
        n_gabor = len(self._gabor_names)
        gabor = params[:n_gabor] if self.output == "real" else _quadrature_params(params[:n_gabor], self.groups)
        bank = self._build_bank(gabor)
        if self.has_amplitude:
            amplitude = params[n_gabor]
            if self.output != "real":
                amplitude = _pairs(amplitude, amplitude, self.groups)
            bank = bank * amplitude.reshape(*amplitude.shape, *(1,) * self._dims)
        bank = bank.reshape(-1, *bank.shape[-(self._dims + 1):]).to(stored[0].dtype)
        layout = getattr(self, "_memory_format", None)  # set by .to(memory_format=...), see _apply
        return bank if layout is None else bank.contiguous(memory_format=layout)

    def _cacheable(self, stored: list[torch.Tensor]) -> bool:
        """Whether the bank may come from the cache: eval mode, no graph to build, plain tensors."""
        if self.training or torch.compiler.is_compiling() or torch._C._are_functorch_transforms_active():
            return False  # functorch's wrapped tensors (vmap, grad) have no storage to key on
        if torch.is_grad_enabled() and any(t.requires_grad for t in stored):
            return False
        return not any(t.is_inference() for t in stored)  # inference tensors have no version counter

    @property
    def weight(self) -> torch.Tensor:
        """The Gabor bank ``(out_channels, in_channels // groups, *kernel_size)``, as the
        ``nn.ConvNd``'s ``weight`` (``2 * out_channels`` filters for the quadrature-pair outputs:
        even then odd, within each group's block when ``groups > 1``)."""
        stored = self._stored()
        if not self._cacheable(stored):
            return self._build_weight()
        key = [(t.data_ptr(), t._version, t.dtype, t.device, t.shape, t.stride()) for t in stored]
        key.append((self.kernel_size, self.zero_mean, self.backend, self.output))
        if self._cache is None or self._cache[0] != key:
            # Not an inference tensor, so the bank can also serve a later forward that needs grad
            # for the input only. (In this order: inference_mode(False) turns grad mode back on.)
            with torch.inference_mode(False), torch.no_grad():
                # The detached aliases keep the keyed storages alive, so no new tensor can be
                # allocated at a cached data_ptr (a param.data = ... or functional_call would).
                self._cache = (key, self._build_weight(), [t.detach() for t in stored])
        return self._cache[1]

    def train(self, mode: bool = True):
        self._cache = None  # frees the bank, and refreshes it after writes no version counter saw
        self.check_extent()  # model.train() / model.eval() mark epochs: a cheap moment to look
        return super().train(mode)

    def _load_from_state_dict(self, *args, **kwargs):
        super()._load_from_state_dict(*args, **kwargs)
        self.check_extent()

    _LAYOUTS = {2: torch.channels_last, 3: torch.channels_last_3d}

    def _apply(self, fn, recurse=True):
        """``nn.Module._apply`` (``.to()``, ``.cuda()``, ``.half()``, ...), and the memory layout:
        ``model.to(memory_format=torch.channels_last)`` converts the 4-D tensors an ``nn.Conv2d``
        holds, and a Gabor layer holds none. Two probes of the layer's rank tell which layout the
        call asks for (a contiguous probe that comes back channels-last, or a channels-last one that
        comes back contiguous; other calls keep a probe's layout), so that ``.weight``, and with it
        the output, follows the call as ``nn.ConvNd``'s do."""
        module = super()._apply(fn, recurse)
        self._cache = None
        layout = self._LAYOUTS.get(self._dims)
        if layout is None:  # 1-D: nn.Module.to converts no 3-D tensor either
            return module
        ref = self._stored()[0]
        shape = (1, 2) + (2,) * self._dims
        try:
            plain = fn(torch.empty(shape, dtype=ref.dtype, device=ref.device))
            last = fn(torch.empty(shape, dtype=ref.dtype, device=ref.device).contiguous(memory_format=layout))
        except Exception:  # noqa: BLE001 - a fn that takes only parameters: the layout stays as it was
            return module
        if not (isinstance(plain, torch.Tensor) and isinstance(last, torch.Tensor) and plain.shape == shape
                and last.shape == shape):
            return module
        if not plain.is_contiguous() and plain.is_contiguous(memory_format=layout):
            self._memory_format = layout
        elif last.is_contiguous():
            self._memory_format = None
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
            dict with ``"cut"`` and ``"near_nyquist"``: boolean tensors ``(out_channels,
            in_channels // groups)``, and ``"suggested_kernel_size"``: the smallest odd kernel
            size that holds every filter's 3-sigma envelope.
        """
        if torch.compiler.is_compiling() or self._stored()[0].device.type == "meta":
            return {}
        with torch.no_grad():
            values = {n: self._constrained(n).detach().double().cpu() for n in self._gabor_names}
        halves = self._half_extents(values, CUT_SIGMAS)
        lambd = values["lambd"]
        cut = torch.zeros_like(lambd, dtype=torch.bool)
        for half, k in zip(halves, self.kernel_size):
            cut |= half > k / 2 * (1 + 1e-6)  # exactly at the edge (then rounded in float32) is not cut
        suggested = _odd_sizes_holding(self._half_extents(values, EXTENT_SIGMAS))
        report = {"cut": cut, "near_nyquist": lambd < NYQUIST_MARGIN * LAMBD_FLOOR, "suggested_kernel_size": suggested}
        if not warn:
            return report
        unit = _UNITS[self._dims]
        warned = self.__dict__.setdefault("_warned", set())
        for kind in ("cut", "near_nyquist"):
            bad = report[kind]
            if kind in warned or not bool(bad.any()):
                continue
            warned.add(kind)
            o, i = (int(v) for v in torch.nonzero(bad)[0])
            where = f"{type(self).__name__}: {int(bad.sum())} of {bad.numel()} filters"
            if kind == "cut":
                shown = ", ".join(f"{n}={values[n][o, i]:.3g}" for n in ("theta", "phi", "sigma", "gamma")
                                  if n in values)
                extent = " x ".join(f"{2 * h[o, i]:.1f}" for h in halves)
                hint = " (gaborlayer.suggest_kernel_size)" if self._dims == 2 else ""
                message = (f"{where} have an envelope cut off by kernel_size={self.kernel_size}, e.g. filter "
                           f"[{o}, {i}] ({shown}) reaches {extent} {unit} at {CUT_SIGMAS:g} sigma; "
                           f"kernel_size={suggested} would hold every filter{hint}")
            else:
                message = (f"{where} have lambd within {NYQUIST_MARGIN - 1:.0%} of the Nyquist floor "
                           f"{LAMBD_FLOOR:g} {unit}, e.g. filter [{o}, {i}] with lambd={lambd[o, i]:.4g}: their "
                           f"oscillation is barely sampled")
            warnings.warn(message, GaborTruncationWarning, stacklevel=3)
        return report

    # -- from a plain convolution --------------------------------------------------------------
    @classmethod
    def _from_conv(cls, conv: nn.Module, *, amplitude: bool, learn, backend: str, seed: int, return_fit: bool):
        """``from_conv1d`` / ``from_conv2d``: the layer with ``conv``'s configuration, its filters
        fitted to ``conv.weight`` by :meth:`_fit_slices`, its bias copied."""
        kind = cls._conv_class.__name__
        if not isinstance(conv, cls._conv_class):
            raise TypeError(f"conv must be an nn.{kind}, got {type(conv).__name__}")
        if isinstance(conv, nn.modules.lazy.LazyModuleMixin) and conv.has_uninitialized_params():
            raise ValueError(f"conv is a lazy nn.{kind} whose weight is not initialised yet: run a forward first")
        weight = conv.weight.detach()
        out_c, in_per_group, *size = weight.shape
        if min(size) < 3:
            raise ValueError(f"conv.kernel_size must be at least {(3,) * cls._dims} to fit Gabor filters, "
                             f"got {tuple(size)}")
        if not bool(torch.isfinite(weight).all()):
            raise ValueError("conv.weight must be finite, got NaN or inf entries")
        slices = weight.reshape(-1, *size).to("cpu", torch.float64)
        nonzero = slices.square().flatten(1).sum(dim=1) > 0
        values = {**{k: v.reshape(-1) for k, v in cls._classic(out_c, in_per_group, tuple(size),
                                                                  dtype=torch.float64).items()},
                  "amplitude": torch.zeros(len(slices), dtype=torch.float64),
                  "loss": torch.zeros(len(slices), dtype=torch.float64)}
        fit = None
        if bool(nonzero.any()):
            fit = cls._fit_slices(slices[nonzero], amplitude, seed)
            for name in (*cls._gabor_names, "amplitude", "loss"):
                values[name][nonzero] = getattr(fit, name)
        # The fit allows lambd = 2 exactly (the Nyquist pattern); the module's lambd is > 2.
        values["lambd"] = values["lambd"].clamp_min(LAMBD_FLOOR * (1 + 1e-6))
        if not amplitude:
            values["amplitude"] = None
        module = cls(**_conv_arguments(conv), **{k: None if v is None else v.reshape(out_c, in_per_group)
                                                 for k, v in values.items() if k != "loss"},
                     learn=learn, backend=backend)
        if conv.bias is not None:
            with torch.no_grad():
                module.bias.copy_(conv.bias)
        if not return_fit:
            return module
        # 1-D filters are fitted as 1 x k kernels with theta = 0 and gamma = 1 (see _fit_kernel1d).
        report = {"theta": torch.zeros(len(slices), dtype=torch.float64),
                  "gamma": torch.ones(len(slices), dtype=torch.float64), **values}
        report = GaborFit(*(report[k] for k in (*PARAM_NAMES, "loss")),
                          size=fit.size if fit is not None else (1,) * (2 - len(size)) + tuple(size),
                          amplitude=values["amplitude"] if amplitude else torch.ones(len(slices), dtype=torch.float64),
                          history=fit.history if fit is not None else [], starts=fit.starts if fit is not None else [],
                          seconds=fit.seconds if fit is not None else 0.0)
        return module, report

    # -- forward ---------------------------------------------------------------------------
    def _conv_forward(self, input: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        if self.padding_mode != "zeros":
            return self._conv(F.pad(input, self._reversed_padding_repeated_twice, mode=self.padding_mode),
                              weight, bias, self.stride, 0, self.dilation, self.groups)
        return self._conv(input, weight, bias, self.stride, self.padding, self.dilation, self.groups)

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        y = self._conv_forward(input, self.weight, _pair_bias(self.bias, self.output, self.groups))
        return _combine(y, self.output, self.bias, self._dims, self.groups)

    # -- interop ---------------------------------------------------------------------------
    def _to_conv(self) -> nn.Module:
        """A plain ``nn.ConvNd`` holding the current bank, with the same output."""
        name = f"to_conv{self._dims}d"
        if self.output not in ("real", "quadrature"):
            raise ValueError(f"{name} needs output='real' or 'quadrature' (one convolution), got "
                             f"output={self.output!r}; its quadrature pair is {type(self).__name__}(..., "
                             f"output='quadrature')")
        weight = self.weight.detach()
        bias = _pair_bias(self.bias, self.output, self.groups)
        conv = self._conv_class(self.in_channels, weight.shape[0], self.kernel_size, self.stride, self.padding,
                                self.dilation, self.groups, self.bias is not None, self.padding_mode,
                                device=weight.device, dtype=weight.dtype)
        with torch.no_grad():
            conv.weight.copy_(weight)
            if bias is not None:
                conv.bias.copy_(bias)
        layout = getattr(self, "_memory_format", None)
        return conv if layout is None else conv.to(memory_format=layout)

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_cache"] = None
        state.pop("_warned", None)
        return state

    def extra_repr(self) -> str:
        s = f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}"
        # The nn.ConvNd part is formatted exactly as nn.ConvNd formats it (strings unquoted).
        if self.padding != (0,) * self._dims:
            s += f", padding={self.padding}"
        if self.dilation != (1,) * self._dims:
            s += f", dilation={self.dilation}"
        if self.groups != 1:
            s += f", groups={self.groups}"
        if self.bias is None:
            s += ", bias=False"
        if self.padding_mode != "zeros":
            s += f", padding_mode={self.padding_mode}"
        if self.has_amplitude:
            s += ", amplitude=True"
        if self.learn != self._names():
            s += f", learn={self.learn}"
        if self.zero_mean:
            s += ", zero_mean=True"
        if self.backend != "auto":
            s += f", backend={self.backend!r}"
        if self.output != "real":
            s += f", output={self.output!r}"
        return s


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
    keyed on the parameters' version counters and storages, so an optimiser step,
    ``load_state_dict``, ``.to()`` or ``param.data = ...`` rebuilds it. Writes that bypass the
    version counter (in place through ``param.data``) are not seen: write under
    ``torch.no_grad()`` instead, or call ``.train()``/``.eval()``, which drop the cache.
    Half-precision parameters (``.half()``, ``.bfloat16()``) build the bank in float32 and round
    it, so only the convolution runs in half precision, as with ``nn.Conv2d.half()``.

    Args:
        in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias,
        padding_mode, device, dtype: as in :class:`torch.nn.Conv2d`.
        theta, sigma, lambd, gamma, psi: initial values (float or tensor broadcastable to
            ``(out_channels, in_channels // groups)``); ``None`` takes the classic bank
            (:func:`classic_bank`). Ranges: sigma > 0, gamma > 0, lambd > 2.
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

    Example:
        >>> conv = GaborConv2d(3, 16, 7, padding=3)
        >>> conv(torch.randn(2, 3, 32, 32)).shape
        torch.Size([2, 16, 32, 32])
        >>> conv.weight.shape, conv.theta.shape
        (torch.Size([16, 3, 7, 7]), torch.Size([16, 3]))
    """

    _dims = 2
    _gabor_names = PARAM_NAMES
    _conv_class = nn.Conv2d
    _conv = staticmethod(F.conv2d)

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0, dilation=1,
                 groups: int = 1, bias: bool = True, padding_mode: str = "zeros", device=None, dtype=None, *,
                 theta=None, sigma=None, lambd=None, gamma=None, psi=None, amplitude=None, learn="all",
                 zero_mean: bool = False, backend: str = "auto", output: str = "real"):
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias, padding_mode,
                         device, dtype, dict(theta=theta, sigma=sigma, lambd=lambd, gamma=gamma, psi=psi), amplitude,
                         learn, zero_mean, backend, output)

    def _build_bank(self, params):
        return _bank(*params, *self.kernel_size, zero_mean=self.zero_mean, backend=self.backend)

    def _half_extents(self, values, n_sigma):
        return envelope_extent(values["theta"], values["sigma"], values["gamma"], n_sigma=n_sigma)

    @property
    def gamma(self) -> torch.Tensor:
        """Spatial aspect ratio, ``(out_channels, in_channels // groups)``, always > 0."""
        return self._constrained("gamma")

    def to_conv2d(self) -> nn.Conv2d:
        """A plain ``nn.Conv2d`` holding the current bank, with the same output.

        For ``output="quadrature"`` it has ``2 * out_channels`` channels; ``"complex"`` and
        ``"magnitude"`` are not a single convolution and raise ``ValueError``.
        """
        return self._to_conv()

    @classmethod
    def from_conv2d(cls, conv: nn.Conv2d, *, amplitude: bool = True, learn="all", backend: str = "auto",
                    seed: int = 0, return_fit: bool = False):
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

        Returns:
            the GaborConv2d, on ``conv``'s device and dtype; with ``return_fit``, ``(module, fit)``.

        Example:
            >>> from gaborlayer import gabor_kernel2d
            >>> conv = nn.Conv2d(1, 2, 5, padding=2)
            >>> with torch.no_grad():
            ...     _ = conv.weight.copy_(0.3 * gabor_kernel2d(torch.tensor([0.5, 2.0]), 1.5, 4.0, 1.0, 0.0, 5)[:, None])
            >>> gabor, fit = GaborConv2d.from_conv2d(conv, return_fit=True)
            >>> bool((1 - fit.loss).min() > 0.999999), torch.allclose(gabor.weight, conv.weight, atol=1e-6)
            (True, True)
        """
        return cls._from_conv(conv, amplitude=amplitude, learn=learn, backend=backend, seed=seed,
                              return_fit=return_fit)

    @classmethod
    def _fit_slices(cls, slices, amplitude, seed):
        return fit_kernel(slices, seed=seed, amplitude=amplitude)



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
            ``(out_channels, in_channels // groups)``); ``None`` takes :func:`classic_bank1d`.
            Ranges: sigma > 0, lambd > 2.
        amplitude, learn, zero_mean, backend, output: as in :class:`GaborConv2d` (``backend``: no
            ``"triton"`` in 1-D, see :func:`~gaborlayer.functional.resolve_backend`; ``output``:
            e.g. ``"magnitude"``, the envelope of a band, as learnable audio front ends use).

    Shape:
        - Input: ``(B, C_in, L)`` or ``(C_in, L)``
        - Output: ``(B, C_out, L_out)`` or ``(C_out, L_out)``, as ``nn.Conv1d``.

    Example:
        >>> conv = GaborConv1d(1, 16, 63, padding="same")
        >>> conv(torch.randn(2, 1, 400)).shape
        torch.Size([2, 16, 400])
        >>> conv.weight.shape, conv.lambd.shape
        (torch.Size([16, 1, 63]), torch.Size([16, 1]))
    """

    _dims = 1
    _gabor_names = _checks.PARAM_NAMES_1D
    _conv_class = nn.Conv1d
    _conv = staticmethod(F.conv1d)
    _classic = staticmethod(classic_bank1d)

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0, dilation=1,
                 groups: int = 1, bias: bool = True, padding_mode: str = "zeros", device=None, dtype=None, *,
                 sigma=None, lambd=None, psi=None, amplitude=None, learn="all", zero_mean: bool = False,
                 backend: str = "auto", output: str = "real"):
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias, padding_mode,
                         device, dtype, dict(sigma=sigma, lambd=lambd, psi=psi), amplitude, learn, zero_mean, backend,
                         output)

    def _build_bank(self, params):
        return _bank1d(*params, *self.kernel_size, zero_mean=self.zero_mean, backend=self.backend)

    def _half_extents(self, values, n_sigma):
        return (n_sigma * values["sigma"],)

    def to_conv1d(self) -> nn.Conv1d:
        """A plain ``nn.Conv1d`` holding the current bank, with the same output."""
        return self._to_conv()

    @classmethod
    def from_conv1d(cls, conv: nn.Conv1d, *, amplitude: bool = True, learn="all", backend: str = "auto",
                    seed: int = 0, return_fit: bool = False):
        """A GaborConv1d with ``conv``'s configuration, its filters fitted to ``conv``'s weights.

        As :meth:`GaborConv2d.from_conv2d`, for 1-D: every slice ``conv.weight[o, i]`` is fitted
        with a gain (unless ``amplitude=False``) by the search and refinement of
        :func:`~gaborlayer.fit_kernel`, run on the slice as a ``1 x k`` kernel with ``theta = 0``
        and ``gamma = 1`` held fixed (the 2-D filter on one row is the 1-D one). The bias is
        copied; an all-zero slice gets amplitude 0.

        Args:
            conv: an ``nn.Conv1d`` with a kernel of at least 3 taps and finite weights.
            amplitude, learn, backend, seed: as in :meth:`GaborConv2d.from_conv2d`.
            return_fit: also return the :class:`~gaborlayer.GaborFit` of the ``N = out_channels *
                in_channels // groups`` slices (its ``size`` is ``(1, k)``, its ``theta`` 0 and its
                ``gamma`` 1; ``1 - fit.loss`` is the fraction of each slice explained).

        Returns:
            the GaborConv1d, on ``conv``'s device and dtype; with ``return_fit``, ``(module, fit)``.

        Example:
            >>> from gaborlayer import gabor_kernel1d
            >>> conv = nn.Conv1d(1, 2, 15, padding=7)
            >>> with torch.no_grad():
            ...     _ = conv.weight.copy_(-0.3 * gabor_kernel1d(torch.tensor([2.0, 3.0]), 5.0, 0.4, 15)[:, None])
            >>> gabor, fit = GaborConv1d.from_conv1d(conv, return_fit=True)
            >>> bool((1 - fit.loss).min() > 0.999999), torch.allclose(gabor.weight, conv.weight, atol=1e-6)
            (True, True)
        """
        return cls._from_conv(conv, amplitude=amplitude, learn=learn, backend=backend, seed=seed,
                              return_fit=return_fit)

    @classmethod
    def _fit_slices(cls, slices, amplitude, seed):
        return _fit_kernel1d(slices, amplitude=amplitude, seed=seed)


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
            ``(out_channels, in_channels // groups)``); ``None`` takes :func:`classic_bank3d`.
            Ranges: sigma > 0, gamma > 0, lambd > 2.
        amplitude, learn, zero_mean, backend, output: as in :class:`GaborConv2d` (``backend``: no
            ``"triton"`` in 3-D, see :func:`~gaborlayer.functional.resolve_backend`).

    Shape:
        - Input: ``(B, C_in, D, H, W)`` or ``(C_in, D, H, W)``
        - Output: ``(B, C_out, D_out, H_out, W_out)`` or ``(C_out, D_out, H_out, W_out)``, as ``nn.Conv3d``.

    Example:
        >>> conv = GaborConv3d(1, 8, 5, padding=2)
        >>> conv(torch.randn(2, 1, 12, 12, 12)).shape
        torch.Size([2, 8, 12, 12, 12])
        >>> conv.weight.shape, conv.phi.shape
        (torch.Size([8, 1, 5, 5, 5]), torch.Size([8, 1]))
    """

    _dims = 3
    _gabor_names = _checks.PARAM_NAMES_3D
    _conv_class = nn.Conv3d
    _conv = staticmethod(F.conv3d)
    _classic = staticmethod(classic_bank3d)

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0, dilation=1,
                 groups: int = 1, bias: bool = True, padding_mode: str = "zeros", device=None, dtype=None, *,
                 theta=None, phi=None, sigma=None, lambd=None, gamma=None, psi=None, amplitude=None, learn="all",
                 zero_mean: bool = False, backend: str = "auto", output: str = "real"):
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias, padding_mode,
                         device, dtype, dict(theta=theta, phi=phi, sigma=sigma, lambd=lambd, gamma=gamma, psi=psi),
                         amplitude, learn, zero_mean, backend, output)

    def _build_bank(self, params):
        return _bank3d(*params, *self.kernel_size, zero_mean=self.zero_mean, backend=self.backend)

    def _half_extents(self, values, n_sigma):
        along = n_sigma * values["sigma"]
        across = along / values["gamma"]
        theta, phi = values["theta"], values["phi"]
        u = (torch.sin(phi), torch.cos(phi) * torch.sin(theta), torch.cos(phi) * torch.cos(theta))  # (z, y, x)
        # the box around an ellipsoid of revolution: sqrt(along^2 u_i^2 + across^2 (1 - u_i^2)) per axis
        return tuple(torch.sqrt((along * c) ** 2 + across ** 2 * (1 - c * c).clamp_min(0)) for c in u)

    @property
    def gamma(self) -> torch.Tensor:
        """Aspect ratio (the envelope is ``sigma / gamma`` wide across the wave), always > 0."""
        return self._constrained("gamma")

    def to_conv3d(self) -> nn.Conv3d:
        """A plain ``nn.Conv3d`` holding the current bank, with the same output."""
        return self._to_conv()


def _conv_arguments(conv: nn.Module) -> dict:
    """The constructor arguments that give a Gabor layer ``conv``'s (an ``nn.ConvNd``) configuration,
    device and dtype."""
    return dict(in_channels=conv.in_channels, out_channels=conv.out_channels, kernel_size=conv.kernel_size,
                stride=conv.stride, padding=conv.padding, dilation=conv.dilation, groups=conv.groups,
                bias=conv.bias is not None, padding_mode=conv.padding_mode, device=conv.weight.device,
                dtype=conv.weight.dtype)


def replace_conv2d(model: nn.Module, which, *, fit: bool = True, **kwargs) -> dict[str, GaborConv2d]:
    """Swap chosen ``nn.Conv2d`` layers of ``model`` for GaborConv2d layers, in place.

    Args:
        model: any ``nn.Module``.
        which: the layers to swap: a qualified name (``"conv1"``, ``"features.0"``), a list of
            them, or a predicate ``(name, conv) -> bool`` called on every ``nn.Conv2d`` in
            ``model``.
        fit: ``True``: each new layer is :meth:`GaborConv2d.from_conv2d` of the old one (fitted
            to its weights, gain included); ``False``: a fresh GaborConv2d with the same
            configuration and the classic initial bank (the old bias is dropped too).
        **kwargs: passed to :meth:`GaborConv2d.from_conv2d` (``fit=True``) or to the
            constructor (``fit=False``), e.g. ``learn=`` or ``backend=``.

    Returns:
        dict mapping each swapped name to its new GaborConv2d (also reachable in ``model``).

    Example:
        >>> model = nn.Sequential(nn.Conv2d(3, 8, 5), nn.ReLU(), nn.Conv2d(8, 8, 3))
        >>> swapped = replace_conv2d(model, "0", fit=False)
        >>> type(model[0]).__name__, list(swapped)
        ('GaborConv2d', ['0'])
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    convs = {name: m for name, m in model.named_modules() if isinstance(m, nn.Conv2d)}
    if callable(which):
        chosen = [name for name, m in convs.items() if which(name, m)]
        if not chosen:
            raise ValueError(f"which matched no nn.Conv2d of the model; its nn.Conv2d layers are {list(convs)}")
    else:
        try:
            chosen = [which] if isinstance(which, str) else list(which)
        except TypeError:
            chosen = []
        if not chosen or not all(isinstance(n, str) for n in chosen):
            raise TypeError(f"which must be a layer name, a non-empty list of names or a predicate, got {which!r}")
        missing = [n for n in chosen if n not in convs]
        if missing:
            raise ValueError(f"which names {missing}, which are not nn.Conv2d layers of the model; "
                             f"its nn.Conv2d layers are {list(convs)}")
    if "" in chosen:
        raise ValueError("which names the model itself; use GaborConv2d.from_conv2d(model) for a bare nn.Conv2d")
    swapped = {}
    for name in chosen:
        conv = convs[name]
        if fit:
            new = GaborConv2d.from_conv2d(conv, **kwargs)
        else:
            new = GaborConv2d(**_conv_arguments(conv), **kwargs)
        new.train(conv.training)
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name), child, new)
        swapped[name] = new
    return swapped
