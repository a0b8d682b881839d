"""UltraChat's dialogue shards: user-simulator ⇄ assistant turns for a slice of the openings.

Each task lands immutable lake shards (tasks/core/ultrachat/tables.py) named by a content key of
everything that determines them, checks for its shard before doing anything, and returns a small
summary. Dialogue shards run on the shard engine (tasks/shards.py): a lease on the shard key,
the run's gateway on the process's event loop, a ShardSummary back. Paid calls go through the
gateway, whose journal makes a rerun replay every finished turn for free, so a run killed at any
moment reruns to the same data. Openings: tasks/ultrachat/openings.py; filter and export:
tasks/ultrachat/export.py.
"""

from __future__ import annotations

import asyncio

from prefect import task

from tasks.adapters.errors import UltraforgeError
from tasks.adapters.lake import Lake
from tasks.adapters.llm.gateway import Gateway
from tasks.adapters.resources import Resources, current, run
from tasks.core.chat import ChatResult
from tasks.core.ids import content_key
from tasks.core.shards import ShardSummary
from tasks.core.ultrachat import openings as op
from tasks.core.ultrachat import summary as sm
from tasks.core.ultrachat.dialogue import DialogueState
from tasks.core.ultrachat.recipe import UltraChatRecipe
from tasks.core.ultrachat.tables import (
    DIALOGUES_SCHEMA,
    T_DIALOGUES,
    T_OPENINGS,
    T_TURNS,
    T_USAGE,
    USAGE_SCHEMA,
)
from tasks.core.usage import UsageRow, usage_of
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
    async with claimed(lake, key, on_takeover=res.catch_up) as waited:
        if lake.has_shard(T_DIALOGUES, key):
            stops = (await asyncio.to_thread(lake.read_shard, T_DIALOGUES, key,
                                             ["stop_reason"])).num_rows
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
        await asyncio.to_thread(_land, lake, key, states, usage)
        return ShardSummary(stage="dialogues", key=key, status="done", items=len(states),
                            rows=len(states), waited_s=waited, usage=usage)


def _land(lake: Lake, key: str, states: list[DialogueState], usage: list[UsageRow]) -> None:
    """Turns, usage, then dialogues (the dialogues shard marks the shard done)."""
    lake.write_shard(T_TURNS, key, [t.model_dump() | {"shard_key": key}
                                    for s in states for t in s.turns])
    lake.write_shard(T_USAGE, f"dialogues-{key}", [sm.usage_row(u, key, "dialogues")
                                                   for u in usage], USAGE_SCHEMA)
    lake.write_shard(T_DIALOGUES, key, [s.record() | {"shard_key": key} for s in states],
                     DIALOGUES_SCHEMA)


@task(name="ultrachat-dialogues", **SHARD_TASK)
def run_dialogue_shard(recipe: UltraChatRecipe, openings_key_: str, index: int) -> ShardSummary:
    """Grow the dialogues of one slice of a sector's selected openings, all turns concurrently
    across dialogues; land turns, usage and dialogues (in that order: dialogues mark done)."""
    return run(_dialogue_shard(current(), recipe, openings_key_, index))
