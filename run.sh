#!/usr/bin/env bash
# The two commands of the README.
#   ./run.sh          install what is missing, build, run the main job on the embedded default
#   ./run.sh test     install what is missing (incl. the Python oracle), build, run the whole test suite
set -euo pipefail
cd "$(dirname "$0")"
mode="${1:-demo}"
jobs="$(nproc)"

case "$mode" in
  demo)
    scripts/setup.sh
    cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release -DBUILD_TESTING=OFF >/dev/null
    ninja -C build -j "$jobs" glmlab
    ./build/glmlab bench infer   # the embedded default: random:small in fp16, bf16, int8, int4 on the built-in AdvertiseGen sample
    ;;
  test)
    scripts/setup.sh --oracle
    cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release -DBUILD_TESTING=ON >/dev/null
    ninja -C build -j "$jobs"
    ctest --test-dir build --output-on-failure --timeout 1200
    ;;
  *)
    echo "usage: $0 [demo|test]" >&2
    exit 2
    ;;
esac
