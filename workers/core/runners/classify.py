"""Text classification: encoder embeddings into a scikit-learn probability head.

The shipped model is ``minilm-intent``: the rag-intent-classifier package's logistic-regression
head over all-MiniLM-L6-v2 embeddings (157 intents). Its own ``infer`` function would fetch the
encoder from the hub, so the head is loaded directly and fed by our own encoder.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import joblib
import numpy as np

from schemas.errors import ConfigurationError
from schemas.messages import ClassifyOutput, InferenceRequest, LabelScore, Task
from schemas.settings import Settings
from workers.core.runners.base import file_digest
from workers.core.runners.embed import HFEncoder, load_minilm


class HeadClassifier:
    """An encoder plus a fitted classifier with ``predict_proba``."""

    task = Task.CLASSIFY

    def __init__(self, name: str, encoder: HFEncoder, head: Any, labels: list[str], head_digest: str) -> None:
        if not hasattr(head, "predict_proba"):
            raise ConfigurationError(f"classifier head of {name!r} has no predict_proba")
        self.name = name
        self.encoder = encoder
        self.head = head
        self.labels = labels
        self.device = encoder.device
        self.version = f"{name}@{encoder.version.split('@')[-1]}+{head_digest}"

    def tokenize(self, texts: Sequence[str]) -> list[list[int]]:
        return self.encoder.tokenize(texts)

    def forward(self, batch: Sequence[Sequence[int]]) -> np.ndarray:
        """Class probabilities, shape (len(batch), n_classes)."""
        probs: np.ndarray = self.head.predict_proba(self.encoder.embed(batch))
        return probs

    def output(self, row: np.ndarray, request: InferenceRequest) -> ClassifyOutput:
        k = min(request.top_k, len(row))
        best = np.argsort(row)[::-1][:k]
        return ClassifyOutput(labels=[LabelScore(label=self.labels[i], score=float(row[i])) for i in best])


def _label_names(classes: Sequence[Any], label_map: dict[str, Any]) -> list[str]:
    """rag-intent-classifier classes are either names or numeric ids mapped through label_map."""
    names = []
    for c in classes:
        mapped = label_map.get(str(c))
        names.append(str(mapped) if isinstance(mapped, str) and not mapped.lstrip("-").isdigit() else str(c))
    return names


def load_minilm_intent(settings: Settings) -> HeadClassifier:
    try:
        import rag_intent_classifier
    except ImportError as e:
        raise ConfigurationError(
            "the intent head is not installed", hint="pip install rag-intent-classifier"
        ) from e
    folder = Path(rag_intent_classifier.__file__).resolve().parent / "models"
    head_path, map_path = folder / "LogisticRegression.joblib", folder / "label_map.joblib"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # trained on another scikit-learn minor version
        head = joblib.load(head_path)
        label_map = joblib.load(map_path)
    labels = _label_names(list(head.classes_), label_map)
    return HeadClassifier(
        "minilm-intent", load_minilm(settings), head, labels, file_digest(head_path, length=8)
    )
