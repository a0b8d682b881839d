"""UltraFeedback @tasks that land and export lake data; the paid calls are in ultrafeedback_calls.py.

| task              | side effect                                  | idempotent because                  |
|-------------------|----------------------------------------------|-------------------------------------|
| load_prompts      | lands new `uf_prompts` + `uf_quarantine` rows| only rows whose key has not landed  |
| land_plan         | lands new `uf_plan` rows                     | only rows whose key has not landed  |
| land_shard        | lands one shard's rows, failures and usage   | shard key = hash of its rows        |
| export            | writes JSONL + Parquet exports to the lake   | deterministic bytes, overwritten    |
| refresh_warehouse | (re)creates the DuckDB views over the lake   | CREATE OR REPLACE                   |

Plain functions read without side effects: `read_prompts` (the sources), `landed_ids` and
`read_responses` (the lake). A shard is formed only from jobs whose id has not landed, and its
rows land only when final (tasks/core/ultrafeedback/outcomes.py), so each result table holds one
row per id; a job that failed for good lands in `uf_failures` and is submitted again next run.
Shard keys hash the rows they hold, so the retry of a failed job lands under a new key.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from tasks.adapters.errors import ConfigError
from tasks.adapters.lake import Lake, parquet_bytes
from tasks.adapters.settings import Settings
from tasks.adapters.sources import RowError, read_records
from tasks.adapters.warehouse import Warehouse
from tasks.core.ids import content_key, to_jsonl
from tasks.core.ultrafeedback.export import join_records, summarize, to_arrow
from tasks.core.ultrafeedback.intake import PromptRecord, Quarantined, dedupe, to_prompt
from tasks.core.ultrafeedback.plan import PlanItem
from tasks.core.ultrafeedback.recipe import PromptSource, UltraFeedbackRecipe
from tasks.core.ultrafeedback.tables import LAND_ONCE_KEYS, SCHEMAS, TABLES


def _lake() -> Lake:
    return Lake.from_settings(Settings())


# ---- reads --------------------------------------------------------------------------------------

def read_prompts(recipe: UltraFeedbackRecipe, base_dir: Path
                 ) -> tuple[list[PromptRecord], list[Quarantined], dict[str, int]]:
    """Read every source (no side effects): unique prompts, quarantined rows, counts.

    A source that yields no prompt at all is a ConfigError naming it: a wrong path, field
    mapping or `--set`, not bad data to quarantine.
    """
    records: list[PromptRecord] = []
    quarantined: list[Quarantined] = []
    rows_read = 0
    for src in recipe.sources:
        path = None
        if src.path is not None:
            path = Path(src.path) if Path(src.path).is_absolute() else base_dir / src.path
        found: list[PromptRecord] = []
        bad: list[Quarantined] = []
        for item in read_records(path=path, dataset=src.dataset, config=src.config,
                                 split=src.split, format=src.format, fields=src.fields,
                                 limit=src.limit):
            rows_read += 1
            if isinstance(item, RowError):
                bad.append(Quarantined(origin=src.name, row=item.row, field=item.field,
                                       reason=item.reason, raw=item.raw))
                continue
            result = to_prompt(src.name, item.row, item.data, source=src.source,
                               max_chars=recipe.max_instruction_chars)
            (found if isinstance(result, PromptRecord) else bad).append(result)
        if not found:
            raise ConfigError(_no_prompts(src, bad))
        records += found
        quarantined += bad
    unique, duplicates = dedupe(records)
    counts = {"rows_read": rows_read, "prompts": len(unique), "duplicates": duplicates,
              "quarantined": len(quarantined)}
    return unique, quarantined, counts


def _no_prompts(src: PromptSource, bad: list[Quarantined]) -> str:
    where = src.path or src.dataset
    if not bad:
        return f"source {src.name!r} ({where}) has no rows"
    first = bad[0]
    return (f"source {src.name!r} ({where}) yielded no prompts: all {len(bad)} rows were "
            f"quarantined, e.g. row {first.row} {first.field}: {first.reason} (check its "
            f"`fields` mapping: {src.fields})")


def landed_ids(table: str, id_column: str) -> set[str]:
    """Ids in a result table: work that is done (failed jobs are in `uf_failures` instead)."""
    return set(_lake().read_table(table, columns=[id_column]).column(id_column).to_pylist())


def read_responses(completion_ids: list[str]) -> dict[str, str]:
    """completion_id → response text for the given ids that have landed."""
    wanted = set(completion_ids)
    rows = _lake().read_table("uf_completions", columns=["completion_id", "response"])
    return {r["completion_id"]: r["response"] for r in rows.to_pylist()
            if r["completion_id"] in wanted and r["response"] is not None}


# ---- landing ------------------------------------------------------------------------------------

def _land_new(lake: Lake, table: str, prefix: str, rows: list[dict[str, Any]]) -> int:
    """Land the rows whose key (LAND_ONCE_KEYS) is not in `table` yet; return how many."""
    keys = LAND_ONCE_KEYS[table]
    have = lake.read_table(table, columns=list(keys)).to_pylist()
    seen = {tuple(r[k] for k in keys) for r in have}
    new = []
    for row in rows:
        key = tuple(row[k] for k in keys)
        if key not in seen:
            seen.add(key)
            new.append(row)
    if new:
        lake.write_shard(table, f"{prefix}-{content_key(new)[:40]}", new, SCHEMAS[table])
    return len(new)


@task(name="uf-load-prompts", cache_policy=NO_CACHE)
def load_prompts(recipe: UltraFeedbackRecipe, base_dir: str) -> dict[str, Any]:
    """Read the sources; land new prompts and quarantined rows. Returns prompts and counts."""
    prompts, quarantined, counts = read_prompts(recipe, Path(base_dir))
    lake = _lake()
    qrows = [q.model_dump() for q in quarantined]
    _land_new(lake, "uf_quarantine", "quarantine", qrows)
    _land_new(lake, "uf_prompts", "prompts", [p.model_dump() for p in prompts])
    return {"prompts": prompts, "quarantined": qrows, "counts": counts}


@task(name="uf-land-plan", cache_policy=NO_CACHE)
def land_plan(items: list[PlanItem]) -> int:
    """Land the plan rows (one per completion to make) not landed yet; return how many."""
    return _land_new(_lake(), "uf_plan", "plan", [it.lake_row() for it in items])


@task(name="uf-land-shard", cache_policy=NO_CACHE)
def land_shard(table: str, stage: str, output: dict[str, Any]) -> dict[str, Any]:
    """Land one shard's usage, failures and then rows (the rows mark their jobs done)."""
    lake = _lake()
    key = f"{stage}-{content_key(output['rows'], output['failures'])[:40]}"
    if output["usage"]:
        lake.write_shard("uf_usage", key, [{"shard": key, **u} for u in output["usage"]],
                         SCHEMAS["uf_usage"])
    if output["failures"]:
        lake.write_shard("uf_failures", key, output["failures"], SCHEMAS["uf_failures"])
    if output["rows"]:
        lake.write_shard(table, key, output["rows"], SCHEMAS[table])
    return {"key": key, "rows": len(output["rows"]), "failures": len(output["failures"]),
            "usage": output["usage"], "stats": output["stats"]}


# ---- export -------------------------------------------------------------------------------------

@task(name="uf-export", cache_policy=NO_CACHE)
def export(recipe: UltraFeedbackRecipe, prompts: list[PromptRecord], plan: list[PlanItem],
           annotation_ids: list[str], critique_ids: list[str]) -> dict[str, Any]:
    """Write the raw export (JSONL + Parquet) for this recipe's plan; return paths and counts."""
    lake = _lake()
    aspects = recipe.annotation.aspects

    def rows(table: str, *columns: str) -> list[dict[str, Any]]:
        return lake.read_table(table, columns=list(columns)).to_pylist()

    records = join_records(
        prompts, plan, rows("uf_completions", "completion_id", "response"),
        rows("uf_annotations", "annotation_id", "completion_id", "aspect", "annotation"),
        rows("uf_critiques", "critique_id", "completion_id", "critique", "overall_score"),
        annotation_ids=annotation_ids, critique_ids=critique_ids, aspects=aspects)
    base = f"exports/ultrafeedback/{recipe.export.name}"
    jsonl = lake.write_bytes(f"{base}.jsonl", to_jsonl(records))
    parquet = lake.write_bytes(f"{base}.parquet", parquet_bytes(to_arrow(records, aspects)))
    return {"jsonl": jsonl, "parquet": parquet, **summarize(records, aspects)}


@task(name="uf-refresh-warehouse", cache_policy=NO_CACHE)
def refresh_warehouse() -> str:
    """(Re)create the warehouse views over the UltraFeedback lake tables; return the file path."""
    settings = Settings()
    with Warehouse.from_settings(settings) as wh:
        wh.refresh_views(TABLES)
    return str(settings.warehouse)
