"""Which fields of each set are translated, and the same record with them translated
(docs/translation.md#fields, after docs/datasets.md#japanese-versions).

Translated: raw UltraChat `data[*]`; raw UltraFeedback `instruction` and each completion's
`response` and `custom_system_prompt` (with `feedback`, also every annotation's `Rationale` and
`Rationale For Rating` and the `critique`); the SFT set's `prompt` and `messages[*].content`;
the DPO set's `prompt` and the `content` of `chosen`, `rejected` and `messages`. Everything else
(`id`, `prompt_id`, `source`, `model`, `principle`, every `Rating`, `Type`, score, role) is
copied as it is. Each top-level column holding a translated field is also kept in the source
language as `<column>_<source_lang>` (`messages_en`), right after it, as the Dutch ultrachat
sets do (`messages_nl`).

A path is a tuple of keys and list indices, such as `("completions", 2, "response")`; a pattern
has `"*"` for every index of a list.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any, Literal

import pyarrow as pa
from pydantic import BaseModel, ConfigDict

SetKind = Literal["ultrachat", "ultrafeedback", "sft", "dpo"]
Path = tuple[str | int, ...]
ASPECT_TEXTS = ("Rationale", "Rationale For Rating")

_PATTERNS: dict[SetKind, tuple[tuple[str, ...], ...]] = {
    "ultrachat": (("data", "*"),),
    "ultrafeedback": (("instruction",), ("completions", "*", "response"),
                      ("completions", "*", "custom_system_prompt")),
    "sft": (("prompt",), ("messages", "*", "content")),
    "dpo": (("prompt",), ("chosen", "*", "content"), ("rejected", "*", "content"),
            ("messages", "*", "content")),
}
_FEEDBACK = (("completions", "*", "critique"),
             *(("completions", "*", "annotations", "**", t) for t in ASPECT_TEXTS))


class Slot(BaseModel):
    """One text of one record: where it is and what it says."""

    model_config = ConfigDict(frozen=True)

    path: Path
    text: str


def patterns(kind: SetKind, feedback: bool = False) -> tuple[tuple[str, ...], ...]:
    """The translated fields of `kind` (`feedback`: UltraFeedback's rationales and critiques too)."""
    return _PATTERNS[kind] + (_FEEDBACK if feedback and kind == "ultrafeedback" else ())


def slots(row: dict[str, Any], kind: SetKind, feedback: bool = False) -> list[Slot]:
    """The record's texts to translate, in field order; null and empty fields have none."""
    found = [s for p in patterns(kind, feedback) for s in _walk(row, p, ())]
    return [s for s in found if s.text]


def _walk(value: Any, pattern: tuple[str, ...], at: Path) -> Iterator[Slot]:
    if not pattern:
        if isinstance(value, str):
            yield Slot(path=at, text=value)
        return
    head, rest = pattern[0], pattern[1:]
    if value is None:
        return
    if head == "*":  # every item of a list
        for i, item in enumerate(value):
            yield from _walk(item, rest, (*at, i))
    elif head == "**":  # every value of a struct (each annotation aspect)
        for key, item in value.items():
            yield from _walk(item, rest, (*at, key))
    elif head in value:
        yield from _walk(value[head], rest, (*at, head))


def translated(row: dict[str, Any], kind: SetKind, texts: dict[Path, str],
               source_lang: str) -> dict[str, Any]:
    """`row` with the text at each path of `texts` replaced, and each column holding translated
    fields of `kind` kept as `<column>_<source_lang>` right after it."""
    out = copy.deepcopy(row)
    for path, text in texts.items():
        target = out
        for step in path[:-1]:
            target = target[step]
        target[path[-1]] = text
    tops = _text_columns(kind)
    ordered: dict[str, Any] = {}
    for column, value in out.items():
        ordered[column] = value
        if column in tops:
            ordered[f"{column}_{source_lang}"] = row[column]
    return ordered


def translated_schema(schema: pa.Schema, kind: SetKind, source_lang: str) -> pa.Schema:
    """The schema of translated records: each column a pattern starts in, then its original."""
    tops = _text_columns(kind)
    fields = []
    for field in schema:
        fields.append(field)
        if field.name in tops:
            fields.append(field.with_name(f"{field.name}_{source_lang}"))
    return pa.schema(fields, metadata=schema.metadata)


def _text_columns(kind: SetKind) -> set[str]:
    """Columns any translated field of `kind` is in: they get an original beside them."""
    return {p[0] for p in patterns(kind, feedback=True)}
