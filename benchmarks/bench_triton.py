"""Bank and layer speed: naive autograd, compiled naive, the PyTorch Function, and Triton.

    python benchmarks/bench_triton.py            # CPU section; GPU section too when CUDA is there
    python benchmarks/bench_triton.py --sweep    # also time Triton block sizes (GPU only)
    python benchmarks/bench_triton.py --threads 1 --clock cpu  # steadier CPU figures on a busy machine
    python benchmarks/bench_triton.py --base 8014625^  # also the Function as committed at another revision

CPU section (runs anywhere): bank forward+backward at 64x3x7x7, 256x256x7x7 and 512x512x3x3 in
float32 for the naive autograd formula (``_reference``), ``torch.compile`` of that formula, the
analytic Function as the package calls it (``GaborKernel2d.apply``: on CPU with a gradient to
build, the moment backward) and the same Function's plain path (only the parameters saved,
everything recomputed in backward), with speed-ups over naive from this one run, the target
(the eager Function no slower than the compiled formula), and the memory each saves for its
backward (counted with saved-tensor hooks), as a multiple of the bank. With ``--base REV``, also
the Function as committed at git revision ``REV`` (``GaborKernel2d.apply`` of that revision's
package, imported beside this one by ``revision.py``), in the same rounds, and this one against it.

GPU section (only with CUDA and triton): the same four columns plus Triton
(``torch.ops.gaborlayer.gabor_bank``), the targets (Triton >= 10x naive at 256x256x7x7, and no
slower than the compiled formula), the peak extra memory of each backward (target <= 1x the
bank), and GaborConv2d forward+backward against ``nn.Conv2d`` of the same shape (ResNet stem
B32 3->64 k7 s2 224x224, mid layer B32 64->64 k3 56x56) in float32 and under AMP (float16).

CPU bank times are medians of interleaved rounds (all variants of a shape timed in the same rounds);
the GPU layer section uses ``torch.utils.benchmark`` blocked runs. Compare ratios within one run.
"""
from __future__ import annotations

import argparse
import platform
import random
import statistics
import sys
import time

import torch
import torch.nn as nn
from revision import commit_of, import_revision  # benchmarks/revision.py, beside this script
from torch.utils import benchmark

from gaborlayer import GaborConv2d
from gaborlayer._autograd import GaborKernel2d
from gaborlayer._reference import gabor_kernel2d_reference
from gaborlayer.functional import resolve_backend

BANK_SHAPES = [(64, 3, 7, 7), (256, 256, 7, 7), (512, 512, 3, 3)]
LAYERS = {  # name: (batch, in, out, kernel, stride, padding, input side)
    "ResNet stem B32 3->64 k7 s2 224": (32, 3, 64, 7, 2, 3, 224),
    "mid layer B32 64->64 k3 56": (32, 64, 64, 3, 1, 1, 56),
}
TARGET_SHAPE = (256, 256, 7, 7)


def interleaved_ms(fns: dict, device: torch.device, min_run_time: float, clock: str = "wall",
                   rounds: int = 7) -> dict:
    """Median ms per call of each of ``fns``, timed in interleaved rounds (one batch of calls of
    each per round, in an order shuffled every round), so that a shared machine's load falls on all
    alike and no variant always runs behind the same one (whose traces in the caches it would meet).
    ``clock="cpu"``: process CPU time (with one thread, not counting waits for a core)."""
    now = time.process_time if clock == "cpu" else time.perf_counter
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    calls = {}
    for name, fn in fns.items():  # warm-up (compilation, allocator), then calls per batch
        fn()
        sync()
        t0 = time.perf_counter()
        fn()
        sync()
        calls[name] = max(1, int(min_run_time / rounds / max(time.perf_counter() - t0, 1e-6)))
    names, times = list(fns), {name: [] for name in fns}
    for r in range(rounds):
        for name in random.Random(r).sample(names, len(names)):
            t0 = now()
            for _ in range(calls[name]):
                fns[name]()
            sync()
            times[name].append((now() - t0) / calls[name] * 1e3)
    return {name: statistics.median(ts) for name, ts in times.items()}


def median_ms(fn, device: torch.device, min_run_time: float) -> float:
    fn()  # warm-up (compilation, autotuning, allocator)
    if device.type == "cuda":
        torch.cuda.synchronize()
    timer = benchmark.Timer(stmt="fn()", globals={"fn": fn}, num_threads=torch.get_num_threads())
    return timer.blocked_autorange(min_run_time=min_run_time).median * 1e3


def bank_inputs(shape, device, dtype=torch.float32, seed=0):
    out_c, in_c, kh, kw = shape
    n = out_c * in_c
    gen = torch.Generator().manual_seed(seed)
    lows, highs = (0.0, 0.8, 2.5, 0.3, -3.0), (3.1, 4.0, 8.0, 1.0, 3.0)
    params = [(lo + (hi - lo) * torch.rand(n, generator=gen)).to(device, dtype).requires_grad_()
              for lo, hi in zip(lows, highs)]
    grad = torch.randn(n, kh, kw, generator=gen).to(device, dtype)
    return params, grad, kh, kw


def builders(device: torch.device, base=None) -> dict:
    found = {
        "naive": gabor_kernel2d_reference,
        "compiled": torch.compile(gabor_kernel2d_reference, fullgraph=True, dynamic=False),
        "Function": GaborKernel2d.apply,
        "plain Function": GaborKernel2d._forward_mode.apply,  # the parameters alone saved (no moment path)
    }
    if base is not None:  # the same Function at another revision
        found[base_name(base)] = base._autograd.GaborKernel2d.apply
    if device.type == "cuda":
        resolve_backend("triton", device)  # raises if triton cannot run here; registers the op
        found["Triton"] = torch.ops.gaborlayer.gabor_bank
    return found


def base_name(base) -> str:
    return f"Function @{commit_of(base)}"


def fwd_bwd(build, params, grad, kh, kw):
    def step():
        bank = build(*params, kh, kw)
        torch.autograd.grad(bank, params, grad)
    return step


def saved_bytes(build, params, kh, kw) -> tuple[int, int]:
    """Bytes the forward keeps for backward (distinct storages, the parameters excluded), bank bytes."""
    storages = {}
    own = {p.untyped_storage().data_ptr() for p in params}

    def pack(t):
        ptr = t.untyped_storage().data_ptr()
        if ptr not in own:
            storages[ptr] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        bank = build(*params, kh, kw)
    bank_bytes = bank.numel() * bank.element_size()
    storages.pop(bank.untyped_storage().data_ptr(), None)  # saving the output itself costs nothing extra
    return sum(storages.values()), bank_bytes


def backward_peak_extra(build, params, grad, kh, kw) -> float:
    """Peak memory allocated during backward above what was allocated before it, in banks (CUDA)."""
    bank = build(*params, kh, kw)
    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    grads = torch.autograd.grad(bank, params, grad)
    torch.cuda.synchronize()
    extra = torch.cuda.max_memory_allocated() - before
    del grads
    return extra / (bank.numel() * bank.element_size())


def bank_section(device: torch.device, min_run_time: float, clock: str = "wall", base=None) -> dict:
    found = builders(device, base)
    names = list(found)
    print(f"\nbank forward+backward, float32, {device.type}: median ms of interleaved rounds, {clock} clock "
          f"(speed-up over naive autograd)")
    print(f"{'shape (C_out x C_in x kh x kw)':<32}" + "".join(f"{n:>22}" for n in names))
    results = {}
    for shape in BANK_SHAPES:
        params, grad, kh, kw = bank_inputs(shape, device)
        times = interleaved_ms({n: fwd_bwd(b, params, grad, kh, kw) for n, b in found.items()}, device,
                               min_run_time * len(found), clock)
        results[shape] = times
        row = "".join(f"{times[n]:>12.3f} ({times['naive'] / times[n]:5.1f}x)" for n in names)
        print(f"{'x'.join(map(str, shape)):<32}{row}")
    print("\ntarget: the eager Function no slower than torch.compile of the formula (compiled / Function >= 1)")
    for shape, times in results.items():
        ratio = times["compiled"] / times["Function"]
        print(f"  {'x'.join(map(str, shape)):<16} compiled / Function {ratio:5.2f}  {'met' if ratio >= 1 else 'MISSED'}"
              f"   (plain Function / Function {times['plain Function'] / times['Function']:5.2f})")
    if base is not None:
        print(f"\nthis Function against {base_name(base)} (ratio of the medians; < 1: faster now)")
        for shape, times in results.items():
            print(f"  {'x'.join(map(str, shape)):<16} Function / {base_name(base)} "
                  f"{times['Function'] / times[base_name(base)]:5.2f}   "
                  f"(compiled / {base_name(base)} {times['compiled'] / times[base_name(base)]:5.2f})")
    print(f"\nmemory saved by the forward for backward, in banks (float32, {device.type})")
    print(f"{'shape':<32}" + "".join(f"{n:>22}" for n in names))
    for shape in BANK_SHAPES:
        params, grad, kh, kw = bank_inputs(shape, device)
        row = ""
        for b in found.values():
            saved, bank_bytes = saved_bytes(b, params, kh, kw)
            row += f"{saved / bank_bytes:>22.2f}"
        print(f"{'x'.join(map(str, shape)):<32}{row}")
    if device.type == "cuda":
        print("\npeak extra memory of the backward, in banks (CUDA, float32; target for Triton <= 1)")
        print(f"{'shape':<32}" + "".join(f"{n:>22}" for n in names))
        for shape in BANK_SHAPES:
            params, grad, kh, kw = bank_inputs(shape, device)
            row = "".join(f"{backward_peak_extra(b, params, grad, kh, kw):>22.2f}" for b in found.values())
            print(f"{'x'.join(map(str, shape)):<32}{row}")
        params, grad, kh, kw = bank_inputs(TARGET_SHAPE, device)
        peak = backward_peak_extra(found["Triton"], params, grad, kh, kw)
        times = results[TARGET_SHAPE]
        vs_naive, vs_compiled = times["naive"] / times["Triton"], times["compiled"] / times["Triton"]
        print(f"\ntargets at {'x'.join(map(str, TARGET_SHAPE))}:")
        print(f"  Triton vs naive autograd  {vs_naive:6.1f}x  (target >= 10x)  {'met' if vs_naive >= 10 else 'MISSED'}")
        print(f"  Triton vs compiled naive  {vs_compiled:6.2f}x  (target >= 1x)   "
              f"{'met' if vs_compiled >= 1 else 'MISSED'}")
        print(f"  Triton backward peak extra memory {peak:.2f} banks (target <= 1)  {'met' if peak <= 1 else 'MISSED'}")
    return results


def layer_section(device: torch.device, min_run_time: float) -> None:
    print(f"\nlayer forward+backward on {device.type}: median ms (ratio to nn.Conv2d of the same shape)")
    print(f"{'layer':<36}{'precision':>10}{'nn.Conv2d':>14}{'Gabor triton':>22}{'Gabor torch':>22}")
    for name, (batch, c_in, c_out, k, stride, pad, side) in LAYERS.items():
        torch.manual_seed(0)
        x = torch.randn(batch, c_in, side, side, device=device)
        layers = {
            "conv": nn.Conv2d(c_in, c_out, k, stride, pad, device=device),
            "triton": GaborConv2d(c_in, c_out, k, stride, pad, device=device, backend="triton"),
            "torch": GaborConv2d(c_in, c_out, k, stride, pad, device=device, backend="torch"),
        }
        for precision in ("float32", "amp fp16"):
            def step(layer=None, precision=precision, x=x):
                with torch.autocast(device.type, dtype=torch.float16, enabled=precision != "float32"):
                    out = layer(x)
                out.float().sum().backward()
            times = {key: median_ms(lambda layer=layer: step(layer), device, min_run_time)
                     for key, layer in layers.items()}
            print(f"{name:<36}{precision:>10}{times['conv']:>14.3f}"
                  f"{times['triton']:>13.3f} ({times['triton'] / times['conv']:4.2f}x)"
                  f"{times['torch']:>13.3f} ({times['torch'] / times['conv']:4.2f}x)")


def sweep_section(device: torch.device, min_run_time: float) -> None:
    from gaborlayer._triton import bank as kernels

    saved = kernels.FORWARD_BLOCK, kernels.BACKWARD_BLOCK
    print("\nTriton block sweep: fwd+bwd median ms by (FORWARD_BLOCK, BACKWARD_BLOCK) elements per program")
    sizes = [256, 512, 1024, 2048, 4096]
    try:
        for shape in BANK_SHAPES:
            params, grad, kh, kw = bank_inputs(shape, device)
            timings = {}
            for fwd_block in sizes:
                for bwd_block in sizes:
                    kernels.FORWARD_BLOCK, kernels.BACKWARD_BLOCK = fwd_block, bwd_block
                    timings[fwd_block, bwd_block] = median_ms(
                        fwd_bwd(torch.ops.gaborlayer.gabor_bank, params, grad, kh, kw), device, min_run_time)
            best = min(timings, key=timings.get)
            print(f"  {'x'.join(map(str, shape)):<16} best {best}: {timings[best]:.3f} ms; current {saved}: "
                  f"{timings.get(saved, float('nan')):.3f} ms")
    finally:
        kernels.FORWARD_BLOCK, kernels.BACKWARD_BLOCK = saved


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--min-run-time", type=float, default=1.0, help="seconds per measurement (default 1)")
    parser.add_argument("--sweep", action="store_true", help="also time Triton block sizes (GPU only)")
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads (default: torch's); 1 gives stable CPU figures on a shared machine")
    parser.add_argument("--clock", default="wall", choices=["wall", "cpu"],
                        help="CPU section: wall clock, or process CPU time (steady with --threads 1 on a busy machine)")
    parser.add_argument("--base", metavar="REV", default=None,
                        help="also time the Function as committed at this git revision, and compare")
    args = parser.parse_args(argv)
    base = None
    if args.base is not None:
        base = import_revision(args.base)
    if args.threads:
        torch.set_num_threads(args.threads)

    print(f"gaborlayer Triton benchmark: python {platform.python_version()}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} CPU threads")
    try:
        import triton
        print(f"triton {triton.__version__}")
    except Exception as exc:  # the CPU section needs no triton
        print(f"triton not importable ({type(exc).__name__}: {exc})")

    print("\n== CPU section ==")
    bank_section(torch.device("cpu"), args.min_run_time, args.clock, base)

    print("\n== GPU section ==")
    if not torch.cuda.is_available():
        print("skipped: no CUDA device here (torch.cuda.is_available() is False), so no Triton timings, no "
              "backward peak memory and no layer comparison. Measure them on a machine with a CUDA GPU and "
              "triton: python benchmarks/bench_triton.py --sweep")
        return 0
    device = torch.device("cuda")
    print(f"device: {torch.cuda.get_device_name(device)}")
    bank_section(device, args.min_run_time, base=base)
    layer_section(device, args.min_run_time)
    if args.sweep:
        sweep_section(device, args.min_run_time)
    return 0


if __name__ == "__main__":
    sys.exit(main())
