"""bench_peer.py (the PyTorch peer of glmlab bench infer) on a tiny config: both engines run the given
prompts to their forced lengths, batch 1 and 2, and write glmlab's summary.json fields consistently."""
import json

import pytest

import bench_peer
from make_golden import TINY_CONFIG

FIELDS = ("dtype", "batch", "reps", "records", "input_tokens", "output_tokens", "wall_s", "throughput_tps",
          "prefill_tps", "decode_tps", "latency_p50_s", "latency_p90_s", "ttft_p50_s", "decode_gbs",
          "decode_gbs_of_probe", "prefill_gflops", "prefill_gflops_of_probe", "batch_gain", "weight_bytes",
          "decode_bytes_per_step", "kv_cache_bytes", "peak_rss_bytes", "peak_rss_is_phase", "load_s")


def fake_glmlab_run(tmp_path, forced=True):
    """What glmlab bench infer leaves for a peer: config.json, prompts.jsonl, summary.json."""
    src = tmp_path / "glmlab"
    src.mkdir()
    (src / "config.json").write_text(json.dumps(TINY_CONFIG))
    prompts = [{"index": 0, "input_ids": [5, 6, 7, 8, 9], "reference_tokens": 9, "target_tokens": 6},
               {"index": 1, "input_ids": [11, 12], "reference_tokens": 4, "target_tokens": 4},
               {"index": 2, "input_ids": [20, 21, 22, 23, 24, 25, 26], "reference_tokens": 3, "target_tokens": 3}]
    (src / "prompts.jsonl").write_text("".join(json.dumps(p) + "\n" for p in prompts))
    summary = {"engine": "glmlab", "model": {"spec": "tiny-test", "name": "tiny"},
               "data": {"source": "test", "records": 3, "forced": forced, "max_new_tokens": 0, "tokenizer": "bytes"},
               "options": {"dtypes": ["fp32"], "batches": [1, 2], "reps": 2, "warmup": 1},
               "runs": [{"dtype": "fp32", "batch": 1}, {"dtype": "fp32", "batch": 2}]}
    (src / "summary.json").write_text(json.dumps(summary))
    return src, prompts


@pytest.mark.parametrize("engine", ["oracle", "transformers"])
def test_peer_runs_forced_lengths_and_writes_the_summary(tmp_path, engine):
    src, prompts = fake_glmlab_run(tmp_path)
    out = tmp_path / "peer"
    bench_peer.main(["--from", str(src), "--out", str(out), "--engines", engine, "--threads", "1"])
    s = json.loads((out / engine / "summary.json").read_text())
    assert s["engine"] == ("torch-oracle" if engine == "oracle" else "transformers")
    assert s["probes"] is None and s["machine"]["threads"] == 1
    assert [(r["dtype"], r["batch"]) for r in s["runs"]] == [("fp32", 1), ("fp32", 2)]
    targets = sum(p["target_tokens"] for p in prompts)
    for r in s["runs"]:
        assert set(FIELDS) <= set(r), set(FIELDS) - set(r)
        assert r["records"] == 3 and r["reps"] == 2
        assert r["output_tokens"] == targets
        assert r["input_tokens"] == sum(len(p["input_ids"]) for p in prompts)
        wall, tps = r["wall_s"], r["throughput_tps"]
        assert wall["min"] <= wall["median"] <= wall["max"] and wall["min"] > 0
        # With two repetitions the medians are means of the two values; tokens/s = tokens / wall per rep.
        assert tps["max"] == pytest.approx(targets / wall["min"], rel=1e-9)
        assert tps["min"] == pytest.approx(targets / wall["max"], rel=1e-9)
        for key in ("prefill_tps", "decode_tps", "latency_p50_s", "ttft_p50_s", "decode_gbs", "prefill_gflops"):
            assert r[key]["median"] > 0, key
        assert r["weight_bytes"] > r["decode_bytes_per_step"] > 0
        assert r["peak_rss_bytes"] > r["weight_bytes"]
    assert s["runs"][0]["batch_gain"] == pytest.approx(1.0)
    records = [json.loads(x) for x in (out / engine / "records.jsonl").read_text().splitlines()]
    assert len(records) == 2 * 2 * 3  # batches x reps x prompts
    for x in records:
        p = prompts[x["index"]]
        assert x["output_tokens"] == x["target_tokens"] == p["target_tokens"]
        assert x["input_tokens"] == len(p["input_ids"])
        assert x["prefill_s"] + x["decode_s"] == pytest.approx(x["total_s"])


def test_free_running_stops_at_most_at_the_target(tmp_path):
    src, prompts = fake_glmlab_run(tmp_path, forced=False)
    out = tmp_path / "peer"
    bench_peer.main(["--from", str(src), "--out", str(out), "--engines", "oracle", "--threads", "1"])
    for line in (out / "oracle" / "records.jsonl").read_text().splitlines():
        x = json.loads(line)
        assert not x["forced"] and x["output_tokens"] <= prompts[x["index"]]["target_tokens"]


def test_large_models_need_allow_large(tmp_path, monkeypatch):
    src, _ = fake_glmlab_run(tmp_path)
    monkeypatch.setattr(bench_peer, "LARGE_BYTES", 1)
    with pytest.raises(SystemExit, match="--allow-large"):
        bench_peer.main(["--from", str(src), "--out", str(tmp_path / "p"), "--engines", "oracle"])


def test_statistics_match_glmlab_definitions():
    assert bench_peer.spread([3, 1, 2, 10]) == {"median": 2.5, "min": 1, "max": 10}
    assert bench_peer.percentile([1, 2, 3, 4, 5], 0.9) == pytest.approx(4.6)
    c = TINY_CONFIG
    C, F, H, D, G, V = 64, 96, 4, 16, 2, 512
    params = (H * D + 2 * G * D) * C + C * H * D + 2 * F * C + C * F
    assert bench_peer.prefill_flops(c, 10) == 2 * (2 * params * 10 + 2.0 * H * D * 10 * 11) + 2 * V * C


def test_rounds_merge_to_the_median_round():
    def summ(tps, wall):
        return {"engine": "x", "machine": {"load_end": [0, 0, 0]}, "wall_s": 1.0, "probes": None,
                "runs": [{"dtype": "bf16", "batch": 1, "records": 5, "peak_rss_is_phase": True,
                          "throughput_tps": {"median": tps, "min": tps - 1, "max": tps + 1}, "load_s": wall}]}
    m = bench_peer.merge_rounds([summ(10, 3), summ(30, 1), summ(20, 2)])
    r = m["runs"][0]
    assert m["rounds"] == 3 and m["wall_s"] == 3.0
    assert r["throughput_tps"] == {"median": 20, "min": 10, "max": 30}
    assert r["load_s"] == 2 and r["records"] == 5 and r["peak_rss_is_phase"] is True


def test_cuda_device_without_a_gpu_fails_clearly(tmp_path):
    """--device cuda (issue 6): on a machine whose torch sees no GPU, a clear exit before any work."""
    import torch
    if torch.cuda.is_available():
        pytest.skip("a GPU is visible: this test checks the no-GPU message")
    src, _ = fake_glmlab_run(tmp_path)
    with pytest.raises(SystemExit, match="--device cuda, but torch .* sees no CUDA GPU"):
        bench_peer.main(["--from", str(src), "--out", str(tmp_path / "peer"), "--device", "cuda"])
    assert not (tmp_path / "peer" / "transformers").exists()


def test_oracle_is_refused_on_cuda_and_unknown_engines_are_named(tmp_path, monkeypatch):
    src, _ = fake_glmlab_run(tmp_path)
    monkeypatch.setattr(bench_peer, "check_device", lambda d: None)  # as if a GPU were there
    monkeypatch.setattr(bench_peer, "DEVICE", "cpu")  # restored afterwards: main() sets the module's device
    with pytest.raises(SystemExit, match="oracle engine runs on --device cpu only"):
        bench_peer.main(["--from", str(src), "--out", str(tmp_path / "p"), "--device", "cuda", "--engines", "oracle"])
    with pytest.raises(SystemExit, match="unknown engine 'vllm'"):
        bench_peer.main(["--from", str(src), "--out", str(tmp_path / "p"), "--engines", "vllm"])
