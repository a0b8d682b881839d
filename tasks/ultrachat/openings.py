"""UltraChat openings task: read a sector's inputs, generate candidates, deduplicate, select, land.

One task per sector lands one immutable ultrachat_openings shard named by a content key of
everything that determines it (recipe knobs, models, params, the input data itself), and checks for
that shard before paying for anything. Generation requests go through the gateway, whose journal
makes a rerun replay every answered request for free.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import get_run_logger, task

from tasks.adapters.errors import ConfigError, UltraforgeError
from tasks.adapters.llm.gateway import Gateway
from tasks.adapters.resources import current, run
from tasks.adapters.sources import RowError, read_records
from tasks.core.chat import ChatResult
from tasks.core.ids import content_key
from tasks.core.ultrachat import openings as op
from tasks.core.ultrachat import summary as sm
from tasks.core.ultrachat.dedup import Duplicate, dedup
from tasks.core.ultrachat.recipe import Sector, UltraChatRecipe
from tasks.core.ultrachat.tables import OPENINGS_SCHEMA, T_OPENINGS, T_USAGE, USAGE_SCHEMA
from tasks.core.usage import UsageRow, usage_of
from tasks.core.yamlconf import load_yaml_model
from tasks.shards import SHARD_TASK

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
    """The passages of the source, each with a unique id (its id field, else its row number)."""
    src = recipe.sectors.materials.passages
    fields = {"text": src.text_field} | ({"id": src.id_field} if src.id_field else {})
    where = {"dataset": src.path[3:]} if src.path.startswith("hf:") else {"path": src.path}
    out: list[op.Passage] = []
    row_of: dict[str, int] = {}  # passage id → the row that gave it
    for item in read_records(**where, split=src.split, fields=fields, limit=src.limit):
        if isinstance(item, RowError):
            raise ConfigError(f"passages {src.path} row {item.row}: {item.reason}")
        at = f"passages {src.path} row {item.row}"
        text = item.data.get("text")
        if not isinstance(text, str):
            raise ConfigError(f"{at}: field {src.text_field!r} is "
                              f"{'missing' if text is None else type(text).__name__}, "
                              "expected a string")
        if src.id_field and item.data.get("id") is None:
            raise ConfigError(f"{at}: field {src.id_field!r} is missing (set "
                              "sectors.materials.passages.id_field: null to number passages by row)")
        pid = str(item.data["id"]) if src.id_field else f"row{item.row}"
        if pid in row_of:
            raise ConfigError(f"passages {src.path}: rows {row_of[pid]} and {item.row} have the same "
                              f"{src.id_field!r} {pid!r}; passage ids must be unique")
        row_of[pid] = item.row
        out.append(op.Passage(passage_id=pid, text=text))
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
    """Content key of a sector's openings: every recipe knob, model and input that shapes them."""
    return content_key(
        "ultrachat/openings", sector, recipe.seed,
        recipe.oversample if sector == "world" else None,  # only the world sector oversamples
        recipe.sector(sector).model_dump(mode="json"), recipe.models.opening_generator,
        recipe.params.opening_generator, recipe.dedup.model_dump(),
        {k: [v.model_dump() if hasattr(v, "model_dump") else v for v in vs]
         for k, vs in inputs.items()})


def dry_run_plan(recipe: UltraChatRecipe) -> dict[str, Any]:
    """Planned counts without any paid call: inputs per sector, shards, expected requests."""
    plan = {}
    for name, cfg in recipe.enabled():
        lo, hi = cfg.rounds
        inputs = sector_inputs(recipe, name)
        plan[name] = {"dialogues": cfg.dialogues, "rounds": [lo, hi],
                      "shards": -(-cfg.dialogues // recipe.dialogue.shard_size),
                      "inputs": {k: len(v) for k, v in inputs.items()},
                      "dialogue_requests_max": cfg.dialogues * (2 * hi - 1)}
    return plan


# -- generation ----------------------------------------------------------------------------------

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
    passages, _ = dedup(passages, key=lambda p: p.passage_id, text=lambda p: p.text,
                        **_similarity(recipe))
    return op.material_openings(recipe, passages, inputs["tasks"]), []


def _similarity(recipe: UltraChatRecipe) -> dict[str, Any]:
    d = recipe.dedup
    return {"threshold": d.near_duplicate_threshold, "num_perm": d.num_perm,
            "shingle_words": d.shingle_words}


def _dup_row(opening: op.Opening, dup: Duplicate) -> dict[str, Any]:
    return opening.row() | {"status": dup.reason, "dup_of": dup.of, "similarity": dup.similarity}


async def opening_rows(gw: Gateway, recipe: UltraChatRecipe, sector: Sector,
                       inputs: dict[str, Any]) -> tuple[list[dict], list[ChatResult]]:
    """Candidate openings → dedup → seeded selection (→ expansion for writing) as table rows."""
    cands, results = await _candidates(gw, recipe, sector, inputs)
    # Material openings share their passage with the other tasks on it, so near-duplicates
    # are judged between passages (in _candidates) and openings are only checked for exact ones.
    unique, dups = dedup(sorted(cands, key=lambda o: o.opening_id), key=lambda o: o.opening_id,
                         text=lambda o: o.text, near=sector != "materials", **_similarity(recipe))
    chosen = op.select(recipe, sector, unique, recipe.sector(sector).dialogues)
    rows = {o.opening_id: o.row() | {"status": "not_selected"} for o in unique}
    rows |= {x.item.opening_id: _dup_row(x.item, x)
             for x in dups if x.item.opening_id != x.of}  # same text twice: one row
    for o in chosen:
        rows[o.opening_id]["status"] = "selected"
    if sector == "writing":
        todo = op.choose_expansions(recipe, chosen)
        res = _check(await gw.complete_all(op.expansion_requests(recipe, todo)), "expansions")
        results += res
        # (original, expansion); an expansion that failed (the original came back) or repeats
        # a candidate's exact text leaves its original selected, and so does one that repeats
        # a selected opening (its own original included: then it expanded nothing) or an
        # earlier expansion, exactly or nearly.
        pairs = [(o, e) for o, r in zip(todo, res, strict=True)
                 if (e := op.expanded_opening(o, r)).opening_id not in rows]
        fresh, repeats = dedup(pairs, key=lambda p: p[1].opening_id, text=lambda p: p[1].text,
                               against=[(o, o) for o in chosen], **_similarity(recipe))
        for o, e in fresh:
            rows[o.opening_id]["status"] = "expanded"
            rows[e.opening_id] = e.row() | {"status": "selected"}
        rows |= {x.item[1].opening_id: _dup_row(x.item[1], x)
                 for x in repeats if x.item[1].opening_id != x.of}
    return [rows[k] for k in sorted(rows)], results


@task(name="ultrachat-openings", **SHARD_TASK)
def make_openings(recipe: UltraChatRecipe, sector: Sector) -> sm.OpeningsSummary:
    """Generate, deduplicate and select one sector's openings; land them (idempotent)."""
    res = current()
    lake = res.lake
    inputs = sector_inputs(recipe, sector)
    key = openings_key(recipe, sector, inputs)
    usage: list[UsageRow] = []
    if not lake.has_shard(T_OPENINGS, key):
        rows, results = run(opening_rows(res.gateway, recipe, sector, inputs))
        usage = usage_of("opening_generator", results, res.pool.cost)
        lake.write_shard(T_USAGE, f"openings-{key}",
                         [sm.usage_row(u, key, "openings") for u in usage], USAGE_SCHEMA)
        lake.write_shard(T_OPENINGS, key, [r | {"shard_key": key} for r in rows], OPENINGS_SCHEMA)
    statuses = lake.read_shard(T_OPENINGS, key, ["status"]).column("status").to_pylist()
    selected = statuses.count("selected")
    if selected < recipe.sector(sector).dialogues:
        get_run_logger().warning(
            "%s: only %d of %d openings after dedup; raise the generation sizes or oversample",
            sector, selected, recipe.sector(sector).dialogues)
    return sm.OpeningsSummary(sector=sector, key=key, selected=selected,
                              candidates=len(statuses), wanted=recipe.sector(sector).dialogues,
                              duplicates=sum(s.endswith("duplicate") for s in statuses),
                              usage=usage)
