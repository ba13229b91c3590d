#!/usr/bin/env python3
"""Writes the oracle's fine-tuning goldens (PyTorch autograd + PEFT) for the C++ Finetune* tests.

  train_golden.py --out DIR        (deterministic, a few seconds)

DIR/train/tiny-f32/          the tiny-f32 checkpoint of make_golden.py (same seed, written here too so
                             this fixture does not depend on the order CTest runs fixtures in)
DIR/train/<method>/          method = lora | vera:
  adapter_config.json, adapter_model.safetensors   PEFT's own save_pretrained of the adapter below
  golden.safetensors         for each batch kind K in (pad, pack):
    K.input_ids, K.position_ids, K.attention_mask, K.segment_ids, K.labels   I64 [B, T]
    K.loss                    F32 [1]   mean masked cross-entropy (labels shifted by one, -100 ignored)
    K.logits                  F32 [B, T, V]
    K.grad.<PEFT tensor name> F32       d loss / d parameter, for every trainable adapter tensor
  plus adamw.losses F32 [10] and adamw.final.<name>: ten AdamW steps on the pad batch (see ADAMW).
  parity.safetensors          the adapted model in make_golden's golden format (prefill + 3 greedy
                             cached decode steps), for `glmlab parity --adapter`

Adapters: LoRA r 8, alpha 32, dropout 0, all four linears; VeRA r 16, d_initial 0.1, prng key 0, all
four linears (vera_A [16, 96], vera_B [192, 16] sliced per linear). PEFT initializes them; then the
parts that start at zero are set to random values (seeded) so that every gradient is non-trivial:
lora_B ~ 0.1·N(0,1); vera_lambda_b ~ 0.5·N(0,1), vera_lambda_d ~ 0.1 + 0.05·N(0,1).

Samples (random ids in 1..511, input part then output part; labels: -100 on the input, the ids on
the output, as the recipe's loss mask): lengths (input, output) = (5, 4), (4, 3), (8, 4).
pad:  B=3, T=12, LEFT-padded with id 0 (mask 0, position 0, label -100), one segment per row.
pack: B=2, T=16: row 0 = samples 0 and 1 (positions restart at 0, segments 0 and 1), row 1 = sample 2
      and 4 trailing pads (mask 0, position 0, label -100, segment 1).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

sys.path.insert(0, str(Path(__file__).resolve().parent))
from chatglm3 import load_checkpoint  # noqa: E402
from make_golden import ST_META, TINY_CONFIG, random_state_dict, run_model, write_checkpoint  # noqa: E402

TARGETS = ["query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h"]
SAMPLES = [(5, 4), (4, 3), (8, 4)]
PAD_T, PACK_T = 12, 16
ADAMW = dict(lr=1e-2, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01, warmup=2, steps=10, max_grad_norm=1.0)


def peft_config(method: str):
    from peft import LoraConfig, VeraConfig
    if method == "lora":
        return LoraConfig(r=8, lora_alpha=32, lora_dropout=0.0, target_modules=TARGETS)
    return VeraConfig(r=16, d_initial=0.1, projection_prng_key=0, vera_dropout=0.0, target_modules=TARGETS)


def make_samples(seed: int = 7):
    g = torch.Generator().manual_seed(seed)
    out = []
    for n_in, n_out in SAMPLES:
        ids = torch.randint(1, 512, (n_in + n_out,), generator=g)
        labels = ids.clone()
        labels[:n_in] = -100
        out.append((ids, labels))
    return out


def pad_batch(samples):
    B, T = len(samples), PAD_T
    b = {k: torch.zeros(B, T, dtype=torch.long) for k in ("input_ids", "position_ids", "attention_mask", "segment_ids")}
    b["labels"] = torch.full((B, T), -100, dtype=torch.long)
    for r, (ids, labels) in enumerate(samples):
        n = len(ids)
        b["input_ids"][r, T - n:] = ids
        b["labels"][r, T - n:] = labels
        b["attention_mask"][r, T - n:] = 1
        b["position_ids"][r, T - n:] = torch.arange(n)
    return b


def pack_batch(samples):
    rows = [[0, 1], [2]]
    B, T = len(rows), PACK_T
    b = {k: torch.zeros(B, T, dtype=torch.long) for k in ("input_ids", "position_ids", "attention_mask", "segment_ids")}
    b["labels"] = torch.full((B, T), -100, dtype=torch.long)
    for r, members in enumerate(rows):
        t = 0
        for seg, i in enumerate(members):
            ids, labels = samples[i]
            n = len(ids)
            b["input_ids"][r, t:t + n] = ids
            b["labels"][r, t:t + n] = labels
            b["attention_mask"][r, t:t + n] = 1
            b["position_ids"][r, t:t + n] = torch.arange(n)
            b["segment_ids"][r, t:t + n] = seg
            t += n
        b["segment_ids"][r, t:] = len(members)  # trailing pads: a segment of their own
        assert t <= T
    return b


def run(model, batch):
    logits, _ = model(batch["input_ids"], batch["position_ids"], batch["attention_mask"],
                      segment_ids=batch["segment_ids"])
    V = logits.shape[-1]
    loss = F.cross_entropy(logits[:, :-1].reshape(-1, V).float(), batch["labels"][:, 1:].reshape(-1),
                           ignore_index=-100)
    return logits, loss


def saved_name(param_name: str) -> str:
    return param_name.replace(".default", "")


def make_adapter(ckpt: Path, method: str):
    from peft import get_peft_model
    torch.manual_seed(0)  # PEFT's own init draws from the global generator
    model = get_peft_model(load_checkpoint(str(ckpt)), peft_config(method))
    g = torch.Generator().manual_seed(11)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if not p.requires_grad:
                continue
            if "lora_B" in name:
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
            elif "vera_lambda_b" in name:
                p.copy_(0.5 * torch.randn(p.shape, generator=g))
            elif "vera_lambda_d" in name:
                p.copy_(0.1 + 0.05 * torch.randn(p.shape, generator=g))
    return model


def write_parity_golden(model, path: Path) -> None:
    """The adapted model's logits in make_golden's golden.safetensors format (glmlab parity --adapter):
    a left-padded prefill of 3 rows (9, 6, 3 random ids) and 3 greedy cached decode steps, fp32."""
    g = torch.Generator().manual_seed(21)
    B, T = 3, 9
    ids = torch.zeros(B, T, dtype=torch.long)
    mask = torch.zeros(B, T, dtype=torch.long)
    pos = torch.zeros(B, T, dtype=torch.long)
    for b, n in enumerate((9, 6, 3)):
        ids[b, T - n:] = torch.randint(1, 512, (n,), generator=g)
        mask[b, T - n:] = 1
        pos[b, T - n:] = torch.arange(n)
    prefill, steps = run_model(model, ids, mask, pos)
    out = {"input_ids": ids, "attention_mask": mask, "position_ids": pos, "prefill_logits": prefill,
           "prefill_logits_fp32ref": prefill.clone()}
    for k, (tok, p, lg) in enumerate(steps, start=1):
        out.update({f"step{k}_ids": tok, f"step{k}_position_ids": p, f"step{k}_logits": lg,
                    f"step{k}_logits_fp32ref": lg.clone()})
    save_file({k: v.contiguous() for k, v in out.items()}, str(path), metadata=ST_META)


def lr_factor(step: int) -> float:
    """transformers' get_linear_schedule_with_warmup: step/warmup, then linear decay to 0 at `steps`."""
    w, n = ADAMW["warmup"], ADAMW["steps"]
    if step < w:
        return step / max(1, w)
    return max(0.0, (n - step) / max(1, n - w))


def adamw_steps(model, batch):
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=ADAMW["lr"], betas=ADAMW["betas"], eps=ADAMW["eps"],
                            weight_decay=ADAMW["weight_decay"])
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_factor)
    losses = []
    for _ in range(ADAMW["steps"]):
        opt.zero_grad()
        _, loss = run(model, batch)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, ADAMW["max_grad_norm"])
        opt.step()
        sched.step()
        losses.append(float(loss))
    return torch.tensor(losses, dtype=torch.float32)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, type=Path)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    root = args.out / "train"
    ckpt = root / "tiny-f32"
    write_checkpoint(ckpt, TINY_CONFIG, random_state_dict(TINY_CONFIG, seed=1234), torch.float32)
    samples = make_samples()
    batches = {"pad": pad_batch(samples), "pack": pack_batch(samples)}
    for method in ("lora", "vera"):
        model = make_adapter(ckpt, method)
        out = root / method
        model.save_pretrained(str(out))
        write_parity_golden(model, out / "parity.safetensors")
        g = {}
        for kind, batch in batches.items():
            model.zero_grad()
            logits, loss = run(model, batch)
            loss.backward()
            for k, v in batch.items():
                g[f"{kind}.{k}"] = v
            g[f"{kind}.loss"] = loss.detach().float().reshape(1)
            g[f"{kind}.logits"] = logits.detach().float()
            for name, p in model.named_parameters():
                if p.requires_grad:
                    g[f"{kind}.grad.{saved_name(name)}"] = p.grad.detach().float().clone()
            print(f"{method} {kind}: loss {float(loss):.6f}")
        g["adamw.losses"] = adamw_steps(model, batches["pad"])
        for name, p in model.named_parameters():
            if p.requires_grad:
                g[f"adamw.final.{saved_name(name)}"] = p.detach().float().clone()
        save_file({k: v.contiguous() for k, v in g.items()}, str(out / "golden.safetensors"), metadata=ST_META)
        print(f"wrote {out} (adamw losses {[round(x, 4) for x in g['adamw.losses'].tolist()]})")


if __name__ == "__main__":
    main()
