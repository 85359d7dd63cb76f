"""Conversion between Gabor layers and plain convolutions: fit a trained ``nn.ConvNd``
(:meth:`GaborConv2d.from_conv2d <gaborlayer.GaborConv2d.from_conv2d>`, ``from_conv1d``), hold a
layer's bank in a plain one (``to_conv1d/2d/3d``), and swap layers of a model
(:func:`replace_conv2d`). It sits above the layers and fitting: the layers import it when a
conversion is asked for, so ``import gaborlayer`` does not load the fitting machinery.
"""
from __future__ import annotations

import logging
import warnings
from typing import TYPE_CHECKING, Any

import torch
import torch.nn as nn

from . import _checks
from ._compat import register_default_fusers
from ._family import GABOR_2D
from .fit import POOR_FIT, GaborFit, GaborFitWarning
from .functional import _pair_bias
from .modules import GaborConv1d, GaborConv2d, GaborConv3d

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

__all__ = ["FUSER_METHODS", "GaborFitWarning", "fuse_conv_bn", "replace_conv2d"]


def conv_arguments(conv: nn.Module) -> dict:
    """The constructor arguments that give a Gabor layer ``conv``'s (an ``nn.ConvNd``) configuration,
    device and dtype."""
    return dict(in_channels=conv.in_channels, out_channels=conv.out_channels, kernel_size=conv.kernel_size,
                stride=conv.stride, padding=conv.padding, dilation=conv.dilation, groups=conv.groups,
                bias=conv.bias is not None, padding_mode=conv.padding_mode, device=conv.weight.device,
                dtype=conv.weight.dtype)


def to_conv(layer) -> nn.Module:
    """A plain ``nn.ConvNd`` holding ``layer``'s current bank, with the same output."""
    family = layer._family
    if layer.output not in ("real", "quadrature"):
        raise ValueError(f"to_conv{family.dims}d needs output='real' or 'quadrature' (one convolution), got "
                         f"output={layer.output!r}; its quadrature pair is {type(layer).__name__}(..., "
                         f"output='quadrature')")
    weight = layer.weight.detach()
    bias = _pair_bias(layer.bias, layer.output, layer.groups)
    conv = family.conv_class(layer.in_channels, weight.shape[0], layer.kernel_size, layer.stride, layer.padding,
                             layer.dilation, layer.groups, layer.bias is not None, layer.padding_mode,
                             device=weight.device, dtype=weight.dtype)
    with torch.no_grad():
        conv.weight.copy_(weight)
        if bias is not None:
            conv.bias.copy_(bias)
    conv.train(layer.training)
    return conv if layer._memory_format is None else conv.to(memory_format=layer._memory_format)


def _checked_slices(family, conv: nn.Module) -> torch.Tensor:
    """``conv.weight`` as float64 CPU slices ``(out_channels * in_channels // groups, *kernel_size)``."""
    kind = family.conv_class.__name__
    if not isinstance(conv, family.conv_class):
        raise TypeError(f"conv must be an nn.{kind}, got {type(conv).__name__}")
    if isinstance(conv, nn.modules.lazy.LazyModuleMixin) and conv.has_uninitialized_params():
        raise ValueError(f"conv is a lazy nn.{kind} whose weight is not initialised yet: run a forward first")
    weight = conv.weight.detach()
    size = tuple(weight.shape[2:])
    if min(size) < 3:
        raise ValueError(f"conv.kernel_size must be at least {(3,) * family.dims} to fit Gabor filters, got {size}")
    _checks.finite(weight, "conv.weight")
    return weight.reshape(-1, *size).to("cpu", torch.float64)


def _zero_slice_record(values: dict, index: int) -> dict:
    """The one-entry optimisation record of an all-zero slice (amplitude 0, nothing fitted)."""
    record = {name: values[name][index:index + 1].clone() for name in (*GABOR_2D.names, "loss")}
    return {**record, "origin": "zero"}


def from_conv(cls, conv: nn.Module, *, amplitude: bool, learn, backend: str, seed: int, return_fit: bool,
              progress: bool = True):
    """``from_conv1d`` / ``from_conv2d``: the layer with ``conv``'s configuration, its filters fitted
    to ``conv.weight`` by the family's ``fit_slices`` (all slices in one batched fit, with a progress
    bar on a terminal after two seconds unless ``progress=False``), its bias copied."""
    family = cls._family
    amplitude = _checks.boolean(amplitude, "amplitude")
    return_fit = _checks.boolean(return_fit, "return_fit")
    progress = _checks.boolean(progress, "progress")
    slices = _checked_slices(family, conv)
    out_c, in_per_group = conv.weight.shape[:2]
    n = len(slices)
    nonzero = slices.flatten(1).abs().amax(dim=1) > 0  # (a square could underflow for a tiny slice)
    if not amplitude and not bool(nonzero.all()):
        o, i = divmod(int(torch.nonzero(~nonzero)[0]), in_per_group)
        raise ValueError(f"conv.weight[{o}, {i}] is all zeros ({int((~nonzero).sum())} of {n} slices are): with "
                         f"amplitude=False every Gabor filter peaks at 1, so none can be zero; use amplitude=True "
                         f"(an all-zero slice then gets amplitude 0)")
    classic = family.classic(out_c, in_per_group, tuple(slices.shape[1:]), dtype=torch.float64)
    # 1-D filters are fitted as 1 x k kernels with theta = 0 and gamma = 1 (see fit._fit_kernel1d).
    values = {"theta": torch.zeros(n, dtype=torch.float64), "gamma": torch.ones(n, dtype=torch.float64),
              **{k: v.reshape(-1).clone() for k, v in classic.items()},
              "amplitude": torch.zeros(n, dtype=torch.float64), "loss": torch.zeros(n, dtype=torch.float64)}
    fit = family.fit_slices(slices[nonzero], amplitude, seed, progress) if bool(nonzero.any()) else None
    if fit is not None:
        for name in (*GABOR_2D.names, "amplitude", "loss"):
            values[name][nonzero] = getattr(fit, name)
    # The fit allows lambd = 2 exactly (the Nyquist pattern); the module's lambd is > 2.
    values["lambd"] = values["lambd"].clamp_min(_checks.LAMBD_FLOOR * (1 + 1e-6))
    init = {name: values[name].reshape(out_c, in_per_group) for name in family.names}
    module = cls(**conv_arguments(conv), **init, amplitude=values["amplitude"].reshape(out_c, in_per_group)
                 if amplitude else None, learn=learn, backend=backend)
    if conv.bias is not None:
        with torch.no_grad():
            module.bias.copy_(conv.bias)
    if not return_fit:
        return module
    return module, _slice_report(values, nonzero, fit, slices, amplitude)


def _slice_report(values: dict, nonzero: torch.Tensor, fit: GaborFit | None, slices: torch.Tensor,
                  amplitude: bool) -> GaborFit:
    """The :class:`GaborFit` of every slice in row-major order, all-zero ones included."""
    fitted = iter(range(int(nonzero.sum())))
    history, starts = [], []
    for index, is_fitted in enumerate(nonzero.tolist()):
        if is_fitted:
            j = next(fitted)
            history.append(fit.history[j])
            starts.append(fit.starts[j])
        else:
            history.append(_zero_slice_record(values, index))
            starts.append([history[-1]])
    size = tuple(slices.shape[1:])
    return GaborFit(*(values[k] for k in (*GABOR_2D.names, "loss")), size=(1,) * (2 - len(size)) + size,
                    amplitude=values["amplitude"] if amplitude else torch.ones(len(slices), dtype=torch.float64),
                    history=history, starts=starts, seconds=fit.seconds if fit is not None else 0.0)


def fuse_conv_bn(is_qat: bool, conv: GaborConv1d | GaborConv2d | GaborConv3d,
                 bn: nn.BatchNorm1d | nn.BatchNorm2d | nn.BatchNorm3d) -> nn.Module:
    """A Gabor layer and the batch norm after it, fused into one plain ``nn.ConvNd`` (eval mode):
    the fuser method of :data:`FUSER_METHODS` for ``torch.ao.quantization.fuse_modules``.

    Examples:
        >>> model = nn.Sequential(GaborConv2d(3, 8, 5), nn.BatchNorm2d(8)).eval()
        >>> fused = torch.ao.quantization.fuse_modules(model, [["0", "1"]])
        >>> type(fused[0]).__name__, type(fused[1]).__name__
        ('Conv2d', 'Identity')
    """
    if is_qat or conv.training or bn.training:
        raise NotImplementedError(f"fusing a {type(conv).__name__} with batch norm needs both in eval mode "
                                  f"(no quantization-aware training): fuse_modules(model.eval(), ...)")
    return torch.nn.utils.fuse_conv_bn_eval(to_conv(conv), bn)


#: Gabor layers and their batch norms for ``torch.ao.quantization.fuse_modules``. They are added to
#: its defaults when gaborlayer is imported, so ``fuse_modules(model.eval(), [["conv", "bn"]])``
#: works; ``fuse_custom_config_dict={"additional_fuser_method_mapping": FUSER_METHODS}`` does the same
#: explicitly (for a torch whose private default table has moved).
FUSER_METHODS = {(GaborConv1d, nn.BatchNorm1d): fuse_conv_bn, (GaborConv2d, nn.BatchNorm2d): fuse_conv_bn,
                 (GaborConv3d, nn.BatchNorm3d): fuse_conv_bn}
register_default_fusers(FUSER_METHODS)


# GaborFitWarning and POOR_FIT live in gaborlayer.fit (fit_kernel and fit_response warn too):
# replace_conv2d(fit=True) warns when the fitted filters explain less than POOR_FIT of a layer's
# weights' energy (median over its slices): the swapped model then computes something else.
_log = logging.getLogger("gaborlayer")


def _conv2d_places(model: nn.Module) -> dict[str, nn.Conv2d]:
    """Every name under which an ``nn.Conv2d`` (or subclass) is reachable, shared modules under each."""
    return {name: m for name, m in model.named_modules(remove_duplicate=False) if isinstance(m, nn.Conv2d)}


def _chosen_names(which, convs: dict) -> list[str]:
    if callable(which):
        chosen = [name for name, m in convs.items() if which(name, m)]
        if not chosen:
            raise ValueError(f"which matched no nn.Conv2d of the model; its nn.Conv2d layers are {list(convs)}")
        return chosen
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
    return chosen


def _check_replaceable(name: str, conv: nn.Conv2d, allow_subclasses: bool) -> None:
    if isinstance(conv, nn.modules.lazy.LazyModuleMixin) and conv.has_uninitialized_params():
        raise ValueError(f"layer {name!r} is a lazy nn.Conv2d whose weight is not initialised yet: run a forward "
                         f"through the model first")
    if type(conv) is not nn.Conv2d and not allow_subclasses:
        raise TypeError(f"layer {name!r} is a {type(conv).__module__}.{type(conv).__qualname__}, a subclass of "
                        f"nn.Conv2d whose own forward (weight standardisation, fake quantisation, ...) a "
                        f"GaborConv2d would drop; pass allow_subclasses=True to swap it anyway")


def _fitted(name: str, conv: nn.Conv2d, kwargs: dict, progress: bool):
    new, fit = GaborConv2d.from_conv2d(conv, return_fit=True, progress=progress, **kwargs)
    explained = 1 - fit.loss
    median = float(explained.median())
    _log.info("replace_conv2d: %r fitted, the Gabor filters explain %.1f%% of the weights' energy "
              "(median over %d slices; min %.1f%%)", name, 100 * median, explained.numel(),
              100 * float(explained.min()))
    if median < POOR_FIT:
        warnings.warn(f"replace_conv2d: the Gabor filters fitted to layer {name!r} explain a median "
                      f"{100 * median:.1f}% of its weights' energy (min {100 * float(explained.min()):.1f}%), "
                      f"so the swapped model computes something else; fine-tune it, or use fit=False for the "
                      f"classic bank", GaborFitWarning, stacklevel=3)
    return new, fit


def replace_conv2d(model: nn.Module, which: str | Sequence[str] | Callable[[str, nn.Conv2d], bool], *,
                   fit: bool = False, allow_subclasses: bool = False, return_fit: bool = False,
                   progress: bool = True, **kwargs: Any
                   ) -> dict[str, GaborConv2d] | tuple[dict[str, GaborConv2d], dict[str, GaborFit]]:
    """Swap chosen ``nn.Conv2d`` layers of ``model`` for GaborConv2d layers, in place.

    A layer used in several places (the same module object) is replaced by one new GaborConv2d in
    every place, so the parameters stay shared.

    Args:
        model: any ``nn.Module``.
        which: the layers to swap: a qualified name (``"conv1"``, ``"features.0"``), a list of
            them, or a predicate ``(name, conv) -> bool`` called on every ``nn.Conv2d`` in
            ``model`` (under each name it is reachable by).
        fit: ``False`` (default): a fresh GaborConv2d with the same configuration and the classic
            initial bank (instant; the old weights and bias are dropped). ``True``: each new layer is
            :meth:`GaborConv2d.from_conv2d` of the old one (fitted to its weights, gain included),
            all of a layer's slices fitted in one batch (a few milliseconds per slice); the share of
            each layer's weights' energy the fit explains is logged (logger ``"gaborlayer"``, INFO), and a
            :class:`GaborFitWarning` says when it is below ``POOR_FIT`` (50%).
        allow_subclasses: swap subclasses of ``nn.Conv2d`` too (their own ``forward`` is dropped);
            by default they are refused with a ``TypeError``.
        return_fit: with ``fit=True``, also return ``{name: GaborFit}`` (see ``from_conv2d``).
        progress: with ``fit=True``, a progress bar per layer (tqdm, on stderr) for fits longer
            than two seconds, never when stderr is not a terminal; ``False``: none.
        **kwargs: passed to :meth:`GaborConv2d.from_conv2d` (``fit=True``) or to the
            constructor (``fit=False``), e.g. ``learn=`` or ``backend=``.

    Returns:
        dict mapping each swapped name to its new GaborConv2d (also reachable in ``model``); with
        ``return_fit``, ``(swapped, fits)``.

    Examples:
        >>> conv = nn.Conv2d(8, 8, 3)
        >>> model = nn.Sequential(nn.Conv2d(3, 8, 5), nn.ReLU(), conv, nn.ReLU(), conv)
        >>> swapped = replace_conv2d(model, ["0", "2"])
        >>> type(model[0]).__name__, list(swapped), model[2] is model[4]
        ('GaborConv2d', ['0', '2'], True)
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    fit = _checks.boolean(fit, "fit")
    allow_subclasses = _checks.boolean(allow_subclasses, "allow_subclasses")
    return_fit = _checks.boolean(return_fit, "return_fit")
    progress = _checks.boolean(progress, "progress")
    convs = _conv2d_places(model)
    chosen = _chosen_names(which, convs)
    new_for, swapped, fits = {}, {}, {}
    for name in chosen:
        conv = convs[name]
        if id(conv) not in new_for:
            _check_replaceable(name, conv, allow_subclasses)
            if fit:
                new_for[id(conv)], fits[name] = _fitted(name, conv, kwargs, progress)
            else:
                new_for[id(conv)] = GaborConv2d(**conv_arguments(conv), **kwargs)
            new_for[id(conv)].train(conv.training)
        swapped[name] = new_for[id(conv)]
    for place, conv in convs.items():  # every place of every swapped module, aliases included
        if id(conv) in new_for:
            parent_name, _, child = place.rpartition(".")
            setattr(model.get_submodule(parent_name), child, new_for[id(conv)])
    return (swapped, fits) if return_fit else swapped
