#!/usr/bin/env python3
"""The PyTorch + PEFT peer of `glmlab bench train`: the very same training steps (glmlab's micro-batches,
model config, adapter, optimizer settings) with PyTorch autograd + PEFT on the same machine, timed the
same way and written in the same summary schema ("glmlab-bench-train/1"), so that
`glmlab bench compare GLMLAB_DIR PEER_DIR` prints the ratios.

  # glmlab and the peer interleaved: 3 rounds in alternating order, the median round reported, then
  # the ratio table:
  train_peer.py --glmlab build/glmlab --model random:small --method lora,vera --steps 3 --out out/train-peer
  # the peer alone, for an existing glmlab bench train folder:
  train_peer.py --from out/bench-train-20250101-120000 --out out/train-peer/peer
  # on the GPU (issue 12): glmlab's device trainer and transformers + PEFT on the same card
  train_peer.py --device cuda --glmlab build/glmlab --model random:chatglm3-6b --method lora --batch-size 4 \
      --data tiny.json --tokenizer tokenizer.model --allow-large --rounds 1 --out $OUT/train-peer

--device cuda: the transformers model is made on the GPU with transformers' own random initialisation
(bench_peer.transformers_model: no host copy of a 6B model), the micro-batches are moved there, autocast
is torch.autocast("cuda", ...), every time is taken after torch.cuda.synchronize(), and the peak memory is
torch.cuda.max_memory_allocated(); glmlab runs `bench train --device cuda`. The oracle model is CPU only.

The model (--impl):
  transformers  (default) what users run: transformers' GlmForCausalLM (the GLM-4 layout, glm_hf.py) with
                attn_implementation="sdpa" (torch's scaled_dot_product_attention), in the run's dtype, under
                torch.autocast("cpu", bfloat16) for bf16 runs (fp16 runs: autocast float16). ChatGLM3's
                adapter targets map to GLM's linears: query_key_value -> q_proj, k_proj, v_proj (three
                adapters where glmlab has one on the fused matrix: PEFT cannot adapt a matrix the model
                does not have, so the peer trains a few more parameters: LoRA r·hidden more per layer,
                VeRA 2·r more), dense -> o_proj, dense_h_to_4h -> gate_up_proj, dense_4h_to_h -> down_proj.
                Padded batches pass the 0/1 padding mask as users do (transformers builds the causal mask;
                SDPA's causal kernel when nothing is padded); packed batches pass a 4-D boolean mask that
                keeps attention inside each segment.
  oracle        the oracle of this folder (chatglm3.py): attention as an explicit fp32 softmax, written for
                exactness, not speed (the peer of glmlab sessions 2-4), no autocast.
Both build the same random weights for a seed (the oracle's, mapped to GLM's names with glm_hf.py), so the
two compute the same losses up to rounding (tests/test_train_peer.py); speed does not depend on the values.
The summary names the implementation: "engine" is "transformers+peft" or "torch-oracle+peft", and
options.impl says the model class, attention and autocast.

What runs: for every run of glmlab's summary.json with qat "none" (PyTorch + PEFT has no CPU training path
on int8/int4 weights here: bitsandbytes is CUDA-only, so QAT runs are listed under "skipped"), the model
above at glmlab's config.json with its own random weights in the run's dtype, PEFT LoRA (r, alpha, dropout,
rsLoRA, targets as glmlab's run) or VeRA (r, targets, d_initial 0.1), adapters in fp32 on the 16-bit base
(the recipe's). Each micro-batch of glmlab's batches.jsonl (ids, position ids, padding mask, packed
segments, labels) in glmlab's order; each step: forward + mean masked cross-entropy over the shifted labels
(forward_s), backward (backward_s), clip_grad_norm_(max_grad_norm) + AdamW (lr with linear decay over the
steps, weight decay as glmlab's) + zero_grad (optimizer_s). The first warm-up steps are run and not
counted. FLOPs per step: glmlab's formula (lab::train_step_flops, docs/FINETUNE.md), so GFLOP/s ratios
equal speed ratios.

OpenMP: like glmlab, a short OpenMP spin (GOMP_SPINCOUNT=10000) unless GOMP_SPINCOUNT or OMP_WAIT_POLICY
is set. Models over 4 GB of weights need --allow-large.
"""
from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import subprocess
import sys
import time
from pathlib import Path

if not os.environ.get("GOMP_SPINCOUNT") and not os.environ.get("OMP_WAIT_POLICY"):
    os.environ["GOMP_SPINCOUNT"] = "10000"  # read by libgomp when torch loads: must precede the import

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_peer  # noqa: E402
from bench_peer import (DTYPES, LARGE_BYTES, check_device, machine, matrix_bytes, merge_rounds,  # noqa: E402
                        oracle_model, peak_rss_bytes, reset_peak_rss, spread, write_atomic)
from chatglm3 import ChatGLM3Config, attention_allowed  # noqa: E402
from glm_hf import glm_config, glm_state_dict  # noqa: E402

SCHEMA = "glmlab-bench-train/1"
IMPLS = ("transformers", "oracle")
ENGINE = {"transformers": "transformers+peft", "oracle": "torch-oracle+peft"}
# glmlab's (ChatGLM3's) adapter targets -> GlmForCausalLM's linears.
HF_TARGETS = {"query_key_value": ("q_proj", "k_proj", "v_proj"), "dense": ("o_proj",),
              "dense_h_to_4h": ("gate_up_proj",), "dense_4h_to_h": ("down_proj",)}
TARGET_DIMS = {  # (in, out) of each linear, from a config dict
    "query_key_value": lambda c: (c["hidden_size"], qkv_dim(c)),
    "dense": lambda c: (c["num_attention_heads"] * c["kv_channels"], c["hidden_size"]),
    "dense_h_to_4h": lambda c: (c["hidden_size"], 2 * c["ffn_hidden_size"]),
    "dense_4h_to_h": lambda c: (c["ffn_hidden_size"], c["hidden_size"]),
}


def groups(c):
    return c["multi_query_group_num"] if c.get("multi_query_attention", True) else c["num_attention_heads"]


def qkv_dim(c):
    return (c["num_attention_heads"] + 2 * groups(c)) * c["kv_channels"]


# ------------------------------------------------------------------------------------------ FLOPs

def sample_lengths(b) -> list[int]:
    """Real tokens of each sample of a micro-batch: rows of a padded batch, segments of a packed one."""
    out = []
    B, T = b["B"], b["T"]
    for r in range(B):
        n, seg = 0, None
        for t in range(T):
            i = r * T + t
            if not b["valid"][i]:
                continue
            s = b["segment"][i] if b["segment"] is not None else 0
            if n and s != seg:
                out.append(n)
                n = 0
            seg = s
            n += 1
        if n:
            out.append(n)
    return out


def label_count(b) -> int:
    B, T = b["B"], b["T"]
    return sum(1 for r in range(B) for t in range(1, T) if b["labels"][r * T + t] != -100)


def train_step_flops(c: dict, rank: int, targets, b) -> tuple[float, float]:
    """glmlab's lab::train_step_flops: (forward, backward) useful FLOPs of one micro-batch, every layer
    adapted (targets apply to all layers), so the lowest adapted layer is 0."""
    C, Fh, H, D = c["hidden_size"], c["ffn_hidden_size"], c["num_attention_heads"], c["kv_channels"]
    QKV, Q = qkv_dim(c), H * D
    V = c.get("padded_vocab_size", c.get("vocab_size"))
    L = c["num_layers"]
    P = QKV * C + C * Q + 2 * Fh * C + C * Fh
    ad = L * sum(2.0 * rank * sum(TARGET_DIMS[t](c)) for t in targets)
    fwd = bwd = 0.0
    for n in sample_lengths(b):
        attn = 2.0 * H * D * n * (n + 1)
        fwd += L * (2.0 * P * n + attn) + ad * n
        bwd += L * (2.0 * P * n + 2 * attn) + 2 * ad * n - 2.0 * QKV * C * n
    M = label_count(b)
    return fwd + 2.0 * V * C * M, bwd + 2.0 * V * C * M


# ------------------------------------------------------------------------------------------ models

@torch.no_grad()
def transformers_model(cfg: dict, dtype: torch.dtype, seed: int):
    """transformers' GlmForCausalLM (SDPA attention) holding the oracle's random weights for `seed`: the
    oracle's tensors are handed over (load_state_dict(assign=True): views, no second copy of a 6B model)."""
    from transformers import GlmForCausalLM

    c = ChatGLM3Config.from_dict(cfg)
    state = oracle_model(cfg, dtype, seed).state_dict()
    with torch.device("meta"):
        model = GlmForCausalLM(glm_config(c, attn="sdpa"))
    model.load_state_dict(glm_state_dict(c, state), strict=True, assign=True)
    del state
    model.model.rotary_emb = type(model.model.rotary_emb)(model.config)  # its buffers were made on meta
    if model.config._attn_implementation != "sdpa":
        raise SystemExit(f"train_peer: transformers chose attention {model.config._attn_implementation!r}, "
                         f"not sdpa")
    return model.eval()


def build_model(impl: str, cfg: dict, dtype: torch.dtype, seed: int):
    if bench_peer.DEVICE == "cuda":  # made on the GPU (transformers' initialisation), never on the host
        return bench_peer.transformers_model(cfg, dtype, seed)
    return transformers_model(cfg, dtype, seed) if impl == "transformers" else oracle_model(cfg, dtype, seed)


def sync():
    if bench_peer.DEVICE == "cuda":
        torch.cuda.synchronize()


def peer_targets(impl: str, targets) -> list[str]:
    """PEFT target_modules of the implementation for glmlab's targets (ChatGLM3 names)."""
    if impl == "oracle":
        return list(targets)
    unknown = [t for t in targets if t not in HF_TARGETS]
    if unknown:
        raise SystemExit(f"train_peer: no GlmForCausalLM linear for target(s) {', '.join(unknown)} "
                         f"(known: {', '.join(HF_TARGETS)})")
    return [m for t in targets for m in HF_TARGETS[t]]


def autocast_dtype(impl: str, dt: str):
    """The autocast dtype of a run: the 16-bit dtype of a bf16/fp16 run on the transformers model, else None."""
    return DTYPES[dt] if impl == "transformers" and dt in ("bf16", "fp16") else None


def impl_facts(impl: str) -> dict:
    if impl == "transformers":
        import transformers
        return {"name": "transformers", "model": "GlmForCausalLM", "attention": "sdpa",
                "autocast": "the run's dtype (bf16/fp16 runs)", "transformers": transformers.__version__}
    return {"name": "oracle", "model": "tools/reference/chatglm3.py", "attention": "explicit fp32 softmax",
            "autocast": None}


# ------------------------------------------------------------------------------------------ one run

def tensors(b):
    B, T = b["B"], b["T"]
    shape = lambda k: torch.tensor(b[k], dtype=torch.long).view(B, T).to(bench_peer.DEVICE)  # noqa: E731
    seg = shape("segment") if b["segment"] is not None else None
    return shape("input_ids"), shape("position_ids"), shape("valid"), seg, shape("labels")


def forward_logits(impl, model, b):
    """The logits [B, T, V] of one micro-batch."""
    ids, pos, mask, seg, _ = tensors(b)
    if impl == "oracle":
        logits, _ = model(ids, pos, mask, segment_ids=seg)
        return logits
    # Packed samples: a 4-D boolean mask [B, 1, T, T] (causal, inside a segment, pads hidden); transformers
    # passes it to SDPA as it is. Padded batches: the 0/1 mask, as users pass it.
    attn = attention_allowed(mask, mask.shape[1], seg)[:, None] if seg is not None else mask
    return model(input_ids=ids, attention_mask=attn, position_ids=pos, use_cache=False).logits


def run_one(cfg, run, batches, opts, seed, log, allow_large, impl="transformers"):
    from peft import LoraConfig, VeraConfig, get_peft_model

    dt = run["dtype"]
    if dt not in DTYPES:
        raise SystemExit(f"train_peer: dtype {dt!r} has no PyTorch peer (supported: {', '.join(DTYPES)})")
    t = time.perf_counter()
    model = build_model(impl, cfg, DTYPES[dt], seed)
    load_s = time.perf_counter() - t
    wbytes, _ = matrix_bytes(model.named_parameters())
    if wbytes > LARGE_BYTES and not allow_large:
        raise SystemExit(f"train_peer: {wbytes / 1e9:.1f} GB of weights: pass --allow-large to run a model this "
                         f"size (it must fit in memory; run it alone)")
    model.train()
    for p in model.parameters():
        p.requires_grad_(False)
    targets = run["targets"]
    modules = peer_targets(impl, targets)
    if run["method"] == "lora":
        pc = LoraConfig(r=run["rank"], lora_alpha=run.get("alpha", 32), lora_dropout=run.get("dropout", 0.0),
                        use_rslora=run.get("rslora", False), target_modules=modules)
    else:
        pc = VeraConfig(r=run["rank"], target_modules=modules, vera_dropout=run.get("dropout", 0.0),
                        d_initial=0.1, save_projection=True)
    torch.manual_seed(seed)
    model = get_peft_model(model, pc)
    for p in model.parameters():  # fp32 adapters on a 16-bit base, as the recipe
        if p.requires_grad:
            p.data = p.data.float()
    params = [p for p in model.parameters() if p.requires_grad]
    trainable = sum(p.numel() for p in params)
    lr = opts["lr"]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=opts.get("weight_decay", 0.0), eps=1e-8)
    total_steps = len(batches)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: max(0.0, (total_steps - s) / total_steps))
    warm = opts["warmup_steps"]
    amp = autocast_dtype(impl, dt)
    log(f"{run['method']} {dt} ({ENGINE[impl]}): {wbytes / 1e9:.3f} GB of weights built in {load_s:.2f} s, "
        f"{trainable} trainable")
    phase = reset_peak_rss()
    on_gpu = bench_peer.DEVICE == "cuda"
    if on_gpu:
        torch.cuda.reset_peak_memory_stats()
    steps = []
    for i, b in enumerate(batches):
        labels = tensors(b)[4]
        sync()
        t0 = time.perf_counter()
        with torch.autocast(bench_peer.DEVICE, dtype=amp) if amp is not None else contextlib.nullcontext():
            logits = forward_logits(impl, model, b)
            Vv = logits.shape[-1]
            loss = F.cross_entropy(logits[:, :-1].reshape(-1, Vv).float(), labels[:, 1:].reshape(-1),
                                   ignore_index=-100)
        sync()
        t1 = time.perf_counter()
        loss.backward()
        sync()
        t2 = time.perf_counter()
        gn = torch.nn.utils.clip_grad_norm_(params, opts["max_grad_norm"]) if opts["max_grad_norm"] > 0 else 0.0
        cur_lr = sched.get_last_lr()[0]
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=False)
        sync()
        t3 = time.perf_counter()
        del logits
        if i < warm:
            continue
        fwd_f, bwd_f = train_step_flops(cfg, run["rank"], targets, b)
        steps.append({"method": run["method"], "qat": "none", "dtype": dt, "step": i - warm + 1, "batch": i,
                      "loss": float(loss.detach()), "grad_norm": float(gn), "lr": cur_lr, "samples": b["samples"],
                      "tokens": sum(b["valid"]), "labelled_tokens": label_count(b), "step_s": t3 - t0,
                      "forward_s": t1 - t0, "backward_s": t2 - t1, "optimizer_s": t3 - t2, "other_s": 0.0,
                      "flops_forward": fwd_f, "flops_backward": bwd_f})
        log(f"{run['method']} {dt} step {i - warm + 1}: loss {float(loss.detach()):.4f}, {t3 - t0:.2f} s")
    peak = torch.cuda.max_memory_allocated() if on_gpu else peak_rss_bytes()
    del model, opt, params
    gc.collect()
    if on_gpu:
        torch.cuda.empty_cache()
    secs = sum(s["step_s"] for s in steps)
    fsum = sum(s["forward_s"] for s in steps)
    bsum = sum(s["backward_s"] for s in steps)
    flops = sum(s["flops_forward"] + s["flops_backward"] for s in steps)
    div = lambda a, b: a / b if b > 0 else 0.0  # noqa: E731
    summary = {
        "method": run["method"], "qat": "none", "dtype": dt, "rank": run["rank"], "targets": targets,
        "peer_targets": modules, "autocast": str(amp).replace("torch.", "") if amp is not None else None,
        "alpha": run.get("alpha", 32), "dropout": run.get("dropout", 0.0), "rslora": run.get("rslora", False),
        "trainable_params": trainable, "batch_size": run["batch_size"], "steps": len(steps), "warmup_steps": warm,
        "pack": run.get("pack", False), "samples": sum(s["samples"] for s in steps),
        "tokens": sum(s["tokens"] for s in steps), "labelled_tokens": sum(s["labelled_tokens"] for s in steps),
        "seconds": secs, "samples_per_s": div(sum(s["samples"] for s in steps), secs),
        "tokens_per_s": div(sum(s["tokens"] for s in steps), secs),
        "step_s": spread([s["step_s"] for s in steps]), "forward_s": spread([s["forward_s"] for s in steps]),
        "backward_s": spread([s["backward_s"] for s in steps]),
        "optimizer_s": spread([s["optimizer_s"] for s in steps]), "other_s": spread([0.0 for _ in steps]),
        "backward_over_forward": div(bsum, fsum), "flops_per_step": div(flops, len(steps)),
        "gflops": div(flops, secs) / 1e9, "gflops_of_probe": 0.0,
        "loss_first": steps[0]["loss"] if steps else 0.0, "loss_last": steps[-1]["loss"] if steps else 0.0,
        "weight_bytes": wbytes, "peak_rss_bytes": peak, "peak_rss_is_phase": phase, "load_s": load_s}
    return summary, steps


def peer_round(src: Path, dest: Path, args, threads, log):
    cfg = json.loads((src / "config.json").read_text())
    glm = json.loads((src / "summary.json").read_text())
    if glm.get("schema") != SCHEMA:
        raise SystemExit(f"train_peer: {src / 'summary.json'} is not a glmlab bench train summary "
                         f"(schema {glm.get('schema')!r}, expected {SCHEMA!r})")
    batches = [json.loads(x) for x in (src / "batches.jsonl").read_text().splitlines() if x.strip()]
    opts = dict(glm["options"])
    mach = machine(threads)
    t = time.perf_counter()
    runs, steps, skipped = [], [], []
    for run in glm["runs"]:
        if run.get("qat", "none") != "none":
            skipped.append({"method": run["method"], "qat": run["qat"], "dtype": run["dtype"],
                            "reason": "no training path on int8/int4 weights in PyTorch + PEFT here "
                                      "(bitsandbytes is not part of the oracle's environment)"})
            continue
        s, st = run_one(cfg, run, batches, opts, args.seed, log, args.allow_large, args.impl)
        runs.append(s)
        steps += st
    mach["load_end"] = list(os.getloadavg())
    summary = {
        "schema": SCHEMA, "engine": ENGINE[args.impl], "impl": impl_facts(args.impl), "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "command": " ".join(sys.argv), "model": {**glm["model"], "spec": glm["model"]["spec"] + " (own random weights)"},
        "data": {**glm["data"], "source": str(src / "batches.jsonl")},
        "options": {**opts, "device": bench_peer.DEVICE, "threads": threads, "impl": args.impl, "torch": torch.__version__,
                    "peft": __import__("peft").__version__, "gomp_spincount": os.environ.get("GOMP_SPINCOUNT")},
        "flops": glm.get("flops"), "machine": mach, "probes": None, "runs": runs, "skipped": skipped,
        "wall_s": time.perf_counter() - t}
    dest.mkdir(parents=True, exist_ok=True)
    write_atomic(dest / "summary.json", json.dumps(summary, indent=2) + "\n")
    write_atomic(dest / "steps.jsonl", "".join(json.dumps(x) + "\n" for x in steps))
    for r in runs:
        log(f"{r['method']} {r['dtype']} ({ENGINE[args.impl]}): {r['samples_per_s']:.3f} samples/s, {r['tokens_per_s']:.1f} tokens/s, "
            f"step {r['step_s']['median']:.2f} s (forward {r['forward_s']['median']:.2f}, backward "
            f"{r['backward_s']['median']:.2f}, optimizer {r['optimizer_s']['median']:.3f})")
    return summary


def peer_child(src: Path, dest: Path, args, threads: int) -> None:
    """One peer round in its own Python process (this script with --from), so that each round starts with
    the memory of none before it: at 6B a round's model, autocast casts and allocator caches outlive
    `del model` + gc.collect() in the parent (~12 GB), and the next glmlab round then found too little memory.
    Each round's peak RSS is its own too."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--from", str(src), "--out", str(dest),
           "--impl", args.impl, "--seed", str(args.seed), "--device", args.device, "--threads", str(threads)]
    if args.allow_large:
        cmd.append("--allow-large")
    print("+ " + " ".join(cmd), file=sys.stderr, flush=True)
    subprocess.run(cmd, check=True)


def run_glmlab(args, dest: Path) -> Path:
    cmd = [args.glmlab, "bench", "train", "--model", args.model, "--method", args.method, "--qat", args.qat,
           "--dtype", args.dtype, "--batch-size", str(args.batch_size), "--steps", str(args.steps),
           "--warmup-steps", str(args.warmup_steps), "--no-progress", "--out", str(dest)]
    for flag, value in (("--data", args.data), ("--records", str(args.records) if args.records else None),
                        ("--tokenizer", args.tokenizer), ("--rank", str(args.rank) if args.rank else None),
                        ("--threads", str(args.threads) if args.threads else None), ("--probe", args.probe)):
        if value:
            cmd += [flag, value]
    if args.pack:
        cmd.append("--pack")
    if args.device != "cpu":
        cmd += ["--device", args.device]
    print("+ " + " ".join(cmd), file=sys.stderr)
    table = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True).stdout
    write_atomic(dest / "stdout.md", table)
    for row in table.splitlines():
        if row.startswith("| ") and not row.startswith("| run"):
            print(f"train_peer: glmlab: {row}", file=sys.stderr)
    return dest


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--from", dest="src", help="a glmlab bench train output folder (summary.json, config.json, "
                                                "batches.jsonl)")
    src.add_argument("--glmlab", help="the glmlab binary: run glmlab bench train too (into OUT/glmlab)")
    ap.add_argument("--out", required=True, help="output folder (with --glmlab: OUT/glmlab and OUT/peer)")
    ap.add_argument("--rounds", type=int, default=3,
                    help="with --glmlab: glmlab and the peer this many times, interleaved in alternating order; "
                         "the median round is reported")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = all usable cores)")
    ap.add_argument("--impl", choices=IMPLS, default="transformers",
                    help="the PyTorch model: transformers (GlmForCausalLM, SDPA attention, bf16 autocast: what "
                         "users run; default) or oracle (chatglm3.py, explicit fp32 softmax attention)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cpu", help="cpu, or cuda: the peer (and glmlab, with --glmlab) on the GPU")
    ap.add_argument("--allow-large", action="store_true", help="allow models over 4 GB of weights")
    g = ap.add_argument_group("with --glmlab: the glmlab bench train run")
    g.add_argument("--model", default="random:small")
    g.add_argument("--method", default="lora,vera")
    g.add_argument("--qat", default="none")
    g.add_argument("--dtype", default="bf16")
    g.add_argument("--batch-size", type=int, default=1)
    g.add_argument("--steps", type=int, default=3)
    g.add_argument("--warmup-steps", type=int, default=1)
    g.add_argument("--rank", type=int, default=0)
    g.add_argument("--records", type=int, default=0)
    g.add_argument("--data")
    g.add_argument("--tokenizer")
    g.add_argument("--probe", default="quick")
    g.add_argument("--pack", action="store_true")
    args = ap.parse_args(argv)
    check_device(args.device)
    bench_peer.DEVICE = args.device
    if args.device == "cuda" and args.impl == "oracle":
        raise SystemExit("train_peer: the oracle model runs on --device cpu only (use --impl transformers on cuda)")

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    threads = args.threads or len(os.sched_getaffinity(0))
    torch.set_num_threads(threads)

    def log(msg):
        print(f"train_peer: {msg}", file=sys.stderr, flush=True)

    if not args.glmlab:
        peer_round(Path(args.src), out, args, threads, log)
        print(f"compare with: glmlab bench compare {args.src} {out}", file=sys.stderr)
        return
    rounds = max(1, args.rounds)
    for k in range(rounds):
        sub = f"round-{k + 1}" if rounds > 1 else ""
        order = ["glmlab", "peer"] if k % 2 == 0 else ["peer", "glmlab"]
        for name in order:
            if name == "glmlab":
                run_glmlab(args, out / "glmlab" / sub)
            else:
                # glmlab's batches are the same every round (same options and seed): a round that starts
                # with the peer reads those of round 1.
                src = out / "glmlab" / (sub if (out / "glmlab" / sub / "batches.jsonl").exists() else "round-1")
                peer_child(src, out / "peer" / sub, args, threads)
    if rounds > 1:
        for name in ("glmlab", "peer"):
            merged = merge_rounds([json.loads((out / name / f"round-{k + 1}" / "summary.json").read_text())
                                   for k in range(rounds)])
            write_atomic(out / name / "summary.json", json.dumps(merged, indent=2) + "\n")
    table = subprocess.run([args.glmlab, "bench", "compare", str(out / "glmlab"), str(out / "peer")],
                           check=True, capture_output=True, text=True).stdout
    write_atomic(out / "compare.md", table)
    what = f"median of {rounds} interleaved rounds; min-max over rounds in each summary.json" \
        if rounds > 1 else "one round"
    print(f"\n## glmlab vs {ENGINE[args.impl]} ({what})\n\n{table}")


if __name__ == "__main__":
    main()
