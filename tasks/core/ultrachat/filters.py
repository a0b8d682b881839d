"""Post-generation filters. Each reject carries a reason code; rejection is data, not an error.

Reason codes, checked in this order (a reject row keeps the first as `reason`, all in `reasons`):

    no_complete_round   the first assistant reply failed: only the opening is left (checked
                        alone, since every other check is meaningless without a round)
    bad_alternation     turns do not alternate user/assistant starting with the user
    empty_turn          a kept turn is empty
    truncated_turn      a kept turn was cut by max_tokens (finish_reason "length")
    failed_tail         stopped by a failed assistant turn while filters.drop_failed_tail is off
    role_leakage        a role label or role-play meta text is visible in a turn
    language_mismatch   a turn is clearly not in the expected language
    too_few_rounds      fewer rounds than the minimum (default: the sector range's minimum)
    too_many_rounds     more rounds than the sector range allows
    duplicate_dialogue  the same conversation (normalised) as an earlier kept dialogue
"""

from __future__ import annotations

from collections import Counter

from pydantic import BaseModel, ConfigDict

from tasks.core.ids import content_key
from tasks.core.ultrachat.dialogue import FAILED_TAIL, DialogueRecord
from tasks.core.ultrachat.language import language_mismatch
from tasks.core.ultrachat.recipe import UltraChatRecipe
from tasks.core.ultrachat.text import normalize
from tasks.core.ultrachat.turns import has_role_leakage

REJECT_REASONS = ("no_complete_round", "bad_alternation", "empty_turn", "truncated_turn",
                  "failed_tail", "role_leakage", "language_mismatch", "too_few_rounds",
                  "too_many_rounds", "duplicate_dialogue")


class Reject(BaseModel):
    model_config = ConfigDict(frozen=True)

    dialogue_id: str
    sector: str
    reason: str
    reasons: list[str]
    detail: str


def check(d: DialogueRecord, recipe: UltraChatRecipe) -> list[tuple[str, str]]:
    """(reason, detail) for every filter `d` fails, in REJECT_REASONS order; [] if it passes."""
    if d.rounds == 0:
        return [("no_complete_round", f"first assistant reply failed: {d.stop_reason}")]
    found: list[tuple[str, str]] = []
    msgs = d.messages
    expected = ["user" if i % 2 == 0 else "assistant" for i in range(len(msgs))]
    roles = [m.get("role") for m in msgs]
    if roles != expected or len(msgs) % 2:
        found.append(("bad_alternation", f"roles {roles}"))
    empty = [i for i, m in enumerate(msgs) if not (m.get("content") or "").strip()]
    if empty:
        found.append(("empty_turn", f"turns {empty}"))
    cut = [i for i, f in enumerate(d.finish_reasons) if f == "length"]
    if cut:
        found.append(("truncated_turn", f"turns {cut}"))
    if not recipe.filters.drop_failed_tail and d.stop_role == "assistant" \
            and d.stop_reason in FAILED_TAIL:
        found.append(("failed_tail", f"stopped on {d.stop_reason}"))
    leaked = [i for i, m in enumerate(msgs)
              if has_role_leakage(m.get("content") or "", m.get("role") or "user")]
    if leaked:
        found.append(("role_leakage", f"turns {leaked}"))
    lang = recipe.filters.language
    if lang:
        foreign = [i for i, m in enumerate(msgs)
                   if not (d.other_language_ok and m.get("role") == "assistant")
                   and language_mismatch(m.get("content") or "", lang)]
        if foreign:
            found.append(("language_mismatch", f"turns {foreign} not {lang}"))
    minimum = recipe.min_rounds(d.sector)  # type: ignore[arg-type]
    hi = recipe.sector(d.sector).rounds[1]  # type: ignore[arg-type]
    if d.rounds < minimum:
        found.append(("too_few_rounds", f"{d.rounds} < {minimum} (stopped: {d.stop_reason})"))
    if d.rounds > hi:
        found.append(("too_many_rounds", f"{d.rounds} > {hi}"))
    return found


def conversation_key(d: DialogueRecord) -> str:
    """Equal for dialogues that say the same things once case, punctuation and spacing are ignored."""
    return content_key([(m.get("role"), normalize(m.get("content") or "")) for m in d.messages])


def apply_filters(dialogues: list[DialogueRecord], recipe: UltraChatRecipe
                  ) -> tuple[list[DialogueRecord], list[Reject]]:
    """Split into kept and rejected. Duplicates are judged in dialogue-id order, so the same
    input always keeps the same copy."""
    kept: list[DialogueRecord] = []
    rejects: list[Reject] = []
    seen: dict[str, str] = {}
    for d in sorted(dialogues, key=lambda d: d.dialogue_id):
        found = check(d, recipe)
        if not found:
            key = conversation_key(d)
            if key in seen:
                found = [("duplicate_dialogue", f"same as {seen[key]}")]
            else:
                seen[key] = d.dialogue_id
        if found:
            rejects.append(Reject(dialogue_id=d.dialogue_id, sector=d.sector, reason=found[0][0],
                                  reasons=[r for r, _ in found], detail=found[0][1]))
        else:
            kept.append(d)
    return kept, rejects


def reject_rates(rejects: list[Reject], total: int) -> list[dict]:
    """Per reason: dialogues rejected with it as the first reason, and the share of all dialogues."""
    counts = Counter(r.reason for r in rejects)
    return [{"reason": reason, "rejected": counts[reason],
             "rate": round(counts[reason] / total, 4) if total else 0.0}
            for reason in REJECT_REASONS if counts[reason]]
