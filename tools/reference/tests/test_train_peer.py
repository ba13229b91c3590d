"""train_peer.py (the PyTorch + PEFT peer of glmlab bench train) on a tiny config: the default model,
transformers' GlmForCausalLM with SDPA attention under bf16 autocast, computes the same training losses
as the oracle (chatglm3.py, explicit fp32 softmax) on glmlab-style micro-batches — a left-padded one and a
packed one — within bf16 rounding, and the summary names the implementation."""
import json

import pytest

import train_peer
from make_golden import TINY_CONFIG

V = TINY_CONFIG["padded_vocab_size"]


def padded_batch(index):
    """Two samples, left-padded as glmlab pads (the first row starts with pads)."""
    T, lens, prompt = 14, (9, 14), 4
    ids, pos, valid, labels = [], [], [], []
    for r, n in enumerate(lens):
        pad = T - n
        row = [(7 * r + 3 * t + index) % (V - 10) + 5 for t in range(n)]
        ids += [0] * pad + row
        pos += [0] * pad + list(range(n))
        valid += [0] * pad + [1] * n
        labels += [-100] * (pad + prompt) + row[prompt:]
    return {"B": 2, "T": T, "batch": index, "input_ids": ids, "position_ids": pos, "valid": valid, "segment": None,
            "labels": labels, "samples": 2}


def packed_batch(index):
    """One row holding two samples (segments 0 and 1, positions restarting), then right padding."""
    T, lens, prompt = 16, (6, 7), 3
    ids, pos, valid, seg, labels = [], [], [], [], []
    for s, n in enumerate(lens):
        row = [(11 * s + 5 * t + index) % (V - 10) + 5 for t in range(n)]
        ids += row
        pos += list(range(n))
        valid += [1] * n
        seg += [s] * n
        labels += [-100] * prompt + row[prompt:]
    pad = T - len(ids)
    ids, pos, valid, seg, labels = ids + [0] * pad, pos + [0] * pad, valid + [0] * pad, seg + [2] * pad, \
        labels + [-100] * pad
    return {"B": 1, "T": T, "batch": index, "input_ids": ids, "position_ids": pos, "valid": valid, "segment": seg,
            "labels": labels, "samples": 2}


def fake_glmlab_run(tmp_path, batches, targets, dtype="bf16", pack=False):
    """What glmlab bench train leaves for the peer: config.json, summary.json, batches.jsonl."""
    src = tmp_path / "glmlab"
    src.mkdir()
    (src / "config.json").write_text(json.dumps(TINY_CONFIG))
    runs = [{"method": "lora", "qat": "none", "dtype": dtype, "rank": 4, "alpha": 8, "dropout": 0.0,
             "rslora": False, "targets": targets, "batch_size": 2, "pack": pack},
            {"method": "vera", "qat": "none", "dtype": dtype, "rank": 8, "alpha": 8, "dropout": 0.0,
             "rslora": False, "targets": targets, "batch_size": 2, "pack": pack},
            {"method": "lora", "qat": "int8", "dtype": dtype, "rank": 4, "targets": targets}]
    summary = {"schema": train_peer.SCHEMA, "engine": "glmlab", "model": {"spec": "tiny-test"}, "data": {},
               "options": {"lr": 5e-2, "weight_decay": 0.0, "max_grad_norm": 1.0, "warmup_steps": 0},
               "flops": None, "runs": runs}
    (src / "summary.json").write_text(json.dumps(summary))
    (src / "batches.jsonl").write_text("".join(json.dumps(b) + "\n" for b in batches))
    return src


def peer_losses(src, out, impl):
    train_peer.main(["--from", str(src), "--out", str(out), "--impl", impl, "--threads", "1"])
    s = json.loads((out / "summary.json").read_text())
    steps = [json.loads(x) for x in (out / "steps.jsonl").read_text().splitlines()]
    return s, {m: [x["loss"] for x in steps if x["method"] == m] for m in ("lora", "vera")}


@pytest.mark.parametrize("batch", ["padded", "packed"])
def test_sdpa_model_trains_to_the_oracles_losses(tmp_path, batch):
    """Three AdamW steps on the same micro-batch (the down projection adapted: the same adapter in both
    models, so every step's loss must agree, not only the first)."""
    make = padded_batch if batch == "padded" else packed_batch
    src = fake_glmlab_run(tmp_path, [make(0)] * 3, ["dense_4h_to_h"], pack=batch == "packed")
    ts, tl = peer_losses(src, tmp_path / "transformers", "transformers")
    os_, ol = peer_losses(src, tmp_path / "oracle", "oracle")
    for m in ("lora", "vera"):
        assert len(tl[m]) == len(ol[m]) == 3
        assert tl[m] == pytest.approx(ol[m], rel=1e-3), m  # bf16 rounding (autocast vs bf16 + fp32 softmax)
    # The steps did train: a lr of 1e-2 moves the loss well beyond the tolerance above (3% in 3 steps).
    assert ol["lora"][2] < ol["lora"][0] * 0.98
    assert ts["engine"] == "transformers+peft" and os_["engine"] == "torch-oracle+peft"
    assert ts["impl"]["model"] == "GlmForCausalLM" and ts["impl"]["attention"] == "sdpa"
    assert ts["options"]["impl"] == "transformers" and os_["options"]["impl"] == "oracle"
    for r in ts["runs"]:
        assert r["autocast"] == "bfloat16" and r["peer_targets"] == ["down_proj"]
    for r in os_["runs"]:
        assert r["autocast"] is None and r["peer_targets"] == ["dense_4h_to_h"]
    # The same adapter, the same trainable parameters; the QAT run is skipped by both.
    assert [r["trainable_params"] for r in ts["runs"]] == [r["trainable_params"] for r in os_["runs"]]
    assert len(ts["skipped"]) == len(os_["skipped"]) == 1


def test_fused_qkv_target_becomes_three_adapters(tmp_path):
    """query_key_value -> q_proj, k_proj, v_proj: the first loss (adapters still zero) is the oracle's;
    LoRA trains r·hidden more parameters a layer (three A matrices for one), VeRA 2·r more (lambda_d)."""
    src = fake_glmlab_run(tmp_path, [padded_batch(0), packed_batch(1)], ["query_key_value", "dense"])
    ts, tl = peer_losses(src, tmp_path / "transformers", "transformers")
    os_, ol = peer_losses(src, tmp_path / "oracle", "oracle")
    for m in ("lora", "vera"):
        assert tl[m][0] == pytest.approx(ol[m][0], rel=1e-3)
        assert tl[m][1] == pytest.approx(ol[m][1], rel=1e-2)
    assert ts["runs"][0]["peer_targets"] == ["q_proj", "k_proj", "v_proj", "o_proj"]
    L, C = TINY_CONFIG["num_layers"], TINY_CONFIG["hidden_size"]
    (tl_, tv), (ol_, ov) = [[r["trainable_params"] for r in s["runs"]] for s in (ts, os_)]
    assert tl_ - ol_ == L * 2 * 4 * C
    assert tv - ov == L * 2 * 8


def test_unknown_target_and_impl_are_refused(tmp_path):
    src = fake_glmlab_run(tmp_path, [padded_batch(0)], ["word_embeddings"])
    with pytest.raises(SystemExit, match="no GlmForCausalLM linear for target"):
        train_peer.main(["--from", str(src), "--out", str(tmp_path / "p"), "--threads", "1"])
    with pytest.raises(SystemExit):
        train_peer.main(["--from", str(src), "--out", str(tmp_path / "p"), "--impl", "vllm"])
