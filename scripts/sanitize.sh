#!/usr/bin/env bash
# The C++ suite under AddressSanitizer + UndefinedBehaviorSanitizer (issue 14).
#
#   scripts/sanitize.sh [GTEST_FILTER]
#
# Configures its own build folder (build-asan; the normal build/ is untouched), CPU back end only,
# builds the test binary and the glmlab CLI with -fsanitize=address,undefined, lets CTest's oracle
# fixtures write the golden files that build folder's tests read, then runs the gtest binary (which
# runs the sanitized CLI as a subprocess, so the CLI is checked too). Any report stops the run with a
# non-zero exit status (-fno-sanitize-recover=all, halt_on_error=1).
#
# Environment: GLMLAB_PYTHON (the oracle's Python; default .venv/bin/python), JOBS (ninja -j, default
# 2), BUILD (default build-asan), SANITIZE_FILTER (gtest filter when no argument is given).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
BUILD=${BUILD:-build-asan}
JOBS=${JOBS:-2}
PY=${GLMLAB_PYTHON:-$ROOT/.venv/bin/python}
# Default: every test (the whole suite takes about 4.5 min under the sanitizers on 2 cores).
FILTER=${1:-${SANITIZE_FILTER:-*}}

SAN="-fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer"
t0=$(date +%s)
cmake -S . -B "$BUILD" -G Ninja \
  -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O1 -g" -DCMAKE_C_FLAGS_RELWITHDEBINFO="-O1 -g" \
  -DCMAKE_CXX_FLAGS="$SAN" -DCMAKE_C_FLAGS="$SAN" -DCMAKE_EXE_LINKER_FLAGS="$SAN" \
  -DBUILD_TESTING=ON -DGLMLAB_CUDA=OFF -DGLMLAB_PYTHON="$PY" >/dev/null
ninja -C "$BUILD" -j"$JOBS" glmlab glmlab_tests
t1=$(date +%s)

# The golden files (Python, not sanitized): the same fixtures `ctest` runs before the C++ tests.
ctest --test-dir "$BUILD" -R '^oracle_(make|data|train|quant)_golden$' --output-on-failure
t2=$(date +%s)

# Every report also goes to a file under $LOGS, so a report from a CLI subprocess counts even where the
# test only expects a non-zero exit status; the run fails when any file is there.
# detect_leaks=1: libgomp and OpenBLAS report no leaks at exit here, so nothing is suppressed.
# abort_on_error / halt_on_error: the first report ends the process (no core dump).
# The CLI re-executes itself once (kernels/cpu/runtime.cpp) and inherits these variables.
LOGS=$(cd "$BUILD" && pwd)/sanitizer-reports
rm -rf "$LOGS" && mkdir -p "$LOGS"
export ASAN_OPTIONS="halt_on_error=1:abort_on_error=1:detect_leaks=1:strict_string_checks=1:check_initialization_order=1:detect_stack_use_after_return=1:disable_coredump=1:log_path=$LOGS/asan"
export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1:log_path=$LOGS/ubsan"
rc=0
"$BUILD/tests/glmlab_tests" --gtest_filter="$FILTER" --gtest_brief=1 || rc=$?
t3=$(date +%s)
if compgen -G "$LOGS/*" >/dev/null; then
  echo "sanitize.sh: sanitizer reports:"
  for f in "$LOGS"/*; do echo "---- $f"; cat "$f"; done
  rc=1
fi
echo "sanitize.sh: build $((t1 - t0)) s, goldens $((t2 - t1)) s, tests $((t3 - t2)) s, total $((t3 - t0)) s; exit $rc"
exit $rc
