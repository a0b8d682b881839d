"""Content-addressed ids and the JSON conventions behind them and behind every JSONL export."""

from __future__ import annotations

import hashlib
import json
from typing import Any


def canonical_json(obj: Any) -> str:
    """Serialise `obj` so that equal values give equal text (sorted keys, no spaces)."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def to_jsonl(rows: list[dict[str, Any]]) -> bytes:
    """One JSON object a line, UTF-8, keys in the given order, trailing newline (exports)."""
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode("utf-8")


def content_key(*parts: Any) -> str:
    """sha256 hex of the canonical JSON of `parts`."""
    return hashlib.sha256(canonical_json(parts).encode("utf-8")).hexdigest()


def prompt_id(text: str) -> str:
    """sha256 hex of the prompt's UTF-8 bytes: the id HF's derived sets use
    (docs/datasets.md#ultrafeedback_binarized)."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()
