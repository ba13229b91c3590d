"""llama_peer.py (the llama.cpp peer) without llama.cpp: the GGUF writer read back with gguf.GGUFReader
(names, types, shapes, metadata, values), and the whole round loop and table with stand-in binaries."""
import json
import stat

import gguf  # PyPI's gguf: scripts/setup.sh --oracle installs it
import numpy as np
import pytest

import llama_peer


def field(reader, key):
    f = reader.fields[key]
    return f.contents()


@pytest.mark.parametrize("dtype", llama_peer.DTYPES)
def test_tiny_gguf_has_llama_cpp_chatglm_layout(tmp_path, dtype):
    p = llama_peer.PRESETS["tiny"]
    path = llama_peer.ensure_ggufs(tmp_path, "tiny", [dtype])[dtype]
    r = gguf.GGUFReader(path)
    assert field(r, "general.architecture") == "chatglm"
    for key, want in (("block_count", 2), ("embedding_length", 64), ("feed_forward_length", 96),
                      ("attention.head_count", 4), ("attention.head_count_kv", 2),
                      ("rope.dimension_count", 8), ("context_length", 512)):
        assert field(r, f"chatglm.{key}") == want, key
    assert field(r, "general.file_type") == llama_peer.GGUF_TYPES[dtype][3]
    assert field(r, "tokenizer.ggml.model") == "llama"
    tokens = field(r, "tokenizer.ggml.tokens")
    assert len(tokens) == 65024 == len(set(tokens)) and "<0x0A>" in tokens
    assert field(r, "tokenizer.ggml.add_bos_token") is False

    want = {name: (shape, role) for name, shape, role in llama_peer.gguf_tensors(p)}
    assert [t.name for t in r.tensors] == list(want)
    qkv = 4 * 16 + 2 * 2 * 16
    assert want["blk.0.attn_qkv.weight"][0] == (qkv, 64) and want["blk.1.ffn_up.weight"][0] == (192, 64)
    data_bytes = 0
    for t in r.tensors:
        shape, role = want[t.name]
        assert [int(d) for d in t.shape] == list(reversed(shape)), t.name  # GGUF lists ne0 (inputs) first
        kind = llama_peer.GGUF_TYPES[dtype][1] if role == "linear" else \
            "F32" if role in ("norm", "bias") else llama_peer.GGUF_TYPES[dtype][2]
        assert t.tensor_type.name == kind, t.name
        data_bytes += int(t.n_bytes)
        w = gguf.quants.dequantize(np.asarray(t.data), t.tensor_type).reshape(shape)
        assert np.isfinite(w).all()
        if role in ("linear", "embd", "out"):
            assert 0.015 < float(w.std()) < 0.025, t.name
            assert len({w[i].tobytes() for i in range(min(61, shape[0]))}) > 1  # not one repeated row
    assert data_bytes == llama_peer.gguf_nbytes("tiny", dtype)
    mtime = path.stat().st_mtime_ns
    llama_peer.ensure_ggufs(tmp_path, "tiny", [dtype])  # present: not rewritten
    assert path.stat().st_mtime_ns == mtime


def test_small_q4_keeps_rows_that_are_not_whole_blocks_f16():
    shapes = {n: (s, role) for n, s, role in llama_peer.gguf_tensors(llama_peer.PRESETS["small"])}
    assert shapes["blk.3.ffn_down.weight"][0] == (512, 1368)
    assert llama_peer.tensor_type("linear", (512, 1368), "int4") == "F16"
    assert llama_peer.tensor_type("linear", (2736, 512), "int4") == "Q4_0"
    assert llama_peer.tensor_type("out", (65024, 512), "int8") == "F16"
    six = llama_peer.PRESETS["chatglm3-6b"]
    assert all(llama_peer.tensor_type(role, s, "int4") in ("Q4_0", "F16", "F32")
               for _, s, role in llama_peer.gguf_tensors(six))
    assert llama_peer.tensor_type("linear", (4096, 13696), "int4") == "Q4_0"


def test_cells_and_changelog():
    assert llama_peer.parse_cells("decode,batch8-int4") == [f"decode-{d}" for d in llama_peer.DTYPES] + ["batch8-int4"]
    assert len(llama_peer.parse_cells("all")) == 12
    with pytest.raises(SystemExit):
        llama_peer.parse_cells("decode-fp32")
    log = "# Changelog\n\n## [Unreleased]\n\n- feat: x\n\n## [0.3.36]\n\n- feat: update llama.cpp to " \
          "ggml-org/llama.cpp@0c1e57098\n\n## [0.3.35]\n\n- feat: update llama.cpp to ggml-org/llama.cpp@4df29be4f\n"
    assert llama_peer.sdist_commit(log) == "0c1e57098"


def script(path, text):
    path.write_text("#!/bin/sh\n" + text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def stand_in_glmlab(path):
    """`glmlab generate`: prefill 1.0 s, decode 0.5 s × batch."""
    return script(path, 'b=1; n=0; while [ $# -gt 0 ]; do case "$1" in --batch) b=$2;; -n) n=$2;; '
                  '--ids) p=$(echo "$2" | wc -w);; esac; shift; done\n'
                  'echo "glmlab: loaded stand-in" >&2\n'
                  'echo "prefill: $((b*p)) tokens in 1.000 s = 1 tokens/s | decode: $((b*n)) tokens in 0.500 s = 1 '
                  'tokens/s" >&2\n')


def run_peer(tmp_path, rounds, cells):
    """main() on the stand-ins under tmp_path (tiny preset, 64-token prompts, 16 steps); the JSON's path."""
    out = tmp_path / "peer.json"
    rc = llama_peer.main(["--preset", "tiny", "--rounds", str(rounds), "--prompt", "64", "--gen", "16",
                          "--cells", cells, "--glmlab", str(tmp_path / "glmlab"),
                          "--llama-dir", str(tmp_path / "llama"), "--gguf-dir", str(tmp_path / "gguf"),
                          "--json", str(out)])
    assert rc == 0
    return out


def test_rounds_and_table_with_stand_in_binaries(tmp_path, capsys):
    bins = tmp_path / "llama" / "build" / "bin"
    bins.mkdir(parents=True)
    # llama-bench: pp 100 t/s, tg 10 t/s; llama-batched-bench: S_TG 40 t/s (one JSON line each)
    script(bins / "llama-bench", 'case "$*" in *"-n 0"*) ts=100;; *) ts=10;; esac\n'
           'echo "{\\"build_commit\\": \\"abc\\", \\"n_threads\\": 2, \\"samples_ts\\": [$ts]}"\n')
    script(bins / "llama-batched-bench", 'echo "{\\"pl\\": 8, \\"speed_tg\\": 40.0}" >&2\n')
    stand_in_glmlab(tmp_path / "glmlab")
    (tmp_path / "llama" / "llama_peer_source.json").write_text(json.dumps({"llama_cpp_commit": "0c1e57098"}))
    out = run_peer(tmp_path, 2, "decode-bf16,prefill-int4,batch8-bf16")
    text = capsys.readouterr().out
    assert "| tokens/s | glmlab | llama.cpp | glmlab ÷ llama.cpp |" in text
    doc = json.loads(out.read_text())
    cells = {s["cell"]: s for s in doc["summary"]}
    assert cells["decode-bf16"]["glmlab"]["median"] == pytest.approx(15 / 0.5)  # 15 decode steps
    assert cells["decode-bf16"]["llama.cpp"]["median"] == 10
    assert cells["prefill-int4"]["glmlab"]["median"] == pytest.approx(64)
    assert cells["prefill-int4"]["ratio"] == pytest.approx(0.64)
    assert cells["batch8-bf16"]["glmlab"]["median"] == pytest.approx(8 * 15 / 0.5)
    assert cells["batch8-bf16"]["ratio"] == pytest.approx(8 * 15 / 0.5 / 40)
    assert "| decode batch 8 bf16 | 240 (240–240) | 40 (40–40) | 6.00× (6.00–6.00) |" in text
    assert doc["llama_cpp"]["llama_cpp_commit"] == "0c1e57098"
    samples = doc["samples"]
    assert len(samples) == 2 * 2 * 3  # rounds × engines × units (bf16 single, bf16 batch, int4 single)
    assert all(len(m["load_before"]) == 3 for s in samples for m in s["runs"])
    # rotating order: the first unit and the engine that starts differ between the rounds
    first = [next((s["unit"], s["dtype"], s["engine"]) for s in samples if s["round"] == r) for r in (0, 1)]
    assert first[0] != first[1]
    # what llama-bench was asked: tg128 @ d PROMPT, pp PROMPT without warm-up, 2 threads, -fa 1
    cmds = [m["command"] for s in samples if s["engine"] == "llama.cpp" for m in s["runs"]]
    tg = next(c for c in cmds if "-n" in c and c[c.index("-n") + 1] == "16")
    assert tg[tg.index("-d") + 1] == "64" and tg[tg.index("-t") + 1] == "2" and tg[tg.index("-fa") + 1] == "1"
    pp = next(c for c in cmds if "-p" in c and c[c.index("-p") + 1] == "64")
    assert "--no-warmup" in pp and pp[pp.index("-m") + 1].endswith("Q4_0.v1.gguf")


def test_a_crash_with_repacking_runs_again_without_it_and_the_cell_is_marked(tmp_path, capsys):
    # A llama-bench that dies by SIGSEGV unless asked for --repack 0 (llama.cpp 0c1e57098 on Q8_0/Q4_0 on an
    # AMX Xeon), and a llama-batched-bench that needs --no-repack the same way.
    bins = tmp_path / "llama" / "build" / "bin"
    bins.mkdir(parents=True)
    script(bins / "llama-bench", 'case "$*" in *"--repack 0"*) ;; *) kill -SEGV $$;; esac\n'
           'echo "{\\"build_commit\\": \\"abc\\", \\"n_threads\\": 2, \\"samples_ts\\": [10]}"\n')
    script(bins / "llama-batched-bench", 'case "$*" in *"--no-repack"*) ;; *) kill -SEGV $$;; esac\n'
           'echo "{\\"pl\\": 8, \\"speed_tg\\": 40.0}" >&2\n')
    stand_in_glmlab(tmp_path / "glmlab")
    out = run_peer(tmp_path, 1, "decode-int8,batch8-int8")
    text = capsys.readouterr().out
    doc = json.loads(out.read_text())
    cells = {s["cell"]: s for s in doc["summary"]}
    assert cells["decode-int8"]["llama_repack_off"] and cells["batch8-int8"]["llama_repack_off"]
    assert cells["decode-int8"]["llama.cpp"]["median"] == 10
    runs = [m for s in doc["samples"] if s["engine"] == "llama.cpp" for m in s["runs"]]
    assert all(m["repack_off_after_signal"] == 11 for m in runs)
    assert any(m["command"][-2:] == ["--repack", "0"] for m in runs)
    assert any(m["command"][-1] == "--no-repack" for m in runs)
    assert "| 10 *" in text and "ran again with it off" in text


def test_a_crash_without_a_retry_option_stops_the_script():
    with pytest.raises(SystemExit, match="exit -11"):
        llama_peer.run_cmd(["sh", "-c", "kill -SEGV $$"], None, None)
