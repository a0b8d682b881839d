"""Flow `ultrafeedback`: rebuild openbmb/UltraFeedback from prompts, a model pool and a judge.

Reads: the recipe (YAML + `--set` overrides), its prompt sources, the model pool, the journal.
Writes to the lake: uf_prompts, uf_quarantine, uf_plan, uf_completions, uf_annotations,
uf_critiques, uf_failures, uf_usage, uf_blocks (Parquet shards),
exports/ultrafeedback/<name>.{jsonl,parquet} and runs/ultrafeedback/<run>/manifest.json;
refreshes the warehouse views. Publishes a progress artifact and an end-of-run summary.

The narrative: land the prompts in blocks → check the endpoints → run every block that is not
done yet (generation, rating and critique streamed per prompt, tasks/ultrafeedback/blocks.py)
→ export → summary.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any, ClassVar

from prefect import flow
from prefect.task_runners import ThreadPoolTaskRunner
from pydantic import BaseModel, ConfigDict, Field

from flows.params import RECIPE, ShardedParams
from tasks.adapters.errors import ConfigError
from tasks.adapters.resources import Resources, current, run
from tasks.adapters.settings import RECIPES_DIR
from tasks.core.shards import PartRun, ShardSummary
from tasks.core.ultrafeedback.estimate import estimate_run, landed_calls
from tasks.core.ultrafeedback.intake import Quarantined
from tasks.core.ultrafeedback.plan import build_plan
from tasks.core.ultrafeedback.recipe import UltraFeedbackRecipe, check_against_pool, resolve_routes
from tasks.core.ultrafeedback.tables import ANNOTATIONS, BLOCKS, COMPLETIONS, CRITIQUES, TABLES
from tasks.core.usage import UsageRow, merge_usage, usage_table
from tasks.reporting import markdown_table, publish_summary, write_manifest
from tasks.scaleout import ChildRun, plan_id, run_shared
from tasks.ultrafeedback.blocks import block_key, done_marker, run_block, work_fingerprint
from tasks.ultrafeedback.export import Export, export
from tasks.ultrafeedback.intake import Intake, load_prompts, read_prompts

DEFAULT_RECIPE = RECIPES_DIR / "ultrafeedback.yaml"
MAX_SHARD_THREADS = 64  # hard bound on task threads; the recipe's max_parallel_shards is lower


class UltraFeedbackParams(ShardedParams):
    """The UltraFeedback recipe (flows/recipes/ultrafeedback.yaml by default)."""

    default_file: ClassVar[Path] = DEFAULT_RECIPE
    recipe: UltraFeedbackRecipe = RECIPE


DEFAULT_PARAMS = UltraFeedbackParams()


class UltraFeedbackCounts(BaseModel):
    """A run's counts. `failed_completions` and `*_calls_failed` are what is still missing after
    the run (the next run retries it); `*_requests_paid` are calls sent and paid for in this
    run, journal replays not included."""

    model_config = ConfigDict(extra="forbid")

    rows_read: int
    prompts: int
    duplicates: int
    quarantined: int
    planned_completions: int
    exported_prompts: int
    exported_completions: int
    aspect_ratings: int
    aspect_ratings_parsed: int
    critiques_parsed: int
    failed_completions: int
    annotation_calls_planned: int
    annotation_calls_failed: int
    critique_calls_planned: int
    critique_calls_failed: int
    generation_requests_paid: int
    annotation_requests_paid: int
    critique_requests_paid: int
    requests_from_journal: int
    judge_replies_this_run: int
    unparsed_judge_replies_this_run: int
    judge_reply_parse_failure_rate: float
    blocks: int
    blocks_run: int
    blocks_waited_for: int
    pending_calls: int = Field(description="Calls waiting in batches that had not finished when "
                               "the run stopped waiting; the next run collects them.")

    @property
    def partial(self) -> bool:
        """Whether some calls failed for good (the CLI exits 2; a rerun retries them)."""
        return bool(self.failed_completions or self.annotation_calls_failed
                    or self.critique_calls_failed)


class UltraFeedbackRun(BaseModel):
    """What the flow returns."""

    jsonl: str
    parquet: str
    manifest: str
    warehouse: str
    counts: UltraFeedbackCounts
    usage: list[UsageRow]


def resolve_recipe(params: UltraFeedbackParams,
                   res: Resources | None = None) -> tuple[UltraFeedbackRecipe, Path]:
    """The validated recipe (checked against the pool) and the directory its paths are relative to."""
    res = res or current()
    problems = check_against_pool(params.recipe, res.pool)
    if problems:
        raise ConfigError("recipe: " + "; ".join(problems))
    return resolve_routes(params.recipe, res.pool), params.base


@flow(name="ultrafeedback", task_runner=ThreadPoolTaskRunner(max_workers=MAX_SHARD_THREADS))
def ultrafeedback(params: UltraFeedbackParams = DEFAULT_PARAMS) -> UltraFeedbackRun | PartRun:
    """Prompts → 4 of N pool models → four-aspect judge + critique → lake → raw export."""
    res = current().new_run()
    recipe, base_dir = resolve_recipe(params, res)
    intake = load_prompts(recipe, str(base_dir))
    run(res.gateway.preflight(recipe.models))  # every endpoint answers before we pay
    res.gateway.batches.configure(**recipe.batch.model_dump(exclude={"max_wait_s"}))
    fingerprint = work_fingerprint(recipe, res)
    done = res.lake.shard_keys(BLOCKS)
    # the blocks not done yet, shared with part runs if asked (the prompts have landed)
    shared = run_shared(
        "ultrafeedback", params, params.scale, plan_id(intake.key, intake.blocks, fingerprint),
        range(intake.blocks), partial(run_block.submit, recipe, intake.key, fingerprint=fingerprint),
        min(recipe.max_parallel_shards, MAX_SHARD_THREADS), "ultrafeedback blocks",
        todo=lambda b: done_marker(block_key(intake.key, b), fingerprint) not in done)
    if shared.part is not None:
        return shared.part
    shards, children = shared.shards, shared.children
    out = export(recipe, intake.key, intake.blocks)
    warehouse = refresh_warehouse(res)
    usage = merge_usage(u for s in shards for u in s.usage)
    counts = _counts(recipe, intake, shards, out, usage)
    manifest = write_manifest(res, "ultrafeedback", recipe, counts.model_dump())
    _publish(counts, usage, out, intake.quarantined, children)
    return UltraFeedbackRun(jsonl=out.jsonl, parquet=out.parquet, manifest=manifest,
                            warehouse=warehouse, counts=counts, usage=usage)


def refresh_warehouse(res: Resources) -> str:
    """(Re)create the warehouse views over the UltraFeedback tables; return the file path."""
    with res.warehouse() as wh:
        wh.refresh_views(TABLES)
    return str(res.settings.warehouse)


def _counts(recipe: UltraFeedbackRecipe, intake: Intake, shards: list[ShardSummary],
            out: Export, usage: list[UsageRow]) -> UltraFeedbackCounts:
    replies = sum(s.replies for s in shards)
    unparsed = sum(s.unparsed for s in shards)
    planned = intake.counts.prompts * recipe.plan.n_models
    exported = out.counts["exported_completions"]
    failed = _failed_jobs(shards)
    paid = {stage: sum(u.requests for u in usage if u.stage == stage)
            for stage in ("generation", "annotation", "critique")}
    return UltraFeedbackCounts(
        **intake.counts.model_dump(), planned_completions=planned, **out.counts,
        failed_completions=planned - exported - sum(u.pending for u in usage
                                                    if u.stage == "generation"),
        annotation_calls_planned=out.counts["exported_prompts"] * len(recipe.annotation.aspects),
        annotation_calls_failed=failed["annotation"],
        critique_calls_planned=exported if recipe.critique.enabled else 0,
        critique_calls_failed=failed["critique"],
        **{f"{stage}_requests_paid": n for stage, n in paid.items()},
        requests_from_journal=sum(u.from_journal for u in usage),
        judge_replies_this_run=replies, unparsed_judge_replies_this_run=unparsed,
        judge_reply_parse_failure_rate=round(unparsed / replies, 4) if replies else 0.0,
        blocks=intake.blocks, blocks_run=sum(s.status != "skipped" for s in shards),
        blocks_waited_for=sum(s.waited_s > 0 for s in shards),
        pending_calls=sum(s.pending for s in shards))


def _failed_jobs(shards: list[ShardSummary]) -> dict[str, int]:
    """Judge jobs of this run that failed for good, per stage (from the usage rows: a job that
    failed for good made exactly one failed call, its last)."""
    return {stage: sum(u.failed for s in shards for u in s.usage if u.stage == stage)
            for stage in ("annotation", "critique")}


def _publish(counts: UltraFeedbackCounts, usage: list[UsageRow], out: Export,
             quarantined: list[Quarantined], children: list[ChildRun]) -> None:
    cost = sum(u.cost_usd for u in usage)
    rows = usage_table(usage)
    count_rows = [{"count": k, "value": v} for k, v in counts.model_dump().items()]
    markdown = "\n".join([
        "# UltraFeedback run", "",
        f"Exports: `{out.jsonl}`, `{out.parquet}`", "",
        f"Paid calls this run: {sum(u.requests for u in usage)}, cost ≈ ${cost:.4f}", "",
        *([f"Pending in batches: {counts.pending_calls} calls (the next run collects them)", ""]
          if counts.pending_calls else []),
        "## Counts", markdown_table(count_rows),
        *(["## Parts", markdown_table([c.model_dump() for c in children])] if children else []),
        "## Usage by stage and model", markdown_table(rows),
        "## Ratings per aspect", markdown_table(out.rating_histogram),
        "## Critique overall scores", markdown_table(out.score_histogram),
        "## Principles", markdown_table(out.principles),
        "## Quarantined rows (first 20)",
        markdown_table([q.model_dump(include={"origin", "row", "field", "reason"})
                        for q in quarantined]),
    ])
    publish_summary("ultrafeedback-summary", markdown, {
        "counts": count_rows, "usage": rows, "ratings": out.rating_histogram,
        "scores": out.score_histogram})


def dry_run(params: UltraFeedbackParams) -> dict[str, Any]:
    """What a run would do, without landing or paying: plan counts, how many calls the lake
    already holds, and a token/cost estimate for a run from scratch."""
    res = current()
    recipe, base_dir = resolve_recipe(params, res)
    prompts, _, intake_counts = read_prompts(recipe, base_dir)
    plan = build_plan(recipe, prompts)
    rows = estimate_run(recipe, prompts, plan,
                        {m: spec.sampling for m, spec in res.pool.models.items()}, res.pool.cost)
    with res.lake_db(COMPLETIONS, ANNOTATIONS, CRITIQUES) as db:
        responses = {r["completion_id"]: r["response"] for r in db.query(
            "SELECT completion_id, response FROM uf_completions WHERE response IS NOT NULL")}
        ann = {r["annotation_id"] for r in db.query("SELECT annotation_id FROM uf_annotations")}
        crit = {r["critique_id"] for r in db.query("SELECT critique_id FROM uf_critiques")}
    landed = landed_calls(recipe, prompts, plan, responses, ann, crit)
    counts = {**intake_counts.model_dump(), "planned_completions": len(plan), **landed}
    total = {k: sum(r[k] for r in rows) for k in ("requests", "input_tokens", "output_tokens")}
    total["cost_usd"] = round(sum(r["cost_usd"] for r in rows), 4)
    return {"counts": counts, "estimate": rows, "total": total}
