"""UltraFeedback @tasks: each does one side effect and is idempotent by content key.

| task              | side effect                                   | idempotent because                    |
|-------------------|-----------------------------------------------|---------------------------------------|
| load_prompts      | lands `uf_prompts` + `uf_quarantine` shards   | shard key = hash of the rows          |
| land_plan         | lands the `uf_plan` shard                     | shard key = hash of the completion ids|
| done_ids          | (reads the lake: which ids already landed)    | read-only                             |
| read_responses    | (reads the lake: successful responses)        | read-only                             |
| generate_shard    | paid completion calls (journaled by gateway)  | journal: a paid call is never re-sent |
| annotate_shard    | paid judge calls, re-asks on parse failure    | journal; re-asks are distinct calls   |
| critique_shard    | paid critique calls, re-asks                  | journal                               |
| land_shard        | lands one table shard + its usage shard       | shard key = hash of the shard's ids   |
| export            | writes JSONL + Parquet exports to the lake    | deterministic bytes, overwritten      |
| refresh_warehouse | (re)creates the DuckDB views over the lake    | CREATE OR REPLACE                     |

Shards are lists of a few hundred requests, sent concurrently on asyncio through the gateway
(never a task per request). A shard is formed only from work the lake does not have yet, so a
rerun lands nothing twice; rows that failed for good carry `error` and are retried on the next
run. Tables, schemas and how readers deduplicate: tasks/core/ultrafeedback/tables.py.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from pathlib import Path
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from tasks.adapters.errors import FatalAPIError
from tasks.adapters.lake import Lake, parquet_bytes
from tasks.adapters.llm import open_gateway
from tasks.adapters.settings import Settings
from tasks.adapters.sources import RowError, read_records
from tasks.adapters.warehouse import Warehouse
from tasks.core.chat import ChatResult
from tasks.core.ids import canonical_json, content_key
from tasks.core.ultrafeedback.export import (
    build_record,
    rating_histogram,
    score_histogram,
    sort_key,
    to_arrow,
    to_jsonl,
)
from tasks.core.ultrafeedback.intake import PromptRecord, Quarantined, dedupe, to_prompt
from tasks.core.ultrafeedback.judge import (
    AnnotationJob,
    CritiqueJob,
    map_back,
    parse_annotation_reply,
    pick_attempt,
)
from tasks.core.ultrafeedback.parse import parse_critique
from tasks.core.ultrafeedback.plan import PlanItem
from tasks.core.ultrafeedback.recipe import UltraFeedbackRecipe
from tasks.core.ultrafeedback.tables import SCHEMAS, TABLES, latest_rows


def _lake() -> Lake:
    return Lake.from_settings(Settings())


def _retry_unless_fatal(task, task_run, state) -> bool:
    """Prefect retries a shard once for transient trouble, never for a fatal API error."""
    try:
        state.result()
    except FatalAPIError:
        return False
    except Exception:
        return True
    return False


def shard_key(stage: str, ids: list[str]) -> str:
    """`<stage>-<hash of the ids>`: the lake key of a shard holding exactly these ids."""
    return f"{stage}-{content_key(sorted(ids))[:40]}"


# ---- intake -------------------------------------------------------------------------------------

def read_prompts(recipe: UltraFeedbackRecipe, base_dir: Path
                 ) -> tuple[list[PromptRecord], list[Quarantined], dict[str, int]]:
    """Read every source (no side effects): unique prompts, quarantined rows, counts."""
    records: list[PromptRecord] = []
    quarantined: list[Quarantined] = []
    rows_read = 0
    for src in recipe.sources:
        path = None
        if src.path is not None:
            path = Path(src.path) if Path(src.path).is_absolute() else base_dir / src.path
        for item in read_records(path=path, dataset=src.dataset, config=src.config,
                                 split=src.split, format=src.format, fields=src.fields,
                                 limit=src.limit):
            rows_read += 1
            if isinstance(item, RowError):
                quarantined.append(Quarantined(origin=src.name, row=item.row, field="<row>",
                                               reason=item.reason, raw=item.raw))
                continue
            result = to_prompt(src.name, item.row, item.data, source=src.source,
                               max_chars=recipe.max_instruction_chars)
            (records if isinstance(result, PromptRecord) else quarantined).append(result)
    unique, duplicates = dedupe(records)
    counts = {"rows_read": rows_read, "prompts": len(unique), "duplicates": duplicates,
              "quarantined": len(quarantined)}
    return unique, quarantined, counts


@task(name="uf-load-prompts", cache_policy=NO_CACHE)
def load_prompts(recipe: UltraFeedbackRecipe, base_dir: str) -> dict[str, Any]:
    """Read the sources; land prompts and quarantined rows. Returns prompts and counts."""
    prompts, quarantined, counts = read_prompts(recipe, Path(base_dir))
    lake = _lake()
    rows = [p.model_dump() for p in prompts]
    lake.write_shard("uf_prompts", "prompts-" + content_key(rows)[:40], rows,
                     SCHEMAS["uf_prompts"])
    if quarantined:
        qrows = [q.model_dump() for q in quarantined]
        lake.write_shard("uf_quarantine", "quarantine-" + content_key(qrows)[:40], qrows,
                         SCHEMAS["uf_quarantine"])
    return {"prompts": prompts, "quarantined": [q.model_dump() for q in quarantined],
            "counts": counts}


@task(name="uf-land-plan", cache_policy=NO_CACHE)
def land_plan(items: list[PlanItem]) -> str:
    """Land the plan (one row per completion to make)."""
    return _lake().write_shard("uf_plan", shard_key("plan", [it.completion_id for it in items]),
                               [it.lake_row() for it in items], SCHEMAS["uf_plan"])


@task(name="uf-done-ids", cache_policy=NO_CACHE)
def done_ids(table: str, id_column: str) -> set[str]:
    """Ids of `table` whose work is done: every row part (completion, for annotations) has a
    successful row. Rows that failed for good are retried by the next run; an unparseable judge
    reply kept as null after its re-asks counts as done (re-asking again would pay again)."""
    failed = "call_failed" if table in ("uf_annotations", "uf_critiques") else "error"
    part = ["completion_id"] if table == "uf_annotations" else []
    t = _lake().read_table(table, columns=[id_column, *part, failed])
    parts: dict[str, dict[str, bool]] = {}
    for row in t.to_pylist():
        ok = not row[failed]
        slot = parts.setdefault(row[id_column], {})
        sub = row["completion_id"] if part else ""
        slot[sub] = slot.get(sub, False) or ok
    return {i for i, subs in parts.items() if all(subs.values())}


@task(name="uf-read-responses", cache_policy=NO_CACHE)
def read_responses(completion_ids: list[str]) -> dict[str, str]:
    """completion_id → response text for the given ids that succeeded (deduplicated)."""
    wanted = set(completion_ids)
    t = _lake().read_table("uf_completions", columns=["completion_id", "response", "error"])
    out: dict[str, str] = {}
    for cid, text, err in sorted(zip(*(t.column(c).to_pylist() for c in t.column_names),
                                     strict=True), key=lambda r: (r[0], r[1] or "")):
        if cid in wanted and err is None and text is not None and cid not in out:
            out[cid] = text
    return out


# ---- paid calls ---------------------------------------------------------------------------------

def _usage_rows(stage: str, usage: list[dict]) -> list[dict]:
    return [{"stage": stage, **u} for u in usage]


@task(name="uf-generate-shard", cache_policy=NO_CACHE, retries=1, retry_delay_seconds=5,
      retry_condition_fn=_retry_unless_fatal)
async def generate_shard(items: list[PlanItem]) -> dict[str, Any]:
    """Completions for one shard of plan items: rows for `uf_completions`, plus usage."""
    async with open_gateway(Settings()) as gw:
        results = await gw.complete_all([it.request() for it in items])
        usage = gw.usage()
    rows = [{
        "completion_id": it.completion_id, "prompt_id": it.prompt_id, "model": it.model,
        "api_model": r.api_model, "endpoint": r.endpoint, "request_key": r.key,
        "response": r.text, "finish_reason": r.finish_reason,
        "prompt_tokens": r.usage.prompt_tokens, "completion_tokens": r.usage.completion_tokens,
        "latency_s": r.latency_s, "attempts": r.attempts, "error": r.error,
    } for it, r in zip(items, results, strict=True)]
    return {"rows": rows, "usage": _usage_rows("generation", usage),
            "stats": {"requests": len(rows), "failed": sum(r["error"] is not None for r in rows)}}


async def _ask(gw, job: AnnotationJob | CritiqueJob, parse, max_reasks: int
               ) -> tuple[list[ChatResult], list[Any], str | None]:
    """First ask plus up to `max_reasks` re-asks until a reply parses completely."""
    results, parses = [], []
    for attempt in range(max_reasks + 1):
        result = await gw.complete(job.request(attempt))
        if not result.ok:
            return results, parses, result.error
        parsed = parse(result.text)
        results.append(result)
        parses.append(parsed)
        if getattr(parsed, "complete", getattr(parsed, "ok", False)):
            break
    return results, parses, None


def _reply_stats(all_parses: list[list[Any]]) -> dict[str, int]:
    replies = sum(len(p) for p in all_parses)
    bad = sum(not getattr(x, "complete", getattr(x, "ok", False)) for p in all_parses for x in p)
    return {"replies": replies, "unparsed_replies": bad}


@task(name="uf-annotate-shard", cache_policy=NO_CACHE, retries=1, retry_delay_seconds=5,
      retry_condition_fn=_retry_unless_fatal)
async def annotate_shard(jobs: list[AnnotationJob], max_reasks: int) -> dict[str, Any]:
    """Rating calls for one shard of (prompt, aspect) jobs: rows for `uf_annotations`."""
    async with open_gateway(Settings()) as gw:
        outcomes = await asyncio.gather(*(
            _ask(gw, job, lambda text, job=job: parse_annotation_reply(job, text), max_reasks)
            for job in jobs))
        usage = gw.usage()
    rows = []
    for job, (results, parses, call_error) in zip(jobs, outcomes, strict=True):
        if not parses:
            for i, cid in enumerate(job.completion_ids):
                rows.append(_annotation_row(job, cid, job.order.index(i) + 1, None,
                                            f"call failed: {call_error}", True, None, 0, 0))
            continue
        best = pick_attempt(parses)
        failures = sum(not p.complete for p in parses)
        for cid, shown, ann, err in map_back(job, parses[best]):
            err = err or (parses[best].reply_error if ann is not None else None)
            rows.append(_annotation_row(job, cid, shown, ann, err, call_error is not None and
                                        ann is None, results[best].text, len(results), failures))
    return {"rows": rows, "usage": _usage_rows("annotation", usage),
            "stats": _reply_stats([o[1] for o in outcomes])}


def _annotation_row(job: AnnotationJob, cid: str, shown: int, ann: dict | None, error: str | None,
                    call_failed: bool, raw: str | None, calls: int, failures: int) -> dict:
    return {"annotation_id": job.annotation_id, "prompt_id": job.prompt_id, "aspect": job.aspect,
            "completion_id": cid, "text_number": shown,
            "annotation": None if ann is None else canonical_json(ann),
            "rating": None if ann is None else ann["Rating"], "error": error,
            "call_failed": call_failed, "raw": raw, "calls": calls, "parse_failures": failures,
            "judge_model": job.judge_model}


@task(name="uf-critique-shard", cache_policy=NO_CACHE, retries=1, retry_delay_seconds=5,
      retry_condition_fn=_retry_unless_fatal)
async def critique_shard(jobs: list[CritiqueJob], max_reasks: int) -> dict[str, Any]:
    """Teacher-feedback calls for one shard of completions: rows for `uf_critiques`."""
    async with open_gateway(Settings()) as gw:
        outcomes = await asyncio.gather(*(_ask(gw, job, parse_critique, max_reasks)
                                          for job in jobs))
        usage = gw.usage()
    rows = []
    for job, (results, parses, call_error) in zip(jobs, outcomes, strict=True):
        best = pick_attempt(parses) if parses else None
        p = parses[best] if best is not None else None
        rows.append({
            "critique_id": job.critique_id, "completion_id": job.completion_id,
            "prompt_id": job.prompt_id, "critique": p.feedback if p and p.ok else None,
            "overall_score": p.score if p and p.ok else None,
            "error": (p.error if p else f"call failed: {call_error}"),
            "call_failed": p is None or (not p.ok and call_error is not None),
            "raw": results[best].text if p else None, "calls": len(results),
            "parse_failures": sum(not x.ok for x in parses), "judge_model": job.judge_model,
        })
    return {"rows": rows, "usage": _usage_rows("critique", usage),
            "stats": _reply_stats([o[1] for o in outcomes])}


@task(name="uf-land-shard", cache_policy=NO_CACHE)
def land_shard(table: str, key: str, output: dict[str, Any]) -> dict[str, Any]:
    """Land one shard's usage rows, then its rows (the rows' shard marks the work done)."""
    lake = _lake()
    if output["usage"]:
        lake.write_shard("uf_usage", key, [{"shard": key, **u} for u in output["usage"]],
                         SCHEMAS["uf_usage"])
    lake.write_shard(table, key, output["rows"], SCHEMAS[table])
    return {"key": key, "rows": len(output["rows"]), "usage": output["usage"],
            "stats": output["stats"]}


# ---- export -------------------------------------------------------------------------------------

@task(name="uf-export", cache_policy=NO_CACHE)
def export(recipe: UltraFeedbackRecipe, prompts: list[PromptRecord], plan: list[PlanItem],
           annotation_ids: list[str], critique_ids: list[str]) -> dict[str, Any]:
    """Write the raw export (JSONL + Parquet) for this recipe's plan; return paths and counts."""
    lake = _lake()
    aspects = recipe.annotation.aspects
    comps = latest_rows(lake.read_table("uf_completions", schema=SCHEMAS["uf_completions"]),
                      ("completion_id",), "error")
    responses = {k[0]: r["response"] for k, r in comps.items()
                 if r["error"] is None and r["response"] is not None}
    wanted_ann = set(annotation_ids)
    ann_rows = latest_rows(lake.read_table("uf_annotations", schema=SCHEMAS["uf_annotations"]),
                         ("annotation_id", "completion_id"), "call_failed")
    annotations = {(r["completion_id"], r["aspect"]): json.loads(r["annotation"])
                   if r["annotation"] else None
                   for (aid, _), r in ann_rows.items() if aid in wanted_ann}
    wanted_crit = set(critique_ids)
    crit_rows = latest_rows(lake.read_table("uf_critiques", schema=SCHEMAS["uf_critiques"]),
                          ("critique_id",), "call_failed")
    critiques = {r["completion_id"]: (r["critique"], r["overall_score"])
                 for (cid,), r in crit_rows.items() if cid in wanted_crit}
    by_prompt: dict[str, list[PlanItem]] = {}
    for it in plan:
        by_prompt.setdefault(it.prompt_id, []).append(it)
    records = [rec for p in prompts if (rec := build_record(
        p, by_prompt.get(p.prompt_id, []), responses, annotations, critiques, aspects))]
    records.sort(key=sort_key)
    base = f"exports/ultrafeedback/{recipe.export.name}"
    jsonl = lake.write_bytes(f"{base}.jsonl", to_jsonl(records))
    parquet = lake.write_bytes(f"{base}.parquet", parquet_bytes(to_arrow(records, aspects)))
    n_completions = sum(len(r["completions"]) for r in records)
    ratings = [c["annotations"][a] for r in records for c in r["completions"] for a in aspects]
    return {
        "jsonl": jsonl, "parquet": parquet,
        "counts": {"exported_prompts": len(records), "exported_completions": n_completions,
                   "aspect_ratings": len(ratings),
                   "aspect_ratings_parsed": sum(a is not None for a in ratings),
                   "critiques_parsed": sum(c["overall_score"] is not None
                                           for r in records for c in r["completions"])},
        "rating_histogram": rating_histogram(records, aspects),
        "score_histogram": score_histogram(records),
        "principles": [{"principle": k, "completions": v} for k, v in sorted(Counter(
            c["principle"] for r in records for c in r["completions"]).items())],
    }


@task(name="uf-refresh-warehouse", cache_policy=NO_CACHE)
def refresh_warehouse() -> str:
    """(Re)create the warehouse views over the UltraFeedback lake tables; return the file path."""
    settings = Settings()
    with Warehouse.from_settings(settings) as wh:
        wh.refresh_views(TABLES)
    return str(settings.warehouse)
