"""Prometheus metrics of model calls, process-wide, for dashboards.

They live on prometheus_client's default registry, which Prefect serves from every flow-run
process, worker and runner when PREFECT_CLIENT_METRICS_ENABLED=true (port 4201 by default,
docs/prefect.md#metrics); a Pushgateway can collect them from short-lived runs.
"""

from __future__ import annotations

from prometheus_client import Counter, Histogram

CALLS = Counter("ultraforge_llm_calls", "Chat requests by outcome: paid, journal (replayed, not "
                "sent), failed (retries exhausted), rejected (refused for this request only).",
                ["model", "endpoint", "outcome"])
TOKENS = Counter("ultraforge_llm_tokens", "Tokens of paid calls.", ["model", "kind"])
COST = Counter("ultraforge_llm_cost_usd", "USD of paid calls at the pool's prices.", ["model"])
LATENCY = Histogram("ultraforge_llm_latency_seconds", "Latency of the successful attempt.",
                    ["model"], buckets=(0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120))
