"""A model's output row, written for its result without a Python float per value.

JSON floats (the default) are the row's values as float64 written by orjson straight from numpy:
the same text pydantic writes for ``[float(x) for x in row]`` (shortest round-trip form, ``1e-7``,
``-0.0``, ``null`` for a non-finite value), about 5× faster, and the result is never parsed back
in the worker (:func:`schemas.results.result_json` splices it in). The base64 encodings are the
row's little-endian float32 or float16 bytes.
"""

from __future__ import annotations

import base64

import numpy as np
import orjson

from schemas import results
from schemas.messages import EmbeddingEncoding, EmbeddingOutput

_FLOAT_JSON = orjson.OPT_SERIALIZE_NUMPY


def float_json(row: np.ndarray) -> str:
    """``row`` as a JSON array of numbers, exactly as pydantic writes the same values as floats."""
    return orjson.dumps(np.ascontiguousarray(row, dtype=np.float64), option=_FLOAT_JSON).decode()


def embedding_output(row: np.ndarray, encoding: EmbeddingEncoding | None) -> EmbeddingOutput:
    """One input's embedding in the request's encoding (None: JSON floats)."""
    if encoding is None or encoding is EmbeddingEncoding.FLOAT:
        return results.embedding(float_json(row))
    dtype = "<f2" if encoding is EmbeddingEncoding.BASE64_F16 else "<f4"
    raw = np.ascontiguousarray(row, dtype=dtype).tobytes()
    return results.embedding(base64.b64encode(raw).decode("ascii"), encoding)
