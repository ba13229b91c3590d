#!/usr/bin/env python3
"""Writes the quantization golden files for the C++ tests (deterministic, a few seconds).

  quant_golden.py --out DIR

Independent implementations (numpy / torch) of the formats glmlab reads, with KNOWN values:

DIR/quant/thudm.safetensors  THUDM's quantization.py layout (facts page §1.6), quantized the way THUDM
    does it (torch, fp16: scale = max|w| / (2^(bits-1) - 1), q = torch.round(w / scale)):
      int4.source F16 [37, 160]   the fp16 weights
      int4.weight I8 [37, 80]     byte j = (q[2j] << 4) | (q[2j+1] & 0xF): even element in the HIGH nibble;
                                  row 0 holds q = -8..7 (hand-set; THUDM itself never makes -8)
      int4.weight_scale F16 [37]  per row
      int4.q I8 [37, 160]         the unpacked values
      int4.expected F32 [37, 160] q * scale in fp32 (exact)
      int8.{source,weight,weight_scale,expected}: the same with int8 [37, 160] (no packing)
DIR/quant/gptq.safetensors  AutoGPTQ / auto-round layout (AutoGPTQ auto_gptq/nn_modules/qlinear/
    qlinear_cuda_old.py pack(); auto-round auto_round/export/export_to_autogptq/qlinear_triton.py):
      lin.qweight I32 [in/8, out]   8 values per int32 along the input dim, lowest bits = first input
      lin.qzeros I32 [in/g, out/8]  zero - 1 (v1 "zero minus one" convention): 7 for symmetric int4
      lin.scales F16 [in/g, out], lin.g_idx I32 [in] = i // g, lin.q I32 [out, in] (0..15),
      lin.expected F32 [out, in] = (q - 8) * scale;   out 64, in 256, group 64
      lin2.*: the same values with v2 zeros (8) — what GPTQModel's gptq_v2 stores
      lin8.*: int8 GPTQ (4 values per int32, zero 128 stored as 127), out 32, in 128, group 32
DIR/quant/glmlab_ref.safetensors  glmlab's own quantizer (docs/QUANTIZATION.md) in numpy fp32:
      source F32 [19, 200]; q8.weight I8 [19, 200] + q8.weight_scale F16 [19, 4] (group 64, last
      group partial); q4.weight I8 [19, 100] + q4.weight_scale F16 [19, 4]; q4g0.*: int4 per row.
DIR/tiny-thudm-int4, tiny-thudm-int8, tiny-gptq-int4: the tiny golden model (make_golden.py's
    tiny-f32 weights) quantized in those formats (THUDM: per row, fp16 non-linear weights; GPTQ: RTN,
    group 32, fp16), each with golden.safetensors as make_golden.py writes it: the oracle in fp32 on
    the dequantized weights (inputs of tiny-f32's golden; greedy step ids of that dequantized model).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

sys.path.insert(0, str(Path(__file__).resolve().parent))
from chatglm3 import ChatGLM3ForCausalLM  # noqa: E402
from make_golden import (ST_META, TINY_CONFIG, golden_inputs, random_state_dict, run_model,  # noqa: E402
                         write_json)

LINEARS = ("self_attention.query_key_value", "self_attention.dense", "mlp.dense_h_to_4h", "mlp.dense_4h_to_h")


# ---- THUDM (quantization.py) ----------------------------------------------------------------------
def thudm_quantize(w16: torch.Tensor, bits: int) -> tuple[torch.Tensor, torch.Tensor]:
    """THUDM's per-row symmetric quantization, in fp16 as their code runs it. Returns (q int8, scale fp16)."""
    scale = w16.abs().max(dim=-1).values / ((2 ** (bits - 1)) - 1)
    q = torch.round(w16 / scale[:, None]).to(torch.int8)
    return q, scale


def thudm_pack_int4(q: torch.Tensor) -> torch.Tensor:
    """compress_int4_weight: byte j = (q[2j] << 4) | (q[2j+1] & 0xF), even element in the high nibble."""
    qi = q.to(torch.int32)
    packed = ((qi[:, 0::2] & 0xF) << 4) | (qi[:, 1::2] & 0xF)
    return torch.tensor(packed.numpy().astype(np.uint8).view(np.int8))


def thudm_tensors(g: torch.Generator) -> dict[str, torch.Tensor]:
    out = {}
    for bits in (4, 8):
        w16 = (0.05 * torch.randn(37, 160, generator=g)).to(torch.float16)
        q, scale = thudm_quantize(w16, bits)
        if bits == 4:  # row 0: every int4 value, -8 included, with a hand-picked scale
            q[0] = torch.arange(160, dtype=torch.int64).remainder(16).sub(8).to(torch.int8)
            scale[0] = 0.0123
        name = f"int{bits}"
        out[f"{name}.source"] = w16
        out[f"{name}.weight"] = thudm_pack_int4(q) if bits == 4 else q.clone()
        out[f"{name}.weight_scale"] = scale
        out[f"{name}.q"] = q
        out[f"{name}.expected"] = q.float() * scale.float()[:, None]
    return out


# ---- GPTQ (AutoGPTQ / auto-round packing) -----------------------------------------------------------
def gptq_pack(q: np.ndarray, scales: np.ndarray, bits: int, group: int, zero_minus_one: bool) -> dict:
    """q uint [out, in] in 0..2^bits-1 (symmetric: zero 2^(bits-1)); scales [in/group, out]."""
    out_f, in_f = q.shape
    per = 32 // bits
    qt = q.T.astype(np.uint32)                       # [in, out]
    qweight = np.zeros((in_f // per, out_f), dtype=np.uint32)
    for j in range(per):                             # input i*per + j at bits j*bits
        qweight |= qt[j::per] << np.uint32(bits * j)
    zero = (1 << (bits - 1)) - (1 if zero_minus_one else 0)
    zeros = np.full((in_f // group, out_f), zero, dtype=np.uint32)
    qzeros = np.zeros((in_f // group, out_f // per), dtype=np.uint32)
    for j in range(per):                             # output o*per + j at bits j*bits
        qzeros |= zeros[:, j::per] << np.uint32(bits * j)
    return {
        "qweight": torch.from_numpy(qweight.view(np.int32).copy()),
        "qzeros": torch.from_numpy(qzeros.view(np.int32).copy()),
        "scales": torch.from_numpy(scales.astype(np.float16)),
        "g_idx": torch.tensor([i // group for i in range(in_f)], dtype=torch.int32),
    }


def gptq_expected(q: np.ndarray, scales16: np.ndarray, bits: int, group: int) -> torch.Tensor:
    s = scales16.astype(np.float32).T.repeat(group, axis=1)  # [out, in]
    return torch.from_numpy((q.astype(np.float32) - (1 << (bits - 1))) * s)


def gptq_tensors(rng: np.random.Generator) -> dict[str, torch.Tensor]:
    out = {}
    for name, bits, out_f, in_f, group, v1 in (("lin", 4, 64, 256, 64, True), ("lin2", 4, 64, 256, 64, False),
                                               ("lin8", 8, 32, 128, 32, True)):
        if name == "lin2":  # same values as lin, other zero convention
            q, scales = out["lin.q"].numpy().astype(np.uint32), out["lin.scales"].numpy()
        else:
            q = rng.integers(0, 1 << bits, size=(out_f, in_f)).astype(np.uint32)
            scales = rng.uniform(0.001, 0.02, size=(in_f // group, out_f)).astype(np.float16)
        for k, v in gptq_pack(q, scales, bits, group, v1).items():
            out[f"{name}.{k}"] = v
        out[f"{name}.q"] = torch.from_numpy(q.astype(np.int32))
        out[f"{name}.expected"] = gptq_expected(q, scales, bits, group)
    return out


def gptq_quantize_rtn(w: torch.Tensor, group: int) -> tuple[np.ndarray, np.ndarray]:
    """GPTQ's symmetric min-max quantizer without the Hessian update (round to nearest):
    scale = 2·max|w| / 15 per group, zero 8, q = clamp(round(w / scale) + 8, 0, 15)."""
    out_f, in_f = w.shape
    wg = w.float().numpy().reshape(out_f, in_f // group, group)
    amax = np.abs(wg).max(axis=2)
    scale = (2 * amax / 15).astype(np.float16)      # [out, groups]
    s = scale.astype(np.float32)[:, :, None]
    q = np.clip(np.round(wg / s) + 8, 0, 15).astype(np.uint32).reshape(out_f, in_f)
    return q, scale.T.copy()                          # scales [groups, out]


# ---- glmlab's own quantizer (docs/QUANTIZATION.md) -------------------------------------------------
def glmlab_quantize(w: np.ndarray, bits: int, group: int) -> tuple[np.ndarray, np.ndarray]:
    """w fp32 [rows, cols]; group 0 = per row. Returns (stored bytes int8, scales fp16 [rows, groups])."""
    rows, cols = w.shape
    g = cols if group == 0 or group >= cols else group
    ng = -(-cols // g)
    qmax = 127 if bits == 8 else 7
    q = np.zeros((rows, cols), dtype=np.int32)
    scales = np.zeros((rows, ng), dtype=np.float16)
    for k in range(ng):
        blk = w[:, k * g:(k + 1) * g]
        s16 = (np.abs(blk).max(axis=1) / np.float32(qmax)).astype(np.float32).astype(np.float16)
        s = s16.astype(np.float32)[:, None]
        with np.errstate(divide="ignore", invalid="ignore"):
            qq = np.where(s == 0, 0, np.clip(np.round(blk / s), -qmax, qmax))  # round half to even
        q[:, k * g:(k + 1) * g] = qq
        scales[:, k] = s16
    if bits == 8:
        return q.astype(np.int8), scales
    if cols % 2:
        q = np.concatenate([q, np.zeros((rows, 1), dtype=np.int32)], axis=1)
    packed = ((q[:, 0::2] & 0xF) << 4) | (q[:, 1::2] & 0xF)
    return packed.astype(np.uint8).view(np.int8), scales


def glmlab_ref_tensors(rng: np.random.Generator) -> dict[str, torch.Tensor]:
    w = rng.standard_normal((19, 200)).astype(np.float32) * 0.1
    w[3, :64] = 0.0                                   # an all-zero group: scale 0, q 0
    # Row 4, group 0: max 0.4375 gives the int4 scale 0.0625 exactly, so these are exact ties
    # (1.5, 2.5, -0.5, 3.5, -1.5, 0.5, -2.5 times the scale): round half to even → 2, 2, 0, 4, -2, 0, -2.
    w[4, 8:64] *= 0.5
    w[4, :8] = [0.4375, 0.09375, 0.15625, -0.03125, 0.21875, -0.09375, 0.03125, -0.15625]
    out = {"source": torch.from_numpy(w)}
    for name, bits, group in (("q8", 8, 64), ("q4", 4, 64), ("q4g0", 4, 0)):
        q, s = glmlab_quantize(w, bits, group)
        out[f"{name}.weight"] = torch.from_numpy(q.copy())
        out[f"{name}.weight_scale"] = torch.from_numpy(s.copy())
    return out


# ---- tiny quantized checkpoints with golden logits ---------------------------------------------------
def write_tiny(out: Path, name: str, cfg: dict, state: dict, dequant: dict, inputs) -> str:
    path = out / name
    path.mkdir(parents=True, exist_ok=True)
    write_json(path / "config.json", cfg)
    save_file({k: v.contiguous() for k, v in state.items()}, str(path / "model.safetensors"), metadata=ST_META)
    model = ChatGLM3ForCausalLM(TINY_CONFIG)
    model.load_state_dict(dequant, strict=True)
    model = model.float().eval()
    ids, mask, pos = inputs
    prefill, steps = run_model(model, ids, mask, pos)
    g = {"input_ids": ids, "attention_mask": mask, "position_ids": pos, "prefill_logits": prefill}
    for k, (tok, p, lg) in enumerate(steps, start=1):
        g[f"step{k}_ids"], g[f"step{k}_position_ids"], g[f"step{k}_logits"] = tok, p, lg
    save_file({k: v.contiguous() for k, v in g.items()}, str(path / "golden.safetensors"), metadata=ST_META)
    return str(path)


def tiny_checkpoints(out: Path) -> list[str]:
    tiny = random_state_dict(TINY_CONFIG, seed=1234)
    ref = ChatGLM3ForCausalLM(TINY_CONFIG)
    ref.load_state_dict(tiny)
    inputs = golden_inputs(ref.eval(), seed=42)  # the inputs of tiny-f32/golden.safetensors
    linear = lambda k: k.endswith(".weight") and any(f".{m}." in k for m in LINEARS)  # noqa: E731
    written = []
    for bits in (4, 8):
        state, dq = {}, {}
        for k, v in tiny.items():
            v16 = v.to(torch.float16)
            if linear(k):
                q, s = thudm_quantize(v16, bits)
                state[k] = thudm_pack_int4(q) if bits == 4 else q
                state[k + "_scale"] = s
                dq[k] = q.float() * s.float()[:, None]
            else:
                state[k] = v16
                dq[k] = v16.float()
        cfg = {**TINY_CONFIG, "torch_dtype": "float16", "quantization_bit": bits}
        written.append(write_tiny(out, f"tiny-thudm-int{bits}", cfg, state, dq, inputs))
    group = 32
    state, dq = {}, {}
    for k, v in tiny.items():
        if linear(k):
            q, scales = gptq_quantize_rtn(v, group)
            mod = k[: -len(".weight")]
            for kk, vv in gptq_pack(q, scales, 4, group, True).items():
                state[f"{mod}.{kk}"] = vv
            dq[k] = gptq_expected(q, scales, 4, group)
        else:
            state[k] = v.to(torch.float16)
            dq[k] = state[k].float()
    cfg = {**TINY_CONFIG, "torch_dtype": "float16",
           "quantization_config": {"quant_method": "gptq", "bits": 4, "group_size": group, "sym": True,
                                   "desc_act": False, "checkpoint_format": "gptq"}}
    written.append(write_tiny(out, "tiny-gptq-int4", cfg, state, dq, inputs))
    return written


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, type=Path)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    q = args.out / "quant"
    q.mkdir(parents=True, exist_ok=True)
    save_file(thudm_tensors(torch.Generator().manual_seed(7)), str(q / "thudm.safetensors"), metadata=ST_META)
    save_file(gptq_tensors(np.random.default_rng(8)), str(q / "gptq.safetensors"), metadata=ST_META)
    save_file(glmlab_ref_tensors(np.random.default_rng(9)), str(q / "glmlab_ref.safetensors"), metadata=ST_META)
    print(f"wrote {q}/thudm.safetensors, gptq.safetensors, glmlab_ref.safetensors")
    for p in tiny_checkpoints(args.out):
        print(f"wrote checkpoint {p} (+ golden.safetensors)")


if __name__ == "__main__":
    main()
