"""Usage accounting: requests paid, journal replays, failures, tokens and cost per model.

One rule for every flow: a result that came back from an endpoint (not the journal) is a paid
request with its tokens and cost at its route's price; a journal hit is counted as such and costs
nothing; a result with an error is a failed call; a call still waiting in a batch is pending
(nothing paid yet). Rows are per (stage, model, route).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from tasks.core.chat import ChatResult, Route

COUNTS = ("requests", "from_journal", "failed", "pending", "prompt_tokens", "completion_tokens",
          "rate_limited", "retried")
Cost = Callable[[str, int, int, Route], float]  # (pool model, tokens in, out, route) → USD


class UsageRow(BaseModel):
    """Usage of one model in one stage (or role) of one shard or run."""

    model_config = ConfigDict(extra="forbid")

    stage: str
    model: str
    route: Route = "online"
    requests: int = 0
    from_journal: int = 0
    failed: int = 0
    pending: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    rate_limited: int = Field(default=0, description="Attempts refused with a 429 (paid and failed calls).")
    retried: int = Field(default=0, description="Attempts beyond the first (paid and failed calls).")
    first_sent: float | None = Field(default=None, description="Unix time the first of these "
                                     "calls went out: with `last_done`, their span in time.")
    last_done: float | None = Field(default=None, description="Unix time the last one ended.")


def usage_of(stage: str, results: Iterable[ChatResult], cost: Cost) -> list[UsageRow]:
    """Usage rows of `stage` for these results, one per (model, route), sorted."""
    rows: dict[tuple[str, str], UsageRow] = {}
    for r in results:
        row = rows.setdefault((r.model, r.route), UsageRow(stage=stage, model=r.model,
                                                           route=r.route))
        if r.pending is not None:
            row.pending += 1
            continue
        if r.from_journal:
            row.from_journal += 1
            continue
        row.rate_limited += r.rate_limited
        row.retried += max(0, r.attempts - 1)
        if r.sent_at is not None:
            done = r.sent_at + r.latency_s if r.ok else None
            row.first_sent = min(row.first_sent or r.sent_at, r.sent_at)
            row.last_done = max(row.last_done or 0.0, done or r.sent_at)
        if not r.ok:
            row.failed += 1
        else:
            row.requests += 1
            row.prompt_tokens += r.usage.prompt_tokens
            row.completion_tokens += r.usage.completion_tokens
            row.cost_usd += cost(r.model, r.usage.prompt_tokens, r.usage.completion_tokens,
                                 r.route)
    return [_rounded(rows[k]) for k in sorted(rows)]


def merge_usage(rows: Iterable[UsageRow]) -> list[UsageRow]:
    """Sum rows per (stage, model, route), sorted by them."""
    acc: dict[tuple[str, str, str], UsageRow] = {}
    for r in rows:
        a = acc.setdefault((r.stage, r.model, r.route),
                           UsageRow(stage=r.stage, model=r.model, route=r.route))
        for f in COUNTS:
            setattr(a, f, getattr(a, f) + getattr(r, f))
        a.cost_usd += r.cost_usd
        if r.first_sent is not None:
            a.first_sent = min(a.first_sent or r.first_sent, r.first_sent)
            a.last_done = max(a.last_done or 0.0, r.last_done or r.first_sent)
    return [_rounded(acc[k]) for k in sorted(acc)]


def usage_table(rows: Iterable[UsageRow]) -> list[dict[str, Any]]:
    """Rows as a summary shows them: the counts, 429s and retries, cost, and the paid requests
    per second over the span the calls took (their timestamps themselves left out)."""
    out = []
    for r in rows:
        span = (r.last_done or 0.0) - (r.first_sent or 0.0)
        out.append({**r.model_dump(exclude={"first_sent", "last_done"}),
                    "requests_per_s": round(r.requests / span, 2) if r.requests and span > 0 else None})
    return out


def _rounded(row: UsageRow) -> UsageRow:
    row.cost_usd = round(row.cost_usd, 6)
    return row
