#!/usr/bin/env python3
"""Loads an adapter folder with PEFT (PeftModel.from_pretrained) on a checkpoint and checks that it
reproduces logits computed elsewhere (by glmlab): the "saved by glmlab, loads into PEFT" check.

  check_adapter.py --model CKPT_DIR --adapter ADAPTER_DIR --expect FILE [--atol 5e-5]

FILE (safetensors): input_ids, position_ids, attention_mask I64 [B, T], optional segment_ids I64 [B, T],
logits F32 [B, T, V]. Compares the real positions only. Prints the max |difference|; exit 0 when it is
within atol, 1 otherwise (2 on a load error).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

sys.path.insert(0, str(Path(__file__).resolve().parent))
from chatglm3 import load_checkpoint  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--adapter", required=True)
    ap.add_argument("--expect", required=True)
    ap.add_argument("--atol", type=float, default=5e-5)
    args = ap.parse_args(argv)
    from peft import PeftModel
    torch.set_num_threads(1)
    try:
        model = PeftModel.from_pretrained(load_checkpoint(args.model), args.adapter).eval()
    except Exception as e:  # noqa: BLE001 - report any load failure as such
        print(f"PEFT could not load {args.adapter}: {e}")
        return 2
    want = load_file(args.expect)
    with torch.no_grad():
        logits, _ = model(want["input_ids"], want["position_ids"], want["attention_mask"],
                          segment_ids=want.get("segment_ids"))
    real = want["attention_mask"].bool()
    diff = float((logits.float() - want["logits"])[real].abs().max())
    scale = float(want["logits"][real].abs().max())
    print(f"PEFT logits vs expected: max |diff| {diff:.3e} (logits up to {scale:.2f}), atol {args.atol:g}")
    return 0 if diff <= args.atol else 1


if __name__ == "__main__":
    sys.exit(main())
