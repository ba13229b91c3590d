#!/usr/bin/env python3
"""The PyTorch peer of `glmlab bench infer` (issue 4 §4): the same records (prompt ids and forced output
lengths, read from glmlab's prompts.jsonl), the same model config (glmlab's config.json) and dtype, run
through

  oracle        the ChatGLM3 oracle of this folder (chatglm3.py: prefill, then one cached decode_step per
                token, greedy), and
  transformers  transformers' GlmForCausalLM.generate() (greedy, SDPA attention; the weight mapping of
                tests/test_oracle.py::make_hf, here with its own random weights),

on this machine's CPU with torch.set_num_threads(cores), or (--device cuda) on the GPU, writing the same
summary.json fields (and records.jsonl) so `glmlab bench compare GLMLAB_DIR PEER_DIR` prints the ratios. Random weights are each
engine's own (same shapes and dtype, different numbers): speed does not depend on the values, and forced
lengths make every engine generate the same number of tokens.

  # all three engines side by side: 3 rounds (glmlab, oracle, transformers in rotating order), the
  # median round of each, then the ratio tables:
  bench_peer.py --glmlab build/glmlab --model random:small --dtype bf16 --records 5 --max-new-tokens 32 --out out/peer
  # peers only, for an existing glmlab run:
  bench_peer.py --from out/bench-infer-20250101-120000 --out out/peer

Batching, warm-up and repetitions follow glmlab's run (static batches of prompts sorted by target then
prompt length, left padding). Models whose weights exceed 4 GB (random:chatglm3-6b: 12.5 GB in bf16)
need --allow-large: this 24 GB machine holds one at a time.

--device cuda (issue 6 §6; glmlab bench infer runs with --device cuda too): transformers only (the oracle
is the CPU reference), weights made directly on the GPU in bf16/fp16/fp32, SDPA attention, generate() with
the same forced lengths; timings synchronize the GPU. Engine transformers-compile adds transformers' static
KV cache and torch.compile of the forward (mode reduce-overhead: CUDA graphs); when compiling fails the
engine is reported as skipped with the reason, and the other engines still run:

  bench_peer.py --device cuda --glmlab build/glmlab --model random:chatglm3-6b --dtype bf16 --batch 1,32 \
      --data .device/tiny.json --rounds 1 --engines transformers,transformers-compile --out $OUT/peer

OpenMP: like glmlab (src/kernels/cpu/runtime.h), the peer runs with a short OpenMP spin
(GOMP_SPINCOUNT=10000) unless GOMP_SPINCOUNT or OMP_WAIT_POLICY is set, so that on a shared, busy machine
neither engine loses its threads to spinning; --torch-default-omp keeps libgomp's default spin.
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

if "--torch-default-omp" not in sys.argv and not os.environ.get("GOMP_SPINCOUNT") \
        and not os.environ.get("OMP_WAIT_POLICY"):
    os.environ["GOMP_SPINCOUNT"] = "10000"  # read by libgomp when torch loads: must precede the import

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from chatglm3 import ChatGLM3Config, ChatGLM3ForCausalLM, decode_step  # noqa: E402
from glm_hf import glm_config  # noqa: E402

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
ENGINES = ("oracle", "transformers", "transformers-compile")
DEVICE = "cpu"  # --device: where the peers run (main() sets it)


def sync():
    if DEVICE == "cuda":
        torch.cuda.synchronize()


def check_device(device: str) -> None:
    """--device cuda needs a GPU that this torch can use: a clear SystemExit otherwise."""
    if device == "cpu":
        return
    if device != "cuda":
        raise SystemExit(f"bench_peer: --device {device!r}: expected cpu or cuda")
    if not torch.cuda.is_available():
        raise SystemExit(f"bench_peer: --device cuda, but torch {torch.__version__} sees no CUDA GPU "
                         f"(built with CUDA {torch.version.cuda}; CUDA_VISIBLE_DEVICES="
                         f"{os.environ.get('CUDA_VISIBLE_DEVICES', '<unset>')}): run it on the GPU machine")
STOP_IDS = (2, 64795, 64797)  # eos, <|user|>, <|observation|>: glmlab's GenerateOptions defaults
LARGE_BYTES = 4e9


# ------------------------------------------------------------------------------------------- models

def matrix_bytes(named_params) -> tuple[int, int]:
    """(bytes of all 2-D weights, bytes of the embedding table)."""
    total = emb = 0
    for name, p in named_params:
        if p.dim() == 2:
            total += p.numel() * p.element_size()
            if "embed" in name:
                emb += p.numel() * p.element_size()
    return total, emb


@torch.no_grad()
def oracle_model(cfg: dict, dtype: torch.dtype, seed: int):
    """The oracle with random weights allocated directly in `dtype` (no fp32 copy of a 6B model)."""
    with torch.device("meta"):
        model = ChatGLM3ForCausalLM(cfg)
    model = model.to(dtype).to_empty(device="cpu")
    g = torch.Generator().manual_seed(seed)
    for name, p in model.named_parameters():
        if name.endswith("layernorm.weight"):
            p.fill_(1.0)
        elif name.endswith(".bias"):
            p.zero_()
        else:
            p.normal_(0.0, 0.02, generator=g)
    return model.eval()


@torch.no_grad()
def transformers_model(cfg: dict, dtype: torch.dtype, seed: int):
    from transformers import GlmForCausalLM

    torch.manual_seed(seed)
    with torch.device(DEVICE):  # on cuda: weights made on the GPU, never a host copy of a 6B model
        model = GlmForCausalLM._from_config(glm_config(ChatGLM3Config.from_dict(cfg), attn="sdpa"), dtype=dtype)
    return model.eval()


@torch.no_grad()
def transformers_compiled_model(cfg: dict, dtype: torch.dtype, seed: int):
    """transformers with its static KV cache and torch.compile of the forward (CUDA graphs on a GPU)."""
    model = transformers_model(cfg, dtype, seed)
    model.generation_config.cache_implementation = "static"
    model.forward = torch.compile(model.forward, mode="reduce-overhead", fullgraph=True)
    return model


# ----------------------------------------------------------------------------------- one group

def left_pad(prompts):
    B, T = len(prompts), max(len(p) for p in prompts)
    ids = torch.zeros(B, T, dtype=torch.long)
    mask = torch.zeros(B, T, dtype=torch.long)
    for b, p in enumerate(prompts):
        ids[b, T - len(p):] = torch.tensor(p, dtype=torch.long)
        mask[b, T - len(p):] = 1
    return ids, mask


@torch.no_grad()
def oracle_group(model, prompts, targets, forced):
    """Greedy generation with the oracle, as glmlab's generate(): the group runs to its longest target
    (forced: stop ids ignored); a sequence's tokens beyond its own target are computed, not counted.
    Returns per-sequence (count, end time), prefill time, decode time, decode steps, t0."""
    B, n = len(prompts), max(targets)
    ids, mask = left_pad(prompts)
    count, end, done, stopped = [0] * B, [0.0] * B, [False] * B, [False] * B
    t0 = time.perf_counter()
    logits, cache = model(ids, None, mask, use_cache=True)
    row = logits[:, -1]
    t1 = time.perf_counter()
    pos = mask.sum(1) - 1
    steps, made = 0, [0] * B  # made: tokens generated, counted or not
    while True:
        nxt = row.float().argmax(-1)
        now = time.perf_counter()
        for b in range(B):
            if done[b]:
                continue
            tok = int(nxt[b])
            if not forced and tok in STOP_IDS:
                done[b] = stopped[b] = True
                continue
            made[b] += 1
            if count[b] < targets[b]:
                count[b] += 1
                end[b] = now
            if made[b] >= n:
                done[b] = True
        if all(done):
            break
        pos = pos + 1
        mask = torch.cat((mask, torch.ones(B, 1, dtype=mask.dtype)), dim=1)
        row, cache = decode_step(model, nxt, pos, mask, cache)
        steps += 1
    t2 = time.perf_counter()
    return count, end, stopped, t1 - t0, t2 - t1, steps, t0


class _Timer:
    """A transformers streamer that keeps the time and ids of every generated step."""

    def __init__(self):
        self.prompt_seen, self.steps = False, []

    def put(self, value):
        if not self.prompt_seen:  # generate() first puts the prompt
            self.prompt_seen = True
            return
        ids = value.reshape(-1).tolist()  # a copy to the host: the step is done on a GPU too
        self.steps.append((time.perf_counter(), ids))

    def end(self):
        pass


@torch.no_grad()
def transformers_group(model, prompts, targets, forced):
    B, n = len(prompts), max(targets)
    ids, mask = left_pad(prompts)
    ids, mask = ids.to(DEVICE), mask.to(DEVICE)
    timer = _Timer()
    sync()
    t0 = time.perf_counter()
    model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=n, min_new_tokens=n if forced else 0,
                   do_sample=False, num_beams=1, pad_token_id=0, eos_token_id=list(STOP_IDS), streamer=timer)
    sync()
    t2 = time.perf_counter()
    count, end, stopped = [0] * B, [0.0] * B, [False] * B
    for t, toks in timer.steps:
        for b in range(B):
            if stopped[b]:
                continue
            if not forced and toks[b] in STOP_IDS:
                stopped[b] = True
            elif count[b] < targets[b]:
                count[b] += 1
                end[b] = t
    first = timer.steps[0][0] if timer.steps else t2
    return count, end, stopped, first - t0, t2 - first, max(0, len(timer.steps) - 1), t0


# ------------------------------------------------------------------------------------ summaries

def prefill_flops(c: dict, T: int) -> float:
    """glmlab's lab::prefill_flops: matrices, causal attention, one output row."""
    C, F, H, D = c["hidden_size"], c["ffn_hidden_size"], c["num_attention_heads"], c["kv_channels"]
    G = c["multi_query_group_num"] if c.get("multi_query_attention") else H
    V = c.get("padded_vocab_size", c.get("vocab_size"))
    params = (H * D + 2 * G * D) * C + C * H * D + 2 * F * C + C * F
    return c["num_layers"] * (2 * params * T + 2.0 * H * D * T * (T + 1)) + 2 * V * C


def spread(v):
    if not v:
        return {"median": 0.0, "min": 0.0, "max": 0.0}
    s = sorted(v)
    n = len(s)
    med = s[n // 2] if n % 2 else 0.5 * (s[n // 2 - 1] + s[n // 2])
    return {"median": med, "min": s[0], "max": s[-1]}


def percentile(v, q):
    if not v:
        return 0.0
    s = sorted(v)
    pos = q * (len(s) - 1)
    lo = int(pos)
    hi = min(len(s) - 1, lo + 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def summarize(groups, records, facts, batch, reps):
    """The fields of glmlab's run_json (lab/bench_report.cpp), from this engine's measurements."""
    cols = {k: [] for k in ("wall", "thr", "pre", "dec", "p50", "p90", "ttft", "gbs", "gflops")}
    first = None
    for rep in range(reps):
        gs = [g for g in groups if g["rep"] == rep]
        rs = [r for r in records if r["rep"] == rep]
        w, ps, ds = (sum(g[k] for g in gs) for k in ("wall_s", "prefill_s", "decode_s"))
        tin, tout, steps = (sum(g[k] for g in gs) for k in ("input_tokens", "output_tokens", "decode_steps"))
        flops = sum(g["prefill_flops"] for g in gs)
        dec_tokens = sum(max(0, r["output_tokens"] - 1) for r in rs)
        if first is None:
            first = (len(rs), tin, tout)
        div = lambda a, b: a / b if b > 0 else 0.0  # noqa: E731
        cols["wall"].append(w)
        cols["thr"].append(div(tout, w))
        cols["pre"].append(div(tin, ps))
        cols["dec"].append(div(dec_tokens, ds))
        cols["p50"].append(percentile([r["total_s"] for r in rs], 0.5))
        cols["p90"].append(percentile([r["total_s"] for r in rs], 0.9))
        cols["ttft"].append(percentile([r["prefill_s"] for r in rs], 0.5))
        cols["gbs"].append(div(facts["decode_bytes_per_step"] * steps, ds) / 1e9)
        cols["gflops"].append(div(flops, ps) / 1e9)
    return {
        "dtype": facts["dtype"], "batch": batch, "reps": reps, "records": first[0], "input_tokens": first[1],
        "output_tokens": first[2], "wall_s": spread(cols["wall"]), "throughput_tps": spread(cols["thr"]),
        "prefill_tps": spread(cols["pre"]), "decode_tps": spread(cols["dec"]),
        "latency_p50_s": spread(cols["p50"]), "latency_p90_s": spread(cols["p90"]),
        "ttft_p50_s": spread(cols["ttft"]), "decode_gbs": spread(cols["gbs"]), "decode_gbs_of_probe": 0.0,
        "prefill_gflops": spread(cols["gflops"]), "prefill_gflops_of_probe": 0.0, "batch_gain": 0.0,
        "weight_bytes": facts["weight_bytes"], "decode_bytes_per_step": facts["decode_bytes_per_step"],
        "kv_cache_bytes": facts["kv_cache_bytes"], "peak_rss_bytes": facts["peak_rss_bytes"],
        "peak_rss_is_phase": facts["peak_rss_is_phase"], "load_s": facts["load_s"]}


# ------------------------------------------------------------------------------------ the run

def reset_peak_rss() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_rss_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def machine(threads: int) -> dict:
    cpu = "unknown"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = list(os.getloadavg())
    m = {"cpu": cpu, "cores": len(os.sched_getaffinity(0)), "threads": threads,
         "simd": torch.backends.cpu.get_cpu_capability(), "blas_core": "torch " + torch.__version__,
         "device": "cpu", "mem_total_bytes": os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"),
         "load_start": load, "load_end": load, "python": platform.python_version()}
    if DEVICE == "cuda":
        p = torch.cuda.get_device_properties(0)
        m.update({"device": "cuda " + p.name, "gpu": p.name, "gpu_mem_total_bytes": p.total_memory,
                  "cuda": torch.version.cuda})
    return m


def make_groups(prompts, batch):
    order = list(range(len(prompts)))
    if batch > 1:
        order.sort(key=lambda i: (prompts[i]["target_tokens"], len(prompts[i]["input_ids"])))
    return [order[i:i + batch] for i in range(0, len(order), batch)]


def run_engine(engine, cfg, prompts, dtypes, batches, reps, warmup, forced, seed, log, allow_large):
    build = {"oracle": oracle_model, "transformers": transformers_model,
             "transformers-compile": transformers_compiled_model}[engine]
    group_fn = oracle_group if engine == "oracle" else transformers_group
    runs, all_records = [], []
    for dt in dtypes:
        if dt not in DTYPES:
            raise SystemExit(f"bench_peer: dtype {dt!r} has no PyTorch peer (supported: {', '.join(DTYPES)})")
        phase = reset_peak_rss()
        if DEVICE == "cuda":
            torch.cuda.reset_peak_memory_stats()
        t = time.perf_counter()
        model = build(cfg, DTYPES[dt], seed)
        sync()
        load_s = time.perf_counter() - t
        wbytes, emb = matrix_bytes(model.named_parameters())
        if wbytes > LARGE_BYTES and not allow_large and DEVICE == "cpu":
            raise SystemExit(f"bench_peer: {wbytes / 1e9:.1f} GB of weights: pass --allow-large to run a model "
                             f"this size (it must fit in memory next to glmlab's results)")
        c = ChatGLM3Config.from_dict(cfg)
        log(f"{engine} {dt}: {wbytes / 1e9:.3f} GB of weights built in {load_s:.2f} s")
        run_idx = []
        for batch in batches:
            groups = make_groups(prompts, batch)
            kv = 0
            for grp in groups:
                S = max(len(prompts[i]["input_ids"]) for i in grp) + max(prompts[i]["target_tokens"] for i in grp)
                kv = max(kv, c.num_layers * 2 * len(grp) * S * c.multi_query_group_num * c.kv_channels *
                         torch.empty(0, dtype=DTYPES[dt]).element_size())
            for grp in groups[:warmup]:
                group_fn(model, [prompts[i]["input_ids"] for i in grp], [prompts[i]["target_tokens"] for i in grp],
                         forced)
            gs, rs = [], []
            for rep in range(reps):
                log(f"{engine} {dt} batch {batch} rep {rep + 1}/{reps}")
                for gi, grp in enumerate(groups):
                    ins = [prompts[i]["input_ids"] for i in grp]
                    tg = [prompts[i]["target_tokens"] for i in grp]
                    t0w = time.perf_counter()
                    count, end, stopped, pre, dec, steps, t0 = group_fn(model, ins, tg, forced)
                    wall = time.perf_counter() - t0w
                    gs.append({"rep": rep, "wall_s": wall, "prefill_s": pre, "decode_s": dec,
                               "input_tokens": sum(map(len, ins)), "output_tokens": sum(count),
                               "decode_steps": steps, "prefill_flops": sum(prefill_flops(cfg, len(x)) for x in ins)})
                    for b, i in enumerate(grp):
                        total = end[b] - t0 if count[b] else pre
                        if forced and count[b] != tg[b]:
                            raise RuntimeError(f"{engine}: record {i} made {count[b]} tokens, forced {tg[b]}")
                        rs.append({"dtype": dt, "batch": batch, "rep": rep, "group": gi,
                                   "index": prompts[i]["index"], "input_tokens": len(ins[b]),
                                   "target_tokens": tg[b], "output_tokens": count[b],
                                   "total_tokens": len(ins[b]) + count[b], "forced": forced,
                                   "stopped": bool(stopped[b] and count[b] < tg[b]), "prefill_s": pre,
                                   "decode_s": max(0.0, total - pre), "total_s": total,
                                   "tokens_per_s": count[b] / total if total > 0 else 0.0})
            rs.sort(key=lambda r: (r["rep"], r["index"]))
            facts = {"dtype": dt, "weight_bytes": wbytes, "decode_bytes_per_step": wbytes - emb,
                     "kv_cache_bytes": kv, "peak_rss_bytes": 0, "peak_rss_is_phase": phase, "load_s": load_s}
            run_idx.append(len(runs))
            runs.append(summarize(gs, rs, facts, batch, reps))
            all_records += rs
        peak = torch.cuda.max_memory_allocated() if DEVICE == "cuda" else peak_rss_bytes()
        for i in run_idx:
            runs[i]["peak_rss_bytes"] = peak
        del model
        gc.collect()
        if DEVICE == "cuda":
            torch.cuda.empty_cache()
    for r in runs:
        base = [x for x in runs if x["dtype"] == r["dtype"] and x["batch"] == 1]
        if base and base[0]["throughput_tps"]["median"] > 0:
            r["batch_gain"] = r["throughput_tps"]["median"] / base[0]["throughput_tps"]["median"]
    return runs, all_records


def write_atomic(path: Path, text: str):
    tmp = path.with_name(path.name + f".tmp.{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def run_glmlab(args, dest: Path) -> Path:
    cmd = [args.glmlab, "bench", "infer", "--model", args.model, "--records", str(args.records),
           "--max-new-tokens", str(args.max_new_tokens), "--reps", str(args.reps), "--warmup", str(args.warmup),
           "--batch", args.batch, "--out", str(dest)]
    for flag, value in (("--dtype", args.dtype), ("--data", args.data), ("--tokenizer", args.tokenizer),
                        ("--threads", str(args.threads) if args.threads else None)):
        if value:
            cmd += [flag, value]
    if args.stop_at_eos:
        cmd.append("--stop-at-eos")
    if args.device != "cpu":
        cmd += ["--device", args.device]
    print("+ " + " ".join(cmd), file=sys.stderr)
    table = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True).stdout  # progress: stderr
    write_atomic(dest / "stdout.md", table)
    rows = [x for x in table.splitlines() if x.startswith("| ") and not x.startswith("| model")]
    for row in rows:
        print(f"bench_peer: glmlab: {row}", file=sys.stderr)
    return dest


def merge_rounds(summaries):
    """One summary from several rounds of the same run: each figure becomes the median of the rounds'
    medians, with min/max over the rounds; counts stay as they are."""
    m = json.loads(json.dumps(summaries[0]))
    m["rounds"] = len(summaries)
    for i, run in enumerate(m["runs"]):
        for key, v in run.items():
            vals = [s["runs"][i][key] for s in summaries]
            if isinstance(v, dict) and "median" in v:
                meds = [x["median"] for x in vals]
                run[key] = {"median": spread(meds)["median"], "min": min(meds), "max": max(meds)}
            elif isinstance(v, (int, float)) and not isinstance(v, bool):
                run[key] = spread(vals)["median"]
    if m.get("probes"):
        for key in m["probes"]:
            if not (isinstance(m["probes"][key], dict) and "median" in m["probes"][key]):
                continue  # names (memory_pattern, bf16_unit, ...) stay the first round's
            meds = [s["probes"][key]["median"] for s in summaries]
            m["probes"][key] = {"median": spread(meds)["median"], "min": min(meds), "max": max(meds)}
    m["wall_s"] = sum(s["wall_s"] for s in summaries)
    m["machine"]["load_end"] = summaries[-1]["machine"]["load_end"]
    return m


def peer_round(engine, src: Path, dest: Path, args, threads, log):
    cfg = json.loads((src / "config.json").read_text())
    prompts = [json.loads(x) for x in (src / "prompts.jsonl").read_text().splitlines() if x.strip()]
    glm = json.loads((src / "summary.json").read_text())
    opts = glm["options"]
    dtypes = list(dict.fromkeys(r["dtype"] for r in glm["runs"]))
    batches = list(dict.fromkeys(r["batch"] for r in glm["runs"]))
    forced = bool(glm["data"]["forced"])
    mach = machine(threads)
    t = time.perf_counter()
    try:
        runs, records = run_engine(engine, cfg, prompts, dtypes, batches, opts["reps"], opts["warmup"], forced,
                                   args.seed, log, args.allow_large)
    except Exception as e:  # noqa: BLE001 - only the compiled engine may fail softly
        if engine != "transformers-compile":
            raise
        why = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        log(f"{engine}: skipped, static cache + torch.compile failed here: {why}")
        dest.mkdir(parents=True, exist_ok=True)
        write_atomic(dest / "skipped.txt", f"static cache + torch.compile failed: {why}\n")
        if DEVICE == "cuda":
            torch.cuda.empty_cache()
        return False
    mach["load_end"] = list(os.getloadavg())
    summary = {
        "schema": "glmlab-bench-infer/1", "engine": "torch-oracle" if engine == "oracle" else engine,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "command": " ".join(sys.argv),
        "model": {**glm["model"], "spec": glm["model"]["spec"] + " (own random weights)"},
        "data": {**glm["data"], "source": str(src / "prompts.jsonl")},
        "options": {"dtypes": dtypes, "batches": batches, "reps": opts["reps"], "warmup": opts["warmup"],
                    "stop_at_eos": not forced, "device": DEVICE, "torch": torch.__version__,
                    "gomp_spincount": os.environ.get("GOMP_SPINCOUNT"),
                    "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY")},
        "machine": mach, "probes": None, "runs": runs, "wall_s": time.perf_counter() - t}
    dest.mkdir(parents=True, exist_ok=True)
    write_atomic(dest / "summary.json", json.dumps(summary, indent=2) + "\n")
    write_atomic(dest / "records.jsonl", "".join(json.dumps(r) + "\n" for r in records))
    for r in runs:
        log(f"{engine} {r['dtype']} b{r['batch']}: {r['throughput_tps']['median']:.2f} tok/s, prefill "
            f"{r['prefill_tps']['median']:.1f} tok/s, decode {r['decode_tps']['median']:.2f} tok/s")
    return True


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--from", dest="src", help="a glmlab bench infer output folder (prompts.jsonl, config.json)")
    src.add_argument("--glmlab", help="the glmlab binary: run glmlab bench infer too (into OUT/glmlab)")
    ap.add_argument("--out", required=True, help="output folder (one sub-folder per engine)")
    ap.add_argument("--engines", default=None,
                    help="comma-separated: oracle, transformers, transformers-compile (default: oracle,transformers "
                         "on cpu, transformers,transformers-compile on cuda)")
    ap.add_argument("--device", default="cpu", help="cpu, or cuda: the peers (and glmlab, with --glmlab) on the GPU")
    ap.add_argument("--rounds", type=int, default=3,
                    help="with --glmlab: run all engines this many times, interleaved in rotating order, and "
                         "report the median round (a shared machine drifts within seconds)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = all usable cores)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--allow-large", action="store_true", help="allow models over 4 GB of weights")
    ap.add_argument("--torch-default-omp", action="store_true",
                    help="keep libgomp's default spin (default: GOMP_SPINCOUNT=10000, as glmlab)")
    g = ap.add_argument_group("with --glmlab: the glmlab run (defaults: a small config)")
    g.add_argument("--model", default="random:small")
    g.add_argument("--dtype", default="bf16")
    g.add_argument("--records", type=int, default=5)
    g.add_argument("--max-new-tokens", type=int, default=32)
    g.add_argument("--batch", default="1")
    g.add_argument("--reps", type=int, default=1)
    g.add_argument("--warmup", type=int, default=1)
    g.add_argument("--data")
    g.add_argument("--tokenizer")
    g.add_argument("--stop-at-eos", action="store_true")
    args = ap.parse_args(argv)

    global DEVICE
    check_device(args.device)
    DEVICE = args.device
    if args.engines is None:
        args.engines = "transformers,transformers-compile" if DEVICE == "cuda" else "oracle,transformers"
    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    for engine in engines:
        if engine not in ENGINES:
            raise SystemExit(f"bench_peer: unknown engine {engine!r} ({', '.join(ENGINES)})")
        if engine == "oracle" and DEVICE != "cpu":
            raise SystemExit("bench_peer: the oracle engine runs on --device cpu only (use transformers on cuda)")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    threads = args.threads or len(os.sched_getaffinity(0))
    torch.set_num_threads(threads)
    try:
        from transformers.utils import logging as hf_logging
        hf_logging.set_verbosity_error()
    except ImportError:
        pass

    def log(msg):
        print(f"bench_peer: {msg}", file=sys.stderr, flush=True)

    rounds = max(1, args.rounds) if args.glmlab else 1
    names = (["glmlab"] if args.glmlab else []) + engines
    skipped = set()
    prompts_src = None if args.glmlab else Path(args.src)
    for k in range(rounds):
        sub = f"round-{k + 1}" if rounds > 1 else ""
        # Rotate the order each round so no engine always runs first (glmlab opens round 1: it writes
        # the prompts every round reads; they are the same every round).
        order = names[k % len(names):] + names[:k % len(names)]
        if rounds > 1:
            log(f"round {k + 1}/{rounds}: " + ", ".join(order))
        for name in order:
            if name == "glmlab":
                dest = run_glmlab(args, out / "glmlab" / sub)
                prompts_src = prompts_src or dest
            elif name not in skipped:
                if not peer_round(name, prompts_src, out / name / sub, args, threads, log):
                    skipped.add(name)
    names = [n for n in names if n not in skipped]
    engines = [e for e in engines if e not in skipped]
    if rounds > 1:
        for name in names:
            merged = merge_rounds([json.loads((out / name / f"round-{k + 1}" / "summary.json").read_text())
                                   for k in range(rounds)])
            write_atomic(out / name / "summary.json", json.dumps(merged, indent=2) + "\n")
    if args.glmlab:
        for engine in engines:
            table = subprocess.run([args.glmlab, "bench", "compare", str(out / "glmlab"), str(out / engine)],
                                   check=True, capture_output=True, text=True).stdout
            write_atomic(out / f"compare-{engine}.md", table)
            what = f"median of {rounds} interleaved rounds; min-max over rounds in each summary.json" \
                if rounds > 1 else "one round"
            print(f"\n## glmlab vs {engine} ({what})\n\n{table}")
    else:
        print(f"compare with: glmlab bench compare {prompts_src} {out}/<engine>", file=sys.stderr)


if __name__ == "__main__":
    main()
