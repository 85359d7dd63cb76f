"""Registers and spills of the Triton bank kernels, compiled offline: no GPU needed, no timings.

    python benchmarks/triton_resources.py                      # the full table (markdown), 180 compilations
    python benchmarks/triton_resources.py --arch 90 --dtype fp32 --size 7x7 --block 1024
    python benchmarks/triton_resources.py --jobs 2             # worker processes (default: CPU count)

For the forward and backward kernels of ``gaborlayer/_triton/bank.py``, each parameter dtype,
target (sm_80, sm_90), kernel size and per-program element block (what ``FORWARD_BLOCK`` /
``BACKWARD_BLOCK`` set), the real kernel is compiled with ``triton.compile`` for a
``GPUTarget`` (as ``tests/test_triton.py`` does), and the PTX it produced is assembled once more
by the ptxas that triton itself uses for that target, with triton's flags and ``-v``; its report
gives the registers per thread, the spill stores/loads and the stack frame (local memory) per
thread. The shared memory column is triton's own metadata (the reductions of the backward). The
last column is an upper bound on occupancy from registers alone: resident warps per SM with the
kernel's 4 warps per program on a 64K-register SM (at most 64 warps); nothing else is counted.

These are compile-time figures of one triton/ptxas version, not timings: the block that runs
fastest on a GPU is what ``benchmarks/bench_triton.py --sweep`` measures.

The kernels must be compiled, not interpreted: when ``TRITON_INTERPRET`` is set the script runs
itself again in a subprocess without it.
"""
from __future__ import annotations

import argparse
import concurrent.futures
import datetime
import inspect
import multiprocessing
import os
import re
import subprocess
import sys
import tempfile

KERNELS = ("forward", "backward")
DTYPES = ("fp32", "fp16", "bf16")  # fp64 may be asked for with --dtype fp64
ARCHS = (80, 90)
SIZES = ((3, 3), (7, 7), (31, 31))
BLOCKS = (256, 512, 1024, 2048, 4096)
PARAMS = ("theta_ptr", "sigma_ptr", "lambd_ptr", "gamma_ptr", "psi_ptr")
META = ("KH", "KW", "BLOCK_N", "BLOCK_T")
_PTXAS_LINE = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads")
_REGISTERS = re.compile(r"Used (\d+) registers")


def _signature(kernel: str, dtype: str) -> dict:
    ptr = "*" + dtype
    if kernel == "forward":
        return {**{p: ptr for p in PARAMS}, "out_ptr": ptr, "N": "i32"}
    return {"grad_ptr": ptr, "stride_gn": "i64", "stride_gh": "i64", "stride_gw": "i64",
            **{p: ptr for p in PARAMS}, **{"d_" + p: ptr for p in PARAMS}, "N": "i32"}


def _ptxas_command(arch: int, ptx_path: str, out_path: str) -> list[str]:
    """The ptxas command triton runs for ``arch`` (its binary, its flags), ``-v`` included."""
    from triton.backends.nvidia import compiler as nv

    ptxas = nv.get_ptxas(arch).path if hasattr(nv, "get_ptxas") else nv.knobs.nvidia.ptxas.path
    extra = []
    try:  # newer triton adds a register-allocation flag (a ptxas 13 workaround): mirror it
        if "regAllocOptLevel=2" in inspect.getsource(nv.CUDABackend.make_cubin):
            extra.append("--regAllocOptLevel=2")
    except (OSError, TypeError):
        pass
    return [ptxas, "-lineinfo", "-v", *extra, f"--gpu-name={nv.sm_arch_from_capability(arch)}", ptx_path,
            "-o", out_path]


def measure(case: tuple) -> dict:
    """Compile one (kernel, dtype, arch, kh, kw, block) case and read ptxas's report."""
    kernel, dtype, arch, kh, kw, block = case
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from gaborlayer._triton import bank

    assert not bank.INTERPRETED, "the kernels were built by the interpreter (TRITON_INTERPRET is set)"
    fn = bank._gabor_bank_fwd_kernel if kernel == "forward" else bank._gabor_bank_bwd_kernel
    block_n, block_t = bank.block_sizes(kh, kw, block)
    constexprs = dict(zip(META, (kh, kw, block_n, block_t)))
    source = ASTSource(fn=fn, signature={**_signature(kernel, dtype), **{m: "constexpr" for m in META}},
                       constexprs=constexprs)
    compiled = triton.compile(source, target=GPUTarget("cuda", arch, 32), options={"num_warps": bank.NUM_WARPS})
    with tempfile.TemporaryDirectory() as tmp:
        ptx = os.path.join(tmp, "kernel.ptx")
        with open(ptx, "w") as f:
            f.write(compiled.asm["ptx"])
        done = subprocess.run(_ptxas_command(arch, ptx, os.path.join(tmp, "kernel.cubin")),
                              capture_output=True, text=True, check=True)
    log = done.stdout + done.stderr
    frame = _PTXAS_LINE.search(log)
    registers = _REGISTERS.search(log)
    if not (frame and registers):
        raise RuntimeError(f"unexpected ptxas report for {case}:\n{log}")
    regs = int(registers.group(1))
    warps = bank.NUM_WARPS
    # Registers are allocated per warp in units of 256 (8 per thread); whole programs are resident.
    per_program = -(-regs // 8) * 8 * 32 * warps
    resident = min(64, (65536 // per_program) * warps)
    return {"case": case, "block_n": block_n, "block_t": block_t, "registers": regs,
            "stack": int(frame.group(1)), "spill_stores": int(frame.group(2)), "spill_loads": int(frame.group(3)),
            "shared": int(compiled.metadata.shared or 0), "warps_per_sm": resident}


def _versions(archs) -> str:
    import triton

    ptxas = {}
    for arch in archs:
        cmd = _ptxas_command(arch, "x", "y")[0]
        out = subprocess.run([cmd, "--version"], check=False, capture_output=True, text=True).stdout
        match = re.search(r"release ([\d.]+)", out)
        ptxas[f"sm_{arch}"] = match.group(1) if match else "?"
    return f"triton {triton.__version__}, ptxas " + ", ".join(f"{v} ({k})" for k, v in ptxas.items())


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kernel", choices=KERNELS, action="append", help="default: both")
    parser.add_argument("--dtype", choices=(*DTYPES, "fp64"), action="append", help="default: fp32 fp16 bf16")
    parser.add_argument("--arch", type=int, action="append", help="compute capability, e.g. 80, 90 (default both)")
    parser.add_argument("--size", action="append", help="kernel size KHxKW (default 3x3 7x7 31x31)")
    parser.add_argument("--block", type=int, action="append", help="elements per program (default 256 ... 4096)")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="worker processes")
    args = parser.parse_args(argv)

    if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
        env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
        command = [sys.executable, os.path.abspath(__file__), *(sys.argv[1:] if argv is None else argv)]
        return subprocess.run(command, check=False, env=env).returncode
    os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")  # what a GPU run uses

    sizes = [tuple(int(s) for s in size.lower().split("x")) for size in args.size] if args.size else list(SIZES)
    cases = [(kernel, dtype, arch, kh, kw, block)
             for kernel in args.kernel or KERNELS for dtype in args.dtype or DTYPES for arch in args.arch or ARCHS
             for kh, kw in sizes for block in args.block or BLOCKS]
    from gaborlayer._triton import bank

    print(f"# Triton bank kernels, compiled offline (no GPU): {datetime.date.today().isoformat()}, "
          f"{_versions(args.arch or ARCHS)}, "
          f"{bank.NUM_WARPS} warps; current FORWARD_BLOCK={bank.FORWARD_BLOCK}, BACKWARD_BLOCK={bank.BACKWARD_BLOCK}")
    print("# compile-time figures, not timings; registers, spills and stack frame per thread (ptxas -v)")
    print()
    print("| kernel | dtype | arch | size | block (N x T) | registers | spill stores B | spill loads B "
          "| stack B | shared B | warps/SM by regs |")
    print("| --- | --- | --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    context = multiprocessing.get_context("spawn")  # no forked triton/LLVM state in the workers
    with concurrent.futures.ProcessPoolExecutor(max_workers=max(1, args.jobs), mp_context=context) as pool:
        for r in pool.map(measure, cases):
            kernel, dtype, arch, kh, kw, block = r["case"]
            print(f"| {kernel} | {dtype} | sm_{arch} | {kh}x{kw} | {block} ({r['block_n']} x {r['block_t']}) "
                  f"| {r['registers']} | {r['spill_stores']} | {r['spill_loads']} | {r['stack']} | {r['shared']} "
                  f"| {r['warps_per_sm']} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
