"""UltraFeedback's paid work, one block of prompts per shard: generate, rate, critique, streamed.

A block shard (tasks/shards.py) claims its key, reads its prompts (one uf_prompts shard), plans
them, and runs one pipeline per prompt, all concurrently on the process's event loop: the
prompt's missing completions, then, as soon as they are back, its rating calls (one per aspect,
over all of its completions) and its critiques (one per completion), with re-asks after
unparseable replies. So the judge works while the models are still generating, and every
endpoint is busy at once (docs/engine.md#streaming-stages).

Then it lands, after the journal holds every reply: plan rows, completions, annotations,
critiques, failures and usage, each one shard named `<block key>-<content>`, and, when every
call of the block is final, the `uf_blocks` marker (block key + work fingerprint) that tells the
next run of the same work to skip the block.
A block re-run (crash, Prefect retry, the next run after failures) reads what its earlier runs
landed under its key and pays only for the rest; what it had paid for before the crash comes
back from the journal.

| table          | rows                                             | final when                    |
|----------------|--------------------------------------------------|-------------------------------|
| uf_completions | one per successful generation call               | the call succeeded            |
| uf_annotations | one per (rating call, completion)                | every call of the job worked  |
| uf_critiques   | one per critique call                            | every call of the job worked  |
| uf_failures    | one per job whose call failed for good           | (a log; the next run retries) |
| uf_usage       | one per (block run, stage, model, route)         | (a log: each run of a block)  |
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from prefect import task

from tasks.adapters.llm.gateway import Gateway
from tasks.adapters.resources import Resources, current, run
from tasks.core.chat import ChatResult
from tasks.core.ids import content_key
from tasks.core.shards import ShardSummary
from tasks.core.ultrafeedback.intake import PromptRecord
from tasks.core.ultrafeedback.judge import (
    annotation_jobs,
    critique_jobs,
    parse_annotation_reply,
)
from tasks.core.ultrafeedback.outcomes import (
    Attempts,
    annotation_rows,
    completion_row,
    critique_row,
    failure_row,
)
from tasks.core.ultrafeedback.parse import parse_critique
from tasks.core.ultrafeedback.plan import PlanItem, plan_prompt
from tasks.core.ultrafeedback.recipe import UltraFeedbackRecipe
from tasks.core.ultrafeedback.tables import (
    ANNOTATIONS,
    BLOCKS,
    COMPLETIONS,
    CRITIQUES,
    FAILURES,
    PLAN,
    PROMPTS,
    USAGE,
)
from tasks.core.usage import UsageRow, usage_of
from tasks.shards import SHARD_TASK, claimed
from tasks.ultrafeedback.intake import block_shard


def work_fingerprint(recipe: UltraFeedbackRecipe, resources: Resources) -> str:
    """Everything besides the prompts that decides a block's calls: the recipe's plan,
    generation and judge settings and the pool's API models and sampling for those models."""
    pool = {m: [resources.pool.api_model(m), resources.pool.models[m].sampling]
            for m in recipe.models}
    # the route is how calls are sent, not what they are: it is left out
    parts = recipe.model_dump(mode="json", include={"seed", "plan", "generation", "annotation",
                                                    "critique"},
                              exclude={s: {"route", "model_routes"} for s in ("generation", "annotation",
                                                               "critique")})
    return content_key("ultrafeedback/work", parts, pool)


def block_key(intake: str, block: int) -> str:
    """The block's key: its lease, and the prefix of every shard it lands. It does not depend
    on the recipe's work settings, so a run with more models finds what a run with fewer
    landed under the same key and pays only for the rest."""
    return content_key("ultrafeedback/block", intake, block)[:40]


def done_marker(key: str, fingerprint: str) -> str:
    """The `uf_blocks` shard saying block `key` is complete under work `fingerprint`."""
    return f"{key}-{fingerprint[:24]}"


@dataclass
class _Outputs:
    """What a block's calls produced, per table, and every result for usage."""

    completions: list[dict] = field(default_factory=list)
    annotations: list[dict] = field(default_factory=list)
    critiques: list[dict] = field(default_factory=list)
    failures: list[dict] = field(default_factory=list)
    results: dict[str, list[ChatResult]] = field(
        default_factory=lambda: {"generation": [], "annotation": [], "critique": []})
    replies: int = 0
    unparsed: int = 0
    pending: int = 0


async def ask_all(gw: Gateway, jobs: list[Any], parse: Callable[[Any, str | None], Any],
                  max_reasks: int, sink: list[ChatResult]) -> list[Attempts]:
    """Every job's first ask, then re-asks for the replies that did not parse completely, in
    rounds: round k sends attempt k of the jobs still open, together. A job whose call fails for
    good stops there with the error, one whose call waits in a batch stops there pending. Every
    result goes to `sink` too (for usage)."""
    attempts = [Attempts() for _ in jobs]
    open_jobs = list(range(len(jobs)))
    for attempt in range(max_reasks + 1):
        if not open_jobs:
            break
        results = await gw.complete_all([jobs[i].request(attempt) for i in open_jobs])
        sink.extend(results)
        still_open = []
        for i, result in zip(open_jobs, results, strict=True):
            if result.pending is not None:
                attempts[i].pending = result.pending
                continue
            if not result.ok:
                attempts[i].error = result.error
                continue
            parsed = parse(jobs[i], result.text)
            attempts[i].results.append(result)
            attempts[i].parses.append(parsed)
            if not parsed.complete:
                still_open.append(i)
        open_jobs = still_open
    return attempts


def _judged(stage: str, jobs: list[Any], outcomes: list[Attempts], out: _Outputs,
            rows_of: Callable[[Any, Attempts], list[dict]], rows: list[dict]) -> None:
    """Rows of the final jobs into `rows`, a failure row for each of the others."""
    for job, attempts in zip(jobs, outcomes, strict=True):
        out.replies += len(attempts.parses)
        out.unparsed += sum(not p.complete for p in attempts.parses)
        if attempts.final:
            rows.extend(rows_of(job, attempts))
        elif attempts.pending is not None:
            out.pending += 1
        else:
            out.failures.append(failure_row(stage, job.job_id, job.prompt_id, job.judge_model,
                                            attempts.error, attempts.calls))


@dataclass
class _Landed:
    """What earlier runs of this block landed: responses and judged ids."""

    responses: dict[str, str]
    annotation_ids: set[str]
    critique_ids: set[str]


def _landed(res: Resources, key: str) -> _Landed:
    lake = res.lake
    done = lake.read_table(COMPLETIONS, columns=["completion_id", "response"], prefix=key)
    responses = {c: r for c, r in zip(done.column(0).to_pylist(), done.column(1).to_pylist(),
                                      strict=True) if r is not None}
    ann = lake.read_table(ANNOTATIONS, columns=["annotation_id"], prefix=key)
    crit = lake.read_table(CRITIQUES, columns=["critique_id"], prefix=key)
    return _Landed(responses, set(ann.column(0).to_pylist()), set(crit.column(0).to_pylist()))


async def _prompt(gw: Gateway, recipe: UltraFeedbackRecipe, prompt: PromptRecord,
                  items: list[PlanItem], landed: _Landed, out: _Outputs) -> None:
    """One prompt's pipeline: missing completions, then its rating and critique calls."""
    missing = [it for it in items if it.completion_id not in landed.responses]
    results = await gw.complete_all([it.request(recipe.generation.route_of(it.model)) for it in missing])
    out.results["generation"].extend(results)
    responses = {it.completion_id: landed.responses[it.completion_id] for it in items
                 if it.completion_id in landed.responses}
    for it, r in zip(missing, results, strict=True):
        if r.pending is not None:
            out.pending += 1
        elif r.ok:
            out.completions.append(completion_row(it, r))
            responses[it.completion_id] = r.text
        else:
            out.failures.append(failure_row("generation", it.completion_id, it.prompt_id,
                                            it.model, r.error, r.attempts))
    if any(r.pending is not None for r in results):
        return  # judged once all its completions are in: a later run, when the batch is done
    answered = {prompt.prompt_id: [(it, responses[it.completion_id]) for it in items
                                   if it.completion_id in responses]}
    if not answered[prompt.prompt_id]:
        return
    by_id = {prompt.prompt_id: prompt}
    ann = [j for j in annotation_jobs(recipe.seed, recipe.annotation, by_id, answered)
           if j.annotation_id not in landed.annotation_ids]
    crit = [j for j in critique_jobs(recipe.critique, by_id, answered)
            if j.critique_id not in landed.critique_ids] if recipe.critique.enabled else []
    ann_out, crit_out = await asyncio.gather(
        ask_all(gw, ann, parse_annotation_reply, recipe.annotation.max_reasks,
                out.results["annotation"]),
        ask_all(gw, crit, lambda _job, text: parse_critique(text), recipe.critique.max_reasks,
                out.results["critique"]))
    _judged("annotation", ann, ann_out, out, annotation_rows, out.annotations)
    _judged("critique", crit, crit_out, out, lambda j, a: [critique_row(j, a)], out.critiques)


def _land(res: Resources, key: str, plan: list[PlanItem], out: _Outputs,
          usage: list[UsageRow]) -> int:
    """Land the block's rows (usage and failures first: result rows mark jobs done, the
    uf_blocks marker last: it marks the block done). Returns the result rows landed."""
    lake = res.lake
    plan_rows = [it.lake_row() for it in plan]
    lake.write_shard(PLAN, f"{key}-{content_key(plan_rows)[:16]}", plan_rows)
    if usage:  # one shard per run of the block: a rerun that collects a batch pays, and says so
        name = f"{key}-{content_key([u.model_dump() for u in usage])[:16]}"
        lake.write_shard(USAGE, name, [{"shard": name, **u.model_dump()} for u in usage])
    if out.failures:
        lake.write_shard(FAILURES, f"{key}-{content_key(out.failures)[:16]}", out.failures)
    landed = 0
    for spec, rows in ((COMPLETIONS, out.completions), (ANNOTATIONS, out.annotations),
                       (CRITIQUES, out.critiques)):
        if rows:
            lake.write_shard(spec, f"{key}-{content_key(rows)[:16]}", rows)
            landed += len(rows)
    return landed


async def _run_block(res: Resources, recipe: UltraFeedbackRecipe, intake: str, block: int,
                     fingerprint: str) -> ShardSummary:
    key = block_key(intake, block)
    lake = res.lake
    async with claimed(lake, key, on_takeover=res.catch_up) as waited:
        if lake.has_shard(BLOCKS, done_marker(key, fingerprint)):  # done while we waited
            return ShardSummary(stage="ultrafeedback", key=key, status="skipped", waited_s=waited)
        table = await asyncio.to_thread(lake.read_shard, PROMPTS, block_shard(intake, block))
        prompts = [PromptRecord.model_validate(r) for r in table.to_pylist()]
        plans = [plan_prompt(recipe, p) for p in prompts]
        landed = await asyncio.to_thread(_landed, res, key)
        out = _Outputs()
        await asyncio.gather(*(_prompt(res.gateway, recipe, p, items, landed, out)
                               for p, items in zip(prompts, plans, strict=True)))
        usage = [u for stage, results in out.results.items()
                 for u in usage_of(stage, results, res.pool.cost)]
        plan = [it for items in plans for it in items]
        rows = await asyncio.to_thread(_land, res, key, plan, out, usage)
        status = "partial" if out.failures else "pending" if out.pending else "done"
        if status == "done":
            await asyncio.to_thread(lake.write_shard, BLOCKS, done_marker(key, fingerprint),
                                    [{"block_key": key, "fingerprint": fingerprint,
                                      "prompts": len(prompts)}])
        return ShardSummary(stage="ultrafeedback", key=key, status=status, items=len(prompts),
                            rows=rows, failures=len(out.failures), pending=out.pending,
                            replies=out.replies,
                            unparsed=out.unparsed, waited_s=waited, usage=usage)


@task(name="uf-block", **SHARD_TASK)
def run_block(recipe: UltraFeedbackRecipe, intake: str, block: int,
              fingerprint: str) -> ShardSummary:
    """Generate, rate and critique one block of prompts; land everything; a small summary."""
    res = current()
    return run(_run_block(res, recipe, intake, block, fingerprint))
