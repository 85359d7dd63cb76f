#!/usr/bin/env bash
# One GPU session's measurements in one command, run from the repository root of a machine with a
# CUDA GPU (no network needed there): native Triton tests, the Triton benchmark with its block
# sweep, the layer benchmark on CUDA, and the rest of the suite. See docs/benchmarks.md, "How to run
# on a GPU session".
#
#   bash benchmarks/gpu_session.sh              # every step: setup tests bench_triton bench_layer suite
#   bash benchmarks/gpu_session.sh tests suite  # setup, then only the named steps (in the order given)
#   bash benchmarks/gpu_session.sh bench        # setup, then bench_triton and bench_layer
#   bash benchmarks/gpu_session.sh all resources       # also the opt-in step resources (a 7th log file)
#   GPU_SESSION_DRY=1 bash benchmarks/gpu_session.sh   # no GPU needed: print each step's command, run none
#
# Steps (each output is tee'd to "$OUT/<step>.log", OUT defaulting to /tmp/gpu_out; the device
# tool brings back at most 8 files, and this writes 6: setup, tests, bench_triton, bench_layer,
# suite and summary). "all" runs the suite last: CI runs it too (on CPU), and only one of its tests
# needs CUDA, so it is the step to lose when time runs short.
#   setup         installs wheels carried in .whl/, if any, into /tmp/site (PYTHONPATH),
#                 `pip install --no-deps -e .`, prints nvidia-smi, python/torch/CUDA/triton versions
#                 and the device; stops the whole run (exit 2) when torch sees no CUDA device. With
#                 no C++ compiler or Python.h (torch.compile on CPU needs them) it sets
#                 TORCHDYNAMO_SUPPRESS_ERRORS=1 and says so: a failing compile then runs eagerly
#   tests         tests/test_triton.py, natively, the way CI runs tests (CI=true: hypothesis
#                 profile "ci"; GABORLAYER_STRICT_SKIPS=1: a skip fails), -x
#   bench_triton  python benchmarks/bench_triton.py --sweep --min-run-time $BENCH_MIN_RUN_TIME
#   bench_layer   python benchmarks/bench_layer.py --device cuda
#   suite         the rest of the suite (test_triton.py excluded: the step tests runs it) the same
#                 way, --maxfail=10, on PYTEST_WORKERS processes (pytest-xdist, when importable;
#                 the "gradient cases" line then counts the controller only, i.e. 0).
#                 HYPOTHESIS_PROFILE=dev in the environment makes tests and suite quicker
#   resources     (opt-in, not in "all") python benchmarks/triton_resources.py --dtype fp32: registers
#                 and spills from the triton/ptxas installed there (compile-time figures, no GPU used)
#
# A failing step does not stop the later ones; the exit status is non-zero if any step failed.
# Each step runs under `timeout` (SIGINT, then SIGKILL 15 s later; status 124 = timed out) within
# its own cap and the run's budget (GPU_SESSION_BUDGET seconds, default 570, for the device tool's
# 600-second limit), keeping 30 s for each step still to come; a step with under 20 s left is skipped.
#
# Environment: OUT, PYTHON (default python3), GPU_SESSION_BUDGET, GPU_SESSION_DRY, PYTEST_WORKERS
# (default 8; 0 = one process), PYTEST_ADDOPTS (pytest's own: more arguments, e.g. "-k 'a or b'"),
# BENCH_MIN_RUN_TIME (default 0.5 s per measurement), CAP_TESTS, CAP_BENCH_TRITON, CAP_BENCH_LAYER,
# CAP_SUITE, CAP_RESOURCES (per-step caps in seconds: 180, 300, 120, 240, 120).
set -euo pipefail

cd "$(dirname "$0")/.."
OUT="${OUT:-/tmp/gpu_out}"
PYTHON="${PYTHON:-python3}"
BUDGET="${GPU_SESSION_BUDGET:-570}"
DRY="${GPU_SESSION_DRY:-0}"
WORKERS="${PYTEST_WORKERS:-8}"
MIN_RUN_TIME="${BENCH_MIN_RUN_TIME:-0.5}"
export PYTHONUNBUFFERED=1
mkdir -p "$OUT"
START=$SECONDS

declare -A CAP=([tests]="${CAP_TESTS:-180}" [suite]="${CAP_SUITE:-240}"
                [bench_triton]="${CAP_BENCH_TRITON:-300}" [bench_layer]="${CAP_BENCH_LAYER:-120}"
                [resources]="${CAP_RESOURCES:-120}")
STEPS=()
for arg in "${@:-all}"; do
  case "$arg" in
    all) STEPS+=(tests bench_triton bench_layer suite) ;;
    bench) STEPS+=(bench_triton bench_layer) ;;
    tests|suite|bench_triton|bench_layer|resources) STEPS+=("$arg") ;;
    setup) ;;  # always runs first
    *) echo "gpu_session.sh: unknown step '$arg' (steps: setup tests suite bench_triton bench_layer resources; all, bench)" >&2
       exit 64 ;;
  esac
done

SUMMARY=()
FAILED=0

# run_step NAME ALLOWED_SECONDS COMMAND...: tee the output into $OUT/NAME.log, record status and time.
run_step() {
  local name=$1 allowed=$2 log="$OUT/$1.log" rc=0 t0=$SECONDS
  shift 2
  {
    echo "== $name: $*"
    echo "== $(date -u +%Y-%m-%dT%H:%M:%SZ), at most ${allowed} s"
  } | tee "$log"
  if [ "$DRY" = 1 ]; then
    echo "(dry run: not run)" | tee -a "$log"
  else
    timeout --signal=INT --kill-after=15 "$allowed" "$@" 2>&1 | tee -a "$log" || rc=$?
  fi
  local took=$((SECONDS - t0))
  echo "== $name: exit $rc after ${took} s$([ "$rc" = 124 ] && echo ' (timed out)')" | tee -a "$log"
  SUMMARY+=("$(printf '%-13s exit %-4s %5s s' "$name" "$rc" "$took")")
  [ "$rc" = 0 ] || FAILED=1
}

# ---- setup (always) ----------------------------------------------------------------------------
setup() {
  set -x
  if compgen -G ".whl/*.whl" > /dev/null; then
    if [ "$DRY" = 1 ]; then
      echo "(dry run) would install: $(ls .whl/*.whl)"
    else
      "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    fi
  fi
  if [ "$DRY" != 1 ]; then
    # --no-build-isolation: no network there, so setuptools must be the installed one.
    "$PYTHON" -m pip install -q --no-deps --no-build-isolation -e . \
      || echo "setup: pip install -e . failed; gaborlayer is imported from the checkout (PYTHONPATH)"
  fi
  set +x
  nvidia-smi || echo "setup: nvidia-smi failed or is missing"
  "$PYTHON" - <<'EOF'
import importlib, platform
import torch
print(f"python {platform.python_version()}, torch {torch.__version__} (CUDA {torch.version.cuda}), "
      f"CUDA available: {torch.cuda.is_available()}")
for name in ("triton", "kornia", "kornia_rs", "hypothesis", "pytest", "scipy", "xdist", "gaborlayer"):
    try:
        module = importlib.import_module(name)
        print(f"{name} {getattr(module, '__version__', '?')} at {getattr(module, '__file__', '?')}")
    except Exception as exc:  # noqa: BLE001
        print(f"{name}: not importable ({type(exc).__name__}: {exc})")
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    print(f"device: {p.name}, sm_{p.major}{p.minor}, {p.multi_processor_count} SMs, "
          f"{p.total_memory / 2**30:.1f} GiB")
EOF
  if [ "$DRY" != 1 ] && ! "$PYTHON" -c "import torch, sys; sys.exit(not torch.cuda.is_available())"; then
    echo "setup: torch sees no CUDA device; nothing here is worth measuring without one" >&2
    return 2
  fi
}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
[ -d .whl ] && export PYTHONPATH="/tmp/site:$PYTHONPATH"
t0=$SECONDS
rc=0
setup 2>&1 | tee "$OUT/setup.log" || rc=$?
echo "== setup: exit $rc after $((SECONDS - t0)) s" | tee -a "$OUT/setup.log"
SUMMARY+=("$(printf '%-13s exit %-4s %5s s' setup "$rc" "$((SECONDS - t0))")")
if [ "$rc" != 0 ]; then
  printf '%s\n' "${SUMMARY[@]}" | tee "$OUT/summary.log"
  exit 2
fi
# torch.compile on CPU (the "compiled" column of bench_triton's CPU section, which runs first) needs
# a C++ compiler and Python's headers; without them, let dynamo fall back to eager there rather than
# lose the whole benchmark to an exception (the log says so: that column is then not compiled).
if ! "$PYTHON" - <<'EOF' 2>&1 | tee -a "$OUT/setup.log"
import os, shutil, sys, sysconfig
cxx = shutil.which(os.environ.get("CXX") or "g++") or shutil.which("c++") or shutil.which("clang++")
header = os.path.join(sysconfig.get_paths()["include"], "Python.h")
print(f"setup: C++ compiler for torch.compile on CPU: {cxx}; {header}: {os.path.exists(header)}")
sys.exit(0 if cxx and os.path.exists(header) else 1)
EOF
then
  export TORCHDYNAMO_SUPPRESS_ERRORS=1
  echo "setup: WARNING TORCHDYNAMO_SUPPRESS_ERRORS=1: a torch.compile that fails runs eagerly" | tee -a "$OUT/setup.log"
fi

# ---- the steps -------------------------------------------------------------------------------
XDIST=()
if [ "$WORKERS" != 0 ] && "$PYTHON" -c "import xdist" 2> /dev/null; then
  XDIST=(-n "$WORKERS")
fi
PYTEST=("$PYTHON" -m pytest -q -p no:cacheprovider)

for i in "${!STEPS[@]}"; do
  step=${STEPS[$i]}
  later=$(( ${#STEPS[@]} - i - 1 ))
  left=$(( BUDGET - (SECONDS - START) - 30 * later ))
  allowed=$(( left < CAP[$step] ? left : CAP[$step] ))
  if [ "$allowed" -lt 20 ]; then
    echo "== $step: skipped, ${left} s left of the ${BUDGET} s budget" | tee "$OUT/$step.log"
    SUMMARY+=("$(printf '%-13s skipped (budget)' "$step")")
    FAILED=1
    continue
  fi
  case "$step" in
    tests) run_step tests "$allowed" env CI=true GABORLAYER_STRICT_SKIPS=1 \
             "${PYTEST[@]}" -x tests/test_triton.py ;;
    suite) run_step suite "$allowed" env CI=true GABORLAYER_STRICT_SKIPS=1 \
             "${PYTEST[@]}" --maxfail=10 "${XDIST[@]}" --ignore=tests/test_triton.py ;;
    bench_triton) run_step bench_triton "$allowed" "$PYTHON" benchmarks/bench_triton.py --sweep \
             --min-run-time "$MIN_RUN_TIME" ;;
    bench_layer) run_step bench_layer "$allowed" "$PYTHON" benchmarks/bench_layer.py --device cuda ;;
    resources) run_step resources "$allowed" "$PYTHON" benchmarks/triton_resources.py --dtype fp32 --jobs "$(nproc)" ;;
  esac
done

{
  echo "== gpu_session.sh: $((SECONDS - START)) s in all; $([ "$FAILED" = 0 ] && echo 'every step passed' || echo 'SOME STEP FAILED')"
  printf '%s\n' "${SUMMARY[@]}"
} | tee "$OUT/summary.log"
exit "$FAILED"
