#!/usr/bin/env bash
# Fuzzes glmlab's file loaders with libFuzzer (fuzz/, docs/RELIABILITY.md "Fuzzing").
#   scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]     (default 60 s; all targets)
# Configures and builds build-fuzz with clang (ASan + UBSan, CUDA and MPI off, no CLI, no tests), then
# runs each target for SECONDS_PER_TARGET on a COPY of its committed corpus fuzz/corpus/<target> (the
# repository is never modified), one after the other, with -timeout=10 -rss_limit_mb=2048.
# Exit status: 0 when no target found anything; 1 on any finding (crash, sanitizer report, uncaught
# exception other than glmlab::Error, timeout, memory limit), with the path of each crash file printed.
# Environment: JOBS (build parallelism, default 2), GLMLAB_FUZZ_BUILD (build folder, default build-fuzz),
# GLMLAB_FUZZ_WORK (where the corpus copies, logs and crash files go; default a fresh /tmp folder).
set -euo pipefail

secs=${1:-60}
[[ $# -gt 0 ]] && shift
root=$(cd "$(dirname "$0")/.." && pwd)
build=${GLMLAB_FUZZ_BUILD:-$root/build-fuzz}
jobs=${JOBS:-2}
all=(fuzz_safetensors fuzz_st_index fuzz_config fuzz_adapter fuzz_train_state fuzz_golden fuzz_records)
if (( $# )); then targets=("$@"); else targets=("${all[@]}"); fi
if ! [[ $secs =~ ^[0-9]+$ ]] || (( secs < 1 )); then echo "fuzz.sh: SECONDS_PER_TARGET must be a positive integer" >&2; exit 2; fi
for t in "${targets[@]}"; do
  [[ -d $root/fuzz/corpus/$t ]] || { echo "fuzz.sh: unknown target $t (no fuzz/corpus/$t)" >&2; exit 2; }
done
command -v clang++ >/dev/null || { echo "fuzz.sh: clang++ is missing (apt-get install clang libclang-rt-14-dev)" >&2; exit 2; }

t0=$(date +%s)
cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_C_COMPILER=clang \
  -DCMAKE_CXX_COMPILER=clang++ -DGLMLAB_FUZZ=ON -DGLMLAB_CUDA=OFF -DGLMLAB_MPI=OFF -DBUILD_TESTING=OFF >/dev/null
ninja -C "$build" -j "$jobs" "${targets[@]}"
t1=$(date +%s)
echo "fuzz.sh: configure + build: $((t1 - t0)) s"

work=${GLMLAB_FUZZ_WORK:-$(mktemp -d /tmp/glmlab-fuzz.XXXXXX)}
mkdir -p "$work"
export ASAN_OPTIONS=${ASAN_OPTIONS:-abort_on_error=1:detect_leaks=1:allocator_may_return_null=0}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
findings=0
summary=()
for t in "${targets[@]}"; do
  d=$work/$t
  rm -rf "$d"
  mkdir -p "$d/corpus" "$d/artifacts"
  cp -r "$root/fuzz/corpus/$t/." "$d/corpus/"
  echo "fuzz.sh: $t for $secs s (log $d/log)"
  s0=$(date +%s)
  rc=0
  "$build/fuzz/$t" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
    -artifact_prefix="$d/artifacts/" "$d/corpus" >"$d/log" 2>&1 || rc=$?
  s1=$(date +%s)
  execs=$(awk '/stat::number_of_executed_units/ {print $2}' "$d/log" | tail -n 1)
  corpus=$(find "$d/corpus" -type f | wc -l)
  crashes=$(find "$d/artifacts" -type f | sort)
  if (( rc != 0 )) || [[ -n $crashes ]]; then
    findings=$((findings + 1))
    echo "fuzz.sh: FINDING in $t (exit $rc); last lines of $d/log:"
    tail -n 40 "$d/log" | sed 's/^/    /'
    for f in $crashes; do echo "fuzz.sh: crash file: $f"; done
    summary+=("$(printf '%-18s %6s s  %12s execs  %5s corpus  FINDING' "$t" $((s1 - s0)) "${execs:-?}" "$corpus")")
  else
    summary+=("$(printf '%-18s %6s s  %12s execs  %5s corpus  ok' "$t" $((s1 - s0)) "${execs:-?}" "$corpus")")
  fi
done
echo "fuzz.sh: summary (build $((t1 - t0)) s, work folder $work)"
printf '  %s\n' "${summary[@]}"
if (( findings > 0 )); then
  echo "fuzz.sh: $findings target(s) with findings; crash files and logs are under $work"
  exit 1
fi
[[ -z ${GLMLAB_FUZZ_WORK:-} ]] && rm -rf "$work"
echo "fuzz.sh: no findings"
