"""UltraChat tasks: dialogue shards, filter + land, export; and what every UltraChat task shares.

Each task lands immutable lake shards (tasks/core/ultrachat/tables.py) named by a content key of
everything that determines them, checks for its shard before doing anything, and returns a small
summary. Dialogue shards run on the shard engine (tasks/shards.py): a lease on the shard key,
the run's gateway on the process's event loop, a ShardSummary back. Paid calls go through the
gateway, whose journal makes a rerun replay every finished turn for free, so a run killed at any
moment reruns to the same data. The openings task is in tasks/ultrachat_openings.py.
"""

from __future__ import annotations

import asyncio
from typing import Any

from prefect import task

from tasks.adapters.errors import UltraforgeError
from tasks.adapters.lake import Lake, parquet_bytes
from tasks.adapters.llm import Gateway
from tasks.adapters.resources import Resources, current, run
from tasks.core.chat import ChatResult
from tasks.core.ids import content_key, to_jsonl
from tasks.core.shards import ShardSummary
from tasks.core.ultrachat import export as ex
from tasks.core.ultrachat import openings as op
from tasks.core.ultrachat import summary as sm
from tasks.core.ultrachat.dialogue import DialogueRecord, DialogueState
from tasks.core.ultrachat.filters import apply_filters, reject_rates
from tasks.core.ultrachat.recipe import UltraChatRecipe
from tasks.core.ultrachat.tables import (
    DIALOGUES_SCHEMA,
    KEPT_SCHEMA,
    MESSAGES_SCHEMA,
    RAW_SCHEMA,
    REJECTS_SCHEMA,
    T_DIALOGUES,
    T_KEPT,
    T_OPENINGS,
    T_REJECTS,
    T_TURNS,
    T_USAGE,
    TABLES,
    USAGE_SCHEMA,
)
from tasks.core.usage import usage_of
from tasks.shards import SHARD_TASK, claimed

# -- dialogues -----------------------------------------------------------------------------------

def dialogue_shard_key(recipe: UltraChatRecipe, openings_key_: str, index: int) -> str:
    """Content key of slice `index` of an openings shard under this recipe's dialogue settings."""
    return content_key("ultrachat/dialogues", openings_key_, index, recipe.dialogue.shard_size,
                       recipe.seed, recipe.models.model_dump(), recipe.params.model_dump(),
                       recipe.dialogue.model_dump(exclude={"shard_concurrency"}),
                       {n: s.rounds for n, s in recipe.enabled()})


async def _drive(gw: Gateway, state: DialogueState, sink: dict[str, list[ChatResult]]) -> None:
    """One dialogue, turn after turn (the concurrency is across dialogues)."""
    while (request := state.next_request()) is not None:
        role = "user_simulator" if state.pending_role == "user" else "assistant"
        result = await gw.complete(request)
        sink[role].append(result)
        state.receive(result)


async def grow_dialogues(gw: Gateway, states: list[DialogueState]) -> dict[str, list[ChatResult]]:
    """Grow every dialogue turn by turn, concurrently across dialogues; the results per role.

    The first error (a FatalAPIError: quota spent, request refused) cancels every other dialogue
    at once, so no further turn is paid for. It is raised as itself, not wrapped in an exception
    group, so that the retry condition and the CLI recognise it.
    """
    sink: dict[str, list[ChatResult]] = {"assistant": [], "user_simulator": []}
    try:
        async with asyncio.TaskGroup() as group:
            for s in states:
                group.create_task(_drive(gw, s, sink))
    except BaseExceptionGroup as errors:
        raise errors.exceptions[0] from None
    return sink


async def _dialogue_shard(res: Resources, recipe: UltraChatRecipe, openings_key_: str,
                          index: int) -> ShardSummary:
    lake = res.lake
    key = dialogue_shard_key(recipe, openings_key_, index)
    async with claimed(lake, key) as waited:
        if lake.has_shard(T_DIALOGUES, key):
            stops = lake.read_shard(T_DIALOGUES, key, ["stop_reason"]).num_rows
            return ShardSummary(stage="dialogues", key=key, status="skipped", items=stops,
                                waited_s=waited)
        table = await asyncio.to_thread(lake.read_shard, T_OPENINGS, openings_key_)
        selected = sorted((op.Opening.from_row(r) for r in table.to_pylist()
                           if r["status"] == "selected"), key=lambda o: o.opening_id)
        size = recipe.dialogue.shard_size
        states = [DialogueState(recipe, o) for o in selected[index * size:(index + 1) * size]]
        sink = await grow_dialogues(res.gateway, states)
        failed = [s for s in states if s.stop_reason == "request_failed"]
        if failed:
            raise UltraforgeError(
                f"dialogue shard {key[:12]}: {len(failed)} dialogues hit a request that failed "
                f"after retries (first: {failed[0].error}); nothing landed, rerun to resume")
        usage = [u for role, results in sink.items()
                 for u in usage_of(role, results, res.pool.cost)]
        lake.write_shard(T_TURNS, key, [t.model_dump() | {"shard_key": key}
                                        for s in states for t in s.turns])
        lake.write_shard(T_USAGE, f"dialogues-{key}", [sm.usage_row(u, key, "dialogues")
                                                       for u in usage], USAGE_SCHEMA)
        lake.write_shard(T_DIALOGUES, key, [s.record() | {"shard_key": key} for s in states],
                         DIALOGUES_SCHEMA)
        return ShardSummary(stage="dialogues", key=key, status="done", items=len(states),
                            rows=len(states), waited_s=waited, usage=usage)


@task(name="ultrachat-dialogues", **SHARD_TASK)
def run_dialogue_shard(recipe: UltraChatRecipe, openings_key_: str, index: int) -> ShardSummary:
    """Grow the dialogues of one slice of a sector's selected openings, all turns concurrently
    across dialogues; land turns, usage and dialogues (in that order: dialogues mark done)."""
    return run(_dialogue_shard(current(), recipe, openings_key_, index))


# -- filter, land, export ------------------------------------------------------------------------

def _dialogue_records(lake: Lake, keys: list[str]) -> list[DialogueRecord]:
    return [DialogueRecord.model_validate(r) for k in sorted(keys)
            for r in lake.read_shard(T_DIALOGUES, k).to_pylist()]


@task(name="ultrachat-filter", **SHARD_TASK)
def filter_dialogues(recipe: UltraChatRecipe, dialogue_keys: list[str]) -> dict[str, Any]:
    """Apply the filters to every dialogue of the run; land rejects (with reasons) and the kept
    list with export ids. Returns the summary tables."""
    lake = current().lake
    key = content_key("ultrachat/filter", sorted(dialogue_keys), recipe.filters.model_dump(),
                      {n: s.rounds for n, s in recipe.enabled()})
    dialogues = _dialogue_records(lake, dialogue_keys)
    kept, rejects = apply_filters(dialogues, recipe)
    if not lake.has_shard(T_KEPT, key):
        lake.write_shard(T_REJECTS, key, [r.model_dump() | {"filter_key": key} for r in rejects],
                         REJECTS_SCHEMA)
        lake.write_shard(T_KEPT, key, [{"dialogue_id": d.dialogue_id, "export_id": i,
                                        "sector": d.sector, "rounds": d.rounds, "filter_key": key}
                                       for i, d in ex.ordered(kept)], KEPT_SCHEMA)
    return {"key": key, "dialogues": len(dialogues), "kept": len(kept), "rejected": len(rejects),
            "by_sector": sm.by_sector(dialogues, kept, rejects),
            "rounds": sm.rounds_histogram(kept), "stop_reasons": sm.stop_reasons(dialogues),
            "reject_reasons": reject_rates(rejects, len(dialogues))}


@task(name="ultrachat-export", **SHARD_TASK)
def export_dialogues(recipe: UltraChatRecipe, filter_key: str,
                     dialogue_keys: list[str]) -> dict[str, Any]:
    """Write the raw export (JSONL + Parquet) and the messages rows; refresh warehouse views."""
    res = current()
    lake = res.lake
    ids = set(lake.read_shard(T_KEPT, filter_key, ["dialogue_id"]).column(0).to_pylist())
    kept = [d for d in _dialogue_records(lake, dialogue_keys) if d.dialogue_id in ids]
    raw, msgs = ex.raw_rows(kept), ex.messages_rows(kept)
    base = f"{recipe.export.prefix}/{recipe.name}"
    paths = {
        "raw_jsonl": lake.write_bytes(f"{base}/ultrachat.jsonl", to_jsonl(raw)),
        "raw_parquet": lake.write_bytes(f"{base}/ultrachat.parquet", parquet_bytes(raw, RAW_SCHEMA)),
        "messages_jsonl": lake.write_bytes(f"{base}/messages.jsonl", to_jsonl(msgs)),
        "messages_parquet": lake.write_bytes(f"{base}/messages.parquet",
                                             parquet_bytes(msgs, MESSAGES_SCHEMA)),
    }
    with res.warehouse() as wh:
        views = wh.refresh_views(TABLES)
    return {"count": len(raw), "paths": paths, "views": views}
