#!/usr/bin/env python3
"""Oracle for the AdvertiseGen lab (issue 3): statistics of dev.json computed independently of the C++
code, with the `sentencepiece` package, the json module and numpy, written to
OUT/data_stats_dev.json and OUT/tiny_dev_100.json for the C++ tests (tests/test_data_*.cpp).

Definitions (docs/DATA.md; the finetune recipe's process_batch, shared/docs/chatglm3.md section 4):
  input  = [gMASK, sop, <|user|>] + sp.encode("\\n") + sp.encode(content) + [<|assistant|>]
  output = sp.encode("\\n") + sp.encode(summary) + [eos]
  chars  = len(str) (code points) of content and summary
Percentiles: numpy.percentile's default method "linear"; median = percentile 50.
tiny: stable sort by len(input) + len(output) (ties keep line order), then index
  k -> floor(k*(N-1)/(n-1) + 1/2), computed with Fractions, k = 0..n-1.

Usage: .venv/bin/python tools/reference/data_golden.py --out build/golden --shared ../shared
Deterministic and idempotent; takes about a second.
"""
import argparse
import json
import math
import os
import tempfile
from fractions import Fraction

import numpy as np
import sentencepiece as spm

GMASK, SOP, USER, ASSISTANT, EOS = 64790, 64792, 64795, 64796, 2
METRICS = ["input_tokens", "output_tokens", "total_tokens", "content_tokens", "summary_tokens",
           "input_chars", "output_chars", "total_chars"]
HISTOGRAMS = ["input_tokens", "output_tokens", "total_tokens"]
MAX_BINS = 20
TINY_N = 100


def sample_ids(sp, content, summary):
    newline = sp.encode("\n")
    inp = [GMASK, SOP, USER] + newline + sp.encode(content) + [ASSISTANT]
    out = newline + sp.encode(summary) + [EOS]
    return inp, out


def summarize(values):
    a = np.asarray(values, dtype=np.int64)
    p50, p90, p95, p99 = np.percentile(a, [50, 90, 95, 99])
    return {"min": int(a.min()), "mean": sum(values) / len(values), "median": float(p50), "p90": float(p90),
            "p95": float(p95), "p99": float(p99), "max": int(a.max())}


def histogram(values):
    lo, hi = min(values), max(values)
    span = hi - lo + 1
    width = max(1, -(-span // MAX_BINS))
    counts = [0] * (-(-span // width))
    for v in values:
        counts[(v - lo) // width] += 1
    return {"lo": lo, "width": width, "counts": counts}


def tiny_indices(count, n):
    if count < n:
        return list(range(count))
    return [math.floor(Fraction(k * (count - 1), n - 1) + Fraction(1, 2)) for k in range(n)]


def write_atomic(path, text):
    d = os.path.dirname(path) or "."
    fd, tmp = tempfile.mkstemp(dir=d, prefix=os.path.basename(path) + ".tmp.")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, help="golden folder")
    ap.add_argument("--shared", required=True, help="the shared/ folder with data/")
    args = ap.parse_args()
    dev = os.path.join(args.shared, "data/AdvertiseGen/dev.json")
    sp = spm.SentencePieceProcessor(model_file=os.path.join(args.shared, "data/chatglm3/tokenizer.model"))

    rows = []  # (line, record, lengths)
    first_ids = []
    with open(dev, encoding="utf-8") as f:
        for number, text in enumerate(f, start=1):
            if not text.strip():
                continue
            rec = json.loads(text)
            inp, out = sample_ids(sp, rec["content"], rec["summary"])
            lengths = {
                "input_tokens": len(inp), "output_tokens": len(out), "total_tokens": len(inp) + len(out),
                "content_tokens": len(sp.encode(rec["content"])), "summary_tokens": len(sp.encode(rec["summary"])),
                "input_chars": len(rec["content"]), "output_chars": len(rec["summary"]),
                "total_chars": len(rec["content"]) + len(rec["summary"]),
            }
            rows.append((number, rec, lengths))
            if len(first_ids) < 3:
                first_ids.append({"line": number, "input": inp, "output": out})

    order = sorted(range(len(rows)), key=lambda i: rows[i][2]["total_tokens"])  # stable
    picks = [order[i] for i in tiny_indices(len(rows), TINY_N)]
    golden = {
        "file": "data/AdvertiseGen/dev.json",
        "count": len(rows),
        "metrics": {m: summarize([r[2][m] for r in rows]) for m in METRICS},
        "histograms": {m: histogram([r[2][m] for r in rows]) for m in HISTOGRAMS},
        "records": [[r[0]] + [r[2][m] for m in ["input_tokens", "output_tokens", "content_tokens", "summary_tokens",
                                                "input_chars", "output_chars"]] for r in rows],
        "record_columns": ["line", "input_tokens", "output_tokens", "content_tokens", "summary_tokens",
                           "input_chars", "output_chars"],
        "first_ids": first_ids,
        "tiny_n": TINY_N,
        "tiny_lines": [rows[i][0] for i in picks],
        "tiny_totals": [rows[i][2]["total_tokens"] for i in picks],
    }
    os.makedirs(args.out, exist_ok=True)
    write_atomic(os.path.join(args.out, "data_stats_dev.json"), json.dumps(golden, indent=1) + "\n")
    tiny = "".join(json.dumps({"content": rows[i][1]["content"], "summary": rows[i][1]["summary"]},
                              ensure_ascii=False) + "\n" for i in picks)
    write_atomic(os.path.join(args.out, "tiny_dev_100.json"), tiny)
    m = golden["metrics"]["total_tokens"]
    print(f"data_golden: {len(rows)} records; total tokens median {m['median']} max {m['max']}; "
          f"wrote data_stats_dev.json and tiny_dev_100.json to {args.out}")


if __name__ == "__main__":
    main()
