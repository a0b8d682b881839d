"""Usage accounting rows: requests paid, journal replays, failures, tokens and cost per model."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

COUNTS = ("requests", "from_journal", "failed", "prompt_tokens", "completion_tokens")


def merge_usage(rows: Iterable[dict[str, Any]], by: tuple[str, ...]) -> list[dict[str, Any]]:
    """Sum usage rows grouped by the `by` fields (e.g. ("stage", "model")), sorted by them."""
    acc: dict[tuple, dict[str, Any]] = {}
    for r in rows:
        key = tuple(r[f] for f in by)
        a = acc.setdefault(key, {**{f: r[f] for f in by}, **dict.fromkeys(COUNTS, 0), "cost_usd": 0.0})
        for f in COUNTS:
            a[f] += int(r.get(f) or 0)
        a["cost_usd"] += float(r.get("cost_usd") or 0.0)
    return [{**acc[k], "cost_usd": round(acc[k]["cost_usd"], 6)} for k in sorted(acc)]
