"""dump_logits.py: oracle and transformers runtimes agree, and the oracle dump reproduces make_golden."""
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from dump_logits import build_batch, main as dump
from make_golden import TINY_CONFIG, random_state_dict, write_checkpoint, write_golden

ROWS = [[5, 17, 300, 2, 99, 411, 8, 64, 250], [7, 7, 123, 480, 1, 33], [500, 42, 9]]


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    d = tmp_path_factory.mktemp("dump") / "tiny-f32"
    write_checkpoint(d, TINY_CONFIG, random_state_dict(TINY_CONFIG, seed=1234), torch.float32)
    return d


def test_oracle_and_transformers_agree(ckpt):
    out = ckpt.parent
    a = dump(["--model", str(ckpt), "--out", str(out / "oracle.safetensors"), "--lengths", "9,6,3",
              "--seed", "3", "--steps", "3"])
    b = dump(["--model", str(ckpt), "--out", str(out / "hf.safetensors"), "--runtime", "transformers",
              "--lengths", "9,6,3", "--seed", "3", "--steps", "3"])
    assert sorted(a) == sorted(b)
    real = a["attention_mask"].bool()
    assert real.sum(1).tolist() == [9, 6, 3] and (a["input_ids"][~real] == 0).all()
    torch.testing.assert_close(a["prefill_logits"][real], b["prefill_logits"][real], atol=1e-4, rtol=0)
    for k in (1, 2, 3):
        assert torch.equal(a[f"step{k}_ids"], b[f"step{k}_ids"])
        torch.testing.assert_close(a[f"step{k}_logits"], b[f"step{k}_logits"], atol=1e-4, rtol=0)
    # the file on disk is what main returned, in the documented dtypes and shapes
    disk = load_file(str(out / "oracle.safetensors"))
    assert sorted(disk) == sorted(a) and all(torch.equal(disk[k], a[k]) for k in a)
    assert disk["prefill_logits"].dtype == torch.float32 and disk["prefill_logits"].shape == (3, 9, 512)
    assert disk["step2_position_ids"].tolist() == [10, 7, 4] and disk["step1_ids"].dtype == torch.int64
    with safe_open(str(out / "hf.safetensors"), "pt") as f:
        assert f.metadata()["runtime"] == "transformers" and f.metadata()["format"] == "pt"


def test_oracle_dump_equals_make_golden(ckpt):
    write_golden(ckpt, build_batch(ROWS))
    gold = load_file(str(ckpt / "golden.safetensors"))
    args = ["--model", str(ckpt), "--out", str(ckpt.parent / "ids.safetensors"), "--steps", "3"]
    for r in ROWS:
        args += ["--ids", " ".join(map(str, r))]
    ours = dump(args)
    for k in ("input_ids", "attention_mask", "position_ids"):
        assert torch.equal(ours[k], gold[k]), k
    real = gold["attention_mask"].bool()
    torch.testing.assert_close(ours["prefill_logits"][real], gold["prefill_logits"][real], atol=1e-6, rtol=0)
    for k in (1, 2, 3):
        assert torch.equal(ours[f"step{k}_ids"], gold[f"step{k}_ids"])
        assert torch.equal(ours[f"step{k}_position_ids"], gold[f"step{k}_position_ids"])
        torch.testing.assert_close(ours[f"step{k}_logits"], gold[f"step{k}_logits"], atol=1e-6, rtol=0)
