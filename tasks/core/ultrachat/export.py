"""Export builders: the raw UltraChat shape `{"id": "<n>", "data": [u1, a1, ...]}` and `messages` rows.

Ids are ordinals after a deterministic sort (sector order, then opening id), so the same recipe,
seed and journal always give the same ids and the same bytes.
"""

from __future__ import annotations

from typing import Any

from tasks.core.ids import prompt_id
from tasks.core.ultrachat.dialogue import DialogueRecord
from tasks.core.ultrachat.recipe import SECTORS


def ordered(dialogues: list[DialogueRecord]) -> list[tuple[str, DialogueRecord]]:
    """(export id, dialogue) pairs: world, writing, materials, each by opening id; ids 0..n-1."""
    rank = {s: i for i, s in enumerate(SECTORS)}
    ds = sorted(dialogues, key=lambda d: (rank.get(d.sector, len(rank)), d.opening_id))
    return [(str(i), d) for i, d in enumerate(ds)]


def raw_rows(dialogues: list[DialogueRecord]) -> list[dict[str, Any]]:
    """UltraChat lines: id and the flat list of alternating turn texts, user first."""
    return [{"id": i, "data": [m["content"] for m in d.messages]} for i, d in ordered(dialogues)]


def messages_rows(dialogues: list[DialogueRecord]) -> list[dict[str, Any]]:
    """ultrachat_200k-style rows (prompt, prompt_id = sha256 of the prompt, messages), plus the
    export id and sector so derived sets can trace a row back."""
    rows = []
    for i, d in ordered(dialogues):
        prompt = d.messages[0]["content"]
        rows.append({"id": i, "sector": d.sector, "prompt": prompt, "prompt_id": prompt_id(prompt),
                     "messages": [{"content": m["content"], "role": m["role"]} for m in d.messages]})
    return rows
