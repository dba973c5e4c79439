"""Export the wire models as JSON Schema files: ``python -m schemas.export``.

The files under ``schemas/jsonschema`` are the contract non-Python clients code against;
``tests/unit/schemas/test_schemas.py`` fails when they drift from the models.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from pydantic import BaseModel

from schemas.messages import DeadLetter, InferenceRequest, InferenceResult, StreamChunk

EXPORTED: tuple[type[BaseModel], ...] = (InferenceRequest, InferenceResult, DeadLetter, StreamChunk)
SCHEMA_DIR = Path(__file__).resolve().parent / "jsonschema"


def render(model: type[BaseModel]) -> str:
    schema = model.model_json_schema()
    schema["$id"] = f"https://inferq.dev/schemas/v1/{model.__name__}.json"
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"


def main(argv: list[str] | None = None) -> int:
    SCHEMA_DIR.mkdir(exist_ok=True)
    for model in EXPORTED:
        path = SCHEMA_DIR / f"{model.__name__}.json"
        path.write_text(render(model), encoding="utf-8")
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
