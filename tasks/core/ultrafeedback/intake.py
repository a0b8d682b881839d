"""Prompt intake: mapped source rows → PromptRecord, or a Quarantined row naming field and reason.

`prompt_id = sha256(instruction UTF-8)` (docs/datasets.md#schema,
docs/datasets.md#ultrafeedback_binarized), over the instruction exactly as read (no stripping), so
ids match the HF-derived sets. Duplicates keep their first occurrence (sources in recipe order,
rows in file order) and are counted, not quarantined. Strings arrive as valid Unicode (the sources
adapter turns rows with lone surrogates into row errors).

`correct_answers` / `incorrect_answers` equal to `"None"` or `["None"]` are empty: that is
openbmb's placeholder for "no reference answers" (docs/datasets.md#schema), and taken literally it
would tell the truthfulness judge that the correct answer is the word None.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from pydantic import BaseModel, ConfigDict

from tasks.core.ids import prompt_id

RAW_PREVIEW_CHARS = 500


class PromptRecord(BaseModel):
    """One prompt ready for planning."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    prompt_id: str
    source: str
    id: str | None = None  # the prompt's id in its source dataset, when the recipe maps one
    instruction: str
    correct_answers: list[str] = []
    incorrect_answers: list[str] = []
    origin: str
    row: int


class Quarantined(BaseModel):
    """A source row that could not become a prompt: where it came from and why."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    origin: str
    row: int
    field: str
    reason: str
    raw: str


def _preview(value: Any) -> str:
    """ASCII-safe JSON of the mapped row: any text survives a UTF-8 writer."""
    return json.dumps(value, sort_keys=True, ensure_ascii=True, default=repr)[:RAW_PREVIEW_CHARS]


def _type_name(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _answers(value: Any, field: str) -> list[str] | str:
    """A list of strings, or an error message."""
    if value is None or value == "None":
        return []
    if isinstance(value, str):
        return [value] if value.strip() else []
    if isinstance(value, list | tuple) and all(isinstance(v, str) for v in value):
        answers = [v for v in value if v.strip()]
        return [] if answers == ["None"] else answers
    return f"{field}: expected a list of strings, got {_type_name(value)}"


def to_prompt(origin: str, row: int, data: dict[str, Any], *, source: str | None,
              max_chars: int) -> PromptRecord | Quarantined:
    """Validate one mapped row (`data` keys: instruction, source, correct/incorrect_answers, id)."""

    def bad(field: str, reason: str) -> Quarantined:
        return Quarantined(origin=origin, row=row, field=field, reason=reason, raw=_preview(data))

    if "instruction" not in data:
        return bad("instruction", "missing")
    text = data["instruction"]
    if not isinstance(text, str):
        return bad("instruction", f"expected a string, got {_type_name(text)}")
    if not text.strip():
        return bad("instruction", "empty")
    if len(text) > max_chars:
        return bad("instruction", f"{len(text)} characters, over the limit of {max_chars}")
    label = source if source is not None else data.get("source")
    if not isinstance(label, str) or not label.strip():
        return bad("source", "no source label: set `source:` on the recipe source or map "
                   f"fields.source to a string column (got {_type_name(label)})")
    source_id = data.get("id")
    if source_id is not None and (isinstance(source_id, bool)
                                  or not isinstance(source_id, str | int)):
        return bad("id", f"expected a string or integer, got {_type_name(source_id)}")
    answers = {}
    for field in ("correct_answers", "incorrect_answers"):
        parsed = _answers(data.get(field), field)
        if isinstance(parsed, str):
            return bad(field, parsed.split(": ", 1)[1])
        answers[field] = parsed
    return PromptRecord(prompt_id=prompt_id(text), source=label.strip(), instruction=text,
                        id=None if source_id is None else str(source_id), origin=origin, row=row,
                        **answers)


def dedupe(records: Iterable[PromptRecord]) -> tuple[list[PromptRecord], int]:
    """First occurrence of each prompt_id, in input order, and the number of duplicates dropped."""
    seen: set[str] = set()
    out: list[PromptRecord] = []
    dropped = 0
    for rec in records:
        if rec.prompt_id in seen:
            dropped += 1
            continue
        seen.add(rec.prompt_id)
        out.append(rec)
    return out, dropped
