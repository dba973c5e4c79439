"""Causal language models for task ``generate``: a prefill pass and one-token decode steps.

The runner knows tensors, not requests. :class:`KVBatch` holds the KV cache of the sequences
decoded together, **left-padded** to one length: every row's newest token sits in the last column,
so one decode step appends one column for all rows, and a padded column is masked out of
attention. Rows join (:meth:`KVBatch.join`, the shorter side padded on the left) and leave
(:meth:`KVBatch.keep`, then columns that are padding in every row are dropped) between steps;
that is what lets the decoder (:mod:`workers.core.decoder`) batch at the iteration level. Position ids
are counted per row from its first real token, so padding never shifts a row's positions.

Two models: ``tiny-lm``, a small Llama-style model built from a config with a fixed seed and
MiniLM's word embeddings (random layers: it exercises every code path in tests and benchmarks and
writes real words, but no sense; no causal LM ships as a PyPI package), and ``causal-lm``, any
hub-style folder the operator names in ``INFERQ_GENERATE_MODEL_DIR`` (config, tokenizer,
weights), loaded with transformers' Auto classes.
Models with full attention (GPT-2, Llama, Qwen2, Phi, …) are supported; sliding-window caches are not.
"""

from __future__ import annotations

import hashlib
import inspect
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer, DynamicCache, LlamaConfig, LlamaForCausalLM

from schemas.errors import ConfigurationError, InvalidRequest
from schemas.messages import ChatMessage, InferenceRequest, Task
from schemas.settings import Settings
from workers.core.runners.base import file_digest
from workers.core.runners.device import choose_device, configure_threads, dtype_for
from workers.core.runners.embed import minilm_path

# tiny-lm: small enough to load in a second and decode a step in a few ms on one CPU core; its
# hidden size is MiniLM's, whose word embeddings it borrows (so it writes words, if not sense)
TINY_LM_CONFIG: dict[str, Any] = dict(
    hidden_size=384,
    intermediate_size=1_024,
    num_hidden_layers=4,
    num_attention_heads=6,
    num_key_value_heads=2,
    max_position_embeddings=1_024,
    tie_word_embeddings=True,
)
TINY_LM_SEED = 20_261_201


@dataclass
class KVBatch:
    """The KV cache of the rows decoded together, left-padded to ``length`` columns.

    ``cache`` is transformers' own cache object: a decode step extends it in place; joins and
    leaves build a new one. ``mask`` is ``[rows, length]`` (1 = a real token); ``positions`` is
    ``[rows]``, each row's count of real tokens (the position id of its next token).
    """

    cache: DynamicCache
    mask: torch.Tensor
    positions: torch.Tensor

    @property
    def rows(self) -> int:
        return int(self.mask.shape[0])

    @property
    def length(self) -> int:
        return int(self.mask.shape[1])

    def _tensors(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        return [(k, v) for k, v, *_ in self.cache]

    def join(self, other: KVBatch) -> KVBatch:
        """This batch's rows, then ``other``'s; the shorter side is padded on the left."""
        length = max(self.length, other.length)

        def pad(t: torch.Tensor, by: int) -> torch.Tensor:  # [B, H, T, D]: pad T at the front
            return F.pad(t, (0, 0, by, 0)) if by else t

        a, b = length - self.length, length - other.length
        layers = [
            (torch.cat([pad(k1, a), pad(k2, b)]), torch.cat([pad(v1, a), pad(v2, b)]))
            for (k1, v1), (k2, v2) in zip(self._tensors(), other._tensors(), strict=True)
        ]
        mask = torch.cat([F.pad(self.mask, (a, 0)), F.pad(other.mask, (b, 0))])
        return KVBatch(
            DynamicCache(ddp_cache_data=layers), mask, torch.cat([self.positions, other.positions])
        )

    def keep(self, rows: Sequence[int]) -> KVBatch:
        """Only ``rows`` (indices, in order); columns that are padding in every kept row are dropped."""
        index = torch.as_tensor(list(rows), dtype=torch.long, device=self.mask.device)
        mask = self.mask.index_select(0, index)
        real = mask.any(dim=0).nonzero()
        start = int(real[0]) if len(real) else mask.shape[1]
        layers = [
            (k.index_select(0, index)[:, :, start:], v.index_select(0, index)[:, :, start:])
            for k, v in self._tensors()
        ]
        return KVBatch(
            DynamicCache(ddp_cache_data=layers), mask[:, start:], self.positions.index_select(0, index)
        )


@dataclass
class Prefill:
    """Prompts being prefilled a chunk of columns at a time (left-padded together, like a
    :class:`KVBatch`): a long prompt joining a running batch is run in pieces between its decode
    steps, so the running rows wait one chunk, not the whole prompt."""

    ids: torch.Tensor  # [rows, width], left-padded
    mask: torch.Tensor  # [rows, width]
    cache: DynamicCache
    done: int = 0  # columns already run

    @property
    def width(self) -> int:
        return int(self.ids.shape[1])

    @property
    def rows(self) -> int:
        return int(self.ids.shape[0])

    @property
    def finished(self) -> bool:
        return self.done >= self.width

    def kv(self) -> KVBatch:
        return KVBatch(self.cache, self.mask, self.mask.sum(-1))


# end-of-turn tokens of common chat templates: a chat model ends its answer with one of these, which
# its config does not always name as end of sequence
END_OF_TURN = ("<|im_end|>", "<|eot_id|>", "<|end|>", "<end_of_turn>", "<|endoftext|>")


class CausalLM:
    """A causal LM on one device: tokenise prompts, prefill them, decode one token per row."""

    task = Task.GENERATE

    def __init__(
        self,
        name: str,
        model: torch.nn.Module,
        tokenizer: Any,
        device: torch.device,
        version: str,
        *,
        bos_id: int | None = None,
        eos_ids: Sequence[int] = (),
    ) -> None:
        self.name = name
        self.model = model.to(device).eval()
        self.tokenizer = tokenizer
        self.device = str(device)
        self._device = device
        self.version = version
        self.bos_id = bos_id
        self.eos_ids = frozenset(int(i) for i in eos_ids)
        config: Any = model.config
        self.max_context_tokens = int(getattr(config, "max_position_embeddings", 0) or 2_048)
        self.vocab_size = int(config.vocab_size)
        params = inspect.signature(model.forward).parameters
        # transformers 5 renamed past_key_values to cache; logits_to_keep skips the LM head on
        # every prompt position but the last (most of a prefill's cost on a large vocabulary)
        self._cache_kw = "cache" if "cache" in params else "past_key_values"
        self._keep_last = {"logits_to_keep": 1} if "logits_to_keep" in params else {}
        # the strings the tokenizer turns into special tokens: never allowed in chat content
        specials = set(getattr(tokenizer, "all_special_tokens", []) or [])
        added = getattr(tokenizer, "added_tokens_decoder", {}) or {}
        specials |= {str(t) for t in added.values() if getattr(t, "special", False)}
        self._control_tokens = tuple(sorted((t for t in specials if t), key=len, reverse=True))

    # -- text ------------------------------------------------------------------------------
    def tokenize(self, texts: Sequence[str]) -> list[list[int]]:
        """Prompt token ids: ``bos_id`` (when the model has one), then the text's own tokens.

        Special tokens are never added by the tokenizer: a BERT-style tokenizer would end every
        prompt with its separator, which is this model's end of sequence.
        """
        if not texts:
            return []
        plain: list[list[int]] = self.tokenizer(list(texts), add_special_tokens=False)["input_ids"]
        return [[self.bos_id, *row] if self.bos_id is not None else list(row) for row in plain]

    def prompts(self, request: InferenceRequest) -> list[list[int]]:
        """Token ids of each prompt of ``request``: its texts, or its conversation rendered."""
        if request.messages is not None:
            return [self.render_chat(request.messages)]
        return self.tokenize(request.texts())

    def render_chat(self, messages: Sequence[ChatMessage]) -> list[int]:
        """A conversation in the model's own chat template, opened for the assistant's next turn.

        Content may not hold the template's control tokens (``<|im_start|>``, ``<|im_end|>``, …):
        the tokenizer would read them as the real thing, letting a user's text close its own turn and
        open a ``system`` one. Such a request is refused rather than silently rewritten.
        """
        if not getattr(self.tokenizer, "chat_template", None):
            raise InvalidRequest(
                f"model {self.name!r} has no chat template, so it cannot take `messages`",
                hint="send the prompt as `inputs`, or use a chat model (e.g. smollm2-135m-instruct)",
            )
        for i, m in enumerate(messages):
            found = next((t for t in self._control_tokens if t in m.content), None)
            if found is not None:
                raise InvalidRequest(
                    f"messages[{i}].content holds {found!r}, a control token of {self.name}'s chat template",
                    hint="remove the model's control tokens from the text: no message may open or end a turn",
                )
        turns = [{"role": m.role.value, "content": m.content} for m in messages]
        try:
            text: str = self.tokenizer.apply_chat_template(turns, add_generation_prompt=True, tokenize=False)
        except Exception as e:  # jinja2's TemplateError: a template's raise_exception refuses the
            # conversation (many refuse a system turn, or turns that do not alternate), or it is broken
            why = str(e)[:200] or type(e).__name__
            raise InvalidRequest(
                f"{self.name}'s chat template cannot render this conversation: {why}",
                hint="shape the conversation as the model's template requires (roles, their order)",
            ) from e
        ids: list[int] = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        return ids

    def detokenize(self, ids: Sequence[int]) -> str:
        text: str = self.tokenizer.decode(list(ids), skip_special_tokens=True)
        return text

    # -- tensors ---------------------------------------------------------------------------
    @torch.inference_mode()
    def prefill(self, prompts: Sequence[Sequence[int]]) -> tuple[torch.Tensor, KVBatch]:
        """Run the prompts (left-padded together); returns each one's next-token logits and its KV rows."""
        p = self.begin_prefill(prompts)
        logits = self.prefill_chunk(p, p.width)
        assert logits is not None
        return logits, p.kv()

    def begin_prefill(self, prompts: Sequence[Sequence[int]]) -> Prefill:
        """The prompts left-padded together, nothing run yet (see :meth:`prefill_chunk`)."""
        longest = max(len(p) for p in prompts)
        ids = torch.zeros((len(prompts), longest), dtype=torch.long)
        mask = torch.zeros((len(prompts), longest), dtype=torch.long)
        for i, p in enumerate(prompts):
            ids[i, longest - len(p) :] = torch.as_tensor(list(p), dtype=torch.long)
            mask[i, longest - len(p) :] = 1
        return Prefill(ids.to(self._device), mask.to(self._device), DynamicCache())

    @torch.inference_mode()
    def prefill_chunk(self, p: Prefill, columns: int) -> torch.Tensor | None:
        """Run the next ``columns`` columns of ``p`` (extending its cache); returns the next-token
        logits once the last column has run, else None."""
        start, end = p.done, min(p.width, p.done + max(1, columns))
        mask = p.mask[:, :end]
        positions = (mask.cumsum(-1) - 1).clamp(min=0)[:, start:end]
        logits = self._forward(p.ids[:, start:end], mask, positions, p.cache, **self._keep_last)
        p.done = end
        return logits if p.finished else None

    def synchronize(self) -> None:
        """Wait until the device has run every pass queued so far (a GPU runs them asynchronously);
        nothing to wait for on a CPU."""
        if self._device.type == "cuda":
            torch.cuda.synchronize(self._device)

    @torch.inference_mode()
    def decode(self, batch: KVBatch, tokens: Sequence[int]) -> tuple[torch.Tensor, KVBatch]:
        """Feed one token per row; returns the next-token logits and the batch one column longer."""
        step = torch.as_tensor(list(tokens), dtype=torch.long, device=self._device).unsqueeze(1)
        mask = F.pad(batch.mask, (0, 1), value=1)
        logits = self._forward(step, mask, batch.positions.unsqueeze(1), batch.cache)
        return logits, KVBatch(batch.cache, mask, batch.positions + 1)

    def _forward(
        self, ids: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor, cache: DynamicCache, **kw: Any
    ) -> torch.Tensor:
        """One model call that extends ``cache`` in place; the last position's logits, float32."""
        out = self.model(
            input_ids=ids,
            attention_mask=mask,
            position_ids=positions,
            use_cache=True,
            **{self._cache_kw: cache},
            **kw,
        )
        logits: torch.Tensor = out.logits[:, -1, :].float()
        return logits


def _eos_ids(model: torch.nn.Module, tokenizer: Any) -> list[int]:
    """End of sequence as the model's generation config and its tokenizer name it, and the chat
    template's end-of-turn token where the vocabulary has one (:data:`END_OF_TURN`)."""
    found: set[int] = set()
    for named in (
        getattr(getattr(model, "generation_config", None), "eos_token_id", None),
        getattr(tokenizer, "eos_token_id", None),
    ):
        if named is not None:
            found |= {int(i) for i in (named if isinstance(named, list | tuple) else [named])}
    if getattr(tokenizer, "chat_template", None):
        vocab = tokenizer.get_vocab()
        found |= {int(vocab[t]) for t in END_OF_TURN if t in vocab}
    return sorted(found)


def load_tiny_lm(settings: Settings) -> CausalLM:
    """tiny-lm: a 4-layer Llama-style model from a fixed config and seed, with MiniLM's tokenizer
    and word embeddings (tied to the output layer).

    The same torch version builds the same weights in every process, so workers agree; the version
    stamp is a digest of the config, the seed and the embeddings' file.
    """
    device = choose_device(settings)
    configure_threads(settings)
    folder = minilm_path()
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.cls_token_id,
        eos_token_id=tokenizer.sep_token_id,
        **TINY_LM_CONFIG,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(TINY_LM_SEED)
        model: Any = LlamaForCausalLM(config)
    weights = folder / "model.safetensors"
    embeddings = next(t for k, t in load_file(str(weights)).items() if k.endswith("word_embeddings.weight"))
    with torch.no_grad():
        model.get_input_embeddings().weight.copy_(embeddings)
    model.to(dtype=dtype_for(device))
    recipe = json.dumps({**TINY_LM_CONFIG, "seed": TINY_LM_SEED, "torch": torch.__version__}, sort_keys=True)
    digest = hashlib.sha256(recipe.encode()).hexdigest()[:8]
    return CausalLM(
        "tiny-lm",
        model,
        tokenizer,
        device,
        f"tiny-lm@{digest}+{file_digest(weights, length=8)}",
        bos_id=tokenizer.cls_token_id,
        eos_ids=[tokenizer.sep_token_id],
    )


def load_folder(name: str, path: Path, settings: Settings) -> CausalLM:
    """A causal LM from a hub-style folder (config.json, tokenizer files, weights)."""
    if not (path / "config.json").is_file():
        raise ConfigurationError(
            f"model folder {path} has no config.json",
            hint="INFERQ_GENERATE_MODEL_DIR must be a hub-style folder (save_pretrained output)",
        )
    device = choose_device(settings)
    configure_threads(settings)
    tokenizer = AutoTokenizer.from_pretrained(str(path))
    model = AutoModelForCausalLM.from_pretrained(str(path), dtype=dtype_for(device))
    weights = sorted(path.glob("*.safetensors")) or sorted(path.glob("*.bin"))
    version = f"{name}@{file_digest(*weights)}" if weights else f"{name}@unversioned"
    bos = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.cls_token_id
    return CausalLM(name, model, tokenizer, device, version, bos_id=bos, eos_ids=_eos_ids(model, tokenizer))


def load_causal_lm(settings: Settings) -> CausalLM:
    """causal-lm: the folder named by ``INFERQ_GENERATE_MODEL_DIR``."""
    if not settings.generate_model_dir:
        raise ConfigurationError(
            "model causal-lm needs INFERQ_GENERATE_MODEL_DIR",
            hint="set it to a hub-style folder holding a causal LM (config.json, tokenizer, weights)",
        )
    return load_folder("causal-lm", Path(settings.generate_model_dir), settings)
