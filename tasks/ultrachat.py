"""UltraChat tasks: openings per sector, dialogue shards, filter + land, export.

Each task lands immutable lake shards named by a content key of everything that determines them,
checks for its shard before doing anything, and returns a small summary. Paid calls go through the
gateway, whose journal makes a rerun replay every finished turn for free, so a run killed at any
moment reruns to the same data. Tables (lake, and warehouse views of the same names):

    ultrachat_openings   every candidate opening with its status (selected, duplicate, ...)
    ultrachat_turns      every reply received in a dialogue, accepted or not, with its verdict
    ultrachat_dialogues  one row per dialogue: messages, rounds, stop reason
    ultrachat_rejects    dialogues the filters rejected, with reason codes
    ultrachat_kept       dialogues that passed, with their export id
    ultrachat_usage      requests, journal replays, tokens and cost per role and model per shard
"""

from __future__ import annotations

import asyncio
import io
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from tasks.adapters.errors import ConfigError, FatalAPIError, UltraforgeError
from tasks.adapters.lake import Lake, parquet_bytes
from tasks.adapters.llm import Gateway, load_pool, open_gateway
from tasks.adapters.settings import Settings
from tasks.adapters.sources import RowError, read_records
from tasks.adapters.warehouse import Warehouse
from tasks.core.chat import ChatResult
from tasks.core.ids import content_key
from tasks.core.ultrachat import export as ex
from tasks.core.ultrachat import openings as op
from tasks.core.ultrachat import summary as sm
from tasks.core.ultrachat.dedup import dedup
from tasks.core.ultrachat.dialogue import DialogueRecord, DialogueState
from tasks.core.ultrachat.filters import apply_filters, reject_rates
from tasks.core.ultrachat.recipe import Sector, UltraChatRecipe
from tasks.core.yamlconf import load_yaml_model

T_OPENINGS, T_TURNS, T_DIALOGUES = "ultrachat_openings", "ultrachat_turns", "ultrachat_dialogues"
T_REJECTS, T_KEPT, T_USAGE = "ultrachat_rejects", "ultrachat_kept", "ultrachat_usage"
TABLES = (T_OPENINGS, T_TURNS, T_DIALOGUES, T_REJECTS, T_KEPT, T_USAGE)

_MSG = pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))
OPENINGS_SCHEMA = pa.schema([
    ("opening_id", pa.string()), ("sector", pa.string()), ("text", pa.string()),
    ("origin", pa.string()), ("status", pa.string()), ("dup_of", pa.string()),
    ("similarity", pa.float64()), ("shard_key", pa.string())])
DIALOGUES_SCHEMA = pa.schema([
    ("dialogue_id", pa.string()), ("opening_id", pa.string()), ("sector", pa.string()),
    ("target_rounds", pa.int32()), ("rounds", pa.int32()), ("stop_reason", pa.string()),
    ("stop_role", pa.string()), ("messages", _MSG), ("finish_reasons", pa.list_(pa.string())),
    ("user_turns_stripped", pa.int32()), ("user_reasks", pa.int32()),
    ("other_language_ok", pa.bool_()), ("shard_key", pa.string())])
REJECTS_SCHEMA = pa.schema([
    ("dialogue_id", pa.string()), ("sector", pa.string()), ("reason", pa.string()),
    ("reasons", pa.list_(pa.string())), ("detail", pa.string()), ("filter_key", pa.string())])
KEPT_SCHEMA = pa.schema([
    ("dialogue_id", pa.string()), ("export_id", pa.string()), ("sector", pa.string()),
    ("rounds", pa.int32()), ("filter_key", pa.string())])
USAGE_SCHEMA = pa.schema([
    ("shard_key", pa.string()), ("stage", pa.string()), ("role", pa.string()),
    ("model", pa.string()), ("requests", pa.int64()), ("from_journal", pa.int64()),
    ("failed", pa.int64()), ("prompt_tokens", pa.int64()), ("completion_tokens", pa.int64()),
    ("cost_usd", pa.float64())])
RAW_SCHEMA = pa.schema([("id", pa.string()), ("data", pa.list_(pa.string()))])
MESSAGES_SCHEMA = pa.schema([
    ("id", pa.string()), ("sector", pa.string()), ("prompt", pa.string()),
    ("prompt_id", pa.string()), ("messages", pa.list_(pa.struct([("content", pa.string()),
                                                                 ("role", pa.string())])))])


def _retryable(task, task_run, state) -> bool:
    """Prefect retries a shard after transient trouble, never after a fatal API or config error."""
    try:
        state.result()
    except (FatalAPIError, ConfigError):
        return False
    except Exception:
        return True
    return False


RETRY = {"retries": 1, "retry_delay_seconds": 10, "retry_condition_fn": _retryable,
         "cache_policy": NO_CACHE}


# -- inputs (data files written by us or given by the user) --------------------------------------

def _lines(path: str, what: str) -> list[str]:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{what} file {path}: cannot read: {exc.strerror}") from None
    items = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]
    if not items:
        raise ConfigError(f"{what} file {path}: no entries (one a line; # starts a comment)")
    return items


def _passages(recipe: UltraChatRecipe) -> list[op.Passage]:
    src = recipe.sectors.materials.passages
    fields = {"text": src.text_field} | ({"id": src.id_field} if src.id_field else {})
    where = {"dataset": src.path[3:]} if src.path.startswith("hf:") else {"path": src.path}
    out = []
    for item in read_records(**where, split=src.split, fields=fields, limit=src.limit):
        if isinstance(item, RowError):
            raise ConfigError(f"passages {src.path} row {item.row}: {item.reason}")
        text, pid = item.data.get("text"), item.data.get("id", f"row{item.row}")
        if not isinstance(text, str):
            raise ConfigError(f"passages {src.path} row {item.row}: field {src.text_field!r} is "
                              f"{'missing' if text is None else type(text).__name__}, "
                              "expected a string")
        out.append(op.Passage(passage_id=str(pid), text=text))
    return out


def sector_inputs(recipe: UltraChatRecipe, sector: Sector) -> dict[str, Any]:
    """The data a sector's openings are made from (read here so that they enter the shard key)."""
    s = recipe.sectors
    if sector == "world":
        ents = _lines(s.world.entities, "entities") if s.world.entities else []
        return {"topics": _lines(s.world.meta_topics, "meta-topics"), "entities": ents}
    if sector == "writing":
        return {"types": _lines(s.writing.writing_types, "writing types")}
    tasks = load_yaml_model(s.materials.task_templates, op.MaterialTasks).tasks
    return {"passages": _passages(recipe), "tasks": tasks}


def openings_key(recipe: UltraChatRecipe, sector: Sector, inputs: dict[str, Any]) -> str:
    return content_key(
        "ultrachat/openings", sector, recipe.seed, recipe.oversample,
        recipe.sector(sector).model_dump(mode="json"), recipe.models.opening_generator,
        recipe.params.opening_generator, recipe.dedup.model_dump(),
        {k: [v.model_dump() if hasattr(v, "model_dump") else v for v in vs]
         for k, vs in inputs.items()})


# -- openings ------------------------------------------------------------------------------------

def _check(results: list[ChatResult], what: str) -> list[ChatResult]:
    failed = [r for r in results if not r.ok]
    if failed:
        raise UltraforgeError(f"{what}: {len(failed)} of {len(results)} requests failed after "
                              f"retries (first: {failed[0].error}); nothing landed, rerun to "
                              "resume (answered requests are journaled)")
    return results


async def _candidates(gw: Gateway, recipe: UltraChatRecipe, sector: Sector,
                      inputs: dict[str, Any]) -> tuple[list[op.Opening], list[ChatResult]]:
    if sector == "world":
        cfg = recipe.sectors.world
        topics = inputs["topics"]
        r1 = _check(await gw.complete_all(op.subtopic_requests(recipe, topics)), "subtopics")
        pairs = op.choose_subtopics(recipe, topics,
                                    [op.list_items(r, cfg.subtopics_per_topic) for r in r1])
        r2 = _check(await gw.complete_all(op.question_requests(recipe, pairs)), "questions")
        found = op.world_openings(pairs, r2, cfg.questions_per_subtopic)
        ents = op.choose_entities(recipe, inputs["entities"])
        r3 = _check(await gw.complete_all(op.entity_requests(recipe, ents)), "entity questions")
        found += op.world_openings([(e, "") for e in ents], r3, cfg.questions_per_entity,
                                   entity=True)
        return found, r1 + r2 + r3
    if sector == "writing":
        types = inputs["types"]
        res = _check(await gw.complete_all(op.instruction_requests(recipe, types)), "instructions")
        return op.writing_openings(types, res, recipe.sectors.writing.instructions_per_type), res
    passages = op.clean_passages(recipe.sectors.materials, inputs["passages"])
    d = recipe.dedup
    passages, _ = dedup(passages, key=lambda p: p.passage_id, text=lambda p: p.text,
                        threshold=d.near_duplicate_threshold, num_perm=d.num_perm,
                        shingle_words=d.shingle_words)
    return op.material_openings(recipe, passages, inputs["tasks"]), []


async def _openings(settings: Settings, recipe: UltraChatRecipe, sector: Sector,
                    inputs: dict[str, Any]) -> tuple[list[dict], list[ChatResult]]:
    """Candidate openings → dedup → seeded selection (→ expansion for writing) as table rows."""
    d = recipe.dedup
    async with open_gateway(settings) as gw:
        cands, results = await _candidates(gw, recipe, sector, inputs)
        # Material openings share their passage with the other tasks on it, so near-duplicates
        # are judged between passages (in _candidates) and openings are only checked for exact ones.
        unique, dups = dedup(sorted(cands, key=lambda o: o.opening_id), key=lambda o: o.opening_id,
                             text=lambda o: o.text, threshold=d.near_duplicate_threshold,
                             num_perm=d.num_perm, shingle_words=d.shingle_words,
                             near=sector != "materials")
        chosen = op.select(recipe, sector, unique, recipe.sector(sector).dialogues)
        rows = {o.opening_id: o.row() | {"status": "not_selected"} for o in unique}
        rows |= {x.item.opening_id: x.item.row() | {"status": x.reason, "dup_of": x.of,
                                                     "similarity": x.similarity}
                 for x in dups if x.item.opening_id != x.of}  # same text twice: one row
        for o in chosen:
            rows[o.opening_id]["status"] = "selected"
        if sector == "writing":
            todo = op.choose_expansions(recipe, chosen)
            res = _check(await gw.complete_all(op.expansion_requests(recipe, todo)), "expansions")
            results += res
            for o, r in zip(todo, res, strict=True):
                new = op.expanded_opening(o, r)
                if new.opening_id in rows:  # empty/refused expansion, or it repeats another opening
                    continue
                rows[o.opening_id]["status"] = "expanded"
                rows[new.opening_id] = new.row() | {"status": "selected"}
    return [rows[k] for k in sorted(rows)], results


def _cost(pool):
    return lambda model, p, c: pool.models[model].price.cost(p, c)


@task(name="ultrachat-openings", **RETRY)
def make_openings(recipe: UltraChatRecipe, sector: Sector) -> dict[str, Any]:
    """Generate, deduplicate and select one sector's openings; land them (idempotent)."""
    settings = Settings()
    lake = Lake.from_settings(settings)
    inputs = sector_inputs(recipe, sector)
    key = openings_key(recipe, sector, inputs)
    usage: list[dict] = []
    if not lake.has_shard(T_OPENINGS, key):
        rows, results = asyncio.run(_openings(settings, recipe, sector, inputs))
        usage = sm.usage_of("opening_generator", results, _cost(load_pool(settings)))
        lake.write_shard(T_USAGE, f"openings-{key}",
                         [u | {"shard_key": key, "stage": "openings"} for u in usage], USAGE_SCHEMA)
        lake.write_shard(T_OPENINGS, key, [r | {"shard_key": key} for r in rows], OPENINGS_SCHEMA)
    statuses = _read_shard(lake, T_OPENINGS, key, ["status"]).column("status").to_pylist()
    selected = statuses.count("selected")
    if selected < recipe.sector(sector).dialogues:
        get_run_logger().warning(
            "%s: only %d of %d openings after dedup; raise the generation sizes or oversample",
            sector, selected, recipe.sector(sector).dialogues)
    return {"sector": sector, "key": key, "selected": selected, "candidates": len(statuses),
            "wanted": recipe.sector(sector).dialogues,
            "duplicates": sum(s.endswith("duplicate") for s in statuses), "usage": usage}


# -- dialogues -----------------------------------------------------------------------------------

def dialogue_shard_key(recipe: UltraChatRecipe, openings_key_: str, index: int) -> str:
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


async def _dialogues(settings: Settings, states: list[DialogueState]) -> dict[str, list[ChatResult]]:
    sink: dict[str, list[ChatResult]] = {"assistant": [], "user_simulator": []}
    async with open_gateway(settings) as gw:
        await asyncio.gather(*(_drive(gw, s, sink) for s in states))
    return sink


@task(name="ultrachat-dialogues", **RETRY)
def run_dialogue_shard(recipe: UltraChatRecipe, openings_key_: str, index: int) -> dict[str, Any]:
    """Grow the dialogues of one slice of a sector's selected openings, all turns concurrently
    across dialogues; land turns, usage and dialogues (in that order: dialogues mark done)."""
    settings = Settings()
    lake = Lake.from_settings(settings)
    key = dialogue_shard_key(recipe, openings_key_, index)
    usage: list[dict] = []
    if not lake.has_shard(T_DIALOGUES, key):
        table = _read_shard(lake, T_OPENINGS, openings_key_)
        selected = sorted((op.Opening.from_row(r) for r in table.to_pylist()
                           if r["status"] == "selected"), key=lambda o: o.opening_id)
        size = recipe.dialogue.shard_size
        states = [DialogueState(recipe, o) for o in selected[index * size:(index + 1) * size]]
        sink = asyncio.run(_dialogues(settings, states))
        failed = [s for s in states if s.stop_reason == "request_failed"]
        if failed:
            raise UltraforgeError(
                f"dialogue shard {key[:12]}: {len(failed)} dialogues hit a request that failed "
                f"after retries (first: {failed[0].error}); nothing landed, rerun to resume")
        cost = _cost(load_pool(settings))
        usage = [u for role, results in sink.items() for u in sm.usage_of(role, results, cost)]
        lake.write_shard(T_TURNS, key, [t.model_dump() | {"shard_key": key}
                                        for s in states for t in s.turns])
        lake.write_shard(T_USAGE, f"dialogues-{key}",
                         [u | {"shard_key": key, "stage": "dialogues"} for u in usage], USAGE_SCHEMA)
        lake.write_shard(T_DIALOGUES, key, [s.record() | {"shard_key": key} for s in states],
                         DIALOGUES_SCHEMA)
    stops = _read_shard(lake, T_DIALOGUES, key, ["stop_reason"]).column("stop_reason").to_pylist()
    return {"key": key, "dialogues": len(stops), "usage": usage,
            "requests": sum(u["requests"] for u in usage)}


# -- filter, land, export ------------------------------------------------------------------------

def _read_shard(lake: Lake, table: str, key: str, columns: list[str] | None = None) -> pa.Table:
    return pq.read_table(io.BytesIO(lake.read_bytes(f"{table}/{key}.parquet")), columns=columns)


def _dialogue_records(lake: Lake, keys: list[str]) -> list[DialogueRecord]:
    return [DialogueRecord.model_validate(r) for k in sorted(keys)
            for r in _read_shard(lake, T_DIALOGUES, k).to_pylist()]


@task(name="ultrachat-filter", **RETRY)
def filter_dialogues(recipe: UltraChatRecipe, dialogue_keys: list[str]) -> dict[str, Any]:
    """Apply the filters to every dialogue of the run; land rejects (with reasons) and the kept
    list with export ids. Returns the summary tables."""
    lake = Lake.from_settings(Settings())
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


@task(name="ultrachat-export", **RETRY)
def export_dialogues(recipe: UltraChatRecipe, filter_key: str,
                     dialogue_keys: list[str]) -> dict[str, Any]:
    """Write the raw export (JSONL + Parquet) and the messages rows; refresh warehouse views."""
    settings = Settings()
    lake = Lake.from_settings(settings)
    ids = set(_read_shard(lake, T_KEPT, filter_key, ["dialogue_id"]).column(0).to_pylist())
    kept = [d for d in _dialogue_records(lake, dialogue_keys) if d.dialogue_id in ids]
    raw, msgs = ex.raw_rows(kept), ex.messages_rows(kept)
    base = f"{recipe.export.prefix}/{recipe.name}"
    paths = {
        "raw_jsonl": lake.write_bytes(f"{base}/ultrachat.jsonl", ex.jsonl(raw)),
        "raw_parquet": lake.write_bytes(f"{base}/ultrachat.parquet", parquet_bytes(raw, RAW_SCHEMA)),
        "messages_jsonl": lake.write_bytes(f"{base}/messages.jsonl", ex.jsonl(msgs)),
        "messages_parquet": lake.write_bytes(f"{base}/messages.parquet",
                                             parquet_bytes(msgs, MESSAGES_SCHEMA)),
    }
    with Warehouse.from_settings(settings) as wh:
        views = wh.refresh_views(TABLES)
    return {"count": len(raw), "paths": paths, "views": views}


def dry_run_plan(recipe: UltraChatRecipe) -> dict[str, Any]:
    """Planned counts without any paid call: openings per sector, shards, expected requests."""
    plan = {}
    for name, cfg in recipe.enabled():
        lo, hi = cfg.rounds
        inputs = sector_inputs(recipe, name)
        plan[name] = {"dialogues": cfg.dialogues, "rounds": [lo, hi],
                      "shards": -(-cfg.dialogues // recipe.dialogue.shard_size),
                      "inputs": {k: len(v) for k, v in inputs.items()},
                      "dialogue_requests_max": cfg.dialogues * (2 * hi - 1)}
    return plan
