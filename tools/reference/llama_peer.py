#!/usr/bin/env python3
"""llama.cpp as the CPU peer of glmlab (issue 16 item 5): the same ChatGLM3 shapes, the same dtypes,
2 threads each, run in turns; prints one markdown table of tokens/s, glmlab ÷ llama.cpp.

  # the full comparison (random:chatglm3-6b against GGUFs of the same shapes; ~36 GB of GGUFs, hours):
  .venv/bin/python tools/reference/llama_peer.py --rounds 3 --json out/llama-peer.json
  # a smoke test at glmlab's random:small shapes (seconds):
  .venv/bin/python tools/reference/llama_peer.py --preset small --rounds 1 --prompt 128 --gen 32

What it does (docs/BENCH.md, "The llama.cpp peer"):

1. llama.cpp, outside the repository (--llama-dir, default /work/peers/llama.cpp): uses
   build/bin/llama-bench and llama-batched-bench there, or builds them: the llama.cpp source that PyPI's
   llama-cpp-python sdist vendors (vendor/llama.cpp; --sdist FILE, else the newest
   llama_cpp_python-*.tar.gz in --download-dir, else `pip download --no-deps --no-binary :all:
   llama-cpp-python` into it), CMake Release, CPU only, GGML_NATIVE=ON, no network code, those two
   targets only, -j --jobs. The llama.cpp commit (from the sdist's CHANGELOG.md) is printed and recorded.
2. GGUFs (--gguf-dir, default /work/peers/gguf; written once, reused) with PyPI's `gguf`: llama.cpp's arch
   "chatglm" at the exact shapes of glmlab's random:PRESET, random weights, a synthetic 65024-token SPM
   vocabulary (llama-bench feeds random ids; no text is ever tokenized). One file per glmlab dtype, with
   what glmlab stores: bf16 → BF16 matrices, fp16 → F16, int8 → Q8_0 linears, int4 → Q4_0 linears (the
   embedding and the output layer F16 in both, as glmlab keeps them; a linear whose input size is not a
   multiple of 32 — only random:small's dense_4h_to_h, 1368 — stays F16). Norms and biases F32.
3. Rounds (--rounds, default 3): every unit of work once per engine, units in rotating order and the
   engine that goes first alternating, the 1-minute load average recorded before and after each
   measurement. Then the table: per cell the median over rounds with min–max, and glmlab ÷ llama.cpp
   (ratio of the medians; in brackets the min–max of the per-round ratios).

Cells (--cells, comma-separated; a kind alone means all four dtypes; default decode,prefill,batch8-bf16):

  decode-DTYPE   one sequence after a --prompt (512) token prompt, --gen (128) tokens.
                 glmlab: `generate --ids <512 ids> -n 128 --min-new-tokens 128`, decode tokens/s =
                 127 decode steps ÷ decode time (the first token comes from the prefill).
                 llama.cpp: `llama-bench -p 0 -n 128 -d 512` (tg128 @ d512: 128 steps after a 512-token
                 context, which llama-bench fills untimed).
  prefill-DTYPE  the 512-token prompt in one forward. glmlab: the same generate run's prefill tokens/s
                 (its first forward after loading). llama.cpp: `llama-bench -p 512 -n 0 --no-warmup`.
  batch8-DTYPE   --batch (8) sequences decoding together for 128 steps, aggregate tokens/s.
                 glmlab: `generate --batch 8 --ids <64 ids> -n 128 --min-new-tokens 128`: 8 × 127 decode
                 steps ÷ decode time. llama.cpp: `llama-batched-bench -npp 64 -ntg 128 -npl 8`: S_TG =
                 8 × 128 ÷ T_TG. Both prefill 8 × 64 = 512 prompt tokens first (--batch-prompt).

Both engines: --threads (2). llama.cpp: -fa 1, weights read into memory at load (-lm none: no mmap, so
no page faults inside a timed run), its defaults otherwise (f16 KV cache, weight repacking, --poll 50;
--llama-poll N changes the last). glmlab: --dtype DTYPE (int8/int4 with --group-size, default 128), its
default CPU engine, OPENBLAS_CORETYPE removed from its environment (docs/BENCH.md,
"Limits") unless --keep-openblas-coretype.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
LLAMA_BINARIES = ("llama-bench", "llama-batched-bench")
GGUF_WRITER_VERSION = 1  # in the GGUF file names: bump when the files' contents change

# glmlab's random:PRESET shapes (src/model/config.cpp, ModelConfig::preset)
PRESETS = {
    "chatglm3-6b": dict(layers=28, hidden=4096, ffn=13696, heads=32, groups=2, head_dim=128,
                        vocab=65024, seq_length=8192, eps=1e-5),
    "small": dict(layers=4, hidden=512, ffn=1368, heads=8, groups=2, head_dim=64,
                  vocab=65024, seq_length=2048, eps=1e-5),
    "tiny": dict(layers=2, hidden=64, ffn=96, heads=4, groups=2, head_dim=16,
                 vocab=65024, seq_length=512, eps=1e-5),
}
DTYPES = ("bf16", "fp16", "int8", "int4")
# glmlab dtype -> (GGUF name, the linears' type, embedding/output type, general.file_type)
GGUF_TYPES = {
    "bf16": ("BF16", "BF16", "BF16", 32),  # LlamaFileType.MOSTLY_BF16
    "fp16": ("F16", "F16", "F16", 1),      # MOSTLY_F16
    "int8": ("Q8_0", "Q8_0", "F16", 7),    # MOSTLY_Q8_0
    "int4": ("Q4_0", "Q4_0", "F16", 2),    # MOSTLY_Q4_0
}
KINDS = ("decode", "prefill", "batch8")
DEFAULT_CELLS = "decode,prefill,batch8-bf16"


def log(msg: str) -> None:
    print(f"llama_peer: {msg}", file=sys.stderr, flush=True)


def loadavg() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


# ---------------------------------------------------------------------------------------------------
# 1. llama.cpp: find or build (outside the repository)

def llama_bins(llama_dir: Path) -> dict[str, Path] | None:
    """The two benchmark binaries under LLAMA_DIR/build/bin, or None when one is missing."""
    bins = {name: llama_dir / "build" / "bin" / name for name in LLAMA_BINARIES}
    return bins if all(p.is_file() and os.access(p, os.X_OK) for p in bins.values()) else None


def find_sdist(sdist: str | None, download_dir: Path) -> Path:
    """The llama-cpp-python sdist: --sdist, else the newest one in DOWNLOAD_DIR, else pip download it there."""
    if sdist:
        p = Path(sdist)
        if not p.is_file():
            raise SystemExit(f"llama_peer: --sdist {p}: no such file")
        return p
    found = sorted(download_dir.glob("llama_cpp_python-*.tar.gz"))
    if not found:
        download_dir.mkdir(parents=True, exist_ok=True)
        log(f"downloading the llama-cpp-python sdist into {download_dir}")
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
                        "--disable-pip-version-check", "-d", str(download_dir), "llama-cpp-python"], check=True)
        found = sorted(download_dir.glob("llama_cpp_python-*.tar.gz"))
        if not found:
            raise SystemExit(f"llama_peer: pip download left no llama_cpp_python-*.tar.gz in {download_dir}")
    return found[-1]


def sdist_commit(changelog: str) -> str | None:
    """The llama.cpp commit that the newest release of the sdist's CHANGELOG.md vendors: the first
    'update llama.cpp to ggml-org/llama.cpp@HASH' line after the first '## [x.y.z]' heading."""
    released = re.split(r"^## \[\d+\.\d+\.\d+\]", changelog, maxsplit=1, flags=re.M)
    if len(released) < 2:
        return None
    m = re.search(r"llama\.cpp@([0-9a-f]{7,40})", released[1].split("\n## [", 1)[0])
    return m.group(1) if m else None


def unpack_llama_source(sdist: Path, llama_dir: Path) -> dict:
    """Copies the sdist's vendor/llama.cpp into LLAMA_DIR; returns what it knows of the version."""
    with tempfile.TemporaryDirectory(prefix="llama_peer_") as tmp:
        with tarfile.open(sdist) as tar:
            try:
                tar.extractall(tmp, filter="data")
            except TypeError:  # Python < 3.12 without the filter backport
                tar.extractall(tmp)
        roots = [p for p in Path(tmp).iterdir() if p.is_dir()]
        if len(roots) != 1 or not (roots[0] / "vendor" / "llama.cpp" / "CMakeLists.txt").is_file():
            raise SystemExit(f"llama_peer: {sdist} has no vendor/llama.cpp/CMakeLists.txt")
        root = roots[0]
        changelog = root / "CHANGELOG.md"
        info = {"sdist": sdist.name, "package_version": root.name.rsplit("-", 1)[-1],
                "llama_cpp_commit": sdist_commit(changelog.read_text()) if changelog.is_file() else None}
        llama_dir.mkdir(parents=True, exist_ok=True)
        # .git there is a submodule pointer into llama-cpp-python's repository: leave it behind
        shutil.copytree(root / "vendor" / "llama.cpp", llama_dir, dirs_exist_ok=True,
                        ignore=shutil.ignore_patterns(".git"))
    (llama_dir / "llama_peer_source.json").write_text(json.dumps(info, indent=1) + "\n")
    return info


def source_info(llama_dir: Path) -> dict:
    p = llama_dir / "llama_peer_source.json"
    if p.is_file():
        return json.loads(p.read_text())
    head = subprocess.run(["git", "-C", str(llama_dir), "rev-parse", "--short=9", "HEAD"],
                          capture_output=True, text=True)
    return {"sdist": None, "package_version": None,
            "llama_cpp_commit": head.stdout.strip() if head.returncode == 0 else None}


def build_llama(llama_dir: Path, sdist: str | None, download_dir: Path, jobs: int) -> dict[str, Path]:
    """CPU-only Release build of llama-bench and llama-batched-bench (GGML_NATIVE, no network code)."""
    if not (llama_dir / "CMakeLists.txt").is_file():
        info = unpack_llama_source(find_sdist(sdist, download_dir), llama_dir)
        log(f"llama.cpp source from {info['sdist']} (llama.cpp {info['llama_cpp_commit']}) in {llama_dir}")
    info = source_info(llama_dir)
    build = llama_dir / "build"
    # LLAMA_CURL is gone from newer llama.cpp (LLAMA_OPENSSL took its place): both off, no downloads.
    configure = ["cmake", "-S", str(llama_dir), "-B", str(build), "-DCMAKE_BUILD_TYPE=Release",
                 "-DGGML_NATIVE=ON", "-DGGML_CUDA=OFF", "-DGGML_VULKAN=OFF", "-DGGML_METAL=OFF",
                 "-DLLAMA_CURL=OFF", "-DLLAMA_OPENSSL=OFF", "-DBUILD_SHARED_LIBS=OFF",
                 "-DLLAMA_BUILD_TESTS=OFF", "-DLLAMA_BUILD_EXAMPLES=OFF", "-DLLAMA_BUILD_SERVER=OFF",
                 "-DLLAMA_BUILD_APP=OFF", "-DLLAMA_BUILD_TOOLS=ON"]
    if info.get("llama_cpp_commit"):  # no .git in the sdist: tell llama.cpp which commit it is
        configure.append(f"-DLLAMA_BUILD_COMMIT={info['llama_cpp_commit']}")
    if shutil.which("ninja"):
        configure += ["-G", "Ninja"]
    nice = ["nice", "-n", "10"] if shutil.which("nice") else []
    log("configuring: " + " ".join(configure))
    subprocess.run(configure, check=True)
    cmd = nice + ["cmake", "--build", str(build), "-j", str(jobs), "--target", *LLAMA_BINARIES]
    log("building: " + " ".join(cmd))
    subprocess.run(cmd, check=True)
    bins = llama_bins(llama_dir)
    if bins is None:
        raise SystemExit(f"llama_peer: the build left no {' / '.join(LLAMA_BINARIES)} in {build / 'bin'}")
    return bins


def ensure_llama(args) -> tuple[dict[str, Path], dict]:
    llama_dir = Path(args.llama_dir)
    bins = llama_bins(llama_dir)
    if bins is None:
        log(f"no {' / '.join(LLAMA_BINARIES)} in {llama_dir / 'build' / 'bin'}: building them")
        bins = build_llama(llama_dir, args.sdist, Path(args.download_dir), args.jobs)
    info = dict(source_info(llama_dir), dir=str(llama_dir))
    log(f"llama.cpp commit {info.get('llama_cpp_commit') or 'unknown'} "
        f"(from {info.get('sdist') or llama_dir}), binaries in {bins['llama-bench'].parent}")
    return bins, info


# ---------------------------------------------------------------------------------------------------
# 2. GGUFs of glmlab's shapes

def gguf_tensors(p: dict) -> list[tuple[str, tuple[int, ...], str]]:
    """(name, numpy shape [rows, inputs], role) of every tensor llama.cpp's chatglm loader asks for, in
    file order. Roles: embd, out (the output layer), linear, norm, bias."""
    H, F, V = p["hidden"], p["ffn"], p["vocab"]
    qkv = p["heads"] * p["head_dim"] + 2 * p["groups"] * p["head_dim"]
    t = [("token_embd.weight", (V, H), "embd")]
    for i in range(p["layers"]):
        b = f"blk.{i}"
        t += [(f"{b}.attn_norm.weight", (H,), "norm"),
              (f"{b}.attn_qkv.weight", (qkv, H), "linear"),
              (f"{b}.attn_qkv.bias", (qkv,), "bias"),
              (f"{b}.attn_output.weight", (H, p["heads"] * p["head_dim"]), "linear"),
              (f"{b}.ffn_norm.weight", (H,), "norm"),
              (f"{b}.ffn_up.weight", (2 * F, H), "linear"),  # gate rows first, then up: SwiGLU
              (f"{b}.ffn_down.weight", (H, F), "linear")]
    t += [("output_norm.weight", (H,), "norm"), ("output.weight", (V, H), "out")]
    return t


def tensor_type(role: str, shape: tuple[int, ...], dtype: str) -> str:
    """The GGML type of one tensor in the DTYPE file."""
    if role in ("norm", "bias"):
        return "F32"
    _, linear, head, _ = GGUF_TYPES[dtype]
    want = linear if role == "linear" else head
    if want in ("Q8_0", "Q4_0") and shape[-1] % 32:
        return "F16"  # a row must be whole 32-value blocks (random:small's ffn_down: 1368 inputs)
    return want


def gguf_path(gguf_dir: Path, preset: str, dtype: str) -> Path:
    return gguf_dir / f"glmlab-random-{preset}-{GGUF_TYPES[dtype][0]}.v{GGUF_WRITER_VERSION}.gguf"


def gguf_nbytes(preset: str, dtype: str) -> int:
    import gguf
    n = 0
    for _, shape, role in gguf_tensors(PRESETS[preset]):
        block, size = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType[tensor_type(role, shape, dtype)]]
        count = 1
        for d in shape:
            count *= d
        n += count // block * size
    return n


def synthetic_vocab(n: int):
    """An SPM vocabulary llama.cpp accepts: <unk> <s> </s>, the 256 byte tokens <0x00>..<0xFF> (so a
    newline token exists), then distinct placeholder pieces up to N tokens. Never used to tokenize text."""
    import gguf
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)]
    types = [gguf.TokenType.UNKNOWN, gguf.TokenType.CONTROL, gguf.TokenType.CONTROL] + [gguf.TokenType.BYTE] * 256
    tokens += [f"\u2581t{i}" for i in range(len(tokens), n)]
    types += [gguf.TokenType.NORMAL] * (n - len(types))
    scores = [0.0] * 259 + [-float(i) for i in range(n - 259)]
    return tokens, scores, [int(t) for t in types]


def write_gguf(path: Path, preset: str, dtype: str, seed: int = 0) -> None:
    """Streams a GGUF of random weights to PATH (via PATH.tmp, renamed at the end).

    Random weights: every distinct row length gets a pool of 61 rows of N(0, 0.02²) values, quantized
    once to the file's type; a matrix is made of those encoded rows in a scrambled periodic order. Speed
    does not depend on the values, and this keeps writing the 6B files down to the disk's speed rather
    than hours of numpy quantization (each row is still a row gguf.quants encoded)."""
    import numpy as np
    import gguf
    from gguf.quants import quantize

    p = PRESETS[preset]
    rng = np.random.default_rng(seed)
    tensors = gguf_tensors(p)
    w = gguf.GGUFWriter(str(path) + ".tmp", gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH.CHATGLM])
    w.add_name(f"glmlab random:{preset} ({dtype}, random weights)")
    w.add_description(f"written by glmlab tools/reference/llama_peer.py v{GGUF_WRITER_VERSION}: random "
                      f"weights at glmlab's random:{preset} shapes, for speed comparisons only")
    w.add_context_length(p["seq_length"])
    w.add_embedding_length(p["hidden"])
    w.add_feed_forward_length(p["ffn"])
    w.add_block_count(p["layers"])
    w.add_head_count(p["heads"])
    w.add_head_count_kv(p["groups"])
    w.add_layer_norm_rms_eps(p["eps"])
    w.add_rope_dimension_count(p["head_dim"] // 2)  # ChatGLM3 rotates the first half of each head
    w.add_rope_freq_base(10000.0)
    w.add_file_type(GGUF_TYPES[dtype][3])
    w.add_quantization_version(gguf.GGML_QUANT_VERSION)
    tokens, scores, types = synthetic_vocab(p["vocab"])
    w.add_tokenizer_model("llama")
    w.add_tokenizer_pre("chatglm-spm")
    w.add_token_list(tokens)
    w.add_token_scores(scores)
    w.add_token_types(types)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_unk_token_id(0)
    w.add_pad_token_id(0)
    w.add_add_bos_token(False)

    pools: dict[tuple[int, str], np.ndarray] = {}

    def encoded(shape: tuple[int, ...], role: str) -> np.ndarray:
        qt = gguf.GGMLQuantizationType[tensor_type(role, shape, dtype)]
        if role == "norm":
            return (1.0 + 0.1 * rng.standard_normal(shape, dtype=np.float32)).astype(np.float32)
        if role == "bias":
            return (0.1 * rng.standard_normal(shape, dtype=np.float32)).astype(np.float32)
        rows, k = shape
        key = (k, qt.name)
        if key not in pools:
            pools[key] = quantize(0.02 * rng.standard_normal((61, k), dtype=np.float32), qt)
        pool = pools[key]
        return pool[(np.arange(rows, dtype=np.int64) * 17 + int(rng.integers(61))) % len(pool)]

    for name, shape, role in tensors:
        qt = gguf.GGMLQuantizationType[tensor_type(role, shape, dtype)]
        if qt.name in ("F32", "F16"):
            np_dtype = np.float32 if qt.name == "F32" else np.float16
            w.add_tensor_info(name, shape, np.dtype(np_dtype), int(np.prod(shape)) * np.dtype(np_dtype).itemsize)
        else:
            block, size = gguf.GGML_QUANT_SIZES[qt]
            byte_shape = (*shape[:-1], shape[-1] // block * size)
            w.add_tensor_info(name, byte_shape, np.dtype(np.uint8), int(np.prod(byte_shape)), raw_dtype=qt)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()
    for name, shape, role in tensors:
        w.write_tensor_data(encoded(shape, role))
    w.close()
    os.replace(str(path) + ".tmp", path)


def ensure_ggufs(gguf_dir: Path, preset: str, dtypes: list[str]) -> dict[str, Path]:
    gguf_dir.mkdir(parents=True, exist_ok=True)
    out = {}
    for dt in dtypes:
        path = gguf_path(gguf_dir, preset, dt)
        out[dt] = path
        if path.is_file():
            continue
        need = gguf_nbytes(preset, dt) + (2 << 30 if preset == "chatglm3-6b" else 0)
        free = shutil.disk_usage(gguf_dir).free
        if free < need:
            raise SystemExit(f"llama_peer: {path.name} needs {need / 1e9:.1f} GB (2 GB to spare included for 6B), "
                             f"{gguf_dir} has {free / 1e9:.1f} GB free")
        log(f"writing {path} ({gguf_nbytes(preset, dt) / 1e9:.2f} GB)")
        t0 = time.time()
        write_gguf(path, preset, dt)
        log(f"wrote {path.name} in {time.time() - t0:.0f} s")
    return out


# ---------------------------------------------------------------------------------------------------
# 3. Measurements

def parse_cells(text: str) -> list[str]:
    cells = []
    for item in filter(None, (s.strip() for s in text.split(","))):
        if item == "all":
            names = [f"{k}-{d}" for k in KINDS for d in DTYPES]
        elif item in KINDS:
            names = [f"{item}-{d}" for d in DTYPES]
        else:
            kind, _, dt = item.partition("-")
            if kind not in KINDS or dt not in DTYPES:
                raise SystemExit(f"llama_peer: --cells: unknown cell {item!r} (KIND-DTYPE with KIND in "
                                 f"{', '.join(KINDS)} and DTYPE in {', '.join(DTYPES)}; or a KIND alone; or all)")
            names = [item]
        cells += [c for c in names if c not in cells]
    if not cells:
        raise SystemExit("llama_peer: --cells: no cell given")
    return cells


def prompt_ids(n: int, seed: int) -> str:
    """N token ids for glmlab's --ids: ordinary pieces of the real vocabulary (no special ids)."""
    import random
    r = random.Random(seed)
    return " ".join(str(r.randrange(100, 60000)) for _ in range(n))


GEN_RE = re.compile(r"prefill: (\d+) tokens in ([0-9.]+) s = [0-9.]+ tokens/s \| "
                    r"decode: (\d+) tokens in ([0-9.]+) s")


def run_cmd(cmd: list[str], env: dict | None, timeout: float | None,
            no_repack: list[str] | None = None) -> tuple[subprocess.CompletedProcess, dict]:
    """Runs cmd; a non-zero exit stops the script. `no_repack`: llama.cpp's option that turns its weight
    repacking off. llama.cpp 0c1e57098 crashes (SIGSEGV at load) on Q8_0/Q4_0 with its default repacking on
    an AMX Xeon (session 16); killed by a signal, the command is run once more with that option, and the
    record says so (the table marks the cell: llama.cpp then runs without its repacked / AMX kernels)."""
    before, t0 = loadavg(), time.time()
    try:
        cp = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
        crashed = None
        if cp.returncode < 0 and no_repack:
            crashed = cp.returncode
            log(f"  killed by signal {-cp.returncode}; once more with {' '.join(no_repack)}")
            cmd = cmd + no_repack
            cp = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise SystemExit(f"llama_peer: --timeout {timeout} s passed: {' '.join(cmd)[:300]}") from None
    meta = {"command": cmd, "load_before": before, "load_after": loadavg(), "wall_s": round(time.time() - t0, 3)}
    if crashed is not None:
        meta["repack_off_after_signal"] = -crashed
    if cp.returncode != 0:
        tail = "\n".join((cp.stdout + "\n" + cp.stderr).strip().splitlines()[-20:])
        raise SystemExit(f"llama_peer: exit {cp.returncode}: {' '.join(cmd)[:300]}\n{tail}")
    return cp, meta


class Runner:
    def __init__(self, args, bins: dict[str, Path], ggufs: dict[str, Path]):
        self.a, self.bins, self.ggufs = args, bins, ggufs
        self.env = dict(os.environ)
        if not args.keep_openblas_coretype:
            self.env.pop("OPENBLAS_CORETYPE", None)
        self.model = f"random:{args.preset}"

    def glmlab(self, dtype: str, batch: int, prompt: int, gen: int) -> tuple[dict, dict]:
        """One `glmlab generate` with a forced length: prefill tokens/s and decode tokens/s (all
        sequences: batch × (gen − 1) decode steps ÷ decode time)."""
        cmd = [self.a.glmlab, "generate", "--model", self.model, "--dtype", dtype, "--threads",
               str(self.a.threads), "--batch", str(batch), "--ids", prompt_ids(prompt, 1234 + prompt),
               "-n", str(gen), "--min-new-tokens", str(gen)]
        if dtype in ("int8", "int4"):
            cmd += ["--group-size", str(self.a.group_size)]
        cp, meta = run_cmd(cmd, self.env, self.a.timeout)
        m = GEN_RE.search(cp.stderr)
        if not m:
            raise SystemExit(f"llama_peer: no speed line in glmlab's output:\n{cp.stderr[-2000:]}")
        pt, ps, gt, gs = int(m[1]), float(m[2]), int(m[3]), float(m[4])
        if pt != batch * prompt or gt != batch * gen:
            raise SystemExit(f"llama_peer: glmlab made {gt} tokens from {pt} prompt tokens, expected "
                             f"{batch * gen} from {batch * prompt}")
        loaded = next((ln for ln in cp.stderr.splitlines() if ln.startswith("glmlab: loaded")), "")
        meta["command"] = [c if not c[:1].isdigit() or len(c) < 40 else f"<{prompt} ids>" for c in cmd]
        out = {"prefill_tps": pt / ps, "decode_tps": batch * (gen - 1) / gs if gen > 1 else None}
        meta.update(prefill_tokens=pt, prefill_s=ps, generated_tokens=gt, decode_steps=gen - 1, decode_s=gs,
                    loaded=loaded)
        return out, meta

    def llama_bench(self, dtype: str, prompt: int, gen: int, depth: int) -> tuple[float, dict]:
        cmd = [str(self.bins["llama-bench"]), "-m", str(self.ggufs[dtype]), "-t", str(self.a.threads),
               "-fa", "1", "-lm", "none", "-r", "1", "-p", str(prompt), "-n", str(gen), "-d", str(depth),
               "-o", "jsonl"]
        if self.a.llama_poll is not None:
            cmd += ["--poll", str(self.a.llama_poll)]
        if prompt:
            cmd.append("--no-warmup")  # one cold prefill, like glmlab's (tg keeps its 1-token warm-up)
        cp, meta = run_cmd(cmd, None, self.a.timeout, ["--repack", "0"])
        rows = [json.loads(ln) for ln in cp.stdout.splitlines() if ln.startswith("{")]
        if len(rows) != 1:
            raise SystemExit(f"llama_peer: expected one result from llama-bench, got:\n{cp.stdout[-2000:]}")
        r = rows[0]
        meta.update({k: r.get(k) for k in ("build_commit", "model_type", "model_size", "n_threads", "flash_attn",
                                           "type_k", "n_prompt", "n_gen", "n_depth", "samples_ts", "cpu_info")})
        return float(r["samples_ts"][0]), meta

    def llama_batched(self, dtype: str, batch: int, prompt: int, gen: int) -> tuple[float, dict]:
        ctx = batch * (prompt + gen)
        cmd = [str(self.bins["llama-batched-bench"]), "-m", str(self.ggufs[dtype]), "-t", str(self.a.threads),
               "-tb", str(self.a.threads), "-fa", "1", "-lm", "none", "-c", str(-(-ctx // 256) * 256),
               "-npp", str(prompt), "-ntg", str(gen), "-npl", str(batch), "--output-format", "jsonl"]
        if self.a.llama_poll is not None:
            cmd += ["--poll", str(self.a.llama_poll)]
        cp, meta = run_cmd(cmd, None, self.a.timeout, ["--no-repack"])
        rows = [json.loads(ln) for ln in (cp.stdout + "\n" + cp.stderr).splitlines()
                if ln.startswith("{") and '"speed_tg"' in ln]
        if len(rows) != 1:
            raise SystemExit(f"llama_peer: expected one result from llama-batched-bench, got:\n"
                             f"{(cp.stdout + cp.stderr)[-2000:]}")
        r = rows[0]
        meta.update(result=r)
        return float(r["speed_tg"]), meta


def plan_units(cells: list[str]) -> list[tuple[str, str]]:
    """(unit, dtype): 'single' (one prompt + decode: the prefill and decode cells) or 'batch'."""
    units = []
    for dt in DTYPES:
        if f"decode-{dt}" in cells or f"prefill-{dt}" in cells:
            units.append(("single", dt))
        if f"batch8-{dt}" in cells:
            units.append(("batch", dt))
    return units


def measure(run: Runner, unit: str, dtype: str, engine: str, cells: list[str]) -> tuple[dict, list[dict]]:
    """Runs one unit on one engine: {cell: tokens/s} and the commands' records."""
    a = run.a
    want_decode, want_prefill = f"decode-{dtype}" in cells, f"prefill-{dtype}" in cells
    if unit == "batch":
        if engine == "glmlab":
            out, meta = run.glmlab(dtype, a.batch, a.batch_prompt, a.gen)
            return {f"batch8-{dtype}": out["decode_tps"]}, [meta]
        v, meta = run.llama_batched(dtype, a.batch, a.batch_prompt, a.gen)
        return {f"batch8-{dtype}": v}, [meta]
    if engine == "glmlab":
        out, meta = run.glmlab(dtype, 1, a.prompt, a.gen if want_decode else 1)
        res = {}
        if want_prefill:
            res[f"prefill-{dtype}"] = out["prefill_tps"]
        if want_decode:
            res[f"decode-{dtype}"] = out["decode_tps"]
        return res, [meta]
    res, metas = {}, []
    if want_prefill:
        res[f"prefill-{dtype}"], meta = run.llama_bench(dtype, a.prompt, 0, 0)
        metas.append(meta)
    if want_decode:
        res[f"decode-{dtype}"], meta = run.llama_bench(dtype, 0, a.gen, a.prompt)
        metas.append(meta)
    return res, metas


# ---------------------------------------------------------------------------------------------------
# 4. The table

def row_label(cell: str, a) -> str:
    kind, dt = cell.split("-")
    peer = GGUF_TYPES[dt][0]
    vs = dt if dt == "bf16" else f"{dt} vs {peer}"
    if kind == "decode":
        return f"decode {vs}"
    if kind == "prefill":
        return f"prefill {a.prompt} {vs}"
    return f"decode batch {a.batch} {vs}"


def fmt(x: float) -> str:
    return f"{x:.3g}" if x < 100 else f"{x:.0f}"


def spread(vals: list[float]) -> str:
    med = statistics.median(vals)
    return fmt(med) if len(vals) == 1 else f"{fmt(med)} ({fmt(min(vals))}–{fmt(max(vals))})"


def summarize(cells: list[str], samples: list[dict]) -> list[dict]:
    out = []
    for c in cells:
        per = {e: {s["round"]: s["cells"][c] for s in samples if s["engine"] == e and c in s["cells"]}
               for e in ("glmlab", "llama.cpp")}
        loads = [x for s in samples if c in s["cells"] for m in s["runs"]
                 for x in m["load_before"][:1] + m["load_after"][:1]]
        g, ll = list(per["glmlab"].values()), list(per["llama.cpp"].values())
        if not g or not ll:
            continue
        ratios = [per["glmlab"][r] / per["llama.cpp"][r] for r in per["glmlab"] if r in per["llama.cpp"]]
        repack_off = any("repack_off_after_signal" in m for s in samples
                         if s["engine"] == "llama.cpp" and c in s["cells"] for m in s["runs"])
        out.append({"cell": c, "llama_repack_off": repack_off,
                    "glmlab": {"median": statistics.median(g), "min": min(g), "max": max(g), "rounds": g},
                    "llama.cpp": {"median": statistics.median(ll), "min": min(ll), "max": max(ll), "rounds": ll},
                    "ratio": statistics.median(g) / statistics.median(ll),
                    "ratio_per_round": ratios,
                    "load": [min(loads), max(loads)] if loads else None})
    return out


def table(summary: list[dict], a) -> str:
    lines = ["| tokens/s | glmlab | llama.cpp | glmlab ÷ llama.cpp | load (1 min) |",
             "|---|--:|--:|--:|--:|"]
    for s in summary:
        r = s["ratio_per_round"]
        ratio = f"{s['ratio']:.2f}×" + (f" ({min(r):.2f}–{max(r):.2f})" if len(r) > 1 else "")
        load = f"{s['load'][0]:.1f}–{s['load'][1]:.1f}" if s["load"] else ""
        mark = " *" if s.get("llama_repack_off") else ""
        lines.append(f"| {row_label(s['cell'], a)} | {spread(s['glmlab']['rounds'])} | "
                     f"{spread(s['llama.cpp']['rounds'])}{mark} | {ratio} | {load} |")
    if any(s.get("llama_repack_off") for s in summary):
        lines.append("\n\\* llama.cpp crashed with its default weight repacking and ran again with it off "
                     "(--repack 0 / --no-repack), i.e. without its repacked (AMX) kernels.")
    return "\n".join(lines)


def cpu_model() -> str:
    try:
        for ln in Path("/proc/cpuinfo").read_text().splitlines():
            if ln.startswith("model name"):
                return ln.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def git_head(path: Path) -> str | None:
    cp = subprocess.run(["git", "-C", str(path), "rev-parse", "--short=12", "HEAD"], capture_output=True, text=True)
    return cp.stdout.strip() if cp.returncode == 0 else None


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", choices=sorted(PRESETS), default="chatglm3-6b",
                    help="glmlab's random:PRESET and GGUFs of its shapes (default chatglm3-6b)")
    ap.add_argument("--cells", default=DEFAULT_CELLS, help=f"default {DEFAULT_CELLS}; 'all' for every cell")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--prompt", type=int, default=512, help="prompt tokens of the decode and prefill cells")
    ap.add_argument("--gen", type=int, default=128, help="decode steps (tokens per sequence)")
    ap.add_argument("--batch", type=int, default=8, help="sequences of the batch8 cells")
    ap.add_argument("--batch-prompt", type=int, default=64, help="prompt tokens per sequence of the batch8 cells")
    ap.add_argument("--group-size", type=int, default=128, help="glmlab int8/int4 --group-size")
    ap.add_argument("--glmlab", default=str(REPO / "build" / "glmlab"))
    ap.add_argument("--keep-openblas-coretype", action="store_true",
                    help="pass OPENBLAS_CORETYPE on to glmlab (removed by default)")
    ap.add_argument("--llama-poll", type=int, choices=range(0, 101), metavar="0..100",
                    help="llama.cpp's --poll (how long its idle threads spin; default: llama.cpp's, 50). On a busy "
                         "machine 0 avoids the collapse of spinning threads (docs/BENCH.md)")
    ap.add_argument("--llama-dir", default="/work/peers/llama.cpp")
    ap.add_argument("--sdist", help="llama-cpp-python sdist (.tar.gz) to build llama.cpp from")
    ap.add_argument("--download-dir", default="/work/peers/sdist", help="where the sdist is looked for / downloaded")
    ap.add_argument("--jobs", type=int, default=2, help="build jobs")
    ap.add_argument("--gguf-dir", default="/work/peers/gguf")
    ap.add_argument("--timeout", type=float, default=None, help="seconds per command (default none)")
    ap.add_argument("--json", help="write every sample, the summary and the setup to this file")
    ap.add_argument("--build-only", action="store_true", help="find or build llama.cpp, then stop")
    ap.add_argument("--gguf-only", action="store_true", help="also write the GGUFs of --cells, then stop")
    a = ap.parse_args(argv)
    if a.rounds < 1 or a.threads < 1 or a.prompt < 1 or a.gen < 2 or a.batch < 1 or a.batch_prompt < 1:
        raise SystemExit("llama_peer: --rounds, --threads, --prompt, --batch, --batch-prompt must be ≥ 1, --gen ≥ 2")
    cells = parse_cells(a.cells)
    if a.prompt + a.gen > PRESETS[a.preset]["seq_length"]:
        raise SystemExit(f"llama_peer: --prompt + --gen exceed random:{a.preset}'s seq_length")

    bins, llama_info = ensure_llama(a)
    if a.build_only:
        print(f"llama.cpp {llama_info.get('llama_cpp_commit') or 'unknown'}: {bins['llama-bench']}, "
              f"{bins['llama-batched-bench']}")
        return 0
    units = plan_units(cells)
    ggufs = ensure_ggufs(Path(a.gguf_dir), a.preset, sorted({dt for _, dt in units}, key=DTYPES.index))
    if a.gguf_only:
        for dt, p in ggufs.items():
            print(f"{dt}: {p}")
        return 0
    if not (Path(a.glmlab).is_file() and os.access(a.glmlab, os.X_OK)):
        raise SystemExit(f"llama_peer: no glmlab binary at {a.glmlab} (--glmlab)")

    run = Runner(a, bins, ggufs)
    samples = []
    t_start = time.time()
    for rnd in range(a.rounds):
        order = units[rnd % len(units):] + units[:rnd % len(units)]
        for i, (unit, dt) in enumerate(order):
            engines = ("glmlab", "llama.cpp") if (rnd + i) % 2 == 0 else ("llama.cpp", "glmlab")
            for eng in engines:
                log(f"round {rnd + 1}/{a.rounds}: {eng} {unit} {dt} (load {loadavg()[:1]})")
                vals, metas = measure(run, unit, dt, eng, cells)
                samples.append({"round": rnd, "engine": eng, "unit": unit, "dtype": dt, "cells": vals,
                                "runs": metas})
                log("  " + ", ".join(f"{c} {v:.3g} tok/s" for c, v in vals.items()))
    summary = summarize(cells, samples)

    commit = llama_info.get("llama_cpp_commit") or "unknown"
    print(f"random:{a.preset}, {a.threads} threads, {a.rounds} round(s) (median, min–max over rounds); "
          f"llama.cpp {commit} (llama-bench / llama-batched-bench -fa 1 -lm none"
          f"{'' if a.llama_poll is None else f' --poll {a.llama_poll}'}); glmlab {git_head(REPO) or ''} "
          f"({cpu_model()})\n")
    print(table(summary, a))
    if a.json:
        doc = {"schema": "glmlab-llama-peer/1", "preset": a.preset, "cells": cells,
               "options": {k: v for k, v in vars(a).items() if k not in ("build_only", "gguf_only")},
               "machine": {"cpu": cpu_model(), "cores": os.cpu_count(), "platform": platform.platform(),
                           "openblas_coretype": os.environ.get("OPENBLAS_CORETYPE")},
               "llama_cpp": dict(llama_info, binaries={k: str(v) for k, v in bins.items()}),
               "glmlab": {"binary": a.glmlab, "git": git_head(REPO)},
               "ggufs": {dt: str(p) for dt, p in ggufs.items()},
               "wall_s": round(time.time() - t_start, 1), "summary": summary, "samples": samples}
        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        Path(a.json).write_text(json.dumps(doc, indent=1) + "\n")
        log(f"wrote {a.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
