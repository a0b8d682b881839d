"""Dry-run estimates: how many calls a recipe makes and roughly what they cost, before paying.

Input tokens are estimated from the actual rendered prompts (tokens.py: ~4 characters a token).
Output is unknown before the run, so the assumptions are explicit:
- completions: `ASSUMED_RESPONSE_TOKENS` (the "~300-token responses" of
  docs/datasets.md#scale-and-cost), capped by the model's max_tokens; judge prompts are sized
  with responses of that length;
- judge and critique replies: their max_tokens, an upper bound (≤ 500 / ≤ 1024:
  docs/datasets.md#annotation, docs/datasets.md#critique).
Re-asks after unparseable replies are not included (with a few % malformed replies they add a
few % to the judge rows). The estimate covers a run from scratch: the journal may make a rerun
cheaper, never dearer. `landed_calls` says how much of the plan the lake already holds.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from typing import Any

from tasks.core.chat import Route
from tasks.core.pool import max_tokens_of, merge_sampling
from tasks.core.tokens import estimate_prompt_tokens
from tasks.core.ultrafeedback.intake import PromptRecord
from tasks.core.ultrafeedback.judge import (
    annotation_job,
    annotation_jobs,
    answered_completions,
    critique_job,
    critique_jobs,
)
from tasks.core.ultrafeedback.plan import PlanItem
from tasks.core.ultrafeedback.recipe import UltraFeedbackRecipe

ASSUMED_RESPONSE_TOKENS = 300

Cost = Callable[[str, int, int, Route], float]  # (pool model, tokens in, out, route) → USD


def estimate_run(recipe: UltraFeedbackRecipe, prompts: list[PromptRecord], plan: list[PlanItem],
                 sampling: dict[str, dict[str, Any]], cost: Cost) -> list[dict[str, Any]]:
    """Rows {stage, model, route, requests, input_tokens, output_tokens, cost_usd (on the
    stage's route), online_cost_usd, batch_cost_usd} for a fresh run: both routes side by side.

    Args:
        sampling: pool model → its default sampling (request params are merged over it).
    """
    rows: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0, 0])

    def add(stage: str, model: str, tokens_in: int, tokens_out: int) -> None:
        row = rows[(stage, model)]
        row[0] += 1
        row[1] += tokens_in
        row[2] += tokens_out

    filler = "x" * (ASSUMED_RESPONSE_TOKENS * 4)
    by_prompt: dict[str, list[PlanItem]] = defaultdict(list)
    for it in plan:
        params = merge_sampling(sampling.get(it.model, {}), it.params)
        add("generation", it.model, estimate_prompt_tokens(list(it.messages)),
            min(ASSUMED_RESPONSE_TOKENS, max_tokens_of(params, ASSUMED_RESPONSE_TOKENS)))
        by_prompt[it.prompt_id].append(it)
    ann, crit = recipe.annotation, recipe.critique
    for p in prompts:
        items = by_prompt.get(p.prompt_id, [])
        if not items:
            continue
        fake = [(it.completion_id, filler) for it in items]
        for aspect in ann.aspects:
            job = annotation_job(recipe.seed, ann, aspect, p, fake)
            params = merge_sampling(sampling.get(ann.judge_model, {}), ann.params)
            add("annotation", ann.judge_model, estimate_prompt_tokens(list(job.messages)),
                max_tokens_of(params, 500))
        if crit.enabled:
            params = merge_sampling(sampling.get(crit.judge_model, {}), crit.params)
            for it in items:
                job = critique_job(crit, p, it.completion_id, it.principle,
                                   it.custom_system_prompt, filler)
                add("critique", crit.judge_model, estimate_prompt_tokens(list(job.messages)),
                    max_tokens_of(params, 1024))
    specs = {"generation": recipe.generation, "annotation": ann, "critique": crit}
    out = []
    for (stage, model), (n, tin, tout) in sorted(rows.items()):
        by_route = {r: round(cost(model, tin, tout, r), 4) for r in ("online", "batch")}
        route = specs[stage].route_of(model)
        out.append({"stage": stage, "model": model, "route": route, "requests": n,
                    "input_tokens": tin, "output_tokens": tout,
                    "cost_usd": by_route[route], "online_cost_usd": by_route["online"],
                    "batch_cost_usd": by_route["batch"]})
    return out



def landed_calls(recipe: UltraFeedbackRecipe, prompts: list[PromptRecord], plan: list[PlanItem],
                 responses: dict[str, str], annotation_ids: set[str],
                 critique_ids: set[str]) -> dict[str, int]:
    """Planned calls per stage, split into already landed and new.

    A rating call's id covers every response it rates, so it is known only for prompts whose
    planned completions have all landed; the rating calls of any other prompt count as new.

    Args:
        responses: completion_id → response of the plan's landed completions.
        annotation_ids, critique_ids: ids of the landed rating and critique calls.
    """
    by_prompt = answered_completions(plan, responses)
    planned: dict[str, int] = defaultdict(int)
    for it in plan:
        planned[it.prompt_id] += 1
    ready = {pid: items for pid, items in by_prompt.items() if len(items) == planned[pid]}
    by_id = {p.prompt_id: p for p in prompts}
    ann_landed = sum(j.annotation_id in annotation_ids
                     for j in annotation_jobs(recipe.seed, recipe.annotation, by_id, ready))
    crit_planned = crit_landed = 0
    if recipe.critique.enabled:
        crit_planned = len(plan)
        crit_landed = sum(j.critique_id in critique_ids
                          for j in critique_jobs(recipe.critique, by_id, by_prompt))
    ann_planned = len(planned) * len(recipe.annotation.aspects)
    landed = sum(len(items) for items in by_prompt.values())
    return {"completions_landed": landed, "completions_new": len(plan) - landed,
            "annotation_calls_landed": ann_landed,
            "annotation_calls_new": ann_planned - ann_landed,
            "critique_calls_landed": crit_landed, "critique_calls_new": crit_planned - crit_landed}
