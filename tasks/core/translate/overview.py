"""A raw record in the Japanese overview's layout (docs/translation.md#overview), for people who
want the records exactly as that document shows them.

UltraChat: `{"id", "data"}`. UltraFeedback, in this order: `source`, `id` (the prompt's id in
its source dataset), `instruction`, `models`, `completions`; each completion `model`,
`principle`, `custom_system_prompt`, `response`, `annotations`, where each aspect's annotation
is a list holding its one object (an aspect that never parsed: an empty list). The overview
predates the released set's critiques, scores and reference answers, so those are left out;
so are the kept originals (the overview shows the English record apart).
"""

from __future__ import annotations

from typing import Any

from tasks.core.translate.fields import SetKind

_COMPLETION = ("model", "principle", "custom_system_prompt", "response")
_UNTYPED = ("Rating", "Rationale")
_TYPED = ("Type", "Rationale", "Rating", "Rationale For Rating")


def overview_record(row: dict[str, Any], kind: SetKind) -> dict[str, Any]:
    """`row` (a raw record, translated or not) in the overview's layout."""
    if kind == "ultrachat":
        return {"id": row["id"], "data": row["data"]}
    if kind != "ultrafeedback":
        raise ValueError(f"the overview shows the raw sets only, not {kind!r}")
    return {"source": row["source"], "id": row.get("id"), "instruction": row["instruction"],
            "models": row["models"],
            "completions": [{**{k: c[k] for k in _COMPLETION},
                             "annotations": {aspect: [_annotation(a)] if a else []
                                             for aspect, a in (c["annotations"] or {}).items()}}
                            for c in row["completions"]]}


def _annotation(a: dict[str, Any]) -> dict[str, Any]:
    """The aspect's object in the overview's key order (typed aspects carry `Type`)."""
    keys = _TYPED if "Type" in a else _UNTYPED
    return {k: a[k] for k in keys}
