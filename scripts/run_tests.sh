#!/usr/bin/env bash
# All tests: the C++ tests of the emulated CUDA warp (built with AddressSanitizer and
# UBSan, run by ctest), then the Python suite against the installed extension.
set -euo pipefail
cd "$(dirname "$0")/.."

build=build/cpp-tests
mkdir -p "$build"
cmake -S . -B "$build" -DSAE_SANITIZE=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo > "$build/configure.log" 2>&1 \
  || { cat "$build/configure.log"; exit 1; }
cmake --build "$build" -j "${SAE_TEST_JOBS:-2}"
ctest --test-dir "$build" --output-on-failure -j "${SAE_TEST_JOBS:-2}"

python -m pytest python_tests -q -p no:cacheprovider "$@"
