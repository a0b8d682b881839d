"""Usage accounting: requests paid, journal replays, failures, tokens and cost per model.

One rule for every flow: a result that came back from an endpoint (not the journal) is a paid
request with its tokens and cost; a journal hit is counted as such and costs nothing; a result
with an error is a failed call.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from pydantic import BaseModel, ConfigDict

from tasks.core.chat import ChatResult

COUNTS = ("requests", "from_journal", "failed", "prompt_tokens", "completion_tokens")
Cost = Callable[[str, int, int], float]  # (pool model, prompt tokens, completion tokens) → USD


class UsageRow(BaseModel):
    """Usage of one model in one stage (or role) of one shard or run."""

    model_config = ConfigDict(extra="forbid")

    stage: str
    model: str
    requests: int = 0
    from_journal: int = 0
    failed: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0


def usage_of(stage: str, results: Iterable[ChatResult], cost: Cost) -> list[UsageRow]:
    """Usage rows of `stage` for these results, one per model, sorted by model."""
    rows: dict[str, UsageRow] = {}
    for r in results:
        row = rows.setdefault(r.model, UsageRow(stage=stage, model=r.model))
        if not r.ok:
            row.failed += 1
        elif r.from_journal:
            row.from_journal += 1
        else:
            row.requests += 1
            row.prompt_tokens += r.usage.prompt_tokens
            row.completion_tokens += r.usage.completion_tokens
            row.cost_usd += cost(r.model, r.usage.prompt_tokens, r.usage.completion_tokens)
    return [_rounded(rows[m]) for m in sorted(rows)]


def merge_usage(rows: Iterable[UsageRow]) -> list[UsageRow]:
    """Sum rows per (stage, model), sorted by them."""
    acc: dict[tuple[str, str], UsageRow] = {}
    for r in rows:
        a = acc.setdefault((r.stage, r.model), UsageRow(stage=r.stage, model=r.model))
        for f in COUNTS:
            setattr(a, f, getattr(a, f) + getattr(r, f))
        a.cost_usd += r.cost_usd
    return [_rounded(acc[k]) for k in sorted(acc)]


def _rounded(row: UsageRow) -> UsageRow:
    row.cost_usd = round(row.cost_usd, 6)
    return row
