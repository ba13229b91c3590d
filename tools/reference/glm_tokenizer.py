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

    def build_chat(self, messages: list[dict]) -> list[int]:
        """An OpenAI-style message list as THUDM's openai_api_demo lays it out: the last message is the
        query (its metadata is not used), the others are the history."""
        if not messages:
            raise ValueError("empty message list")
        last = messages[-1]
        return self.build_chat_input(last["content"], history=messages[:-1], role=last["role"])

    def id_to_token(self, i: int) -> str:
        """SPTokenizer.convert_id_to_token: special ids -> their names; eos, bos and pad (= unk, id 0) and
        ids outside the vocabulary -> ""; others -> the SentencePiece piece."""
        names = {v: k for k, v in SPECIAL_IDS.items()}
        if i in names:
            return names[i]
        if i in (EOS_ID, 1, PAD_ID) or i < 0 or i > self.sp.get_piece_size():
            return ""
        return self.sp.id_to_piece(i)

    def decode(self, ids: list[int]) -> str:
        """ChatGLMTokenizer.decode (skip_special_tokens=False, clean_up_tokenization_spaces=False): the
        PreTrainedTokenizer path maps every id to its token string and decodes the whole list with one
        sp.decode_pieces. Special names are unknown pieces that decode as themselves, so a "▁" right
        after one is a space, not the dummy prefix; only the text's first piece loses its "▁"."""
        return self.sp.decode_pieces([self.id_to_token(int(i)) for i in ids])

    def decode_runs(self, ids: list[int]) -> str:
        """SPTokenizer.decode (not what ChatGLMTokenizer.decode does): special ids render as their
        strings and each run of normal ids between them decodes on its own."""
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
