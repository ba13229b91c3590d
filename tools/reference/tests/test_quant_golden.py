"""Tests of quant_golden.py's format implementations against the formats' own unpacking code paths:
GPTQ's torch fallback in AutoGPTQ's qlinear_cuda_old.py forward() (shift by 0, 4, ..., 28, & 0xF,
zeros + 1, scales * (w - zeros)) and THUDM's int4 unpacking (arithmetic shifts of the byte), written
here independently of the packers; and determinism of the files."""
import filecmp
import subprocess
import sys

import numpy as np
import torch
from safetensors.torch import load_file

from quant_golden import (gptq_expected, gptq_pack, gptq_quantize_rtn, thudm_pack_int4, thudm_quantize)


def autogptq_unpack(qweight, qzeros, scales, bits, group):
    """qlinear_cuda_old.py forward(), torch fallback (bits 2/4/8)."""
    wf = torch.tensor(list(range(0, 32, bits)), dtype=torch.int32).unsqueeze(0)
    zeros = torch.bitwise_right_shift(torch.unsqueeze(qzeros, 2).expand(-1, -1, 32 // bits), wf.unsqueeze(0))
    zeros = torch.bitwise_and(zeros, (2 ** bits) - 1) + 1
    zeros = zeros.reshape(-1, 1, zeros.shape[1] * zeros.shape[2])
    s = scales.reshape(-1, 1, scales.shape[-1]).float()
    w = torch.bitwise_right_shift(torch.unsqueeze(qweight, 1).expand(-1, 32 // bits, -1), wf.unsqueeze(-1))
    w = torch.bitwise_and(w, (2 ** bits) - 1).reshape(-1, group, w.shape[2])
    return (s * (w - zeros)).reshape(-1, w.shape[2]).T  # [out, in]


def test_gptq_pack_unpacks_with_autogptqs_formula():
    rng = np.random.default_rng(0)
    for bits, out_f, in_f, group in ((4, 64, 256, 64), (8, 32, 128, 32)):
        q = rng.integers(0, 1 << bits, size=(out_f, in_f)).astype(np.uint32)
        scales = rng.uniform(0.001, 0.02, size=(in_f // group, out_f)).astype(np.float16)
        t = gptq_pack(q, scales, bits, group, zero_minus_one=True)
        got = autogptq_unpack(t["qweight"], t["qzeros"], t["scales"], bits, group)
        assert torch.equal(got, gptq_expected(q, scales, bits, group))
        assert t["g_idx"].tolist() == [i // group for i in range(in_f)]


def test_gptq_rtn_is_symmetric_and_close():
    w = torch.randn(16, 64, generator=torch.Generator().manual_seed(1))
    q, scales = gptq_quantize_rtn(w, 32)
    assert q.min() >= 0 and q.max() <= 15
    err = (gptq_expected(q, scales, 4, 32) - w).abs() / w.abs().max()
    assert float(err.max()) < 0.1


def test_thudm_int4_even_element_in_high_nibble():
    q = torch.tensor([[7, -1, -8, 0, 0, -8, 3, 5]], dtype=torch.int8)
    packed = thudm_pack_int4(q)
    assert packed.view(torch.uint8).tolist() == [[0x7F, 0x80, 0x08, 0x35]]
    b = packed.to(torch.int32)
    hi, lo = b >> 4, (b << 28) >> 28  # arithmetic shifts of the sign-extended byte
    assert torch.equal(torch.stack([hi, lo], -1).reshape(1, -1), q.to(torch.int32))


def test_thudm_quantize_is_per_row_round_half_even():
    w = torch.tensor([[0.7, 0.25, -0.05, 0.15]], dtype=torch.float16)
    q, s = thudm_quantize(w, 4)
    assert s.dtype == torch.float16 and float(s[0]) == float(torch.tensor(0.7, dtype=torch.float16) / 7)
    assert q.tolist()[0][0] == 7


def test_quant_golden_is_deterministic(tmp_path):
    script = str(__import__("pathlib").Path(__file__).resolve().parents[1] / "quant_golden.py")
    for d in ("a", "b"):
        subprocess.run([sys.executable, script, "--out", str(tmp_path / d)], check=True, capture_output=True)
    for f in ("quant/thudm.safetensors", "quant/gptq.safetensors", "quant/glmlab_ref.safetensors",
              "tiny-thudm-int4/model.safetensors", "tiny-gptq-int4/golden.safetensors"):
        assert filecmp.cmp(tmp_path / "a" / f, tmp_path / "b" / f, shallow=False), f
    g = load_file(str(tmp_path / "a" / "quant/gptq.safetensors"))
    assert torch.equal(g["lin.expected"], g["lin2.expected"])
