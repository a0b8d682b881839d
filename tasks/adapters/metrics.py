"""Prometheus metrics of model calls, process-wide, for dashboards (docs/operations.md#metrics).

They live on prometheus_client's default registry, which leaves the process two ways:

- scraped: Prefect serves the default registry on :4201 (PREFECT_CLIENT_METRICS_PORT) when
  PREFECT_CLIENT_METRICS_ENABLED=true, in the process where the flow runs (`ultraforge run`).
  A process worker runs each flow in a child process, so the worker's own endpoint does not carry
  these series (docs/prefect.md#metrics);
- pushed: with ULTRAFORGE_PUSHGATEWAY_URL set, `start_pushing` (called by `Resources.build`, so in
  every process whose flows use the resources) PUTs the default registry to the Pushgateway
  every PUSH_INTERVAL_S and once more at interpreter exit, grouped by instance (host:pid) and,
  in a process a worker started for one flow run, that run's id.
"""

from __future__ import annotations

import atexit
import logging
import os
import socket
import threading

from prometheus_client import REGISTRY, Counter, Histogram, push_to_gateway

CALLS = Counter("ultraforge_llm_calls", "Chat requests by outcome: paid, journal (replayed, not "
                "sent), failed (retries exhausted), rejected (refused for this request only).",
                ["model", "endpoint", "outcome"])
TOKENS = Counter("ultraforge_llm_tokens", "Tokens of paid calls.", ["model", "kind"])
COST = Counter("ultraforge_llm_cost_usd", "USD of paid calls at the pool's prices.", ["model"])
LATENCY = Histogram("ultraforge_llm_latency_seconds", "Latency of the successful attempt.",
                    ["model"], buckets=(0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120))
RETRYABLE = Counter("ultraforge_llm_retryable_errors", "Attempts that failed with a retryable "
                    "error, by HTTP status (429, 408, 409, 5xx) or 'none' (timeout, connection "
                    "error, malformed body); retried until the endpoint's max_attempts.",
                    ["model", "endpoint", "status"])

PUSH_JOB = "ultraforge"
PUSH_INTERVAL_S = 15.0  # the scrape interval of infra/prometheus/prometheus.yml
PUSH_TIMEOUT_S = 5.0

log = logging.getLogger(__name__)


class Pusher:
    """Pushes the default registry to one Pushgateway group, periodically and on `close`."""

    def __init__(self, url: str, grouping_key: dict[str, str], interval_s: float = PUSH_INTERVAL_S):
        self.url, self.grouping_key, self.interval_s = url, grouping_key, interval_s
        self._lock = threading.Lock()  # one push at a time, so the last one pushed is the newest
        self._stop = threading.Event()
        self._failing = False
        self._thread = threading.Thread(target=self._loop, name="ultraforge-metrics-push", daemon=True)

    def start(self) -> Pusher:
        self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.push()

    def push(self) -> bool:
        """One PUT of the whole registry (replacing this group's previous push); False on error,
        which is logged once until a push succeeds again: metrics never fail a run."""
        with self._lock:
            try:
                push_to_gateway(self.url, job=PUSH_JOB, registry=REGISTRY,
                                grouping_key=self.grouping_key, timeout=PUSH_TIMEOUT_S)
            except Exception as exc:  # noqa: BLE001 - URLError, OSError, HTTP errors alike
                if not self._failing:
                    log.warning("metrics push to %s failed: %s", self.url, exc)
                self._failing = True
                return False
            self._failing = False
            return True

    def close(self) -> bool:
        """Stop the periodic pushes and push a last time."""
        self._stop.set()
        return self.push()


_PUSHER: Pusher | None = None
_PUSHER_LOCK = threading.Lock()


def grouping_key(flow_run_id: str | None) -> dict[str, str]:
    """This process's Pushgateway group: host:pid, plus the flow run it was started for."""
    key = {"instance": f"{socket.gethostname()}:{os.getpid()}"}
    if flow_run_id:
        key["flow_run_id"] = flow_run_id
    return key


def start_pushing(url: str | None, flow_run_id: str | None = None) -> Pusher | None:
    """Push this process's metrics to the Pushgateway at `url` from now on and at exit (None: no
    Pushgateway, nothing happens). Idempotent: one pusher per process and URL."""
    global _PUSHER
    if not url:
        return None
    with _PUSHER_LOCK:
        if _PUSHER is not None and _PUSHER.url == url:
            return _PUSHER
        if _PUSHER is not None:
            _PUSHER.close()
        else:
            atexit.register(_push_at_exit)
        _PUSHER = Pusher(url, grouping_key(flow_run_id)).start()
        return _PUSHER


def _push_at_exit() -> None:
    with _PUSHER_LOCK:
        if _PUSHER is not None:
            _PUSHER.close()
