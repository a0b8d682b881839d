"""UltraFeedback @tasks that pay for model calls: one task per shard of a few hundred requests.

| task            | side effect                                  | idempotent because                      |
|-----------------|----------------------------------------------|-----------------------------------------|
| generate_shard  | paid completion calls (journaled by gateway) | journal: a paid call is never re-sent   |
| annotate_shard  | paid rating calls, re-asks on parse failure  | journal; re-asks are distinct calls     |
| critique_shard  | paid critique calls, re-asks                 | journal                                 |

Each returns `{rows, failures, usage, stats}` for `land_shard` (tasks/ultrafeedback.py): rows
of the jobs whose outcome is final, one failure row per job whose call failed for good (see
tasks/core/ultrafeedback/outcomes.py). Requests go concurrently on asyncio through the gateway's
`complete_all` (never a task per request), which cancels every call still in flight when one
raises FatalAPIError, so a dead key or an exhausted quota stops the spending at once.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from prefect import task

from tasks.adapters.llm import Gateway, open_gateway
from tasks.adapters.settings import Settings
from tasks.core.ultrafeedback.judge import AnnotationJob, CritiqueJob, parse_annotation_reply
from tasks.core.ultrafeedback.outcomes import (
    Attempts,
    annotation_rows,
    completion_row,
    critique_row,
    failure_row,
)
from tasks.core.ultrafeedback.parse import parse_critique
from tasks.core.ultrafeedback.plan import PlanItem
from tasks.retry import SHARD_TASK


def _usage(stage: str, gw: Gateway) -> list[dict[str, Any]]:
    return [{"stage": stage, **u} for u in gw.usage()]


@task(name="uf-generate-shard", **SHARD_TASK)
async def generate_shard(items: list[PlanItem]) -> dict[str, Any]:
    """Completions for one shard of plan items: rows for `uf_completions`, failures, usage."""
    async with open_gateway(Settings()) as gw:
        results = await gw.complete_all([it.request() for it in items])
        usage = _usage("generation", gw)
    pairs = list(zip(items, results, strict=True))
    failures = [failure_row("generation", it.completion_id, it.prompt_id, it.model, r.error, 1)
                for it, r in pairs if not r.ok]
    return {"rows": [completion_row(it, r) for it, r in pairs if r.ok], "failures": failures,
            "usage": usage, "stats": {"requests": len(items), "calls_failed": len(failures)}}


async def ask_all(gw: Gateway, jobs: list[Any], parse: Callable[[Any, str | None], Any],
                  max_reasks: int) -> list[Attempts]:
    """Every job's first ask, then re-asks for the replies that did not parse completely, in
    rounds: round k sends attempt k of the jobs still open through `complete_all`. A job whose
    call fails for good stops there with the error."""
    attempts = [Attempts() for _ in jobs]
    open_jobs = list(range(len(jobs)))
    for attempt in range(max_reasks + 1):
        if not open_jobs:
            break
        results = await gw.complete_all([jobs[i].request(attempt) for i in open_jobs])
        still_open = []
        for i, result in zip(open_jobs, results, strict=True):
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


async def _judge_shard(stage: str, jobs: list[Any], parse: Callable, rows_of: Callable,
                       max_reasks: int) -> dict[str, Any]:
    async with open_gateway(Settings()) as gw:
        outcomes = await ask_all(gw, jobs, parse, max_reasks)
        usage = _usage(stage, gw)
    rows: list[dict[str, Any]] = []
    failures = []
    for job, attempts in zip(jobs, outcomes, strict=True):
        if attempts.final:
            rows.extend(rows_of(job, attempts))
        else:
            failures.append(failure_row(stage, job.job_id, job.prompt_id, job.judge_model,
                                        attempts.error, attempts.calls))
    parses = [p for a in outcomes for p in a.parses]
    return {"rows": rows, "failures": failures, "usage": usage,
            "stats": {"replies": len(parses), "calls_failed": len(failures),
                      "unparsed_replies": sum(not p.complete for p in parses)}}


@task(name="uf-annotate-shard", **SHARD_TASK)
async def annotate_shard(jobs: list[AnnotationJob], max_reasks: int) -> dict[str, Any]:
    """Rating calls for one shard of (prompt, aspect) jobs: rows for `uf_annotations`."""
    return await _judge_shard("annotation", jobs, parse_annotation_reply, annotation_rows,
                              max_reasks)


@task(name="uf-critique-shard", **SHARD_TASK)
async def critique_shard(jobs: list[CritiqueJob], max_reasks: int) -> dict[str, Any]:
    """Teacher-feedback calls for one shard of completions: rows for `uf_critiques`."""
    return await _judge_shard("critique", jobs, lambda _job, text: parse_critique(text),
                              lambda job, attempts: [critique_row(job, attempts)], max_reasks)
