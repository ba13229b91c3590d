#!/usr/bin/env python3
"""Writes the oracle's golden files for the C++ tests (deterministic, idempotent, a few seconds).

  make_golden.py --out DIR --shared SHARED

DIR/tiny-f32, tiny-f16, tiny-bf16, tiny-sharded, tiny-rope50-f32: random ChatGLM3 checkpoints in HF
layout; all but tiny-sharded also hold golden.safetensors (inputs, prefill and cached-decode logits).
DIR/tokenizer_golden.jsonl: tokenizer ids for every line of SHARED/data/AdvertiseGen/dev.json.
DIR/chat_golden.json: the chat layout of message lists (build_chat) and ChatGLMTokenizer.decode of id lists.
See README.md for the exact format.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

sys.path.insert(0, str(Path(__file__).resolve().parent))
from chatglm3 import ChatGLM3ForCausalLM, decode_step, load_checkpoint, rope_inv_freq  # noqa: E402
from glm_tokenizer import GMASK, SPECIAL_IDS, ChatGLM3Tokenizer  # noqa: E402

TINY_CONFIG = {
    "model_type": "chatglm", "architectures": ["ChatGLMModel"],
    "num_layers": 2, "hidden_size": 64, "ffn_hidden_size": 96, "num_attention_heads": 4, "kv_channels": 16,
    "multi_query_attention": True, "multi_query_group_num": 2, "padded_vocab_size": 512, "vocab_size": 512,
    "seq_length": 256, "layernorm_epsilon": 1e-5, "rmsnorm": True, "post_layer_norm": True,
    "add_qkv_bias": True, "add_bias_linear": False, "apply_residual_connection_post_layernorm": False,
    "fp32_residual_connection": False, "original_rope": True, "tie_word_embeddings": False,
    "eos_token_id": 2, "pad_token_id": 0, "torch_dtype": "float32",
}
SEQ_LENGTHS = (9, 6, 3)  # the golden batch, left-padded to 9
DECODE_STEPS = 3
MIN_MARGIN = 0.3  # top-1 minus top-2 fp32 logit at every greedy choice of the golden batch
WEIGHT_STD = {"embedding": 1.0, "linear": 0.15, "output": 0.3, "qkv_bias": 0.1, "norm_noise": 0.1}
ST_META = {"format": "pt"}
DTYPE_NAMES = {torch.float32: "float32", torch.float16: "float16", torch.bfloat16: "bfloat16"}


def random_state_dict(cfg: dict, seed: int) -> dict[str, torch.Tensor]:
    """fp32 weights with the checkpoint's names: logits spread O(1), clear top-1 margins."""
    model = ChatGLM3ForCausalLM(cfg)
    g = torch.Generator().manual_seed(seed)
    out = {}
    for name, p in model.state_dict().items():
        if name.endswith("inv_freq"):
            out[name] = rope_inv_freq(model.config)
            continue
        if name.endswith("layernorm.weight"):
            t = 1.0 + WEIGHT_STD["norm_noise"] * torch.randn(p.shape, generator=g)
        elif name.endswith("word_embeddings.weight"):
            t = WEIGHT_STD["embedding"] * torch.randn(p.shape, generator=g)
        elif name.endswith("output_layer.weight"):
            t = WEIGHT_STD["output"] * torch.randn(p.shape, generator=g)
        elif name.endswith("query_key_value.bias"):
            t = WEIGHT_STD["qkv_bias"] * torch.randn(p.shape, generator=g)
        else:
            assert name.endswith(".weight") and p.dim() == 2, name
            t = WEIGHT_STD["linear"] * torch.randn(p.shape, generator=g)
        out[name] = t.contiguous()
    return out


def write_json(path: Path, obj) -> None:
    path.write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


def write_checkpoint(path: Path, cfg: dict, state: dict, dtype: torch.dtype, shards=None) -> None:
    """shards: None for one model.safetensors, else a list of name predicates, one per shard file."""
    path.mkdir(parents=True, exist_ok=True)
    write_json(path / "config.json", {**cfg, "torch_dtype": DTYPE_NAMES[dtype]})
    state = {k: v.to(dtype).contiguous() for k, v in state.items()}
    if shards is None:
        save_file(state, str(path / "model.safetensors"), metadata=ST_META)
        return
    weight_map = {}
    for i, pred in enumerate(shards):
        fname = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        part = {k: v for k, v in state.items() if pred(k)}
        save_file(part, str(path / fname), metadata=ST_META)
        weight_map.update({k: fname for k in part})
    assert sorted(weight_map) == sorted(state)
    total = sum(v.numel() * v.element_size() for v in state.values())
    write_json(path / "model.safetensors.index.json",
               {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))})


def golden_inputs(model, seed: int):
    """The golden batch: one random sequence per length in SEQ_LENGTHS, left-padded with id 0. Each row
    is redrawn (deterministically) until the fp32 model's greedy choices at the last prefill position
    and the decode steps all win by at least MIN_MARGIN, so greedy decoding is robust to rounding."""
    B, T, vocab = len(SEQ_LENGTHS), max(SEQ_LENGTHS), model.config.padded_vocab_size
    ids = torch.zeros(B, T, dtype=torch.long)
    mask = torch.zeros(B, T, dtype=torch.long)
    pos = torch.zeros(B, T, dtype=torch.long)
    for b, n in enumerate(SEQ_LENGTHS):
        for attempt in range(1000):
            g = torch.Generator().manual_seed(seed * 100000 + b * 1000 + attempt)
            row = torch.randint(1, vocab, (1, n), generator=g)
            prefill, steps = run_model(model, row, torch.ones_like(row), torch.arange(n)[None])
            if min(top2_margin(x) for x in [prefill[:, -1]] + [s[2] for s in steps]) >= MIN_MARGIN:
                break
        else:
            raise RuntimeError(f"no row of length {n} with greedy margins >= {MIN_MARGIN}")
        ids[b, T - n:] = row[0]
        mask[b, T - n:] = 1
        pos[b, T - n:] = torch.arange(n)
    return ids, mask, pos


@torch.no_grad()
def run_model(model, ids, mask, pos, step_ids=None):
    """Prefill then DECODE_STEPS cached steps. step_ids None: greedy (argmax of the previous logits).
    Returns prefill logits, [(ids, position ids, logits)] per step, all logits in fp32."""
    logits, cache = model(ids, pos, mask, use_cache=True)
    prefill = logits.float()
    last, steps = prefill[:, -1], []
    cur_pos = pos[:, -1]
    for k in range(DECODE_STEPS):
        tok = last.argmax(-1) if step_ids is None else step_ids[k]
        cur_pos = cur_pos + 1
        mask = torch.cat((mask, torch.ones_like(mask[:, :1])), dim=1)
        last, cache = decode_step(model, tok, cur_pos, mask, cache)
        last = last.float()
        steps.append((tok, cur_pos, last))
    return prefill, steps


def top2_margin(logits: torch.Tensor) -> float:
    top = logits.topk(2, dim=-1).values
    return float((top[..., 0] - top[..., 1]).min())


def write_golden(path: Path, inputs, step_ids=None) -> tuple[list[torch.Tensor], str]:
    """Runs the checkpoint at path in its own dtype and in fp32; writes path/golden.safetensors."""
    ids, mask, pos = inputs
    model = load_checkpoint(str(path))
    ref32 = load_checkpoint(str(path), dtype=torch.float32)
    if step_ids is None:  # greedy ids come from the fp32 model
        _, s32 = run_model(ref32, ids, mask, pos)
        step_ids = [s[0] for s in s32]
    prefill, steps = run_model(model, ids, mask, pos, step_ids)
    prefill32, steps32 = run_model(ref32, ids, mask, pos, step_ids)
    g = {"input_ids": ids, "attention_mask": mask, "position_ids": pos,
         "prefill_logits": prefill, "prefill_logits_fp32ref": prefill32}
    for k, ((tok, p, lg), (_, _, lg32)) in enumerate(zip(steps, steps32), start=1):
        g[f"step{k}_ids"] = tok
        g[f"step{k}_position_ids"] = p
        g[f"step{k}_logits"] = lg
        g[f"step{k}_logits_fp32ref"] = lg32
    save_file({k: v.contiguous() for k, v in g.items()}, str(path / "golden.safetensors"), metadata=ST_META)
    greedy = [prefill32[:, -1]] + [s[2] for s in steps32]
    dev = max(float((prefill - prefill32)[mask.bool()].abs().max()),
              max(float((a[2] - b[2]).abs().max()) for a, b in zip(steps, steps32)))
    info = (f"min top-2 margin (fp32) {min(top2_margin(x) for x in greedy):.3f}, "
            f"max |{model.dtype} - fp32| {dev:.2e}")
    return step_ids, info


def write_tokenizer_golden(out: Path, shared: Path) -> int:
    tok = ChatGLM3Tokenizer(shared / "data" / "chatglm3" / "tokenizer.model")
    lines = (shared / "data" / "AdvertiseGen" / "dev.json").read_text(encoding="utf-8").splitlines()
    rows = []
    for i, line in enumerate(lines, start=1):
        ex = json.loads(line)
        rows.append(json.dumps({"line": i, "chat_ids": tok.build_chat_input(ex["content"]),
                                "content_ids": tok.encode(ex["content"]),
                                "summary_ids": tok.encode(ex["summary"])}))
    (out / "tokenizer_golden.jsonl").write_text("\n".join(rows) + "\n")
    return len(rows)


SYSTEM_PROMPT = ("You are ChatGLM3, a large language model trained by Zhipu.AI. Follow the user's instructions "
                 "carefully. Respond using markdown.")
TOOLS_SYSTEM = ("Answer the following questions as best as you can. You have access to the following tools:\n"
                + json.dumps([{"name": "get_current_weather", "description": "Get the current weather",
                               "parameters": {"type": "object", "properties": {"location": {"type": "string"}},
                                              "required": ["location"]}}], indent=4, ensure_ascii=False))
CHAT_CASES = {
    "user_only": [{"role": "user", "content": "你好"}],
    "system_user": [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": "你好"}],
    "empty_system": [{"role": "system", "content": ""}, {"role": "user", "content": "Hello"}],
    "empty_user": [{"role": "user", "content": ""}],
    "multi_turn": [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": "你好"},
                   {"role": "assistant", "content": "你好👋！我是人工智能助手 ChatGLM3-6B，很高兴见到你，欢迎问我任何问题。"},
                   {"role": "user", "content": "What can you do?\n  Answer briefly."}],
    "tool_call_and_observation": [
        {"role": "system", "content": TOOLS_SYSTEM},
        {"role": "user", "content": "北京今天天气怎么样？"},
        {"role": "assistant", "metadata": "get_current_weather",
         "content": "```python\ntool_call(location=\"北京\")\n```"},
        {"role": "observation", "content": "{\"temperature\": 22, \"description\": \"晴\"}"}],
    "interpreter_metadata": [
        {"role": "user", "content": "Compute 2**10"},
        {"role": "assistant", "metadata": "interpreter", "content": "```python\nprint(2**10)\n```"},
        {"role": "observation", "content": "1024"}],
    "last_message_metadata_is_not_used": [
        {"role": "user", "content": "hi"}, {"role": "assistant", "metadata": "get_current_weather", "content": "x"}],
    "assistant_last": [{"role": "user", "content": "Say hi"}, {"role": "assistant", "content": "Hi"}],
    "chinese_and_emoji": [{"role": "system", "content": "你是一个乐于助人的助手😀"},
                          {"role": "user", "content": "类型#裙*颜色#白色 ☃ 𠀀 🌤️ <|user|> </s> <unk>"}],
    "whitespace": [{"role": "user", "content": "  two leading spaces\n\ttab  "}, {"role": "assistant", "content": " "},
                   {"role": "user", "content": "\n"}],
}


def decode_cases(tok: ChatGLM3Tokenizer) -> dict[str, list[int]]:
    """Id lists whose decoding differs between SentencePiece run by run and ChatGLMTokenizer.decode."""
    greeting = tok.encode("你好👋！我是人工智能助手 ChatGLM3-6B，很高兴见到你。")
    hello = tok.encode("Hello world")
    byte = lambda b: b + 3  # noqa: E731
    return {
        "chat_prompt": tok.build_chat(CHAT_CASES["system_user"]),
        "role_token_then_space_piece": [SPECIAL_IDS["<|assistant|>"]] + hello,
        "role_token_then_lone_space_piece": [SPECIAL_IDS["<|assistant|>"], 30910, 13] + greeting,
        "reply_with_header": [30910, 13] + greeting,
        "two_replies": [30910, 13] + greeting + [SPECIAL_IDS["<|assistant|>"], 30910, 13] + hello,
        "tool_call_reply": tok.build_single_message("assistant", "get_current_weather", "```python\ntool_call()\n```")[1:],
        "special_between_words": hello[:1] + [GMASK] + hello[1:] + [SPECIAL_IDS["eop"]],
        "eos_bos_unk_are_empty": [2, 1, 0] + hello + [0] + hello + [2],
        "empty_then_space_pieces": [2, 30910, 30910] + hello,
        "leading_space_pieces": [30910, 30910, 30910] + hello,
        "only_specials": [SPECIAL_IDS["<|user|>"], SPECIAL_IDS["<|observation|>"]],
        "bytes_split_by_special": [byte(0xE4), SPECIAL_IDS["<|user|>"], byte(0xBD), byte(0xA0)],
        "bytes_split_by_eos": [byte(0xE4), 2, byte(0xBD), byte(0xA0)] + hello,
        "unfinished_bytes_at_end": hello + [byte(0xF0), byte(0x9F), byte(0x98)],
        "stray_continuation_bytes": [byte(0x80), byte(0xBF)] + hello + [byte(0xC3), byte(0xA9), byte(0xC0), byte(0x80)],
        "empty": [],
    }


def write_chat_golden(out: Path, shared: Path) -> int:
    tok = ChatGLM3Tokenizer(shared / "data" / "chatglm3" / "tokenizer.model")
    chat = [{"name": name, "messages": msgs, "ids": tok.build_chat(msgs)} for name, msgs in CHAT_CASES.items()]
    decode = [{"name": name, "ids": ids, "text": tok.decode(ids)} for name, ids in decode_cases(tok).items()]
    write_json(out / "chat_golden.json", {"chat": chat, "decode": decode})
    return len(chat) + len(decode)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--shared", required=True, type=Path)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)  # tiny tensors: threads only add overhead (and run-to-run variation)
    out = args.out
    out.mkdir(parents=True, exist_ok=True)

    tiny = random_state_dict(TINY_CONFIG, seed=1234)
    write_checkpoint(out / "tiny-f32", TINY_CONFIG, tiny, torch.float32)
    write_checkpoint(out / "tiny-f16", TINY_CONFIG, tiny, torch.float16)
    write_checkpoint(out / "tiny-bf16", TINY_CONFIG, tiny, torch.bfloat16)
    second = ("transformer.encoder.layers.1.", "transformer.output_layer.")
    write_checkpoint(out / "tiny-sharded", TINY_CONFIG, tiny, torch.float32,
                     shards=[lambda k: not k.startswith(second), lambda k: k.startswith(second)])
    rope50_cfg = {**TINY_CONFIG, "rope_ratio": 50}
    write_checkpoint(out / "tiny-rope50-f32", rope50_cfg, random_state_dict(rope50_cfg, seed=5678), torch.float32)
    for name in ("tiny-f32", "tiny-f16", "tiny-bf16", "tiny-sharded", "tiny-rope50-f32"):
        print(f"wrote checkpoint {out / name}")

    inputs = golden_inputs(load_checkpoint(str(out / "tiny-f32")), seed=42)
    step_ids, info = write_golden(out / "tiny-f32", inputs)
    print(f"wrote {out / 'tiny-f32' / 'golden.safetensors'} ({info})")
    for name in ("tiny-f16", "tiny-bf16"):  # same inputs and step ids as tiny-f32
        _, info = write_golden(out / name, inputs, step_ids)
        print(f"wrote {out / name / 'golden.safetensors'} ({info})")
    _, info = write_golden(out / "tiny-rope50-f32", golden_inputs(load_checkpoint(str(out / "tiny-rope50-f32")), seed=43))
    print(f"wrote {out / 'tiny-rope50-f32' / 'golden.safetensors'} ({info})")

    n = write_tokenizer_golden(out, args.shared)
    print(f"wrote {out / 'tokenizer_golden.jsonl'} ({n} lines)")
    n = write_chat_golden(out, args.shared)
    print(f"wrote {out / 'chat_golden.json'} ({n} cases)")


if __name__ == "__main__":
    main()
