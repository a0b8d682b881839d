"""The run summary: headline counts, and tables of dialogues by sector, rounds, stop and reject
reasons, usage by role; built from what the run's tasks returned."""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, ConfigDict

from tasks.core.shards import ShardSummary, paid_requests
from tasks.core.ultrachat.dialogue import STOP_REASONS, DialogueRecord
from tasks.core.ultrachat.filters import Reject
from tasks.core.ultrachat.recipe import SECTORS
from tasks.core.usage import UsageRow, merge_usage, usage_table


class OpeningsSummary(BaseModel):
    """What a sector's openings task returns."""

    model_config = ConfigDict(extra="forbid")

    sector: str
    key: str
    selected: int
    candidates: int
    wanted: int
    duplicates: int
    usage: list[UsageRow]


class FilterSummary(BaseModel):
    """What the filter task returns: counts and the summary tables."""

    model_config = ConfigDict(extra="forbid")

    key: str
    dialogues: int
    kept: int
    rejected: int
    by_sector: list[dict[str, Any]]
    rounds: list[dict[str, Any]]
    stop_reasons: list[dict[str, Any]]
    reject_reasons: list[dict[str, Any]]


class ExportSummary(BaseModel):
    """What the export task returns: records written, their URLs, the views refreshed."""

    model_config = ConfigDict(extra="forbid")

    count: int
    paths: dict[str, str]
    views: list[str]


def by_sector(dialogues: list[DialogueRecord], kept: list[DialogueRecord],
              rejects: list[Reject]) -> list[dict[str, Any]]:
    made, ok, bad = (Counter(d.sector for d in xs) for xs in (dialogues, kept, rejects))
    rounds: dict[str, list[int]] = defaultdict(list)
    for d in kept:
        rounds[d.sector].append(d.rounds)
    return [{"sector": s, "dialogues": made[s], "kept": ok[s], "rejected": bad[s],
             "mean_rounds_kept": round(sum(rounds[s]) / len(rounds[s]), 2) if rounds[s] else 0.0}
            for s in SECTORS if made[s]]


def rounds_histogram(kept: list[DialogueRecord]) -> list[dict[str, Any]]:
    counts = Counter((d.sector, d.rounds) for d in kept)
    return [{"sector": s, "rounds": r, "dialogues": n}
            for (s, r), n in sorted(counts.items(), key=lambda kv: (SECTORS.index(kv[0][0]), kv[0][1]))]


def stop_reasons(dialogues: list[DialogueRecord]) -> list[dict[str, Any]]:
    counts = Counter((d.stop_reason, d.stop_role or "") for d in dialogues)
    total = len(dialogues) or 1
    order = {r: i for i, r in enumerate(STOP_REASONS)}
    return [{"stop_reason": r, "role": role, "dialogues": n, "share": round(n / total, 4)}
            for (r, role), n in sorted(counts.items(), key=lambda kv: (order.get(kv[0][0], 99), kv[0][1]))]


def usage_row(usage: UsageRow, shard_key: str, stage: str) -> dict[str, Any]:
    """An ultrachat_usage row: the usage of one role (`usage.stage`) in one shard of `stage`."""
    return {"shard_key": shard_key, "stage": stage, "role": usage.stage,
            **usage.model_dump(exclude={"stage"})}


def throughput(dialogues: int, requests: int, seconds: float) -> dict[str, float]:
    """Dialogues per minute and paid requests per second over the dialogue phase."""
    seconds = max(seconds, 1e-9)
    return {"dialogue_phase_s": round(seconds, 2),
            "dialogues_per_minute": round(dialogues * 60 / seconds, 1),
            "requests_per_s": round(requests / seconds, 1)}


def run_markdown(name: str, counts: dict[str, Any], tables: dict[str, list[dict[str, Any]]],
                 render_table: Callable[[list[dict[str, Any]]], str]) -> str:
    """The summary artifact: headline counts, then one section per table."""
    head = ", ".join(f"{k.replace('_', ' ')}: {v}" for k, v in counts.items())
    parts = [f"# UltraChat run `{name}`\n", head + "\n"]
    for title, rows in tables.items():
        parts += [f"\n## {title.replace('-', ' ')}\n", render_table(rows)]
    return "".join(parts)


def run_report(openings: list[OpeningsSummary], shards: list[ShardSummary],
               filtered: FilterSummary, exported: ExportSummary,
               dialogue_seconds: float) -> tuple[dict[str, Any], dict[str, list[dict[str, Any]]]]:
    """(counts, tables) of a run from the openings, dialogue-shard, filter and export summaries.

    Throughput counts only the shards that did work in this run (a replayed shard has no usage).
    """
    merged = merge_usage([*(u for o in openings for u in o.usage),
                          *(u for s in shards for u in s.usage)])
    usage = [{"role": row.pop("stage"), **row} for row in usage_table(merged)]
    speed = throughput(sum(s.items for s in shards if s.usage),
                       paid_requests(shards), dialogue_seconds)
    counts = {"dialogues": filtered.dialogues, "kept": filtered.kept,
              "rejected": filtered.rejected, "exported": exported.count, **speed}
    tables = {"openings": [o.model_dump(include={"sector", "wanted", "selected", "candidates",
                                                 "duplicates"}) for o in openings],
              "dialogues-by-sector": filtered.by_sector, "rounds-histogram": filtered.rounds,
              "stop-reasons": filtered.stop_reasons, "reject-reasons": filtered.reject_reasons,
              "usage-by-role": usage}
    return counts, tables


def artifact_key(name: str) -> str:
    """The summary artifact key of recipe `name` (Prefect allows lowercase, digits and dashes)."""
    return "ultrachat-" + re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
