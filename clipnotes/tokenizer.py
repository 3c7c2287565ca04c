"""A word-level tokenizer for the tiny CLIP, with open_clip's tokenizer interface.

open_clip's BPE vocabulary has 49,408 tokens; its embedding table alone would be
several times larger than the whole tiny model. The mini world's captions use a
couple of hundred words, so the tiny CLIP gets a compact word-level vocabulary
through open_clip's ``text_cfg.vocab_size``. Like OpenAI's tokenizer, the
end-of-text token has the largest id, so open_clip's default ``argmax`` pooling
finds it, and every other piece of open_clip (templates, zero-shot heads, CoOp-style
splicing) works unchanged.
"""
from __future__ import annotations

import re
from typing import Sequence

import torch

SPECIALS_FRONT = ("<pad>", "<sot>", "<unk>")
EOT = "<eot>"
_TOKEN_RE = re.compile(r"[a-z0-9]+(?:-[a-z0-9]+)*|[.,!?;:]")


class WordTokenizer:
    """Lower-cases, splits into words and punctuation, maps unknown words to ``<unk>``.

    ``tokenizer(texts)`` returns a ``(N, context_length)`` LongTensor:
    ``<sot> w1 ... wk <eot> <pad>...``, truncated (keeping ``<eot>``) if too long.
    """

    def __init__(self, words: Sequence[str], context_length: int = 24):
        words = [w for w in dict.fromkeys(words) if w not in SPECIALS_FRONT + (EOT,)]
        self.itos: list[str] = [*SPECIALS_FRONT, *words, EOT]
        self.stoi = {w: i for i, w in enumerate(self.itos)}
        self.pad_id, self.sot_id, self.unk_id = 0, 1, 2
        self.eot_id = len(self.itos) - 1
        self.context_length = context_length

    @property
    def vocab_size(self) -> int:
        return len(self.itos)

    def split(self, text: str) -> list[str]:
        return _TOKEN_RE.findall(text.lower())

    def encode(self, text: str) -> list[int]:
        return [self.stoi.get(w, self.unk_id) for w in self.split(text)]

    def unknown_words(self, text: str) -> list[str]:
        """The words of ``text`` this vocabulary does not know."""
        return [w for w in self.split(text) if w not in self.stoi]

    def __call__(self, texts: str | Sequence[str], context_length: int | None = None) -> torch.Tensor:
        if isinstance(texts, str):
            texts = [texts]
        n = context_length or self.context_length
        out = torch.full((len(texts), n), self.pad_id, dtype=torch.long)
        for i, t in enumerate(texts):
            ids = [self.sot_id, *self.encode(t)][: n - 1] + [self.eot_id]
            out[i, : len(ids)] = torch.tensor(ids)
        return out

    def decode(self, ids: Sequence[int] | torch.Tensor) -> str:
        words = [self.itos[int(i)] for i in ids]
        return " ".join(w for w in words if w not in (*SPECIALS_FRONT[:2], EOT))
