"""Which fields of each set are translated, and the same record with them translated
(docs/translation.md#fields, after docs/datasets.md#japanese-versions).

Translated: raw UltraChat `data[*]`; raw UltraFeedback `instruction` and each completion's
`response` and `custom_system_prompt` (with `feedback`, also every annotation's `Rationale` and
`Rationale For Rating` and the `critique`); the SFT set's `prompt` and `messages[*].content`;
the DPO set's `prompt` and the `content` of `chosen`, `rejected` and `messages`. Everything else
(`id`, `prompt_id`, `source`, `model`, `principle`, every `Rating`, `Type`, score, role) is
copied as it is. The originals stay beside the translations (`Originals`):
- `columns`: each top-level column holding a translated field is kept in the source language
  as `<column>_<source_lang>` (`messages_en`) right after it, as the Dutch ultrachat sets do
  (`messages_nl`);
- `inline`: each translated text field inside a struct gets its original as a sibling
  `<field>_<source_lang>` right after it (`messages[*].content_en`, `completions[*].response_en`,
  as `ReBatch/ultrachat_200k_nl` keeps `original` beside each `content`); a top-level text and a
  list of strings (UltraChat's `data`) have no struct to sit in and keep a column;
- `none`: no originals.

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
Originals = Literal["columns", "inline", "none"]
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
    return [Slot(path=at, text=v) for p in patterns(kind, feedback)
            for at, v in _walk(row, p, ()) if isinstance(v, str) and v]


def _walk(value: Any, pattern: tuple[str, ...], at: Path) -> Iterator[tuple[Path, Any]]:
    """(path, value) of every field the pattern reaches, null ones included."""
    if not pattern:
        yield at, value
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


def translated(row: dict[str, Any], kind: SetKind, texts: dict[Path, str], source_lang: str,
               originals: Originals = "columns", feedback: bool = False) -> dict[str, Any]:
    """`row` with the text at each path of `texts` replaced, and the originals of `kind`'s text
    fields kept as `originals` says (module docstring)."""
    out = copy.deepcopy(row)
    for path, text in texts.items():
        _parent(out, path)[path[-1]] = text
    if originals == "none":
        return out
    suffix = f"_{source_lang}"
    if originals == "inline":
        for pattern in _inline(kind, feedback):
            for path, value in _walk(row, pattern, ()):
                parent = _parent(out, path)
                parent.update(_after(parent, str(path[-1]), str(path[-1]) + suffix, value))
    ordered: dict[str, Any] = {}
    for column, value in out.items():
        ordered[column] = value
        if column in _columns(kind, originals, feedback):
            ordered[column + suffix] = row[column]
    return ordered


def translated_schema(schema: pa.Schema, kind: SetKind, source_lang: str,
                      originals: Originals = "columns", feedback: bool = False) -> pa.Schema:
    """The schema of `translated` records: the same fields, and the originals' fields where
    `originals` puts them."""
    suffix = f"_{source_lang}"
    fields = []
    for field in schema:
        if originals == "inline":
            for pattern in _inline(kind, feedback):
                if pattern[0] == field.name:
                    field = field.with_type(_with_original(field.type, pattern[1:], suffix))
        fields.append(field)
        if field.name in _columns(kind, originals, feedback):
            fields.append(schema.field(field.name).with_name(field.name + suffix))
    names = [f.name for f in fields]
    if clash := sorted({n for n in names if names.count(n) > 1}):
        raise ValueError(f"the input has a column {clash[0]!r} already, where the original of "
                         f"{clash[0].removesuffix(suffix)!r} would go: is it translated already? "
                         "(set source_lang to another suffix, or originals: none)")
    return pa.schema(fields, metadata=schema.metadata)


def _parent(row: dict[str, Any], path: Path) -> Any:
    for step in path[:-1]:
        row = row[step]
    return row


def _after(struct: dict[str, Any], key: str, new: str, value: Any) -> dict[str, Any]:
    """`struct`'s items with `new: value` right after `key` (dicts keep insertion order)."""
    items = list(struct.items())
    struct.clear()
    for k, v in items:
        struct[k] = v
        if k == key:
            struct[new] = value
    return struct


def _inline(kind: SetKind, feedback: bool) -> list[tuple[str, ...]]:
    """Patterns whose field sits in a struct: under `inline`, the original goes beside it."""
    return [p for p in patterns(kind, feedback) if len(p) > 1 and p[-1] not in ("*", "**")]


def _columns(kind: SetKind, originals: Originals, feedback: bool) -> set[str]:
    """Columns that get a `<column>_<lang>` original beside them."""
    if originals == "none":
        return set()
    if originals == "columns":  # every column any field is translated in, whatever `feedback`
        return {p[0] for p in patterns(kind, feedback=True)}
    return {p[0] for p in patterns(kind, feedback) if len(p) == 1 or p[-1] == "*"}


def _with_original(t: pa.DataType, pattern: tuple[str, ...], suffix: str) -> pa.DataType:
    """Type `t` with a `<leaf><suffix>` field after the leaf that `pattern` reaches."""
    head, rest = pattern[0], pattern[1:]
    if head == "*":
        return pa.list_(_with_original(t.value_type, rest, suffix))
    fields = []
    for f in t:
        if head == "**" or f.name == head:
            if rest:
                fields.append(f.with_type(_with_original(f.type, rest, suffix)))
            else:
                fields += [f, f.with_name(f.name + suffix)]
        else:
            fields.append(f)
    return pa.struct(fields)
