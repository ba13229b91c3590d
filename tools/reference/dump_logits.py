#!/usr/bin/env python3
"""Dumps a golden logits file (the make_golden.py / `glmlab parity --ref` format) for any HF-layout
ChatGLM3 checkpoint, computed by our oracle or by transformers' GlmForCausalLM, on any torch device.

  dump_logits.py --model CKPT_DIR --out GOLDEN.safetensors [--runtime oracle|transformers]
                 [--device cpu|cuda|hpu|...] [--dtype float32|float16|bfloat16]
                 [--ids "1 2 3" --ids "4 5" ...] [--lengths 9,6,3 --seed 0] [--steps 3]

The batch is left-padded with id 0: the --ids rows, else random ids in 1..vocab-1 of the given lengths
(seeded). Prefill logits of every position, then --steps greedy cached decode steps (each row is fed its
own argmax). Written tensors (logits cast to fp32 on the CPU): input_ids, attention_mask, position_ids
I64 [B,T]; prefill_logits F32 [B,T,V]; stepK_ids, stepK_position_ids I64 [B]; stepK_logits F32 [B,V].
No *_fp32ref tensors. __metadata__ also records runtime, device and dtype.
"""
from __future__ import annotations

import argparse
import inspect
import json
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

sys.path.insert(0, str(Path(__file__).resolve().parent))
from chatglm3 import ChatGLM3Config, load_checkpoint  # noqa: E402
from glm_hf import make_glm  # noqa: E402
from make_golden import DTYPE_NAMES, ST_META  # noqa: E402

DTYPES = {v: k for k, v in DTYPE_NAMES.items()}


def build_batch(rows: list[list[int]]):
    """Left-pads rows with id 0: (input_ids, attention_mask, position_ids), each I64 [B, T]."""
    T = max(len(r) for r in rows)
    ids = torch.zeros(len(rows), T, dtype=torch.long)
    mask = torch.zeros_like(ids)
    pos = torch.zeros_like(ids)
    for b, r in enumerate(rows):
        n = len(r)
        ids[b, T - n:] = torch.tensor(r, dtype=torch.long)
        mask[b, T - n:] = 1
        pos[b, T - n:] = torch.arange(n)
    return ids, mask, pos


def random_rows(lengths: list[int], vocab: int, seed: int) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(1, vocab, (n,), generator=g).tolist() for n in lengths]


class HFRuntime(torch.nn.Module):
    """transformers' GlmForCausalLM behind the oracle's call: (ids, pos, mask, cache, use_cache) ->
    (logits, cache). Weight mapping in glm_hf.py."""

    def __init__(self, cfg: ChatGLM3Config, state: dict, dtype: torch.dtype, attn: str = "eager"):
        super().__init__()
        self.hf = make_glm(cfg, state, dtype, attn)
        self.cache_kw = "cache" if "cache" in inspect.signature(self.hf.forward).parameters else "past_key_values"

    def forward(self, input_ids, position_ids, attention_mask, past_key_values=None, use_cache=False):
        out = self.hf(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                      use_cache=use_cache, **{self.cache_kw: past_key_values})
        cache = getattr(out, "cache", None)
        return out.logits, (cache if cache is not None else out.past_key_values)


def load_runtime(model_dir: str, runtime: str, device: str, dtype: torch.dtype | None):
    """(model with the oracle's call signature, its ChatGLM3Config), on device, in dtype (None: as stored)."""
    if device.startswith("hpu"):
        import habana_frameworks.torch.core  # noqa: F401  (registers the hpu device)
    oracle = load_checkpoint(model_dir, dtype=dtype)
    cfg = oracle.config
    if runtime == "transformers":
        model = HFRuntime(cfg, oracle.state_dict(), oracle.dtype)
        del oracle
    else:
        model = oracle
    return model.to(device).eval(), cfg


@torch.no_grad()
def run(model, ids, mask, pos, steps: int, device: str) -> dict[str, torch.Tensor]:
    """Prefill + `steps` greedy cached decode steps; returns the golden tensors (CPU, logits fp32)."""
    d_ids, d_mask, d_pos = ids.to(device), mask.to(device), pos.to(device)
    logits, cache = model(d_ids, d_pos, d_mask, use_cache=True)
    out = {"input_ids": ids, "attention_mask": mask, "position_ids": pos,
           "prefill_logits": logits.float().cpu()}
    last, cur = logits[:, -1], d_pos[:, -1]
    for k in range(1, steps + 1):
        tok, cur = last.argmax(-1), cur + 1
        d_mask = torch.cat((d_mask, torch.ones_like(d_mask[:, :1])), dim=1)
        logits, cache = model(tok[:, None], cur[:, None], d_mask, cache, use_cache=True)
        last = logits[:, 0]
        out[f"step{k}_ids"] = tok.cpu()
        out[f"step{k}_position_ids"] = cur.cpu()
        out[f"step{k}_logits"] = last.float().cpu()
    return {k: v.contiguous() for k, v in out.items()}


def main(argv=None) -> dict[str, torch.Tensor]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="HF-layout checkpoint dir (config.json + safetensors)")
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--runtime", choices=("oracle", "transformers"), default="oracle")
    ap.add_argument("--device", default="cpu", help="any torch device string: cpu, cuda, cuda:1, hpu, ...")
    ap.add_argument("--dtype", choices=sorted(DTYPES), default=None, help="default: the checkpoint's")
    ap.add_argument("--ids", action="append", default=None, help='one row of ids, e.g. "1 2 3" (repeatable)')
    ap.add_argument("--lengths", default="9,6,3", help="random rows of these lengths (without --ids)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--steps", type=int, default=3)
    args = ap.parse_args(argv)

    dtype = DTYPES[args.dtype] if args.dtype else None
    model, cfg = load_runtime(args.model, args.runtime, args.device, dtype)
    if args.ids:
        rows = [[int(x) for x in r.replace(",", " ").split()] for r in args.ids]
    else:
        with open(Path(args.model) / "config.json") as f:
            vocab = min(cfg.padded_vocab_size, json.load(f).get("vocab_size") or cfg.padded_vocab_size)
        rows = random_rows([int(n) for n in args.lengths.split(",")], vocab, args.seed)
    if not rows or any(not r for r in rows):
        ap.error("every row needs at least one id")
    if any(not 0 <= x < cfg.padded_vocab_size for r in rows for x in r):
        ap.error(f"ids must be in 0..{cfg.padded_vocab_size - 1}")

    ids, mask, pos = build_batch(rows)
    golden = run(model, ids, mask, pos, args.steps, args.device)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    used = dtype or cfg.dtype
    save_file(golden, str(args.out), metadata={**ST_META, "runtime": args.runtime, "device": args.device,
                                               "dtype": DTYPE_NAMES[used]})
    print(f"wrote {args.out} ({args.runtime}, {args.device}, {DTYPE_NAMES[used]}, B={ids.shape[0]}, "
          f"T={ids.shape[1]}, steps={args.steps})")
    return golden


if __name__ == "__main__":
    main()
