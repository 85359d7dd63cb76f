"""A Gabor layer's ``.weight``: built from the stored parameters, cached in eval mode, and guarded.

:func:`gabor_weight` builds the bank from the stored tensors and plain constants (so
``torch.fx.symbolic_trace`` records it as one node). :class:`WeightFromParameters`, a base of
``_GaborConvNd``, gives the layer its ``.weight`` (a tensor of its own per read), the bank its
``forward`` uses (cached in eval mode), and clear errors where tools treat ``.weight`` as a free
parameter: assignment (``fuse_conv_bn_eval``), writes in place (``nn.init``), pruning and
``torch.jit.script``.
"""
from __future__ import annotations

import torch
import torch.fx

from . import _autograd, _cpu_kernels, _storage
from ._cache import cacheable
from ._compat import forward_ad_active, fx_tracing
from ._family import FAMILIES
from .functional import _bank, _quadrature_params


def gabor_weight(dims: int, names: tuple[str, ...], kernel_size: tuple[int, ...], groups: int, output: str,
                 zero_mean: bool, backend: str, memory_format: str | None, *stored: torch.Tensor) -> torch.Tensor:
    """A layer's ``.weight`` from its stored parameters (in ``names`` order) and configuration.

    Every argument but the tensors is a plain constant, so ``torch.fx.symbolic_trace`` records this
    function as one node (``torch.fx.wrap`` below) instead of tracing through the bank builder.
    """
    family = FAMILIES[dims]
    dtype = stored[0].dtype
    if dims == 2 and output == "real" and not zero_mean and backend in ("auto", "torch") \
            and _cpu_kernels.eager_cpu(*stored) and not forward_ad_active():  # ("auto" is "torch" on CPU)
        # The eager CPU bank: one compiled call from the stored tensors, which it reads through their
        # constraints itself; in training through the moment Function (no autograd node per
        # transform or reshape), in eval straight, so that the two banks are the same to the bit.
        if torch.is_grad_enabled() and any(t.requires_grad for t in stored):
            bank = _autograd._GaborKernel2dMoments.apply(*stored[:5], *kernel_size, True)
        else:
            bank = _cpu_kernels.bank2d(stored[:5], *kernel_size, stored=True)[0]
        if len(stored) > 5:  # amplitude
            bank = bank * stored[5][..., None, None]
        return bank if memory_format is None else bank.contiguous(memory_format=getattr(torch, memory_format))
    # Half precision cannot hold the phase 2 pi x'/lambd (one bf16 ulp at 20 rad is 0.06 rad):
    # build in float32 and round the bank, as a half nn.ConvNd holds a rounded weight.
    compute = torch.promote_types(dtype, torch.float32)
    params = {name: _storage.STORAGE[name].from_stored(t.to(compute)) for name, t in zip(names, stored)}
    if output != "real":
        params = _quadrature_params(params, groups)
    amplitude = params.pop("amplitude", None)
    bank = _bank(family, params, kernel_size, zero_mean=zero_mean, backend=backend)
    if amplitude is not None:
        bank = bank * amplitude.reshape(*amplitude.shape, *(1,) * dims)
    bank = bank.reshape(-1, *bank.shape[-(dims + 1):]).to(dtype)
    return bank if memory_format is None else bank.contiguous(memory_format=getattr(torch, memory_format))


torch.fx.wrap("gabor_weight")

_WEIGHT_IS_BUILT = ("{name}.weight is built from its Gabor parameters ({params}); {what}. Set the filters "
                    "through the parameters (the constructor's theta=, sigma=, ...; writes to them under "
                    "torch.no_grad()), or take a plain, free convolution with to_conv{dims}d()")


class WeightFromParameters:
    """``.weight`` and the bank ``forward`` uses, for a layer with ``_family``, ``_names()``, the conv
    configuration, ``_cache``, ``_write_guard`` and ``_memory_format`` (see ``_GaborConvNd``)."""

    def _build_weight(self, stored: list[torch.Tensor]) -> torch.Tensor:
        layout = None if self._memory_format is None else str(self._memory_format).rpartition(".")[2]
        return gabor_weight(self._family.dims, self._names(), self.kernel_size, self.groups, self.output,
                            self.zero_mean, self.backend, layout, *stored)

    def _weight_is_built(self, what: str) -> str:
        """The message of every refused write to ``.weight``: ``what`` was refused, and how to set filters."""
        return _WEIGHT_IS_BUILT.format(name=type(self).__name__, params=", ".join(self._names()),
                                       dims=self._family.dims, what=what)

    def _forward_weight(self) -> tuple[torch.Tensor, str]:
        """The bank forward convolves with, and where it comes from: ``"traced"`` (fx or
        torch.compile: no cache, no bookkeeping on proxies), ``"cached"`` (the cache's own, never
        handed out) or ``"built"``."""
        stored = _storage.stored(self, self._names())
        if fx_tracing() or torch.compiler.is_compiling():
            return self._build_weight(stored), "traced"
        if self._write_guard.written():
            raise RuntimeError(self._weight_is_built(
                "it was written in place (e.g. by torch.nn.init or weight.mul_()), which cannot change "
                "what forward computes, so the write is refused"))
        if cacheable(self.training, stored):
            config = (self.kernel_size, self.zero_mean, self.backend, self.output, self._memory_format)
            return self._cache.get(stored, config, lambda: self._build_weight(stored)), "cached"
        return self._build_weight(stored), "built"

    @property
    def weight(self) -> torch.Tensor:
        """The Gabor bank ``(out_channels, in_channels // groups, *kernel_size)``, as the
        ``nn.ConvNd``'s ``weight`` (``2 * out_channels`` filters for the quadrature-pair outputs:
        even then odd, within each group's block when ``groups > 1``).

        Each read gives a tensor of its own (in eval mode a copy of the cached bank), built from the
        Gabor parameters: nothing done to it reaches what ``forward`` computes. So that no write
        is silently lost, assigning ``.weight`` raises, and a write into it in place
        (``nn.init.*``, ``weight.mul_()``) raises at the layer's next read or forward."""
        bank, source = self._forward_weight()
        if source == "traced":
            return bank
        return self._write_guard.hand_out(bank.clone() if source == "cached" else bank)

    def __setattr__(self, name: str, value) -> None:
        if name == "weight":
            raise AttributeError(self._weight_is_built(
                "it cannot be assigned (for batch-norm fusion: "
                f"torch.nn.utils.fuse_conv_bn_eval(layer.to_conv{self._family.dims}d(), bn))"))
        super().__setattr__(name, value)

    def register_parameter(self, name: str, param) -> None:
        if name.startswith("weight"):  # torch.nn.utils.prune registers weight_orig, parametrize likewise
            raise RuntimeError(self._weight_is_built(
                f"it cannot be pruned or re-parametrised as a free weight (torch.nn.utils.prune, "
                f"parametrize) under the name {name!r}; prune the plain conv of to_conv{self._family.dims}d()"))
        super().register_parameter(name, param)

    def __prepare_scriptable__(self):
        raise RuntimeError(f"{type(self).__name__} cannot be compiled by torch.jit.script (its bank builder "
                           f"is Python: autograd Functions, keyword arguments, dicts). Use torch.jit.trace "
                           f"(eval mode), torch.compile or torch.export instead, or script the plain conv of "
                           f"to_conv{self._family.dims}d()")
