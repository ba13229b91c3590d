"""ChatGLM3 tokenizer over the sentencepiece package (facts page §2).

SentencePiece ids 0..64788, then the special tokens below (never produced from user text).
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import sentencepiece as spm

SPECIAL_TOKENS = ["[MASK]", "[gMASK]", "[sMASK]", "sop", "eop",
                  "<|system|>", "<|user|>", "<|assistant|>", "<|observation|>"]
FIRST_SPECIAL_ID = 64789
SPECIAL_IDS = {tok: FIRST_SPECIAL_ID + i for i, tok in enumerate(SPECIAL_TOKENS)}
GMASK, SOP = SPECIAL_IDS["[gMASK]"], SPECIAL_IDS["sop"]
ROLES = ("system", "user", "assistant", "observation")
EOS_ID, PAD_ID = 2, 0


def shared_dir() -> Path:
    default = Path(__file__).resolve().parents[2] / ".." / "shared"
    return Path(os.environ.get("GLMLAB_SHARED", default)).resolve()


def default_model_path() -> Path:
    return shared_dir() / "data" / "chatglm3" / "tokenizer.model"


class ChatGLM3Tokenizer:
    def __init__(self, model_path: str | os.PathLike | None = None):
        self.sp = spm.SentencePieceProcessor(model_file=str(model_path or default_model_path()))
        assert self.sp.get_piece_size() == FIRST_SPECIAL_ID, self.sp.get_piece_size()
        self.vocab_size = FIRST_SPECIAL_ID + len(SPECIAL_TOKENS)  # 64798
        self.eos_id, self.pad_id = EOS_ID, PAD_ID

    def encode(self, text: str) -> list[int]:
        """Plain SentencePiece ids (with its dummy-prefix space); special-token text stays text."""
        return self.sp.encode(text, out_type=int)

    def role_id(self, role: str) -> int:
        if role not in ROLES:
            raise ValueError(f"unknown role {role!r}")
        return SPECIAL_IDS[f"<|{role}|>"]

    def build_single_message(self, role: str, metadata: str, text: str) -> list[int]:
        return [self.role_id(role)] + self.encode(metadata + "\n") + self.encode(text)

    def build_chat_input(self, query: str, history: list[dict] | None = None, role: str = "user") -> list[int]:
        """[gMASK] sop + one message per history item + the new message + <|assistant|>.
        History items: {"role", "content", optional "metadata", optional "tools" (system only)}."""
        ids = [GMASK, SOP]
        for item in history or []:
            content = item["content"]
            if item["role"] == "system" and "tools" in item:
                content = content + "\n" + json.dumps(item["tools"], indent=4, ensure_ascii=False)
            ids += self.build_single_message(item["role"], item.get("metadata", ""), content)
        ids += self.build_single_message(role, "", query)
        return ids + [SPECIAL_IDS["<|assistant|>"]]

    def decode(self, ids: list[int]) -> str:
        """Special ids render as their strings; runs of normal ids decode with SentencePiece."""
        names = {v: k for k, v in SPECIAL_IDS.items()}
        out, run = [], []
        for i in ids:
            if i in names:
                if run:
                    out.append(self.sp.decode(run))
                    run = []
                out.append(names[i])
            else:
                run.append(int(i))
        if run:
            out.append(self.sp.decode(run))
        return "".join(out)
