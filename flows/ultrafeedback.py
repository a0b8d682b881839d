"""Flow `ultrafeedback`: rebuild openbmb/UltraFeedback from prompts, a model pool and a judge.

Reads: the recipe (YAML + `--set` overrides), its prompt sources, the model pool, the gateway
journal. Writes to the lake: uf_prompts, uf_quarantine, uf_plan, uf_completions, uf_annotations,
uf_critiques, uf_failures, uf_usage (Parquet shards), exports/ultrafeedback/<name>.{jsonl,parquet}
and runs/ultrafeedback/<run>/manifest.json; refreshes the warehouse views over those tables.
Publishes a progress artifact per stage (updated per shard) and an end-of-run summary.

The narrative: load and quarantine prompts → plan 4 of N models per prompt → generate the
missing completions → rate each (prompt, aspect) → critique each completion → export. Each stage
only submits work the lake does not have yet, at most `max_parallel_shards` shards at a time;
jobs that failed for good in an earlier run are submitted again.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from functools import partial
from pathlib import Path
from typing import Any

from prefect import flow
from prefect.task_runners import ThreadPoolTaskRunner
from pydantic import BaseModel, Field

from flows.waves import in_waves
from tasks.adapters.errors import ConfigError
from tasks.adapters.lake import Lake
from tasks.adapters.llm import load_pool
from tasks.adapters.settings import RECIPES_DIR, Settings
from tasks.core.ultrafeedback.estimate import estimate_run, landed_calls
from tasks.core.ultrafeedback.judge import annotation_jobs, answered_completions, critique_jobs
from tasks.core.ultrafeedback.plan import build_plan, shards
from tasks.core.ultrafeedback.recipe import UltraFeedbackRecipe, check_against_pool
from tasks.core.usage import merge_usage
from tasks.core.yamlconf import load_recipe
from tasks.reporting import markdown_table, publish_summary, write_manifest
from tasks.ultrafeedback import (
    export,
    land_plan,
    land_shard,
    landed_ids,
    load_prompts,
    read_prompts,
    read_responses,
    refresh_warehouse,
)
from tasks.ultrafeedback_calls import annotate_shard, critique_shard, generate_shard

DEFAULT_RECIPE = RECIPES_DIR / "ultrafeedback.yaml"
MAX_SHARD_THREADS = 64  # hard bound on task threads; the recipe's max_parallel_shards is lower


class UltraFeedbackParams(BaseModel):
    """Which recipe to run, and overrides of its keys."""

    recipe: str = Field(default=str(DEFAULT_RECIPE),
                        description="Path of the UltraFeedback recipe YAML.")
    overrides: list[str] = Field(default_factory=list,
                                 description="`key.path=value` overrides, like `--set` "
                                             "(e.g. plan.n_models=2).")


DEFAULT_PARAMS = UltraFeedbackParams()


def resolve_recipe(params: UltraFeedbackParams) -> tuple[UltraFeedbackRecipe, Path]:
    """The validated recipe (checked against the pool) and the directory its paths are relative to."""
    recipe = load_recipe(params.recipe, UltraFeedbackRecipe, params.overrides)
    problems = check_against_pool(recipe, set(load_pool(Settings()).models))
    if problems:
        raise ConfigError(f"{params.recipe}: " + "; ".join(problems))
    return recipe, Path(params.recipe).resolve().parent


def _run_shards(title: str, table: str, stage: str, jobs: list, size: int, limit: int,
                submit: Callable) -> list[dict[str, Any]]:
    """Shards of `jobs`, at most `limit` in flight, each landed in `table` as it finishes."""
    return in_waves([partial(submit, batch) for batch in shards(jobs, size)], limit,
                    f"ultrafeedback {title}", lambda result: land_shard(table, stage, result))


@flow(name="ultrafeedback", task_runner=ThreadPoolTaskRunner(max_workers=MAX_SHARD_THREADS))
def ultrafeedback(params: UltraFeedbackParams = DEFAULT_PARAMS) -> dict[str, Any]:
    """Prompts → 4 of N pool models → four-aspect judge + critique → lake → raw export.

    Returns the export and manifest URLs, the warehouse path and the run's counts.
    """
    recipe, base_dir = resolve_recipe(params)
    limit = min(recipe.max_parallel_shards, MAX_SHARD_THREADS)
    intake = load_prompts(recipe, str(base_dir))
    prompts = {p.prompt_id: p for p in intake["prompts"]}
    plan = build_plan(recipe, prompts.values())
    land_plan(plan)

    have = landed_ids("uf_completions", "completion_id")
    gen = _run_shards("generation", "uf_completions", "gen",
                      [it for it in plan if it.completion_id not in have],
                      recipe.generation.shard_size, limit, generate_shard.submit)

    done = answered_completions(plan, read_responses([it.completion_id for it in plan]))
    ann_jobs = annotation_jobs(recipe.seed, recipe.annotation, prompts, done)
    have = landed_ids("uf_annotations", "annotation_id")
    ann = _run_shards("annotation", "uf_annotations", "ann",
                      [j for j in ann_jobs if j.annotation_id not in have],
                      recipe.annotation.shard_size, limit,
                      lambda b: annotate_shard.submit(b, recipe.annotation.max_reasks))

    crit_jobs = critique_jobs(recipe.critique, prompts, done) if recipe.critique.enabled else []
    have = landed_ids("uf_critiques", "critique_id")
    crit = _run_shards("critique", "uf_critiques", "crit",
                       [j for j in crit_jobs if j.critique_id not in have],
                       recipe.critique.shard_size, limit,
                       lambda b: critique_shard.submit(b, recipe.critique.max_reasks))

    out = export(recipe, list(prompts.values()), plan, [j.annotation_id for j in ann_jobs],
                 [j.critique_id for j in crit_jobs])
    warehouse = refresh_warehouse()
    usage = _usage([*gen, *ann, *crit])
    counts = _counts(intake["counts"], plan, ann_jobs, crit_jobs, out, ann, crit, usage)
    manifest = write_manifest(Lake.from_settings(Settings()), "ultrafeedback", recipe, counts)
    _publish(counts, usage, out, intake["quarantined"])
    return {"jsonl": out["jsonl"], "parquet": out["parquet"], "manifest": manifest,
            "warehouse": warehouse, "counts": counts, "usage": usage}


def _stage_stats(landed: list[dict[str, Any]]) -> dict[str, int]:
    total: dict[str, int] = {}
    for shard in landed:
        for k, v in shard["stats"].items():
            total[k] = total.get(k, 0) + v
    return total


def _counts(intake: dict, plan, ann_jobs, crit_jobs, out: dict, ann, crit,
            usage: list[dict[str, Any]]) -> dict[str, Any]:
    """The run's counts: in, out, quarantined, failed, and what this run paid for.

    `failed_completions` and `*_calls_failed` are what is still missing after this run (the next
    run retries it); `*_requests_paid` are calls sent and paid for in this run, journal replays
    not included.
    """
    a, c = _stage_stats(ann), _stage_stats(crit)
    replies = a.get("replies", 0) + c.get("replies", 0)
    unparsed = a.get("unparsed_replies", 0) + c.get("unparsed_replies", 0)
    e = out["counts"]
    paid = {stage: sum(u["requests"] for u in usage if u["stage"] == stage)
            for stage in ("generation", "annotation", "critique")}
    return {
        **intake,
        "planned_completions": len(plan),
        **e,
        "failed_completions": len(plan) - e["exported_completions"],
        "annotation_calls_planned": len(ann_jobs),
        "annotation_calls_failed": a.get("calls_failed", 0),
        "critique_calls_planned": len(crit_jobs),
        "critique_calls_failed": c.get("calls_failed", 0),
        **{f"{stage}_requests_paid": n for stage, n in paid.items()},
        "requests_from_journal": sum(u["from_journal"] for u in usage),
        "judge_replies_this_run": replies,
        "unparsed_judge_replies_this_run": unparsed,
        "judge_reply_parse_failure_rate": round(unparsed / replies, 4) if replies else 0.0,
    }


def _usage(landed: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (stage, model): requests paid, journal hits, failures, tokens and cost of this run."""
    return merge_usage((u for shard in landed for u in shard["usage"]), by=("stage", "model"))


def _publish(counts: dict, usage: list[dict], out: dict, quarantined: list[dict]) -> None:
    cost = sum(u["cost_usd"] for u in usage)
    markdown = "\n".join([
        "# UltraFeedback run", "",
        f"Exports: `{out['jsonl']}`, `{out['parquet']}`", "",
        f"Paid calls this run: {sum(u['requests'] for u in usage)}, cost ≈ ${cost:.4f}", "",
        "## Counts", markdown_table([{"count": k, "value": v} for k, v in counts.items()]),
        "## Usage by stage and model", markdown_table(usage),
        "## Ratings per aspect", markdown_table(out["rating_histogram"]),
        "## Critique overall scores", markdown_table(out["score_histogram"]),
        "## Principles", markdown_table(out["principles"]),
        "## Quarantined rows (first 20)",
        markdown_table([{k: q[k] for k in ("origin", "row", "field", "reason")}
                        for q in quarantined[:20]]),
    ])
    publish_summary("ultrafeedback-summary", markdown, {
        "counts": [{"count": k, "value": v} for k, v in counts.items()],
        "usage": usage, "ratings": out["rating_histogram"], "scores": out["score_histogram"]})


def dry_run(params: UltraFeedbackParams) -> dict[str, Any]:
    """What a run would do, without landing or paying: plan counts, how many calls the lake
    already holds, and a token/cost estimate for a run from scratch."""
    recipe, base_dir = resolve_recipe(params)
    pool = load_pool(Settings())
    prompts, _, counts = read_prompts(recipe, base_dir)
    plan = build_plan(recipe, prompts)
    rows = estimate_run(recipe, prompts, plan,
                        {m: spec.sampling for m, spec in pool.models.items()},
                        pool.cost)
    landed = landed_calls(recipe, prompts, plan,
                          read_responses([it.completion_id for it in plan]),
                          landed_ids("uf_annotations", "annotation_id"),
                          landed_ids("uf_critiques", "critique_id"))
    counts = {**counts, "planned_completions": len(plan), **landed}
    total = {k: sum(r[k] for r in rows) for k in ("requests", "input_tokens", "output_tokens")}
    total["cost_usd"] = round(sum(r["cost_usd"] for r in rows), 4)
    return {"recipe": params.recipe, "counts": counts, "estimate": rows, "total": total}
