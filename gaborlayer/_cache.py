"""The eval-mode bank cache of a Gabor layer, and the guard on writes to the bank it hands out.

In eval mode, when no graph is being built, a layer's bank depends only on the values of its
stored parameter tensors and its configuration. The cache keeps the last bank with a copy of the
values it was built from, and serves it while the current values are equal to that copy. Equality
of values, not a version counter, is the key: fused optimizers (``Adam(fused=True)``, ...) and
``param.data`` writes change values without bumping any counter. Comparing a few small parameter
tensors costs far less than the convolution the bank feeds: on a CPU one compiled call
(``_cpu_kernels.equality_check``), on a GPU one synchronisation per tensor.
"""
from __future__ import annotations

from typing import Callable

import torch

from . import _cpu_kernels
from ._compat import functorch_active, version_counter


def cacheable(training: bool, stored: list[torch.Tensor]) -> bool:
    """Whether a bank built from ``stored`` may come from the cache: eval mode, no graph to
    build, no tracer recording (``torch.jit.trace`` must see the same ops on every call), plain
    tensors."""
    if training or torch.compiler.is_compiling() or torch.jit.is_tracing() or functorch_active():
        return False  # functorch's wrapped tensors (vmap, grad) have no values to compare
    graph = torch.is_grad_enabled()
    return not any((graph and t.requires_grad) or t.is_inference() for t in stored)


class BankCache:
    """One cached bank, the values it was built from and the configuration, held as one immutable
    entry: ``get`` reads the entry once, so a concurrent ``clear`` (a ``model.eval()`` in another
    thread) can only cost a rebuild, never a missing or mismatched entry."""

    def __init__(self) -> None:
        self._entry: tuple | None = None

    def clear(self) -> None:
        self._entry = None

    def get(self, stored: list[torch.Tensor], config: tuple, build: Callable[[], torch.Tensor]) -> torch.Tensor:
        """The bank for the values of ``stored`` and ``config``: the cached one if they are equal to
        those it was built from, else ``build()``."""
        key = (config, [(type(t), t.dtype, t.device, t.shape, t.stride()) for t in stored])
        entry = self._entry
        if entry is not None and entry[0] == key and entry[1](stored):
            return entry[2]
        # Not an inference tensor, so the bank can also serve a later forward that needs grad
        # for the input only. (In this order: inference_mode(False) turns grad mode back on.)
        with torch.inference_mode(False), torch.no_grad():
            entry = (key, _cpu_kernels.equality_check([t.detach().clone() for t in stored]), build())
        self._entry = entry
        return entry[2]


class WriteGuard:
    """Notices a write into the bank a layer handed out as ``.weight``: the bank is built from the
    Gabor parameters, so ``nn.init.*(layer.weight)`` or ``layer.weight.mul_(0)`` could only change a
    copy (or the cached bank) and never what the parameters say. The write bumps the bank's version
    counter; the layer checks it at its next ``.weight`` read or forward and raises."""

    def __init__(self) -> None:
        self._handed: tuple | None = None

    def hand_out(self, bank: torch.Tensor) -> torch.Tensor:
        version = version_counter(bank)
        # A detached alias shares the bank's version counter without holding its autograd graph.
        self._handed = None if version is None else (bank.detach(), version)
        return bank

    def written(self) -> bool:
        """Whether the bank handed out last was written in place since (then forgets it)."""
        handed = self._handed
        if handed is None or version_counter(handed[0]) == handed[1]:
            return False
        self._handed = None
        return True
