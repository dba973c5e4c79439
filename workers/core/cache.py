"""The result cache's keys and values, and the engine's lookup of one batch (the decoder's is in
:meth:`workers.core.decoder.Decoder._from_cache`).

A key is per input (so a list of texts shares entries with each text sent alone) and digests
everything that decides that input's output: the model version the worker serves, the task, the
parameters that change the output, and the input itself. The input is the token ids the model
runs on (what the tokenizer made of the text, truncation included), so two workers with another
``INFERQ_MODEL_MAX_LENGTH_TOKENS`` never share a wrong entry. Parameters that do not change the
output (priority, deadline, request id, reply topic, ...) are left out, so they share entries.

- ``embed``: the encoding (JSON floats or a base64 form). The value is the output's wire text,
  so a hit costs no float formatting: keying on the encoding stores a vector once per encoding
  asked for, which is cheaper than re-encoding every hit.
- ``classify``: ``top_k``.
- ``generate``: only deterministic requests are cached: greedy (``temperature`` 0: the seed and
  ``top_p`` play no part), or sampled with a fixed ``seed`` (every sampling parameter, and each
  input's own seed, seed + index as the sampler takes it, in the key); others get no key. The
  decoder adds each input's token budget after the operator's caps (``limits``).

Entries are scoped per tenant (``t:<tenant>``): a cache shared across tenants lets one tenant
time whether another sent a text. ``INFERQ_CACHE_SHARED`` puts them all under ``shared``.
Identical inputs in one batch (the same key) are computed once and the output fanned out.
"""

from __future__ import annotations

import hashlib
import logging
from array import array
from collections.abc import Sequence
from dataclasses import dataclass, field

from pydantic import TypeAdapter

from schemas import results
from schemas.messages import (
    EmbeddingEncoding,
    EmbeddingOutput,
    InferenceRequest,
    Output,
    PackedFloats,
    Task,
)
from schemas.naming import cache_key
from schemas.settings import Settings
from workers.core.jobs import Piece
from workers.store.cache import ResultCache

log = logging.getLogger(__name__)

_OUTPUT: TypeAdapter[Output] = TypeAdapter(Output)
_PACKED, _BASE64, _JSON = b"p", b"b", b"j"  # the first byte of a value: how the rest is written
SHARED_SCOPE = "shared"


def output_params(request: InferenceRequest) -> str | None:
    """The request's parameters that change an input's output, as text; None when its outputs are
    not deterministic (sampled generation without a seed) and must not be cached."""
    if request.task is Task.EMBED:
        encoding = request.encoding or EmbeddingEncoding.FLOAT
        return f"encoding={encoding.value}"
    if request.task is Task.CLASSIFY:
        return f"top_k={request.top_k}"
    params = request.generation_params()
    chat = "chat" if request.messages is not None else "text"
    if params.temperature == 0:  # greedy: the sampler's seed and nucleus play no part
        return f"{chat}:greedy:" + params.model_dump_json(include={"max_new_tokens", "stop"})
    if params.seed is None:
        return None
    # each input's own seed (seed + its index, as the sampler takes it) is in its key: see keys()
    return f"{chat}:" + params.model_dump_json(exclude={"stream_to_kafka", "seed"})


def scope(request: InferenceRequest, shared: bool) -> str:
    """Whose entries a request reads and writes: its tenant's, or everyone's when shared."""
    return SHARED_SCOPE if shared else f"t:{request.tenant or ''}"


class CacheKeys:
    """Builds the keys of one model's inputs (its version is fixed for the runner's life)."""

    def __init__(self, settings: Settings, version: str) -> None:
        self.settings = settings
        self.version = version
        self.shared = settings.cache_shared

    def keys(
        self,
        request: InferenceRequest,
        inputs: Sequence[Sequence[int] | str],
        limits: Sequence[str] | None = None,
    ) -> list[str | None]:
        """One key per input of ``request`` (token ids, or the text where there are none); None for
        each when the request's outputs are not deterministic. ``limits``: per input, what else
        bounds its output (a generation's token budget after the operator's caps)."""
        params = output_params(request)
        if params is None:
            return [None] * len(inputs)
        where = scope(request, self.shared)
        seed = request.generation.seed if request.generation and request.generation.temperature else None
        out: list[str | None] = []
        for i, one in enumerate(inputs):
            own = f"{params};seed={(seed + i) % 2**63}" if seed is not None else params
            limit = limits[i] if limits else ""
            head = f"{self.version}\0{request.task.value}\0{own}\0{limit}\0".encode()
            out.append(cache_key(self.settings, where, _digest(head, one)))
        return out


def _digest(head: bytes, model_input: Sequence[int] | str) -> str:
    h = hashlib.sha256(head)
    if isinstance(model_input, str):
        h.update(b"text\0" + model_input.encode("utf-8", "surrogatepass"))
    else:
        h.update(b"ids\0" + array("q", model_input).tobytes())
    return h.hexdigest()


def encode_output(output: Output) -> bytes:
    """An output as the cache keeps it: packed JSON floats and base64 embeddings as their text
    (a hit rebuilds the output without touching a float), anything else as its JSON."""
    if isinstance(output, EmbeddingOutput) and isinstance(output.embedding, str):
        if isinstance(output.embedding, PackedFloats) and output.encoding is None:
            return _PACKED + output.embedding.encode()
        if output.encoding is not None:
            return _BASE64 + output.encoding.value.encode() + b"\0" + output.embedding.encode()
    return _JSON + _OUTPUT.dump_json(output)


def decode_output(raw: bytes) -> Output | None:
    """The output a cached value holds; None when it cannot be read (then it is computed again)."""
    try:
        kind, rest = raw[:1], raw[1:]
        if kind == _PACKED:
            return results.embedding(rest.decode())
        if kind == _BASE64:
            encoding, _, text = rest.partition(b"\0")
            return results.embedding(text.decode(), EmbeddingEncoding(encoding.decode()))
        if kind == _JSON:
            return _OUTPUT.validate_json(rest)
    except Exception:  # whatever is in the instance, a value that does not read is a miss
        log.warning("a cached value could not be read; computing the input again", exc_info=True)
    return None


@dataclass
class Lookup:
    """What the cache holds for one batch: outputs of the hits, and the misses to compute, one piece
    per distinct key (``twins``: the other pieces that will share that piece's output)."""

    hits: list[tuple[Piece, Output]] = field(default_factory=list)
    compute: list[Piece] = field(default_factory=list)
    twins: dict[Piece, list[Piece]] = field(default_factory=dict)
    misses: int = 0  # pieces with a key not found (twins included)
    failed: bool = False  # the cache did not answer: everything is computed


def cached_outputs(cache: ResultCache | None, pieces: Sequence[Piece]) -> dict[str, Output]:
    """The outputs the cache holds for the pieces' keys (one MGET); empty when it did not answer."""
    keys = list(dict.fromkeys(p.key for p in pieces if p.key is not None))
    values = cache.get_many(keys) if cache is not None and keys else None
    found: dict[str, Output] = {}
    for key, raw in zip(keys, values or [], strict=False):
        output = decode_output(raw) if raw is not None else None
        if output is not None:
            found[key] = output
    return found


def look_up(cache: ResultCache | None, pieces: Sequence[Piece]) -> Lookup:
    """One MGET for the pieces that have a key; identical keys among the misses computed once."""
    out = Lookup()
    keyed = [p for p in pieces if p.key is not None]
    distinct_keys = list(dict.fromkeys(p.key for p in keyed if p.key is not None))
    values = cache.get_many(distinct_keys) if cache is not None and distinct_keys else None
    out.failed = cache is not None and bool(distinct_keys) and values is None
    found: dict[str, Output] = {}
    for key, raw in zip(distinct_keys, values or [], strict=False):
        output = decode_output(raw) if raw is not None else None
        if output is not None:
            found[key] = output
    first: dict[str, Piece] = {}
    for p in pieces:
        if p.key is None:
            out.compute.append(p)
        elif p.key in found:
            out.hits.append((p, found[p.key]))
        elif p.key in first:
            out.misses += 1
            out.twins[first[p.key]].append(p)
        else:
            out.misses += 1
            first[p.key] = p
            out.twins[p] = []
            out.compute.append(p)
    return out
