#!/usr/bin/env bash
# Installs what glmlab needs on a fresh Debian machine: the build's Debian packages (apt-get) and,
# with --oracle, the Python virtual environment of the oracle (.venv, ignored by git) and headless
# Chromium, both used by tests.
set -euo pipefail
cd "$(dirname "$0")/.."

want_oracle=0
[[ "${1:-}" == "--oracle" ]] && want_oracle=1

pkgs=(build-essential cmake ninja-build pkg-config libopenblas-openmp-dev libhwy-dev libsentencepiece-dev
      nlohmann-json3-dev libcli11-dev libfmt-dev libgtest-dev libgmock-dev libbenchmark-dev gnuplot-nox
      libopenmpi-dev openmpi-bin libcpp-httplib-dev)
# Test mode only: headless Chromium (about 290 MB installed) opens the benchmark's HTML page in a test.
((want_oracle)) && pkgs+=(chromium clang libclang-rt-14-dev)  # + clang: the libFuzzer targets (scripts/fuzz.sh)
missing=()
for p in "${pkgs[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}"
  sudo_cmd=""; [[ $(id -u) -ne 0 ]] && sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if ((want_oracle)); then
  py_pkgs=(torch==2.13.0 transformers peft safetensors sentencepiece numpy pytest openai gguf)
  if [[ ! -x .venv/bin/python ]]; then python3 -m venv .venv; fi
  if ! .venv/bin/python -c "import torch, transformers, peft, safetensors, sentencepiece, numpy, pytest, openai, gguf" 2>/dev/null; then
    echo "setup: installing the oracle's Python packages into .venv"
    .venv/bin/pip install -q --disable-pip-version-check "${py_pkgs[@]}" 2>&1 | grep -v "is ignored: it is neither" || true
    .venv/bin/python -c "import torch, transformers, peft, safetensors, sentencepiece, numpy, pytest, openai, gguf"
  fi
  # NCCL's headers and library for the CUDA build's NCCL communicator (compiled in CI, run on a GPU):
  # only where the CUDA toolkit is, since nothing else needs them.
  if [[ -x /usr/local/cuda/bin/nvcc ]] && ! .venv/bin/python -c "import nvidia.nccl" 2>/dev/null; then
    echo "setup: installing NCCL (nvidia-nccl-cu13) into .venv for the CUDA build"
    .venv/bin/pip install -q --disable-pip-version-check nvidia-nccl-cu13 || echo "setup: NCCL not installed: the build goes on without the NCCL communicator"
  fi
fi
