"""Export builders: the raw UltraChat shape `{"id", "data": [u1, a1, ...]}` and `messages` rows.

Rows are sorted by sector order, then opening id. A row's id is the first 16 hex digits of its
dialogue id (a content key of the opening, seed, models and limits, tasks/core/ultrachat/dialogue.py):
it names the dialogue, not its place in the list, so adding dialogues later never renumbers the
old ones, and the same recipe, seed and journal always give the same ids and the same bytes.
"""

from __future__ import annotations

from typing import Any

from tasks.core.ids import prompt_id
from tasks.core.ultrachat.dialogue import DialogueRecord
from tasks.core.ultrachat.recipe import SECTORS

EXPORT_ID_HEX = 16  # 64 bits: a collision among 1.5M dialogues has odds of about 1 in 10^7


def export_id(dialogue: DialogueRecord) -> str:
    return dialogue.dialogue_id[:EXPORT_ID_HEX]


def ordered(dialogues: list[DialogueRecord]) -> list[tuple[str, DialogueRecord]]:
    """(export id, dialogue) pairs: world, writing, materials, each by opening id."""
    rank = {s: i for i, s in enumerate(SECTORS)}
    ds = sorted(dialogues, key=lambda d: (rank.get(d.sector, len(rank)), d.opening_id))
    pairs = [(export_id(d), d) for d in ds]
    if len({i for i, _ in pairs}) != len(pairs):  # never silently merge two dialogues' ids
        seen: dict[str, str] = {}
        for i, d in pairs:
            if seen.setdefault(i, d.dialogue_id) != d.dialogue_id:
                raise ValueError(f"dialogues {seen[i]} and {d.dialogue_id} share export id {i}")
    return pairs


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
