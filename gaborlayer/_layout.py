"""Which memory layout a ``Module._apply`` function asks for, found with two probe tensors.

``model.to(memory_format=torch.channels_last)`` converts the 4-D (5-D) tensors a module holds; a
Gabor layer holds none, so it asks the function what it would do to one.
"""
from __future__ import annotations

import torch


def requested_memory_format(fn, like: torch.Tensor, layout: torch.memory_format, dims: int,
                            current: torch.memory_format | None) -> torch.memory_format | None:
    """The layout after ``fn``: ``layout`` if ``fn`` turns a contiguous probe (rank ``dims + 2``)
    into ``layout``, ``None`` if it turns a ``layout`` probe contiguous, else ``current``."""
    shape = (1, 2) + (2,) * dims
    try:
        plain = fn(torch.empty(shape, dtype=like.dtype, device=like.device))
        last = fn(torch.empty(shape, dtype=like.dtype, device=like.device).contiguous(memory_format=layout))
    except Exception:  # noqa: BLE001 - a fn that takes only parameters: the layout stays as it was
        return current
    if not (isinstance(plain, torch.Tensor) and isinstance(last, torch.Tensor) and plain.shape == shape
            and last.shape == shape):
        return current
    if not plain.is_contiguous() and plain.is_contiguous(memory_format=layout):
        return layout
    if last.is_contiguous():
        return None
    return current
