#!/usr/bin/env bash
# Fetch the pure-Python wheels that an offline GPU machine lacks, into wheels/ (repo root).
#
# Run this on a machine WITH access to a package registry, from anywhere inside the repo:
#     bash benchmarks/fetch_wheels.sh
# then carry wheels/ (gitignored) along with the source tree, and on the GPU machine run
#     bash benchmarks/gpu_check.sh
#
# Environment:
#     PYTHON               the interpreter whose pip is used (default: python3)
#     WHEEL_PYTHON_VERSION the Python version the wheels are for (default: 3.12)
#     WHEEL_PACKAGES       the packages to download (default: array-api-compat
#                          array-api-strict tqdm); add "==VERSION" to pin one.
#     WHEEL_BINARY_PACKAGES compiled packages, fetched for CPython WHEEL_PYTHON_VERSION on
#                          x86-64 Linux (default: "nvmath-python==1.0.0", cuBLASLt for the
#                          CuPy backend, the version tried on the H200's image; its own
#                          needs, cuda-bindings and cuda-core, are there with CuPy).
# Only one version of each package is kept: older wheels of the same name are removed.
set -euo pipefail

PYTHON="${PYTHON:-python3}"
PYVER="${WHEEL_PYTHON_VERSION:-3.12}"
PACKAGES="${WHEEL_PACKAGES:-array-api-compat array-api-strict tqdm}"
BINARY_PACKAGES="${WHEEL_BINARY_PACKAGES-nvmath-python==1.0.0}"

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
mkdir -p wheels
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT

# The normalised distribution name a wheel file starts with: array-api-compat -> array_api_compat.
wheel_stem() {
    local name="${1%%[=<>!~ ]*}"
    name="$(printf '%s' "$name" | tr '[:upper:]' '[:lower:]' | tr -- '-.' '__')"
    printf '%s' "$name"
}

# Replace every wheel of distribution $1 in wheels/ by the one(s) in directory $2.
replace_wheels() {
    local stem="$1" from="$2" found=0 f
    for f in "$from"/*.whl; do
        [ -e "$f" ] || continue
        found=1
    done
    if [ "$found" = 0 ]; then
        echo "fetch_wheels: no wheel was produced for $stem" >&2
        return 1
    fi
    # Wheel file names may keep the original capitalisation; compare case-insensitively.
    for f in wheels/*.whl; do
        [ -e "$f" ] || continue
        local base
        base="$(basename "$f" | tr '[:upper:]' '[:lower:]')"
        case "$base" in
            "$stem"-*) rm -f "$f" ;;
        esac
    done
    mv "$from"/*.whl wheels/
}

for pkg in $PACKAGES; do
    stem="$(wheel_stem "$pkg")"
    dest="$TMP/$stem"
    mkdir -p "$dest"
    echo "fetch_wheels: downloading $pkg (pure-Python wheel for Python $PYVER)"
    "$PYTHON" -m pip download --quiet --no-deps --only-binary=:all: \
        --python-version "$PYVER" -d "$dest" "$pkg"
    for f in "$dest"/*.whl; do
        case "$f" in
            *-none-any.whl) ;;
            *) echo "fetch_wheels: $f is not a pure-Python wheel" >&2; exit 1 ;;
        esac
    done
    replace_wheels "$stem" "$dest"
done

for pkg in $BINARY_PACKAGES; do
    stem="$(wheel_stem "$pkg")"
    dest="$TMP/$stem"
    mkdir -p "$dest"
    echo "fetch_wheels: downloading $pkg (CPython $PYVER, x86-64 Linux)"
    "$PYTHON" -m pip download --quiet --no-deps --only-binary=:all: \
        --python-version "$PYVER" --implementation cp --platform manylinux_2_28_x86_64 \
        --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d "$dest" "$pkg"
    replace_wheels "$stem" "$dest"
done

echo "fetch_wheels: building the polynn wheel from $ROOT"
mkdir -p "$TMP/polynn"
"$PYTHON" -m pip wheel --quiet --no-deps -w "$TMP/polynn" .
replace_wheels polynn "$TMP/polynn"

echo "fetch_wheels: wheels/ now holds:"
ls -1 wheels/*.whl
