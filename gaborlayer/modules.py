"""``GaborConv2d``: a drop-in for ``nn.Conv2d`` whose kernels are Gabor filters."""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from . import _checks
from .functional import _bank, resolve_backend

PARAM_NAMES = _checks.PARAM_NAMES
LAMBD_FLOOR = 2.0  # pixels: a wavelength below 2 samples aliases (Nyquist)
_PADDING_MODES = ("zeros", "reflect", "replicate", "circular")
# Where each parameter is stored: (registered name, constrained -> stored, stored -> constrained).
# Reparameterisation rather than clamping keeps every gradient alive at the bounds.
_STORAGE = {
    "theta": ("theta", lambda v: v, lambda r: r),
    "sigma": ("log_sigma", torch.log, torch.exp),
    "lambd": ("log_lambd_excess", lambda v: torch.log(v - LAMBD_FLOOR), lambda r: LAMBD_FLOOR + torch.exp(r)),
    "gamma": ("log_gamma", torch.log, torch.exp),
    "psi": ("psi", lambda v: v, lambda r: r),
}
# Allowed initial values (lower bound, inclusive?).
_INIT_BOUNDS = {"sigma": (0.0, False), "gamma": (0.0, False), "lambd": (LAMBD_FLOOR, False)}


def classic_bank(out_channels: int, in_per_group: int, kernel_size: tuple[int, int], dtype=None, device=None) -> dict:
    """The default initial parameters: a classic multi-orientation, multi-scale bank.

    Output channel ``o`` gets orientation ``pi * (o mod n) / n`` with ``n = min(8, out_channels)``,
    phase ``0`` or ``-pi/2`` (even / odd filter) alternating every ``n`` channels, and a scale
    cycling every ``2n`` channels. Scales are spread geometrically over wavelengths from 2.5 pixels
    up to half the smaller kernel side, with ``sigma = 0.56 lambd`` (a one-octave bandwidth) and
    ``gamma = 0.5``. Every input channel of an output channel gets the same filter.

    Returns:
        dict of five tensors ``(out_channels, in_per_group)``.
    """
    o = torch.arange(out_channels, dtype=torch.float64)
    n_orient = min(8, out_channels)
    n_scales = max(1, math.ceil(out_channels / (2 * n_orient)))
    lo, hi = 2.5, max(2.5, min(kernel_size) / 2)
    scale = torch.div(o, 2 * n_orient, rounding_mode="floor") % n_scales
    lambd = lo * (hi / lo) ** (scale / max(n_scales - 1, 1))
    values = {
        "theta": math.pi * (o % n_orient) / n_orient,
        "sigma": 0.56 * lambd,
        "lambd": lambd,
        "gamma": torch.full_like(o, 0.5),
        "psi": -math.pi / 2 * (torch.div(o, n_orient, rounding_mode="floor") % 2),
    }
    return {k: v[:, None].expand(out_channels, in_per_group).to(dtype=dtype, device=device) for k, v in values.items()}


class GaborConv2d(nn.Module):
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
        learn: the parameters that learn (names, ``"all"`` or ``"none"``); the rest are buffers.
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

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0, dilation=1,
                 groups: int = 1, bias: bool = True, padding_mode: str = "zeros", device=None, dtype=None, *,
                 theta=None, sigma=None, lambd=None, gamma=None, psi=None, learn="all",
                 zero_mean: bool = False, backend: str = "auto"):
        super().__init__()
        self.in_channels = _checks.positive_int(in_channels, "in_channels")
        self.out_channels = _checks.positive_int(out_channels, "out_channels")
        self.groups = _checks.positive_int(groups, "groups")
        if in_channels % groups or out_channels % groups:
            raise ValueError(f"in_channels ({in_channels}) and out_channels ({out_channels}) must both be "
                             f"divisible by groups ({groups})")
        self.kernel_size = _checks.pair(kernel_size, "kernel_size")
        self.stride = _checks.pair(stride, "stride")
        self.dilation = _checks.pair(dilation, "dilation")
        if isinstance(padding, str):
            if padding not in ("same", "valid"):
                raise ValueError(f"padding must be 'same', 'valid' or non-negative ints, got {padding!r}")
            if padding == "same" and self.stride != (1, 1):
                raise ValueError(f"padding='same' needs stride=1, got stride={stride!r}")
            self.padding = padding
        else:
            self.padding = _checks.pair(padding, "padding", minimum=0)
        if padding_mode not in _PADDING_MODES:
            raise ValueError(f"padding_mode must be one of {_PADDING_MODES}, got {padding_mode!r}")
        self.padding_mode = padding_mode
        self._reversed_padding_repeated_twice = self._reversed_padding()
        _checks.floating_dtype(dtype)
        resolve_backend(backend)
        self.backend = backend
        self.zero_mean = bool(zero_mean)
        self.learn = _checks.names_subset(learn, "learn")

        shape = (self.out_channels, self.in_channels // self.groups)
        factory = {"device": device, "dtype": dtype if dtype is not None else torch.get_default_dtype()}
        self._init_values = self._check_init(dict(theta=theta, sigma=sigma, lambd=lambd, gamma=gamma, psi=psi), shape)
        for name in PARAM_NAMES:
            stored, _, _ = _STORAGE[name]
            tensor = torch.empty(shape, **factory)
            if name in self.learn:
                self.register_parameter(stored, nn.Parameter(tensor))
            else:
                self.register_buffer(stored, tensor)
        self.bias = nn.Parameter(torch.empty(self.out_channels, **factory)) if bias else None
        self._cache = None
        self.reset_parameters()

    # -- construction helpers -------------------------------------------------------------
    def _reversed_padding(self) -> list[int]:
        """F.pad's padding for non-zero padding modes, as nn.Conv2d computes it."""
        if self.padding == "valid":
            return [0, 0, 0, 0]
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
        """Set the five parameters to their initial values (given ones, else the classic bank) and
        the bias as ``nn.Conv2d`` does."""
        shape = (self.out_channels, self.in_channels // self.groups)
        values = {**classic_bank(*shape, self.kernel_size, dtype=torch.float64), **self._init_values}
        with torch.no_grad():
            for name in PARAM_NAMES:
                stored, to_stored, _ = _STORAGE[name]
                target = getattr(self, stored)
                target.copy_(to_stored(values[name]))
            if self.bias is not None:
                fan_in = (self.in_channels // self.groups) * self.kernel_size[0] * self.kernel_size[1]
                bound = 1 / math.sqrt(fan_in)
                nn.init.uniform_(self.bias, -bound, bound)

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

    @property
    def gamma(self) -> torch.Tensor:
        """Spatial aspect ratio, ``(out_channels, in_channels // groups)``, always > 0."""
        return self._constrained("gamma")

    def _stored(self) -> list[torch.Tensor]:
        return [getattr(self, _STORAGE[n][0]) for n in PARAM_NAMES]

    def _build_weight(self) -> torch.Tensor:
        stored = self._stored()
        # Half precision cannot hold the phase 2 pi x'/lambd (one bf16 ulp at 20 rad is 0.06 rad):
        # build in float32 and round the bank, as a half nn.Conv2d holds a rounded weight.
        compute = torch.promote_types(stored[0].dtype, torch.float32)
        params = [_STORAGE[n][2](t.to(compute)) for n, t in zip(PARAM_NAMES, stored)]
        bank = _bank(*params, *self.kernel_size, zero_mean=self.zero_mean, backend=self.backend)
        return bank.to(stored[0].dtype)

    def _cacheable(self, stored: list[torch.Tensor]) -> bool:
        """Whether the bank may come from the cache: eval mode, no graph to build, plain tensors."""
        if self.training or torch.compiler.is_compiling() or torch._C._are_functorch_transforms_active():
            return False  # functorch's wrapped tensors (vmap, grad) have no storage to key on
        if torch.is_grad_enabled() and any(t.requires_grad for t in stored):
            return False
        return not any(t.is_inference() for t in stored)  # inference tensors have no version counter

    @property
    def weight(self) -> torch.Tensor:
        """The Gabor bank ``(out_channels, in_channels // groups, kh, kw)``, as ``nn.Conv2d.weight``."""
        stored = self._stored()
        if not self._cacheable(stored):
            return self._build_weight()
        key = [(t.data_ptr(), t._version, t.dtype, t.device, t.shape, t.stride()) for t in stored]
        key.append((self.kernel_size, self.zero_mean, self.backend))
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
        return super().train(mode)

    # -- forward ---------------------------------------------------------------------------
    def _conv_forward(self, input: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        if self.padding_mode != "zeros":
            return F.conv2d(F.pad(input, self._reversed_padding_repeated_twice, mode=self.padding_mode),
                            weight, bias, self.stride, 0, self.dilation, self.groups)
        return F.conv2d(input, weight, bias, self.stride, self.padding, self.dilation, self.groups)

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(input, self.weight, self.bias)

    # -- interop ---------------------------------------------------------------------------
    def to_conv2d(self) -> nn.Conv2d:
        """A plain ``nn.Conv2d`` holding the current bank, with the same output."""
        weight = self.weight.detach()
        conv = nn.Conv2d(self.in_channels, self.out_channels, self.kernel_size, self.stride, self.padding,
                         self.dilation, self.groups, self.bias is not None, self.padding_mode,
                         device=weight.device, dtype=weight.dtype)
        with torch.no_grad():
            conv.weight.copy_(weight)
            if self.bias is not None:
                conv.bias.copy_(self.bias)
        return conv

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_cache"] = None
        return state

    def extra_repr(self) -> str:
        s = f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}"
        # The nn.Conv2d part is formatted exactly as nn.Conv2d formats it (strings unquoted).
        if self.padding != (0, 0):
            s += f", padding={self.padding}"
        if self.dilation != (1, 1):
            s += f", dilation={self.dilation}"
        if self.groups != 1:
            s += f", groups={self.groups}"
        if self.bias is None:
            s += ", bias=False"
        if self.padding_mode != "zeros":
            s += f", padding_mode={self.padding_mode}"
        if self.learn != PARAM_NAMES:
            s += f", learn={self.learn}"
        if self.zero_mean:
            s += ", zero_mean=True"
        if self.backend != "auto":
            s += f", backend={self.backend!r}"
        return s
