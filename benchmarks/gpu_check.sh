#!/usr/bin/env bash
# The whole GPU check in one script: the test suite on CuPy, the JAX backend on the GPU, the
# compiled steps of PyTorch's CUDA backend, then the GPU benchmark (step times against PyTorch
# and a hand-written fused CuPy loop, the matrix products' floor, kernels per step, the
# launch-bound models compiled, memory, float32 accuracy). Under 9 minutes on an H100/H200 with
# the default limits.
#
#     bash benchmarks/gpu_check.sh [OUT_DIR]
#
# Run it from anywhere inside the repository, on a machine with an NVIDIA GPU, CuPy, pytest
# and hypothesis (PyTorch optional). It needs no package registry: the pure-Python packages
# that such a machine lacks (array-api-compat, array-api-strict, tqdm) are installed offline
# into a temporary directory from wheels/, which benchmarks/fetch_wheels.sh fills on a machine
# that has a registry. polynn itself is imported from this source tree.
#
# Without a GPU it says so and exits 0. Otherwise it exits 0 when the tests and the benchmark
# pass, 1 when either fails (it always runs all of them). The JAX step is reported; it fails
# the check only when JAX sees a GPU and its tests fail there.
#
# OUT_DIR (or GPU_CHECK_OUT): where to copy the logs, the results markdown and the summary.
# Environment (all optional):
#     PYTHON                   the interpreter (default: python3)
#     GPU_CHECK_TEST_TIMEOUT   seconds for the test suite (default: 200)
#     GPU_CHECK_JAX_TIMEOUT    seconds for the JAX tests (default: 60)
#     GPU_CHECK_BENCH_TIMEOUT  seconds for the benchmark (default: 170)
#     GPU_CHECK_BENCH_ARGS     extra arguments for gpu_bench.py, e.g. "--quick"
#     GPU_CHECK_PYTEST_ARGS    extra arguments for pytest, e.g. "-x"
#     GPU_CHECK_INSTALL_ONLY=1 only install the wheels and check the imports (works without a
#                              GPU: a way to try the offline install on any machine)
set -u

PYTHON="${PYTHON:-python3}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT" || exit 1
OUT="${1:-${GPU_CHECK_OUT:-}}"
TEST_TIMEOUT="${GPU_CHECK_TEST_TIMEOUT:-200}"
JAX_TIMEOUT="${GPU_CHECK_JAX_TIMEOUT:-60}"
BENCH_TIMEOUT="${GPU_CHECK_BENCH_TIMEOUT:-170}"
BENCH_ARGS="${GPU_CHECK_BENCH_ARGS:-}"
PYTEST_ARGS="${GPU_CHECK_PYTEST_ARGS:-}"
export PYTHONDONTWRITEBYTECODE=1

WORK="$(mktemp -d "${TMPDIR:-/tmp}/gpu_check.XXXXXX")"
LOGS="$WORK/logs"
SITE="$WORK/site"
mkdir -p "$LOGS" "$SITE"
SUMMARY="$LOGS/summary.txt"
START=$(date +%s)

say() { echo "gpu_check: $*"; }
section() { printf '\n==================== %s ====================\n' "$*"; }

# Copy the logs to OUT (when given); called on every exit path.
LOGS_SAVED=0
save_logs() {
    if [ -z "$OUT" ]; then
        say "logs kept in $LOGS (pass OUT_DIR to copy them elsewhere)"
    elif mkdir -p "$OUT" 2>/dev/null && cp -f "$LOGS"/* "$OUT"/ 2>/dev/null; then
        say "logs and results copied to $OUT"
        LOGS_SAVED=1
    else
        say "could not copy the logs to $OUT (they stay in $LOGS)"
    fi
}

# Remove the temporary directory, except the logs when they were not copied anywhere.
clean_up() {
    if [ "$LOGS_SAVED" = 1 ]; then rm -rf "$WORK"; else rm -rf "$SITE"; fi
}

# Run "$@" under a time limit when coreutils' timeout is there.
limited() {
    local seconds="$1"
    shift
    if command -v timeout >/dev/null 2>&1; then
        timeout --kill-after=15 "$seconds" "$@"
    else
        "$@"
    fi
}

# ---------------------------------------------------------------- (b) offline install
install_wheels() {
    local deps=() own=() f
    for f in wheels/*.whl; do
        [ -e "$f" ] || continue
        case "$(basename "$f")" in
            polynn-*) own+=("$f") ;;
            *) deps+=("$f") ;;
        esac
    done
    # polynn comes from this source tree; its wheel only when the tree lacks the package.
    if [ ! -f "$ROOT/polynn/__init__.py" ] && [ "${#own[@]}" -gt 0 ]; then
        deps+=("${own[@]}")
    fi
    if [ "${#deps[@]}" -eq 0 ]; then
        say "no wheels in wheels/ (run benchmarks/fetch_wheels.sh where a registry is reachable);"
        say "relying on what $PYTHON already has"
    else
        say "installing offline into $SITE: $(for f in "${deps[@]}"; do basename "$f"; done | tr '\n' ' ')"
        if ! "$PYTHON" -m pip install -q --no-index --no-deps --disable-pip-version-check \
            --target "$SITE" "${deps[@]}"; then
            say "pip could not install them; unpacking the wheels instead (they are pure Python)"
            for f in "${deps[@]}"; do
                "$PYTHON" -m zipfile -e "$f" "$SITE" || say "could not unpack $f"
            done
        fi
    fi
    export PYTHONPATH="$ROOT:$SITE${PYTHONPATH:+:$PYTHONPATH}"
    "$PYTHON" - <<'PY'
import importlib
ok = True
for name in ("numpy", "array_api_compat", "array_api_strict", "tqdm", "polynn"):
    try:
        mod = importlib.import_module(name)
    except Exception as exc:
        ok = False
        print(f"gpu_check: import {name}: FAILED ({type(exc).__name__}: {exc})")
    else:
        version = getattr(mod, "__version__", "?")
        print(f"gpu_check: import {name} {version} from {mod.__file__}")
raise SystemExit(0 if ok else 1)
PY
}

if [ "${GPU_CHECK_INSTALL_ONLY:-}" = 1 ]; then
    install_wheels
    rc=$?
    say "install-only mode: imports $([ $rc = 0 ] && echo ok || echo FAILED)"
    rm -rf "$WORK"
    exit $rc
fi

# ---------------------------------------------------------------- (a) is there a GPU?
no_gpu() {
    local line="gpu_check: NO GPU: $*. Nothing was tested or measured; exiting 0."
    echo "$line"
    echo "$line" >"$SUMMARY"
    save_logs
    rm -rf "$WORK"
    exit 0
}
command -v nvidia-smi >/dev/null 2>&1 || no_gpu "nvidia-smi is not installed"
GPUS="$(limited 60 nvidia-smi -L 2>&1)"
echo "$GPUS" | grep -q '^GPU [0-9]' || no_gpu "nvidia-smi lists no GPU ($(echo "$GPUS" | head -1))"
CUPY_PROBE="$(limited 120 "$PYTHON" -c \
    "import cupy; n = cupy.cuda.runtime.getDeviceCount(); print(n); assert n > 0" 2>&1)" \
    || no_gpu "CuPy cannot use the GPU ($(echo "$CUPY_PROBE" | tail -1))"

# ---------------------------------------------------------------- (b), (c) install, versions
section "install"
install_wheels
IMPORTS_RC=$?

section "machine"
{
    echo "$GPUS"
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv 2>&1
    echo "python: $("$PYTHON" --version 2>&1)"
    "$PYTHON" - <<'PY' 2>&1
import importlib
for name in ("numpy", "cupy", "pytest", "hypothesis", "array_api_compat", "array_api_strict",
             "tqdm", "ml_dtypes", "jax", "polynn"):
    try:
        print(f"{name}: {importlib.import_module(name).__version__}")
    except Exception as exc:
        print(f"{name}: not importable ({type(exc).__name__}: {exc})")
try:
    import cupy
    rt = cupy.cuda.runtime
    print(f"CUDA runtime (cupy): {rt.runtimeGetVersion()}, driver API: {rt.driverGetVersion()}, "
          f"devices: {rt.getDeviceCount()}")
except Exception as exc:
    print(f"cupy CUDA info: {type(exc).__name__}: {exc}")
PY
    limited 120 "$PYTHON" -c "import torch; print(f'torch: {torch.__version__} (CUDA {torch.version.cuda}, cuda available: {torch.cuda.is_available()})')" 2>&1 | tail -1
} | tee "$LOGS/machine.txt"

# ---------------------------------------------------------------- (d) the test suite on CuPy
section "tests on cupy (limit ${TEST_TIMEOUT}s)"
# shellcheck disable=SC2086  # PYTEST_ARGS is split on purpose
limited "$TEST_TIMEOUT" env POLYNN_TEST_BACKENDS=cupy POLYNN_REQUIRE_GPU=1 \
    "$PYTHON" -m pytest -q -p no:cacheprovider $PYTEST_ARGS tests 2>&1 | tee "$LOGS/tests.log"
TESTS_RC=${PIPESTATUS[0]}
TESTS_LINE="$(grep -E '(^|[ =])[0-9]+ (passed|failed|errors?|skipped)|no tests ran' "$LOGS/tests.log" \
    | tail -1 | sed -E 's/^=+ //; s/ =+$//')"
case "$TESTS_RC" in
    124 | 137) TESTS_LINE="TIMED OUT after ${TEST_TIMEOUT}s (last: ${TESTS_LINE:-nothing})" ;;
esac
[ -n "$TESTS_LINE" ] || TESTS_LINE="no summary line (see tests.log)"

# ---------------------------------------------------------------- (e) JAX on the GPU
section "jax backend on the GPU (limit ${JAX_TIMEOUT}s)"
JAX_GPU="$(limited 120 "$PYTHON" -c "import jax; print(jax.devices()[0].platform)" 2>/dev/null | tail -1)"
if [ "$JAX_GPU" = gpu ]; then
    limited "$JAX_TIMEOUT" env POLYNN_TEST_BACKENDS=jax "$PYTHON" -m pytest -q -p no:cacheprovider \
        tests/test_backends.py tests/test_kernels.py tests/test_precision.py 2>&1 | tee "$LOGS/jax.log"
    JAX_RC=${PIPESTATUS[0]}
    JAX_LINE="$(grep -E '[0-9]+ (passed|failed)' "$LOGS/jax.log" | tail -1 | sed -E 's/^=+ //; s/ =+$//')"
    case "$JAX_RC" in
        124 | 137) JAX_LINE="TIMED OUT after ${JAX_TIMEOUT}s (last: ${JAX_LINE:-nothing})" ;;
    esac
else
    JAX_RC=0
    JAX_LINE="skipped: JAX's default device here is ${JAX_GPU:-unknown (JAX not importable)}, not a GPU"
    say "$JAX_LINE"
fi

# ---------------------------------------------------------------- (e2) PyTorch's CUDA graphs
section "compiled steps on PyTorch's CUDA device (limit ${JAX_TIMEOUT}s)"
limited "$JAX_TIMEOUT" "$PYTHON" -m pytest -q -p no:cacheprovider tests/test_compiled.py \
    -k torch_cuda 2>&1 | tee "$LOGS/torch-cuda.log"
TORCH_RC=${PIPESTATUS[0]}
TORCH_LINE="$(grep -E '[0-9]+ (passed|failed|skipped)' "$LOGS/torch-cuda.log" | tail -1 \
    | sed -E 's/^=+ //; s/ =+$//')"
case "$TORCH_RC" in
    124 | 137) TORCH_LINE="TIMED OUT after ${JAX_TIMEOUT}s (last: ${TORCH_LINE:-nothing})" ;;
esac

# ---------------------------------------------------------------- (f) the benchmark
section "benchmark (limit ${BENCH_TIMEOUT}s)"
# shellcheck disable=SC2086  # BENCH_ARGS is split on purpose
limited "$BENCH_TIMEOUT" "$PYTHON" benchmarks/gpu_bench.py --budget $((BENCH_TIMEOUT - 20)) \
    --out "$LOGS/RESULTS-gpu.md" $BENCH_ARGS 2>&1 | tee "$LOGS/bench.log"
BENCH_RC=${PIPESTATUS[0]}
if [ -f "$LOGS/RESULTS-gpu.md" ]; then
    cp -f "$LOGS/RESULTS-gpu.md" benchmarks/RESULTS-gpu.md 2>/dev/null \
        || say "could not write benchmarks/RESULTS-gpu.md"
fi

# ---------------------------------------------------------------- (g) the summary, last
status() { [ "$1" = 0 ] && echo ok || echo "FAILED (exit $1)"; }
{
    echo "==================== gpu_check summary ===================="
    echo "$GPUS" | head -4
    echo "imports:   $(status "$IMPORTS_RC")"
    echo "tests:     $TESTS_LINE  [$(status "$TESTS_RC")]"
    echo "jax:       $JAX_LINE  [$(status "$JAX_RC")]"
    echo "torch-cuda: $TORCH_LINE  [$(status "$TORCH_RC")]"
    echo "benchmark: $(status "$BENCH_RC")"
    if [ -f "$LOGS/RESULTS-gpu.md" ]; then
        grep -E '^- (GPU|CUDA|CuPy)' "$LOGS/RESULTS-gpu.md"
        sed -n '/^Step time/,$p' "$LOGS/RESULTS-gpu.md"
    else
        echo "(no RESULTS-gpu.md; the benchmark's last lines:)"
        tail -20 "$LOGS/bench.log"
    fi
    echo "total time: $(($(date +%s) - START)) s"
} >"$SUMMARY"
save_logs
echo
cat "$SUMMARY"
clean_up
[ "$TESTS_RC" = 0 ] && [ "$JAX_RC" = 0 ] && [ "$TORCH_RC" = 0 ] && [ "$BENCH_RC" = 0 ] \
    && [ "$IMPORTS_RC" = 0 ]
