"""The sentence embedder behind CSS: a local ``transformers`` model folder, pinned by hashes.

A protocol names the embedder (``css_embedder``, e.g. ``sentence-transformers/all-MiniLM-L6-v2``) and
may pin the sha256 of its ``config.json`` (``css_config_sha256``). The folder is found, in order, at
the metric's ``css_path`` parameter or at ``$SIDA_BENCH_MODELS/<name>``; nothing is downloaded
(``local_files_only=True``). The config sha256 and the sha256 of every weights file are recorded
with the scores, because another checkpoint under the same name gives other numbers.

Pooling (stated in the results): ``mean`` = the mean of the last hidden states over the tokens of
the attention mask (special tokens included, as sentence-transformers does); ``cls`` = the last
hidden state of the first token. Texts longer than ``max_length`` tokens are truncated.
CSS of a pair = cosine similarity of the two pooled vectors (float64), in [-1, 1].
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bench.errors import UserError

POOLINGS = ("mean", "cls")
WEIGHT_SUFFIXES = (".safetensors", ".bin")
MODELS_ENV = "SIDA_BENCH_MODELS"


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def resolve_embedder(name: str, path: str | None) -> Path | None:
    """The embedder folder: ``path``, else ``$SIDA_BENCH_MODELS/<name>``; ``None`` when neither exists."""
    candidates = [Path(path).expanduser()] if path else []
    if os.environ.get(MODELS_ENV):
        candidates.append(Path(os.environ[MODELS_ENV]).expanduser() / name)
    return next((c for c in candidates if (c / "config.json").is_file()), None)


class SentenceEmbedder:
    """Pooled, L2-free sentence vectors from a local ``AutoModel`` + ``AutoTokenizer`` folder (CPU, fp32)."""

    def __init__(self, folder: Path, pooling: str = "mean", max_length: int = 256, batch_size: int = 16,
                 expected_config_sha256: str | None = None) -> None:
        if pooling not in POOLINGS:
            raise UserError(f"css_pooling must be one of {', '.join(POOLINGS)}, got {pooling!r}")
        self.folder = Path(folder)
        self.pooling, self.max_length, self.batch_size = pooling, int(max_length), int(batch_size)
        self.config_sha256 = sha256_file(self.folder / "config.json")
        if expected_config_sha256 and expected_config_sha256 != self.config_sha256:
            raise UserError(f"CSS embedder {self.folder}: config.json sha256 {self.config_sha256} differs from the "
                            f"protocol's css_config_sha256 {expected_config_sha256}; use the pinned model folder")
        self.weights_sha256 = {p.name: sha256_file(p) for p in sorted(self.folder.iterdir())
                               if p.suffix in WEIGHT_SUFFIXES and p.is_file()}
        self._model: Any = None
        self._tokenizer: Any = None

    def _load(self) -> None:
        from transformers import AutoModel, AutoTokenizer

        try:
            self._tokenizer = AutoTokenizer.from_pretrained(self.folder, local_files_only=True)
            self._model = AutoModel.from_pretrained(self.folder, local_files_only=True).float().eval()
        except (OSError, ValueError) as exc:
            raise UserError(f"CSS embedder {self.folder} could not be loaded with transformers: {exc}") from exc

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """(N, D) float64 pooled vectors."""
        import torch

        if self._model is None:
            self._load()
        out = []
        for start in range(0, len(texts), self.batch_size):
            batch = self._tokenizer(list(texts[start:start + self.batch_size]), padding=True, truncation=True,
                                    max_length=self.max_length, return_tensors="pt")
            with torch.inference_mode():
                hidden = self._model(**batch).last_hidden_state.double()
            if self.pooling == "cls":
                out.append(hidden[:, 0].numpy())
            else:
                mask = batch["attention_mask"].unsqueeze(-1).double()
                out.append(((hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)).numpy())
        return np.concatenate(out) if out else np.zeros((0, 0))

    def similarity(self, hypotheses: Sequence[str], references: Sequence[str]) -> np.ndarray:
        """(N,) cosine similarity of each hypothesis with its reference."""
        if not hypotheses:
            return np.zeros(0)
        a, b = self.embed(hypotheses), self.embed(references)
        norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
        return np.where(norms > 0, (a * b).sum(1) / np.where(norms > 0, norms, 1.0), 0.0)

    def describe(self) -> dict[str, Any]:
        return {"folder": str(self.folder), "config_sha256": self.config_sha256, "weights_sha256": self.weights_sha256,
                "pooling": self.pooling, "max_length": self.max_length, "similarity": "cosine"}
