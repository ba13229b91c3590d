#!/usr/bin/env bash
# Prepares what a GPU run of tools/device/cuda_check.sh needs, on THIS machine (which has ../shared, the
# oracle's venv and a built glmlab), into the git-ignored folder .device/ that the device call carries:
#
#   .device/shared/data/chatglm3/tokenizer.model     the real tokenizer (tests' GLMLAB_SHARED on the device)
#   .device/shared/data/AdvertiseGen/dev.json        the real dev set
#   .device/tiny.json                                100 records of dev.json (glmlab data tiny)
#   .device/golden/                                  the oracle's tiny checkpoints + golden logits (make_golden.py)
#
# Usage: tools/device/prepare.sh [GLMLAB_BINARY]   (default: build/glmlab, else build-cuda/glmlab)
# Idempotent; a few seconds. The device has no ../shared and no network: everything it reads is here.
set -euo pipefail
cd "$(dirname "$0")/../.."
SHARED=${GLMLAB_SHARED:-../shared}
GLMLAB=${1:-}
if [[ -z "$GLMLAB" ]]; then
  for b in build/glmlab build-cuda/glmlab; do [[ -x $b ]] && GLMLAB=$b && break; done
fi
[[ -x "$GLMLAB" ]] || { echo "prepare.sh: no glmlab binary (build first, or pass its path)" >&2; exit 1; }
[[ -f "$SHARED/data/chatglm3/tokenizer.model" ]] || { echo "prepare.sh: $SHARED/data/chatglm3/tokenizer.model missing" >&2; exit 1; }
PY=.venv/bin/python
[[ -x $PY ]] || { echo "prepare.sh: the oracle's venv is missing at $PY (scripts/setup.sh)" >&2; exit 1; }

mkdir -p .device/shared/data/chatglm3 .device/shared/data/AdvertiseGen
cp "$SHARED/data/chatglm3/"{tokenizer.model,config.json,tokenizer_config.json} .device/shared/data/chatglm3/
cp "$SHARED/data/AdvertiseGen/dev.json" .device/shared/data/AdvertiseGen/
cp "$SHARED/data/chatglm3/tokenizer.model" .device/tokenizer.model
"$GLMLAB" data tiny "$SHARED/data/AdvertiseGen/dev.json" --tokenizer "$SHARED/data/chatglm3/tokenizer.model" \
  -n 100 -o .device/tiny.json
"$PY" tools/reference/make_golden.py --out .device/golden --shared "$SHARED" >/dev/null
git rev-parse HEAD > .device/prepared-at-commit
du -sh .device | awk '{print "prepare.sh: .device holds " $1 " (the carry limit is 64 MiB)"}'
