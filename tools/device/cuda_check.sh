#!/usr/bin/env bash
# The one GPU check of the CUDA back end (issue 6), run on the lent device machine from the repository
# root, after tools/device/prepare.sh has filled .device/ here (see docs/CUDA.md for the exact `run` call).
#
# Stages, in order of value, each time-boxed with `timeout` inside one overall budget (CUDA_CHECK_BUDGET_S,
# default 470 s), so a hang costs its own box and later stages still run with what is left:
#   env      nvidia-smi, nvcc, cmake, python3/torch/transformers versions
#   build    cmake (CUDA + cuBLAS from python3's nvidia wheels) + ninja glmlab glmlab_tests into build-device/
#   tests    glmlab_tests --gtest_filter='Cuda*:Engine*:DistNccl*' (every kernel vs the CPU reference; whole model)
#   parity   glmlab parity --device cuda on the oracle's tiny fp32 / fp16 / bf16 golden logits
#   bench    glmlab bench infer --device cuda on random:chatglm3-6b: bf16 at batch 1 and 32 on all of
#            .device/tiny.json (the "under a minute" target), then int8/int4 at batch 1 and 32 on 24 records
#   train    (after the bf16 bench) tools/reference/train_peer.py --device cuda --glmlab: glmlab bench train --device cuda (LoRA r8 on
#            the device trainer, random:chatglm3-6b bf16, batch 4 of tiny.json, 1 warm-up + 3 timed steps; the
#            CudaTrainer tests above hold it to PEFT first), then transformers + PEFT on the same batches and card
#   peer     tools/reference/bench_peer.py --device cuda: glmlab vs transformers (eager, then static cache +
#            torch.compile) on random:chatglm3-6b bf16, batch 1 and 32, 8 records of 48 tokens
# Everything is written under $WORK (default /tmp/cuda-check): logs/NN-stage.log, summary.txt (stage, exit
# code, seconds), the bench and peer output folders, gtest XML, nvidia-smi before and after. The device tool
# brings back at most 8 files from $OUT, so after EVERY stage (a later hang or kill loses nothing) $OUT
# gets three: summary.txt, logs.txt (all stage logs in order) and cuda-check.tgz (all of $WORK).
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-out/cuda-check}
WORK=${CUDA_CHECK_WORK:-/tmp/cuda-check}
rm -rf "$WORK"
mkdir -p "$OUT" "$WORK/logs"
export PYTHONUNBUFFERED=1
BUDGET=${CUDA_CHECK_BUDGET_S:-470}  # the run call gives 600: 130 s spare for start-up noise
START=$(date +%s)
BUILD=${CUDA_CHECK_BUILD_DIR:-build-device}
JOBS=${CUDA_CHECK_JOBS:-$(nproc)}
SUMMARY="$WORK/summary.txt"
N=0
echo "cuda_check.sh at $(git rev-parse --short HEAD 2>/dev/null || echo '?') on $(hostname), budget ${BUDGET}s" | tee "$SUMMARY"

pack() {
  cp "$SUMMARY" "$OUT/summary.txt"
  cat "$WORK"/logs/*.log > "$OUT/logs.txt" 2>/dev/null
  tar czf "$OUT/cuda-check.tgz.tmp" -C "$(dirname "$WORK")" "$(basename "$WORK")" && mv "$OUT/cuda-check.tgz.tmp" "$OUT/cuda-check.tgz"
}

# stage NAME MAX_SECONDS COMMAND...: runs COMMAND under timeout min(MAX, budget left − 5), logging
# stdout+stderr to $WORK/logs/NN-NAME.log; skipped (rc "skip") when under 15 s are left.
stage() {
  local name=$1 max=$2
  shift 2
  N=$((N + 1))
  local log
  log=$(printf '%s/logs/%02d-%s.log' "$WORK" "$N" "$name")
  local left=$((BUDGET - ($(date +%s) - START) - 5))
  local box=$((max < left ? max : left))
  if ((box < 15)); then
    printf '%-10s %6s %6ss  (no budget left)\n' "$name" skip 0 | tee -a "$SUMMARY"
    return 0
  fi
  local t0
  t0=$(date +%s)
  echo "+ [timeout ${box}s] $*" > "$log"
  # bash -c: the stage may be one of the exported functions below (timeout runs programs only).
  timeout --kill-after=10 "$box" bash -c '"$@"' _ "$@" >> "$log" 2>&1
  local rc=$?
  local dt=$(($(date +%s) - t0))
  [[ $rc == 124 || $rc == 137 ]] && echo "!! timed out after ${box}s" >> "$log"
  printf '%-10s %6s %6ss  %s\n' "$name" "$rc" "$dt" "$log" | tee -a "$SUMMARY"
  tail -n 25 "$log" | sed "s/^/    [$name] /"
  pack
  return 0
}

[[ -f .device/tiny.json && -f .device/shared/data/chatglm3/tokenizer.model ]] || {
  echo "cuda_check.sh: .device/ is missing or incomplete: run tools/device/prepare.sh before the device call" |
    tee -a "$SUMMARY"
  pack
  exit 2
}
PREPARED=$(cat .device/prepared-at-commit 2>/dev/null || echo '?')
echo ".device prepared at commit $PREPARED" | tee -a "$SUMMARY"

# ---- env
env_info() {
  nvidia-smi
  nvidia-smi -q -d CLOCK,MEMORY,POWER | head -120
  /usr/local/cuda/bin/nvcc --version
  cmake --version | head -1
  python3 - <<'PY'
import importlib, sys
print("python", sys.version.split()[0])
for m in ("torch", "transformers", "nvidia"):
    try:
        mod = importlib.import_module(m)
        print(m, getattr(mod, "__version__", ""), list(getattr(mod, "__path__", []))[:1])
    except Exception as e:  # noqa: BLE001
        print(m, "MISSING:", e)
try:
    import torch
    print("torch.cuda", torch.version.cuda, "available", torch.cuda.is_available(),
          torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")
except Exception as e:  # noqa: BLE001
    print("torch.cuda check failed:", e)
PY
}
export -f env_info
stage env 30 env_info
nvidia-smi > "$WORK/nvidia-smi-before.txt" 2>&1

# ---- build (kept between calls on a warm machine: the second run only relinks what changed)
build() {
  cmake -S . -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release -DBUILD_TESTING=ON \
    -DGLMLAB_PYTHON="$(command -v python3)" -DGLMLAB_SHARED="$PWD/.device/shared" &&
    ninja -C "$BUILD" -j"$JOBS" glmlab glmlab_tests
}
export -f build
export BUILD JOBS
stage build 240 build
if [[ ! -x $BUILD/glmlab ]]; then
  echo "build failed: nothing else can run (see the build log)" | tee -a "$SUMMARY"
  pack
  exit 1
fi
grep -hE "glmlab: (CUDA back end|NCCL|MPI)" "$WORK"/logs/*-build.log | tee -a "$SUMMARY"
G=$BUILD/glmlab

# ---- tests
stage tests 150 "$BUILD/tests/glmlab_tests" --gtest_filter='Cuda*:Engine*:DistNccl*' --gtest_output="xml:$WORK/gtest-cuda.xml"

# ---- parity with the oracle's golden logits (tolerances of tests/test_model.cpp)
parity() {
  local rc=0
  $G parity --device cuda --model .device/golden/tiny-f32 --ref .device/golden/tiny-f32/golden.safetensors \
    --fp32-activations || rc=1
  $G parity --device cuda --model .device/golden/tiny-f16 --ref .device/golden/tiny-f16/golden.safetensors \
    --atol 0 --rtol 5e-3 || rc=1
  $G parity --device cuda --model .device/golden/tiny-bf16 --ref .device/golden/tiny-bf16/golden.safetensors \
    --atol 0 --rtol 4e-2 || rc=1
  return $rc
}
export -f parity
export G
stage parity 45 parity

# ---- glmlab bench infer on the 6B shapes
TOK=.device/tokenizer.model
stage bench-bf16 150 $G bench infer --device cuda --model random:chatglm3-6b --dtype bf16 --batch 1,32 \
  --data .device/tiny.json --tokenizer $TOK --probe quick --no-progress -o "$WORK/bench-6b-bf16"
# ---- (before the int8/int4 inference bench: it is the newer unknown) fine-tuning on the device trainer, 6B shapes
stage train 150 python3 tools/reference/train_peer.py --device cuda --glmlab "$G" --model random:chatglm3-6b \
  --dtype bf16 --qat none --method lora --batch-size 4 --steps 3 --warmup-steps 1 --data .device/tiny.json \
  --tokenizer $TOK --probe off --allow-large --rounds 1 --out "$WORK/train-peer"

stage bench-int 130 $G bench infer --device cuda --model random:chatglm3-6b --dtype int8,int4 --batch 1,32 \
  --data .device/tiny.json --records 24 --tokenizer $TOK --probe quick --no-progress -o "$WORK/bench-6b-int"

# ---- the transformers peer on the same GPU, same run
stage peer 150 python3 tools/reference/bench_peer.py --device cuda --glmlab "$G" --model random:chatglm3-6b \
  --dtype bf16 --batch 1,32 --data .device/tiny.json --tokenizer $TOK --records 8 --max-new-tokens 48 \
  --rounds 1 --engines transformers,transformers-compile --out "$WORK/peer"

nvidia-smi > "$WORK/nvidia-smi-after.txt" 2>&1
echo "total $(($(date +%s) - START))s" | tee -a "$SUMMARY"
pack
