#!/usr/bin/env python3
"""The PyTorch + PEFT side of the training-speed comparison: the same fine-tuning steps `glmlab train`
runs, on the same machine, timed the same way.

  train_peer.py --preset small --data FILE [--method lora|vera] [--rank R] [--batch-size B] [--steps N]
                [--warmup-steps W] [--dtype float32|bfloat16] [--threads T] [--json OUT]

Model: the oracle (chatglm3.py) at a glmlab preset's shapes with random weights (speed does not depend
on the values); adapter: PEFT LoRA (alpha 32, dropout 0) or VeRA on query_key_value. Samples: the
recipe's ids and loss mask (glmlab's lab::sample_ids: [gMASK] sop <|user|> \\n content <|assistant|> +
\\n summary eos, loss on the output), in file order, batches of B left-padded to the longest. Each step:
forward + masked cross-entropy, backward, clip_grad_norm_(1.0), AdamW step. The first W steps are
warm-up and not counted. Prints samples/s, tokens/s and the time split (forward incl. loss, backward,
optimizer).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from chatglm3 import ChatGLM3ForCausalLM  # noqa: E402
from glm_tokenizer import ChatGLM3Tokenizer  # noqa: E402

PRESETS = {  # glmlab's ModelConfig::preset shapes (vocab 65024)
    "tiny": dict(num_layers=2, hidden_size=64, ffn_hidden_size=96, num_attention_heads=4, kv_channels=16,
                 multi_query_group_num=2),
    "small": dict(num_layers=4, hidden_size=512, ffn_hidden_size=1368, num_attention_heads=8, kv_channels=64,
                  multi_query_group_num=2),
    "chatglm3-6b": dict(num_layers=28, hidden_size=4096, ffn_hidden_size=13696, num_attention_heads=32,
                        kv_channels=128, multi_query_group_num=2),
}


def samples(tok, path, limit):
    out = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        ex = json.loads(line)
        inp = tok.build_chat_input(ex["content"])
        outp = tok.encode("\n" + ex["summary"]) + [2]  # encode("\n") + encode(summary) (dummy prefix once)
        ids = (inp + outp)[:limit]
        labels = ([-100] * len(inp) + outp)[:limit]
        out.append((ids, labels))
    return out


def batch(items):
    T = max(len(i) for i, _ in items)
    B = len(items)
    ids = torch.zeros(B, T, dtype=torch.long)
    mask = torch.zeros(B, T, dtype=torch.long)
    pos = torch.zeros(B, T, dtype=torch.long)
    labels = torch.full((B, T), -100, dtype=torch.long)
    for r, (i, l) in enumerate(items):
        n = len(i)
        ids[r, T - n:] = torch.tensor(i)
        labels[r, T - n:] = torch.tensor(l)
        mask[r, T - n:] = 1
        pos[r, T - n:] = torch.arange(n)
    return ids, mask, pos, labels


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="small", choices=sorted(PRESETS))
    ap.add_argument("--data", required=True)
    ap.add_argument("--method", default="lora", choices=["lora", "vera"])
    ap.add_argument("--rank", type=int, default=0)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--warmup-steps", type=int, default=1)
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--max-length", type=int, default=769)
    ap.add_argument("--json")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    from peft import LoraConfig, VeraConfig, get_peft_model
    torch.manual_seed(0)
    cfg = dict(PRESETS[args.preset], padded_vocab_size=65024, seq_length=8192, torch_dtype=args.dtype,
               multi_query_attention=True)
    model = ChatGLM3ForCausalLM(cfg).to(getattr(torch, args.dtype))
    for p in model.parameters():
        p.requires_grad_(False)
    pc = (LoraConfig(r=args.rank or 8, lora_alpha=32, lora_dropout=0.0) if args.method == "lora"
          else VeraConfig(r=args.rank or 256))
    model = get_peft_model(model, pc)
    for p in model.parameters():  # fp32 adapters on a 16-bit base, as the recipe
        if p.requires_grad:
            p.data = p.data.float()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=5e-5)
    tok = ChatGLM3Tokenizer()
    data = samples(tok, args.data, args.max_length)
    B = args.batch_size
    t_fwd = t_bwd = t_opt = 0.0
    n_samples = n_tokens = 0
    for step in range(args.warmup_steps + args.steps):
        items = [data[(step * B + j) % len(data)] for j in range(B)]
        ids, mask, pos, labels = batch(items)
        t0 = time.perf_counter()
        logits, _ = model(ids, pos, mask)
        V = logits.shape[-1]
        loss = F.cross_entropy(logits[:, :-1].reshape(-1, V).float(), labels[:, 1:].reshape(-1), ignore_index=-100)
        t1 = time.perf_counter()
        loss.backward()
        t2 = time.perf_counter()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad()
        t3 = time.perf_counter()
        if step >= args.warmup_steps:
            t_fwd += t1 - t0
            t_bwd += t2 - t1
            t_opt += t3 - t2
            n_samples += B
            n_tokens += int(mask.sum())
        print(f"step {step + 1} loss {float(loss):.4f} ({t3 - t0:.2f} s)", file=sys.stderr)
    total = t_fwd + t_bwd + t_opt
    res = {"engine": "pytorch+peft", "preset": args.preset, "method": args.method, "dtype": args.dtype,
           "batch_size": B, "steps": args.steps, "threads": torch.get_num_threads(),
           "samples_per_s": n_samples / total, "tokens_per_s": n_tokens / total,
           "forward_s": t_fwd, "backward_s": t_bwd, "optimizer_s": t_opt}
    print(json.dumps(res, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2) + "\n")


if __name__ == "__main__":
    main()
