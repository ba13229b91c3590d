"""Tests of the oracle itself: model vs transformers' GlmForCausalLM, mutations, tokenizer vectors
(facts page §2.2/§2.3), PEFT wrapping, and make_golden's output and determinism."""
import filecmp
import json
import subprocess
import sys

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from chatglm3 import ChatGLM3Config, ChatGLM3ForCausalLM, decode_step, load_checkpoint
from glm_hf import make_glm
from glm_tokenizer import SPECIAL_IDS, ChatGLM3Tokenizer
from make_golden import TINY_CONFIG, random_state_dict

# ----------------------------------------------------------------------------- model vs transformers

# Two shapes: the golden "tiny" one, and one with rope_ratio 50, 3 groups, and an attention projection
# (heads * kv_channels = 48) different from hidden_size (40).
HF_CASES = {
    "tiny": (TINY_CONFIG, 11),
    "rope50-g3": ({**TINY_CONFIG, "num_layers": 3, "hidden_size": 40, "ffn_hidden_size": 80,
                   "num_attention_heads": 6, "kv_channels": 8, "multi_query_group_num": 3,
                   "padded_vocab_size": 300, "vocab_size": 300, "rope_ratio": 50}, 12),
}


def make_oracle(cfg_dict, seed, mutation=None):
    model = ChatGLM3ForCausalLM(cfg_dict, mutation=mutation)
    model.load_state_dict(random_state_dict(cfg_dict, seed))
    return model.eval()


def make_hf(cfg: ChatGLM3Config, state):
    """transformers' GLM with the same weights (mapping in tools/reference/glm_hf.py)."""
    return make_glm(cfg, state)


def padded_batch(vocab, lengths=(7, 4, 1), seed=0):
    g = torch.Generator().manual_seed(seed)
    T = max(lengths)
    ids = torch.zeros(len(lengths), T, dtype=torch.long)
    mask = torch.zeros_like(ids)
    pos = torch.zeros_like(ids)
    for b, n in enumerate(lengths):
        ids[b, T - n:] = torch.randint(1, vocab, (n,), generator=g)
        mask[b, T - n:] = 1
        pos[b, T - n:] = torch.arange(n)
    return ids, mask, pos


@pytest.mark.parametrize("case", sorted(HF_CASES))
@torch.no_grad()
def test_matches_transformers_glm(case):
    cfg_dict, seed = HF_CASES[case]
    ours = make_oracle(cfg_dict, seed)
    hf = make_hf(ours.config, random_state_dict(cfg_dict, seed))
    ids, mask, pos = padded_batch(ours.config.padded_vocab_size)
    real = mask.bool()

    # Unpadded single sequence, default positions.
    a, _ = ours(ids[:1])
    b = hf(input_ids=ids[:1]).logits
    torch.testing.assert_close(a, b, atol=1e-4, rtol=0)

    # Left-padded batch with explicit positions: compare real positions only.
    a, cache = ours(ids, pos, mask, use_cache=True)
    out = hf(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=True)
    torch.testing.assert_close(a[real], out.logits[real], atol=1e-4, rtol=0)
    assert a.abs().max() > 1.0  # not a degenerate comparison

    # Two cached decode steps.
    hf_cache = out.cache
    last, p = a[:, -1], pos[:, -1]
    for _ in range(2):
        tok, p = last.argmax(-1), p + 1
        mask = torch.cat((mask, torch.ones_like(mask[:, :1])), dim=1)
        last, cache = decode_step(ours, tok, p, mask, cache)
        out = hf(input_ids=tok[:, None], attention_mask=mask, position_ids=p[:, None],
                 cache=hf_cache, use_cache=True)
        hf_cache = out.cache
        torch.testing.assert_close(last, out.logits[:, 0], atol=1e-4, rtol=0)
    assert cache[0][0].shape == (3, ids.shape[1] + 2, ours.config.multi_query_group_num, ours.config.kv_channels)


@torch.no_grad()
def test_cached_decode_equals_full_forward():
    model = make_oracle(TINY_CONFIG, 3)
    ids, mask, pos = padded_batch(512, lengths=(8, 5, 2), seed=1)
    full, _ = model(ids, pos, mask)
    _, cache = model(ids[:, :-2], pos[:, :-2], mask[:, :-2], use_cache=True)
    for t in (6, 7):
        step, cache = decode_step(model, ids[:, t], pos[:, t], mask[:, : t + 1], cache)
        torch.testing.assert_close(step, full[:, t], atol=1e-5, rtol=0)


@pytest.mark.parametrize("dtype,tol", [(torch.float16, 0.05), (torch.bfloat16, 0.3)])
@torch.no_grad()
def test_half_precision_runs_close_to_fp32(dtype, tol):
    model = make_oracle(TINY_CONFIG, 4)
    ids, mask, pos = padded_batch(512, seed=2)
    ref, _ = model(ids, pos, mask)
    low, _ = model.to(dtype)(ids, pos, mask)
    assert low.dtype == dtype
    err = (low.float() - ref)[mask.bool()].abs().max()
    assert 0 < err < tol


# ----------------------------------------------------------------------------- mutations

@pytest.mark.parametrize("mutation", ["rope_halfsplit", "gate_up_swapped", "kv_group_mod"])
@torch.no_grad()
def test_mutation_is_caught(mutation):
    ids, mask, pos = padded_batch(512, lengths=(9, 6, 3), seed=5)
    good, _ = make_oracle(TINY_CONFIG, 1234)(ids, pos, mask)
    bad, _ = make_oracle(TINY_CONFIG, 1234, mutation=mutation)(ids, pos, mask)
    diff = (good - bad)[mask.bool()].abs().max()
    assert diff > 0.1, f"{mutation} changes logits by only {diff:.2e}"


def test_unknown_mutation_rejected():
    with pytest.raises(ValueError):
        ChatGLM3ForCausalLM(TINY_CONFIG, mutation="nope")


# ----------------------------------------------------------------------------- PEFT can wrap it

@pytest.mark.parametrize("kind", ["lora", "vera"])
@torch.no_grad()
def test_peft_wraps_query_key_value(kind):
    from peft import LoraConfig, VeraConfig, get_peft_model

    model = make_oracle(TINY_CONFIG, 6)
    ids = torch.randint(1, 512, (2, 5), generator=torch.Generator().manual_seed(0))
    ref, _ = model(ids)
    peft_cfg = LoraConfig(r=4, lora_alpha=8) if kind == "lora" else VeraConfig(r=8)
    wrapped = get_peft_model(make_oracle(TINY_CONFIG, 6), peft_cfg)  # default target: query_key_value
    trainable = [n for n, p in wrapped.named_parameters() if p.requires_grad]
    assert trainable and all(".self_attention.query_key_value." in n for n in trainable)
    out, _ = wrapped(input_ids=ids)
    torch.testing.assert_close(out, ref, atol=0, rtol=0)  # adapters start as a zero delta


# ----------------------------------------------------------------------------- tokenizer

@pytest.fixture(scope="module")
def tok(shared):
    return ChatGLM3Tokenizer(shared / "data" / "chatglm3" / "tokenizer.model")


ENCODE_VECTORS = [
    ("\n", [30910, 13]),
    ("你好", [36474, 54591]),
    ("\n你好", [30910, 13, 39701]),
    ("Hello world", [13755, 993]),
    (" hello", [265, 15616, 30914]),
    ("hello  world\n\nx", [24954, 265, 8515, 13, 13, 30948]),
    ("  ", [2951]),
    ("a\tb", [260, 12, 30931]),
    ("2023年", [30910, 30943, 30940, 30943, 30966, 54540]),
    ("类型#裤*版型#宽松", [30910, 33467, 31010, 56532, 30998, 55090, 54888, 31010, 40833]),
    ("<|user|>", [906, 31007, 4865, 31007, 30994]),  # special-token text stays text
    ("<UNK>", [906, 5234, 30984, 30994]),
    ("get_current_weather\n", [634, 30962, 8545, 30962, 27564, 13]),
]


@pytest.mark.parametrize("text,ids", ENCODE_VECTORS)
def test_encode(tok, text, ids):
    assert tok.encode(text) == ids


def test_special_ids(tok):
    assert SPECIAL_IDS == {"[MASK]": 64789, "[gMASK]": 64790, "[sMASK]": 64791, "sop": 64792, "eop": 64793,
                           "<|system|>": 64794, "<|user|>": 64795, "<|assistant|>": 64796,
                           "<|observation|>": 64797}
    assert tok.vocab_size == 64798 and tok.sp.piece_to_id("</s>") == 2 and tok.sp.piece_to_id("<unk>") == 0


def test_chat_input(tok):
    assert tok.build_chat_input("你好") == [64790, 64792, 64795, 30910, 13, 36474, 54591, 64796]
    assert tok.build_single_message("assistant", "get_current_weather", "") == \
        [64796, 634, 30962, 8545, 30962, 27564, 13]


def test_chat_input_with_system_prompt(tok):
    system = ("You are ChatGLM3, a large language model trained by Zhipu.AI. "
              "Follow the user's instructions carefully. Respond using markdown.")
    ids = tok.build_chat_input("你好", history=[{"role": "system", "content": system}])
    assert len(ids) == 43
    assert ids[:8] == [64790, 64792, 64794, 30910, 13, 809, 383, 22011]
    assert ids[-7:] == [30930, 64795, 30910, 13, 36474, 54591, 64796]


def test_first_advertisegen_training_sample(tok, shared):
    """Facts §4/§5: [gMASK] sop + user msg + assistant msg + eos is 95 ids for the first dev line."""
    with open(shared / "data" / "AdvertiseGen" / "dev.json", encoding="utf-8") as f:
        ex = json.loads(f.readline())
    ids = ([64790, 64792] + tok.build_single_message("user", "", ex["content"])
           + tok.build_single_message("assistant", "", ex["summary"]) + [2])
    assert len(ids) == 95
    assert ids[:9] == [64790, 64792, 64795, 30910, 13, 30910, 33467, 31010, 49534]
    i = ids.index(64796)
    assert ids[i - 2:i + 5] == [55251, 55995, 64796, 30910, 13, 30910, 40512]
    assert ids[-2:] == [31155, 2]
    assert ids[:i + 1] == tok.build_chat_input(ex["content"])


def test_decode(tok):
    # ChatGLMTokenizer.decode: one decode_pieces over all tokens, so the "▁" after a role token is a space.
    assert tok.decode(tok.build_chat_input("你好")) == "[gMASK]sop<|user|> \n 你好<|assistant|>"
    assert tok.decode(tok.encode("Hello world")) == "Hello world"
    assert tok.decode([64796] + tok.encode("Hello world")) == "<|assistant|> Hello world"
    assert tok.decode([2, 0] + tok.encode("Hi") + [0, 2]) == "Hi"  # eos, bos and unk decode to ""
    # SPTokenizer.decode decodes run by run and drops that space.
    assert tok.decode_runs([64796] + tok.encode("Hello world")) == "<|assistant|>Hello world"


def test_build_chat(tok):
    sys_user = [{"role": "system", "content": ""}, {"role": "user", "content": "你好"}]
    assert tok.build_chat(sys_user) == [64790, 64792, 64794, 30910, 13, 64795, 30910, 13, 36474, 54591, 64796]
    assert tok.build_chat(sys_user) == tok.build_chat_input("你好", history=sys_user[:1])
    # The last message is the query: its metadata is not used.
    last = [{"role": "observation", "metadata": "tool", "content": "1"}]
    assert tok.build_chat(last) == tok.build_chat_input("1", role="observation")
    with pytest.raises(ValueError):
        tok.build_chat([])


# ----------------------------------------------------------------------------- make_golden

GOLDEN_MODELS = ("tiny-f32", "tiny-f16", "tiny-bf16", "tiny-rope50-f32")


def run_make_golden(out, shared):
    script = str(__import__("make_golden").__file__)
    subprocess.run([sys.executable, script, "--out", str(out), "--shared", str(shared)],
                   check=True, capture_output=True)


@pytest.fixture(scope="module")
def golden(tmp_path_factory, shared):
    out = tmp_path_factory.mktemp("golden")
    run_make_golden(out, shared)
    return out


def test_make_golden_is_deterministic(golden, shared, tmp_path):
    run_make_golden(tmp_path, shared)
    files = sorted(p.relative_to(golden) for p in golden.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file())
    _, mismatch, errors = filecmp.cmpfiles(golden, tmp_path, [str(f) for f in files], shallow=False)
    assert not mismatch and not errors


def test_golden_format(golden):
    B, T, V = 3, 9, 512
    shapes = {"input_ids": ([B, T], "I64"), "attention_mask": ([B, T], "I64"), "position_ids": ([B, T], "I64"),
              "prefill_logits": ([B, T, V], "F32"), "prefill_logits_fp32ref": ([B, T, V], "F32")}
    for k in (1, 2, 3):
        shapes |= {f"step{k}_ids": ([B], "I64"), f"step{k}_position_ids": ([B], "I64"),
                   f"step{k}_logits": ([B, V], "F32"), f"step{k}_logits_fp32ref": ([B, V], "F32")}
    goldens = {}
    for name in GOLDEN_MODELS:
        with safe_open(golden / name / "golden.safetensors", "pt") as f:
            assert f.metadata() == {"format": "pt"}
            assert sorted(f.keys()) == sorted(shapes)
            for key, (shape, dtype) in shapes.items():
                sl = f.get_slice(key)
                assert (sl.get_shape(), sl.get_dtype()) == (shape, dtype), key
        goldens[name] = g = load_file(golden / name / "golden.safetensors")
        assert g["attention_mask"].sum(1).tolist() == [9, 6, 3]
        assert g["step1_position_ids"].tolist() == [9, 6, 3]
    f32, f16, bf16 = goldens["tiny-f32"], goldens["tiny-f16"], goldens["tiny-bf16"]
    for g in (f16, bf16):  # same inputs and fed ids across dtypes
        for key in ("input_ids", "attention_mask", "position_ids", "step1_ids", "step2_ids", "step3_ids"):
            assert torch.equal(g[key], f32[key])
    torch.testing.assert_close(f32["prefill_logits"], f32["prefill_logits_fp32ref"], atol=0, rtol=0)
    # step ids are the fp32 greedy choices
    assert torch.equal(f32["step1_ids"], f32["prefill_logits"][:, -1].argmax(-1))
    assert torch.equal(f32["step3_ids"], f32["step2_logits"].argmax(-1))
    real = f32["attention_mask"].bool()
    assert (f16["prefill_logits"] - f16["prefill_logits_fp32ref"])[real].abs().max() < 0.05
    assert (bf16["prefill_logits"] - bf16["prefill_logits_fp32ref"])[real].abs().max() < 0.3


def test_golden_checkpoints(golden):
    ref = load_file(golden / "tiny-f32" / "model.safetensors")
    for name, dtype in (("tiny-f16", torch.float16), ("tiny-bf16", torch.bfloat16)):
        st = load_file(golden / name / "model.safetensors")
        assert st.keys() == ref.keys()
        for k, v in st.items():
            assert v.dtype == dtype and torch.equal(v, ref[k].to(dtype)), k
        assert json.loads((golden / name / "config.json").read_text())["torch_dtype"] == str(dtype)[6:]
    index = json.loads((golden / "tiny-sharded" / "model.safetensors.index.json").read_text())
    assert index["weight_map"]["transformer.output_layer.weight"] == "model-00002-of-00002.safetensors"
    assert index["weight_map"]["transformer.encoder.layers.0.mlp.dense_4h_to_h.weight"] == \
        "model-00001-of-00002.safetensors"
    sharded = load_checkpoint(str(golden / "tiny-sharded")).state_dict()
    assert sharded.keys() == ref.keys() and all(torch.equal(sharded[k], ref[k]) for k in ref)
    assert index["metadata"]["total_size"] == sum(v.numel() * v.element_size() for v in ref.values())
    assert json.loads((golden / "tiny-rope50-f32" / "config.json").read_text())["rope_ratio"] == 50


def test_golden_logits_reproduce(golden):
    for name in GOLDEN_MODELS:
        g = load_file(golden / name / "golden.safetensors")
        model = load_checkpoint(str(golden / name))
        with torch.no_grad():
            logits, _ = model(g["input_ids"], g["position_ids"], g["attention_mask"])
        assert torch.equal(logits.float(), g["prefill_logits"]), name


def test_chat_golden(golden, tok):
    g = json.loads((golden / "chat_golden.json").read_text())
    names = {c["name"] for c in g["chat"]}
    assert {"empty_system", "multi_turn", "tool_call_and_observation", "chinese_and_emoji"} <= names
    for c in g["chat"]:
        assert c["ids"] == tok.build_chat(c["messages"]), c["name"]
    for d in g["decode"]:
        assert d["text"] == tok.decode(d["ids"]), d["name"]
    role_space = next(d for d in g["decode"] if d["name"] == "role_token_then_space_piece")
    assert role_space["text"] == "<|assistant|> Hello world"


def test_tokenizer_golden(golden, tok, shared):
    lines = (golden / "tokenizer_golden.jsonl").read_text().splitlines()
    dev = (shared / "data" / "AdvertiseGen" / "dev.json").read_text(encoding="utf-8").splitlines()
    assert len(lines) == len(dev) == 1070
    first = json.loads(lines[0])
    assert first["line"] == 1 and first["chat_ids"][:9] == [64790, 64792, 64795, 30910, 13, 30910, 33467, 31010, 49534]
    assert first["chat_ids"] == [64790, 64792, 64795, 30910, 13] + first["content_ids"] + [64796]
