"""The eager CPU kernels of the 2-D bank: the bank and its moment gradients, each one loop compiled by
numba (the loops are in ``gaborlayer._cpu_loops``; this module decides where they run and calls them),
and the eval-mode cache's check of a layer's parameters (:func:`equality_check`).

On a CPU a small layer's bank is a few dozen elementwise passes over ~10^4 numbers, so each
operation's fixed cost, not its arithmetic, sets the speed, and inside a training step every call
into a library also pays for its code and data coming back into the CPU's caches (tens of
microseconds each after the convolution's step: docs/benchmarks.md, "Fifth pass" and "Sixth pass").
So where :func:`eligible` holds (plain CPU tensors, float32 or float64, no tracer, compiler or
functorch transform running, no autograd graph to record, numba importable) the 2-D Functions of
``gaborlayer._autograd`` build the bank with one compiled call: the plain Function's forward and
the moment Function alike, and a layer's bank in training and in eval, straight from its stored
parameters, so the two are the same to the bit. Everywhere else the PyTorch formula
(``_autograd._bank_terms2d``) runs. The loops read and write tensors that torch allocated, at their
addresses, so the results are ordinary, resizable torch tensors. A large bank is built and
differentiated in one chunk of filters per thread of torch's (the compiled loops release the GIL).
"""
from __future__ import annotations

import functools
import math
import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from types import ModuleType
from typing import Callable, Sequence

import numpy as np
import torch

from ._compat import functorch_active, fx_tracing

PARALLEL_ELEMENTS = 1 << 18  # taps; below it one thread builds the bank (see _filter_chunks)


@functools.cache
def loops() -> ModuleType | None:
    """The compiled loops (``gaborlayer._cpu_loops``), or ``None`` where numba cannot be imported:
    then the PyTorch formula builds every bank and the 2-D Function keeps its plain backward."""
    try:
        from . import _cpu_loops
    except ImportError:
        return None
    except RuntimeError as error:  # numba found no writable place for its cache of compiled loops
        warnings.warn(f"gaborlayer: the compiled CPU loops are off ({error}); set NUMBA_CACHE_DIR to a "
                      f"writable directory to turn them on", RuntimeWarning, stacklevel=2)
        return None
    return _cpu_loops


def eager_cpu(*tensors: torch.Tensor) -> bool:
    """Whether the compiled kernels may read ``tensors``: plain CPU tensors of float32 or float64,
    outside ``torch.compile``, ``torch.jit.trace``, ``torch.fx`` tracing and functorch transforms
    (which must see torch operations), with numba importable. The moment Function
    (``_autograd.moments_pay``) and the layers ask this too."""
    first = tensors[0]
    if first.device.type != "cpu" or first.dtype not in (torch.float32, torch.float64):
        return False
    if any(type(t) not in (torch.Tensor, torch.nn.Parameter) for t in tensors):
        return False  # fake tensors, tensor subclasses
    if torch.compiler.is_compiling() or torch.jit.is_tracing() or fx_tracing() or functorch_active():
        return False
    return loops() is not None


def eligible(*tensors: torch.Tensor) -> bool:
    """Whether the compiled kernels may build a bank from ``tensors`` (:func:`eager_cpu`) with no
    autograd graph to record through them."""
    return not (torch.is_grad_enabled() and any(t.requires_grad for t in tensors)) and eager_cpu(*tensors)


def _filter_chunks(filters: int, taps: int, threads: int) -> list[slice]:
    """The filters in one chunk, or, for a bank of at least ``PARALLEL_ELEMENTS`` taps, in one chunk
    per thread (:func:`_over_filters`), each a multiple of 64 filters but the last. (Each loop runs its
    chunk in blocks that keep its temporaries in the CPU's cache; a multiple of 64 keeps every block
    but the last free of the scalar tails of vectorised loops.) Below 2^18 taps a second thread cost
    more than it gave inside a training step (right after the convolution, whose threads are still
    spinning: 64->64 k3, 36,864 taps, 2 threads, step / nn.Conv2d 1.152 split against 1.115 not)."""
    if threads <= 1 or filters * taps < PARALLEL_ELEMENTS:
        return [slice(0, filters)]
    per_thread = math.ceil(filters / threads)
    step = math.ceil(per_thread / 64) * 64
    return [slice(start, min(start + step, filters)) for start in range(0, filters, step)]


_pool: tuple[int, ThreadPoolExecutor] | None = None


def _forget_pool() -> None:
    global _pool
    _pool = None


os.register_at_fork(after_in_child=_forget_pool)  # a forked child (DataLoader workers) has no pool threads


def _over_filters(loop: Callable, addresses: tuple[int, ...], filters: int, kh: int, kw: int, *rest) -> list:
    """``loop(addresses, filters, kh, kw, start, end, *rest)`` over the chunks of
    :func:`_filter_chunks` (one per thread), their results in order: a bank of one chunk in the
    calling thread, with no pool; else the calling thread takes the first chunk and a pool of
    ``len(chunks) - 1`` threads, kept for the purpose, the rest (the compiled loops release the GIL,
    so the chunks run in parallel, as torch's own operations would)."""
    global _pool
    parts = _filter_chunks(filters, kh * kw, torch.get_num_threads())
    if len(parts) == 1:
        return [loop(addresses, filters, kh, kw, 0, filters, *rest)]

    def work(part: slice):
        return loop(addresses, filters, kh, kw, part.start, part.stop, *rest)

    threads = len(parts)
    pool = _pool
    if pool is None or pool[0] != threads - 1:
        pool = _pool = (threads - 1, ThreadPoolExecutor(threads - 1, thread_name_prefix="gaborlayer"))
    others = pool[1].map(work, parts[1:])
    try:
        first = work(parts[0])
    finally:  # wait for the pool's chunks (the tensors they write must outlive them); raises their exception
        results = list(others)
    return [first, *results]


_LIKE = {torch.float32: np.empty(0, np.float32), torch.float64: np.empty(0, np.float64)}  # the loops' dtype


def _addresses(tensors: Sequence[torch.Tensor | None], keep: list) -> tuple[int, ...]:
    """Where the data of each of ``tensors`` starts (0 for ``None``), for the compiled loops, which
    read them as C-contiguous arrays: a tensor that is not contiguous is copied first, and the copy
    appended to ``keep``, which the caller holds until the loop has run."""
    addresses = []
    for t in tensors:
        if t is not None and not t.is_contiguous():
            t = t.contiguous()
            keep.append(t)
        addresses.append(0 if t is None else t.data_ptr())
    return tuple(addresses)


@functools.lru_cache(maxsize=8)
def _bounds(ranges: tuple[float, float, float, float]) -> np.ndarray:
    bounds = np.array(ranges, dtype=np.float64)
    bounds.flags.writeable = False
    return bounds


def bank2d(params: Sequence[torch.Tensor], kh: int, kw: int, *, stored: bool = False, sine: bool = False,
           ranges: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)
           ) -> tuple[torch.Tensor, torch.Tensor | None, bool]:
    """The bank ``K = E cos(phase)`` ``(*S, kh, kw)`` from the five parameters ``params`` (``theta,
    sigma, lambd, gamma, psi``, each of one shape ``S`` of ``N`` elements, CPU, float32 or float64; with
    ``stored`` the second to fourth are a layer's stored log-parameters, read through their
    constraints), in their dtype, and with ``sine`` also ``E sin(phase)`` ``(N, kh, kw)`` (else ``None``), and
    whether every sigma lies in ``ranges[0:2]`` and every gamma in ``ranges[2:4]`` (the moment
    backward's ranges; NaN lies in none). A psi outside ``(-2 pi, 2 pi)`` is reduced first.
    See ``_cpu_loops.bank_loop``."""
    first = params[0]
    filters = first.numel()
    bank = first.new_empty((*first.shape, kh, kw))
    sines = first.new_empty((filters, kh, kw)) if sine else None
    keep = []
    addresses = _addresses([*params, bank, sines], keep)
    in_range = _over_filters(loops().bank_loop, addresses, filters, kh, kw, stored, sine, _bounds(ranges),
                             _LIKE[first.dtype])
    return bank, sines, all(in_range)


def moment_gradients2d(grad: torch.Tensor, params: Sequence[torch.Tensor], bank: torch.Tensor, sine: torch.Tensor,
                       stored: bool) -> torch.Tensor:
    """The five parameter gradients ``(5, *S)`` in ``bank``'s dtype from the incoming gradient, the
    bank ``K`` and ``S = E sin(phase)`` (``S`` of shape ``(N, kh, kw)``, the other two of any shape
    with its elements in that order) and the Function's inputs ``params`` (five tensors of one shape
    ``S`` of ``N`` elements; ``stored``: as in :func:`bank2d`), by the compiled loop (``_cpu_loops.moment_loop``),
    over the filters in chunks spread over torch's thread count."""
    filters, kh, kw = sine.shape
    grads = bank.new_empty((5, *params[0].shape))
    keep = []
    addresses = _addresses([grad, bank, sine, *params[:4], grads], keep)
    _over_filters(loops().moment_loop, addresses, filters, kh, kw, stored, _LIKE[bank.dtype])
    return grads


def equality_check(copies: list[torch.Tensor]) -> Callable[[Sequence[torch.Tensor]], bool]:
    """A function that tells whether tensors hold the values of ``copies`` (each compared with the
    copy at its place; the caller sees that they have the copies' type, dtype, device, shape and
    strides). Where every copy is a contiguous CPU tensor, one compiled loop compares the bytes
    (``_cpu_loops.same_bytes``: a few microseconds, where ``torch.equal`` costs that per tensor);
    elsewhere ``torch.equal``. As bytes, a NaN equals itself and 0.0 differs from -0.0: a cache keyed
    on them can serve no wrong bank, and at worst builds one again."""
    compiled = loops()
    if compiled is None or not all(type(c) in (torch.Tensor, torch.nn.Parameter) and c.is_cpu and c.is_contiguous()
                                   for c in copies):
        return lambda tensors: all(torch.equal(t, c) for t, c in zip(tensors, copies))
    same_bytes = compiled.same_bytes
    addresses, sizes = tuple(c.data_ptr() for c in copies), tuple(c.nbytes for c in copies)
    # (The function holds the copies, whose memory it reads at their addresses.)
    return lambda tensors, copies=copies: same_bytes(tuple(t.data_ptr() for t in tensors), addresses, sizes)
