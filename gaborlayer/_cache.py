"""The eval-mode bank cache of a Gabor layer.

In eval mode, when no graph is being built, a layer's bank depends only on its stored parameter
tensors and its configuration; the cache keeps the last bank and the key it was built for: each
tensor's storage, version counter, dtype, device, shape and strides, plus the configuration.
An optimiser step, ``load_state_dict``, ``.to()`` or ``param.data = ...`` changes the key.
"""
from __future__ import annotations

from typing import Callable

import torch

from ._compat import functorch_active, version_counter


def cacheable(training: bool, stored: list[torch.Tensor]) -> bool:
    """Whether a bank built from ``stored`` may come from the cache: eval mode, no graph to
    build, plain tensors."""
    if training or torch.compiler.is_compiling() or functorch_active():
        return False  # functorch's wrapped tensors (vmap, grad) have no storage to key on
    if torch.is_grad_enabled() and any(t.requires_grad for t in stored):
        return False
    # inference tensors have no version counter
    return not any(t.is_inference() or version_counter(t) is None for t in stored)


class BankCache:
    """One cached bank and its key. ``get`` reads the entry once, so a concurrent ``clear`` (a
    ``model.eval()`` in another thread) can only cost a rebuild, never a missing entry."""

    def __init__(self) -> None:
        self._entry: tuple | None = None

    def clear(self) -> None:
        self._entry = None

    def get(self, stored: list[torch.Tensor], config: tuple, build: Callable[[], torch.Tensor]) -> torch.Tensor:
        """The bank for ``stored`` and ``config``: the cached one if the key matches, else ``build()``."""
        key = [(t.data_ptr(), version_counter(t), t.dtype, t.device, t.shape, t.stride()) for t in stored]
        key.append(config)
        entry = self._entry
        if entry is None or entry[0] != key:
            # Not an inference tensor, so the bank can also serve a later forward that needs grad
            # for the input only. (In this order: inference_mode(False) turns grad mode back on.)
            with torch.inference_mode(False), torch.no_grad():
                # The detached aliases keep the keyed storages alive, so no new tensor can be
                # allocated at a cached data_ptr (a param.data = ... or functional_call would).
                entry = (key, build(), [t.detach() for t in stored])
            self._entry = entry
        return entry[1]
