"""ChatGLM3 reference model (the oracle), written from docs/chatglm3.md (facts page) §1.

Module/parameter names equal the checkpoint's tensor names, so a HF-layout checkpoint loads with
load_state_dict, and the four Linear layers are real nn.Linear modules PEFT can wrap.

Layout is batch-first ([B, T, ...]) instead of the reference's [T, B, ...]; the math is the same.

dtype rules (facts §1.4/§1.5), for a model in fp32, fp16 or bf16:
  * embedding, linears, residual adds, SiLU*up, logits: in the model dtype (torch CPU kernels);
  * RMSNorm: normalise and scale in fp32, round once to the activation dtype;
  * RoPE: cos/sin table computed in fp32, rounded to the model dtype; the rotation itself is computed
    in fp32 from the rounded inputs and rounded once (what the fused jit kernel does);
  * attention (scores, softmax, weighted sum of V) in fp32 from the rounded Q/K/V, rounded once
    (what SDPA's fused kernels do).

KV cache: a list (one entry per layer) of (K, V), each [B, S, groups, kv_channels], post-RoPE, before
the group expansion, in the model dtype.

mutation (for showing that comparisons catch bugs): None, "rope_halfsplit", "gate_up_swapped",
"kv_group_mod".
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

MUTATIONS = (None, "rope_halfsplit", "gate_up_swapped", "kv_group_mod")

_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


@dataclass
class ChatGLM3Config:
    num_layers: int
    hidden_size: int
    ffn_hidden_size: int
    num_attention_heads: int
    kv_channels: int
    multi_query_group_num: int
    padded_vocab_size: int
    layernorm_epsilon: float = 1e-5
    add_qkv_bias: bool = True
    rope_ratio: float = 1.0
    seq_length: int = 8192
    torch_dtype: str = "float32"
    model_type: str = "chatglm"

    @classmethod
    def from_dict(cls, d: dict) -> "ChatGLM3Config":
        if d.get("model_type", "chatglm") != "chatglm":
            raise ValueError(f"model_type {d.get('model_type')!r} is not chatglm")
        # Features this oracle (like chatglm3-6b) does not implement.
        for key, want in (("rmsnorm", True), ("post_layer_norm", True), ("add_bias_linear", False),
                          ("apply_residual_connection_post_layernorm", False),
                          ("fp32_residual_connection", False)):
            if d.get(key, want) != want:
                raise NotImplementedError(f"config {key}={d[key]!r} is not supported")
        heads = d["num_attention_heads"]
        return cls(
            num_layers=d["num_layers"],
            hidden_size=d["hidden_size"],
            ffn_hidden_size=d["ffn_hidden_size"],
            num_attention_heads=heads,
            kv_channels=d.get("kv_channels", d["hidden_size"] // heads),
            multi_query_group_num=d["multi_query_group_num"] if d.get("multi_query_attention") else heads,
            padded_vocab_size=d.get("padded_vocab_size", d.get("vocab_size")),
            layernorm_epsilon=d.get("layernorm_epsilon", 1e-5),
            add_qkv_bias=d.get("add_qkv_bias", True),
            rope_ratio=float(d.get("rope_ratio", 1.0)),
            seq_length=d.get("seq_length", 8192),
            torch_dtype=d.get("torch_dtype", d.get("dtype", "float32")),
        )

    # Lets code that expects a HF config (e.g. PEFT's default target lookup) read it.
    def to_dict(self) -> dict:
        return asdict(self)

    def get(self, key, default=None):
        return getattr(self, key, default)

    @property
    def dtype(self) -> torch.dtype:
        return _DTYPES[self.torch_dtype]

    @property
    def rope_base(self) -> float:
        return 10000.0 * self.rope_ratio

    @property
    def rope_dim(self) -> int:  # number of rotated head dims (first half of each head)
        return self.kv_channels // 2


class RMSNorm(nn.Module):
    def __init__(self, n: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(n))
        self.eps = eps

    def forward(self, x):
        xf = x.float()
        y = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return (self.weight.float() * y).to(x.dtype)


def rope_inv_freq(cfg: ChatGLM3Config) -> torch.Tensor:
    """theta_i = base^(-2i/rope_dim), i < rope_dim/2, in fp32."""
    d = cfg.rope_dim
    return 1.0 / (cfg.rope_base ** (torch.arange(0, d, 2, dtype=torch.float32) / d))


def rope_table(cfg: ChatGLM3Config, position_ids: torch.Tensor, dtype: torch.dtype):
    """cos, sin [B, T, rope_dim/2]: angles in fp32, then rounded to the model dtype."""
    ang = position_ids.float()[..., None] * rope_inv_freq(cfg)
    return ang.cos().to(dtype), ang.sin().to(dtype)


def apply_rope(x, cos, sin, mutation=None):
    """x [B, T, H, D]; rotate the first 2*cos.shape[-1] dims, interleaved pairs (x[2i], x[2i+1])."""
    r = 2 * cos.shape[-1]
    xr = x[..., :r].float()
    c, s = cos.float()[:, :, None, :], sin.float()[:, :, None, :]
    if mutation == "rope_halfsplit":  # LLaMA rotate_half pairing (x[i], x[i + r/2]): wrong for ChatGLM3
        a, b = xr[..., : r // 2], xr[..., r // 2:]
        out = torch.cat((a * c - b * s, b * c + a * s), dim=-1)
    else:
        a, b = xr[..., 0::2], xr[..., 1::2]
        out = torch.stack((a * c - b * s, b * c + a * s), dim=-1).flatten(-2)
    return torch.cat((out.to(x.dtype), x[..., r:]), dim=-1)


class SelfAttention(nn.Module):
    def __init__(self, cfg: ChatGLM3Config):
        super().__init__()
        self.cfg = cfg
        self.heads, self.groups, self.d = cfg.num_attention_heads, cfg.multi_query_group_num, cfg.kv_channels
        qkv_out = (self.heads + 2 * self.groups) * self.d
        self.query_key_value = nn.Linear(cfg.hidden_size, qkv_out, bias=cfg.add_qkv_bias)
        self.dense = nn.Linear(self.heads * self.d, cfg.hidden_size, bias=False)

    def forward(self, x, cos, sin, allowed, past, mutation):
        B, T, _ = x.shape
        H, G, D = self.heads, self.groups, self.d
        mixed = self.query_key_value(x)
        q, k, v = mixed.split([H * D, G * D, G * D], dim=-1)
        q = apply_rope(q.view(B, T, H, D), cos, sin, mutation)
        k = apply_rope(k.view(B, T, G, D), cos, sin, mutation)
        v = v.view(B, T, G, D)
        if past is not None:
            k = torch.cat((past[0], k), dim=1)
            v = torch.cat((past[1], v), dim=1)
        present = (k, v)
        heads = torch.arange(H)
        group = heads % G if mutation == "kv_group_mod" else heads // (H // G)
        kh, vh = k[:, :, group].float(), v[:, :, group].float()  # [B, S, H, D]
        scores = torch.einsum("bthd,bshd->bhts", q.float(), kh) / math.sqrt(D)
        scores = scores.masked_fill(~allowed[:, None], float("-inf"))
        probs = torch.softmax(scores, dim=-1)
        ctx = torch.einsum("bhts,bshd->bthd", probs, vh).to(x.dtype).reshape(B, T, H * D)
        return self.dense(ctx), present


class MLP(nn.Module):
    def __init__(self, cfg: ChatGLM3Config):
        super().__init__()
        self.dense_h_to_4h = nn.Linear(cfg.hidden_size, 2 * cfg.ffn_hidden_size, bias=False)
        self.dense_4h_to_h = nn.Linear(cfg.ffn_hidden_size, cfg.hidden_size, bias=False)

    def forward(self, x, mutation):
        gate, up = self.dense_h_to_4h(x).chunk(2, dim=-1)
        if mutation == "gate_up_swapped":
            gate, up = up, gate
        return self.dense_4h_to_h(F.silu(gate) * up)


class GLMBlock(nn.Module):
    def __init__(self, cfg: ChatGLM3Config):
        super().__init__()
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.layernorm_epsilon)
        self.self_attention = SelfAttention(cfg)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.layernorm_epsilon)
        self.mlp = MLP(cfg)

    def forward(self, x, cos, sin, allowed, past, mutation):
        a, present = self.self_attention(self.input_layernorm(x), cos, sin, allowed, past, mutation)
        h = x + a
        return h + self.mlp(self.post_attention_layernorm(h), mutation), present


class Embedding(nn.Module):
    def __init__(self, cfg: ChatGLM3Config):
        super().__init__()
        self.word_embeddings = nn.Embedding(cfg.padded_vocab_size, cfg.hidden_size)

    def forward(self, ids):
        return self.word_embeddings(ids)


class RotaryEmbedding(nn.Module):
    """Holds only the stored inv_freq buffer (checkpoint name transformer.rotary_pos_emb.inv_freq).
    Its value is never used (the table is recomputed in fp32); its dtype is the model dtype."""

    def __init__(self, cfg: ChatGLM3Config):
        super().__init__()
        self.register_buffer("inv_freq", rope_inv_freq(cfg))


class Encoder(nn.Module):
    def __init__(self, cfg: ChatGLM3Config):
        super().__init__()
        self.layers = nn.ModuleList(GLMBlock(cfg) for _ in range(cfg.num_layers))
        self.final_layernorm = RMSNorm(cfg.hidden_size, cfg.layernorm_epsilon)


class ChatGLM3Transformer(nn.Module):
    def __init__(self, cfg: ChatGLM3Config):
        super().__init__()
        self.embedding = Embedding(cfg)
        self.rotary_pos_emb = RotaryEmbedding(cfg)
        self.encoder = Encoder(cfg)
        self.output_layer = nn.Linear(cfg.hidden_size, cfg.padded_vocab_size, bias=False)


def attention_allowed(attention_mask: torch.Tensor, T: int, segment_ids: torch.Tensor | None = None) -> torch.Tensor:
    """Bool [B, T, S]: may query i (the last T of S positions) see key j. Causal, pad keys hidden;
    a pad query row sees everything (as the reference does, to avoid all -inf rows). segment_ids
    [B, S] (packed samples, glmlab's fine-tuning): keys of another segment are hidden too."""
    B, S = attention_mask.shape
    real = attention_mask.bool()
    qpos = torch.arange(S - T, S)[:, None]
    causal = torch.arange(S)[None, :] <= qpos  # [T, S]
    allowed = causal[None] & real[:, None, :]
    if segment_ids is not None:
        allowed = allowed & (segment_ids[:, S - T:, None] == segment_ids[:, None, :])
    return allowed | ~real[:, S - T:, None]


class ChatGLM3ForCausalLM(nn.Module):
    def __init__(self, cfg: ChatGLM3Config | dict, mutation: str | None = None):
        super().__init__()
        if isinstance(cfg, dict):
            cfg = ChatGLM3Config.from_dict(cfg)
        if mutation not in MUTATIONS:
            raise ValueError(f"unknown mutation {mutation!r}")
        self.config = cfg
        self.mutation = mutation
        self.transformer = ChatGLM3Transformer(cfg)

    @property
    def dtype(self) -> torch.dtype:
        return self.transformer.embedding.word_embeddings.weight.dtype

    def forward(self, input_ids, position_ids=None, attention_mask=None, past_key_values=None,
                use_cache=False, mutation=None, segment_ids=None):
        """input_ids [B, T]; attention_mask [B, past+T] (1 real, 0 pad; left padding) or None (all real);
        position_ids [B, T] or None (derived from the mask: pads 0, real tokens 0..n-1);
        segment_ids [B, past+T] or None: packed samples, attention stays inside a segment.
        Returns (logits [B, T, V] in the model dtype, new cache or None)."""
        mutation = mutation if mutation is not None else self.mutation
        B, T = input_ids.shape
        past_len = past_key_values[0][0].shape[1] if past_key_values else 0
        if attention_mask is None:
            attention_mask = torch.ones(B, past_len + T, dtype=torch.long)
        if attention_mask.shape != (B, past_len + T):
            raise ValueError(f"attention_mask must be [B, past+T] = {[B, past_len + T]}, "
                             f"got {list(attention_mask.shape)}")
        if position_ids is None:
            position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)[:, past_len:]
        t = self.transformer
        x = t.embedding(input_ids)
        cos, sin = rope_table(self.config, position_ids, self.dtype)
        allowed = attention_allowed(attention_mask, T, segment_ids)
        presents = []
        for i, layer in enumerate(t.encoder.layers):
            past = past_key_values[i] if past_key_values else None
            x, present = layer(x, cos, sin, allowed, past, mutation)
            presents.append(present)
        logits = t.output_layer(t.encoder.final_layernorm(x))
        return logits, (presents if use_cache else None)


@torch.no_grad()
def decode_step(model: ChatGLM3ForCausalLM, token_ids, position_ids, attention_mask, cache):
    """One cached decode step. token_ids [B], position_ids [B], attention_mask [B, past+1] (the new
    token included), cache from a previous forward(use_cache=True). Returns (logits [B, V], cache)."""
    logits, cache = model(token_ids[:, None], position_ids[:, None], attention_mask, cache, use_cache=True)
    return logits[:, 0], cache


# ---------------------------------------------------------------- checkpoint I/O (HF layout)

def load_checkpoint(path: str, dtype: torch.dtype | None = None, mutation: str | None = None):
    """Loads config.json + model.safetensors or a sharded model.safetensors.index.json. The model is
    built in config torch_dtype unless dtype is given (weights are converted)."""
    from safetensors.torch import load_file

    with open(os.path.join(path, "config.json")) as f:
        cfg = ChatGLM3Config.from_dict(json.load(f))
    index = os.path.join(path, "model.safetensors.index.json")
    if os.path.exists(index):
        with open(index) as f:
            files = sorted(set(json.load(f)["weight_map"].values()))
    else:
        files = ["model.safetensors"]
    state = {}
    for name in files:
        state.update(load_file(os.path.join(path, name)))
    model = ChatGLM3ForCausalLM(cfg, mutation=mutation)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected or [m for m in missing if not m.endswith("rotary_pos_emb.inv_freq")]:
        raise ValueError(f"checkpoint mismatch: missing {missing}, unexpected {unexpected}")
    return model.to(dtype or cfg.dtype).eval()
