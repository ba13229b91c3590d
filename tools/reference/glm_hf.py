"""transformers' GlmForCausalLM (the GLM-4 layout) as a ChatGLM3: one config and weight mapping shared by
the oracle's tests, dump_logits.py and bench_peer.py.

Mapping: query_key_value rows [Q | K | V] -> q_proj / k_proj / v_proj (weight and bias), dense -> o_proj,
dense_h_to_4h -> gate_up_proj (GLM also takes the first half as the gate), dense_4h_to_h -> down_proj,
norms / embedding / output_layer -> *_layernorm, norm, embed_tokens, lm_head. RoPE: GLM rotates the first
head_dim * partial_rotary_factor = kv_channels/2 dims with interleaved pairs, base rope_theta, exactly
ChatGLM3's, so rope_theta = 10000 * rope_ratio and partial_rotary_factor = 0.5 is all.
"""
from __future__ import annotations

import torch

from chatglm3 import ChatGLM3Config


def glm_config(cfg: ChatGLM3Config, attn: str = "eager"):
    import transformers
    from transformers import GlmConfig

    rope = {"rope_theta": cfg.rope_base, "partial_rotary_factor": 0.5}
    if int(transformers.__version__.split(".")[0]) >= 5:
        rope = {"rope_parameters": {"rope_type": "default", **rope}}
    return GlmConfig(
        vocab_size=cfg.padded_vocab_size, hidden_size=cfg.hidden_size, intermediate_size=cfg.ffn_hidden_size,
        num_hidden_layers=cfg.num_layers, num_attention_heads=cfg.num_attention_heads,
        num_key_value_heads=cfg.multi_query_group_num, head_dim=cfg.kv_channels, hidden_act="silu",
        rms_norm_eps=cfg.layernorm_epsilon, max_position_embeddings=cfg.seq_length,
        attention_bias=cfg.add_qkv_bias, tie_word_embeddings=False, pad_token_id=0, eos_token_id=2,
        attn_implementation=attn, **rope)


def glm_state_dict(cfg: ChatGLM3Config, state: dict) -> dict:
    """The checkpoint's ChatGLM3 tensors under GlmForCausalLM's names."""
    H, G, D = cfg.num_attention_heads, cfg.multi_query_group_num, cfg.kv_channels
    sd = {"model.embed_tokens.weight": state["transformer.embedding.word_embeddings.weight"],
          "model.norm.weight": state["transformer.encoder.final_layernorm.weight"],
          "lm_head.weight": state["transformer.output_layer.weight"]}
    for i in range(cfg.num_layers):
        src, dst = f"transformer.encoder.layers.{i}.", f"model.layers.{i}."
        for kind in ("weight", "bias") if cfg.add_qkv_bias else ("weight",):
            q, k, v = state[src + f"self_attention.query_key_value.{kind}"].split([H * D, G * D, G * D])
            sd[dst + f"self_attn.q_proj.{kind}"] = q
            sd[dst + f"self_attn.k_proj.{kind}"] = k
            sd[dst + f"self_attn.v_proj.{kind}"] = v
        sd[dst + "self_attn.o_proj.weight"] = state[src + "self_attention.dense.weight"]
        sd[dst + "mlp.gate_up_proj.weight"] = state[src + "mlp.dense_h_to_4h.weight"]
        sd[dst + "mlp.down_proj.weight"] = state[src + "mlp.dense_4h_to_h.weight"]
        sd[dst + "input_layernorm.weight"] = state[src + "input_layernorm.weight"]
        sd[dst + "post_attention_layernorm.weight"] = state[src + "post_attention_layernorm.weight"]
    return sd


def make_glm(cfg: ChatGLM3Config, state: dict, dtype: torch.dtype = torch.float32, attn: str = "eager"):
    """GlmForCausalLM holding the checkpoint's weights, in eval mode."""
    from transformers import GlmForCausalLM

    model = GlmForCausalLM(glm_config(cfg, attn))
    model.load_state_dict(glm_state_dict(cfg, state), strict=True)
    return model.to(dtype).eval()
