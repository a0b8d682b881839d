"""What the paid calls produced, as lake rows: completions, judgements, and calls that failed.

A job's rows land only when its outcome is final, so each result table holds at most one row per
id and a reader never has to choose between a failure and a later success:
- a completion is final when its call succeeded (`uf_completions`);
- a rating or critique job is final when every call it made succeeded, whether or not the last
  reply parsed: an unparseable reply after the re-asks is kept as a null value with the raw text
  and the error (docs/datasets.md#annotation), because asking again would pay again
  (`uf_annotations`, `uf_critiques`);
- anything else (a call that failed for good) becomes one `uf_failures` row naming the stage, the
  job and the error. The next run submits that job again; the journal replays the replies it
  already paid for, so only the failed call is sent again.

Every judgement row keeps, beside the parsed value, the chosen reply's raw text, request key,
finish reason, token usage and latency, and how many calls the job made (model output is data).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tasks.core.chat import ChatResult
from tasks.core.ids import canonical_json
from tasks.core.ultrafeedback.judge import AnnotationJob, CritiqueJob
from tasks.core.ultrafeedback.parse import CritiqueParse, RatingsParse
from tasks.core.ultrafeedback.plan import PlanItem


@dataclass
class Attempts:
    """One judge job's calls so far: the replies that came back (and their parses), and the
    error of a call that failed for good, which ends the job's attempts, or the batch its next
    call waits in (then the job is neither final nor failed: a later run goes on with it)."""

    results: list[ChatResult] = field(default_factory=list)
    parses: list[Any] = field(default_factory=list)
    error: str | None = None
    pending: str | None = None

    @property
    def final(self) -> bool:
        return self.error is None and self.pending is None and bool(self.parses)

    @property
    def calls(self) -> int:
        return len(self.results) + (self.error is not None)


def pick_attempt(parses: list[RatingsParse | CritiqueParse]) -> int:
    """Index of the reply to keep: complete first, then most texts parsed, then the earliest."""
    return max(range(len(parses)), key=lambda i: (parses[i].complete, parses[i].n_parsed, -i))


def map_back(job: AnnotationJob, parsed: RatingsParse
             ) -> list[tuple[str, int, dict | None, str | None]]:
    """(completion_id, shown text number, annotation, error) per completion, in plan order."""
    by_original = {}
    for shown, original in enumerate(job.order):
        by_original[original] = (shown + 1, parsed.annotations[shown], parsed.errors[shown])
    return [(cid, *by_original[i]) for i, cid in enumerate(job.completion_ids)]


def _reply(result: ChatResult) -> dict[str, Any]:
    return {"raw": result.text, "request_key": result.key, "finish_reason": result.finish_reason,
            "prompt_tokens": result.usage.prompt_tokens,
            "completion_tokens": result.usage.completion_tokens, "latency_s": result.latency_s}


def completion_row(item: PlanItem, result: ChatResult) -> dict[str, Any]:
    """The `uf_completions` row of a successful generation call."""
    return {"completion_id": item.completion_id, "prompt_id": item.prompt_id, "model": item.model,
            "api_model": result.api_model, "endpoint": result.endpoint,
            "request_key": result.key, "response": result.text,
            "finish_reason": result.finish_reason,
            "prompt_tokens": result.usage.prompt_tokens,
            "completion_tokens": result.usage.completion_tokens,
            "latency_s": result.latency_s, "attempts": result.attempts}


def annotation_rows(job: AnnotationJob, attempts: Attempts) -> list[dict[str, Any]]:
    """The `uf_annotations` rows of a final rating job: one per completion, in plan order.

    A text that parsed carries no error, even when the reply as a whole had one (say, a block
    for a text that does not exist); a text that did not carries its own error and the reply's.
    """
    best = pick_attempt(attempts.parses)
    parsed = attempts.parses[best]
    common = {"annotation_id": job.annotation_id, "prompt_id": job.prompt_id,
              "aspect": job.aspect, "judge_model": job.judge_model, "calls": attempts.calls,
              "parse_failures": sum(not p.complete for p in attempts.parses),
              **_reply(attempts.results[best])}
    rows = []
    for cid, shown, ann, err in map_back(job, parsed):
        if ann is None and parsed.reply_error and parsed.reply_error not in (err or ""):
            err = f"{err}; {parsed.reply_error}" if err else parsed.reply_error
        rows.append({**common, "completion_id": cid, "text_number": shown,
                     "annotation": None if ann is None else canonical_json(ann),
                     "rating": None if ann is None else ann["Rating"],
                     "error": None if ann is not None else err})
    return rows


def critique_row(job: CritiqueJob, attempts: Attempts) -> dict[str, Any]:
    """The `uf_critiques` row of a final critique job."""
    best = pick_attempt(attempts.parses)
    parsed: CritiqueParse = attempts.parses[best]
    return {"critique_id": job.critique_id, "completion_id": job.completion_id,
            "prompt_id": job.prompt_id, "judge_model": job.judge_model,
            "critique": parsed.feedback if parsed.ok else None,
            "overall_score": parsed.score if parsed.ok else None, "error": parsed.error,
            "calls": attempts.calls, "parse_failures": sum(not p.ok for p in attempts.parses),
            **_reply(attempts.results[best])}


def failure_row(stage: str, job_id: str, prompt_id: str, model: str, error: str | None,
                calls: int) -> dict[str, Any]:
    """The `uf_failures` row of a job whose call failed for good in this run."""
    return {"stage": stage, "job_id": job_id, "prompt_id": prompt_id, "model": model,
            "error": error, "calls": calls}
