"""The Prefect-level retry policy for shard tasks, shared by every flow.

Requests are retried inside the gateway (tenacity); this outer layer retries a whole shard once,
later, for trouble the gateway could not absorb, and never for errors that a retry cannot fix.
Shard tasks are idempotent by content key, so a retried shard only redoes what did not land.
"""

from __future__ import annotations

from prefect.cache_policies import NO_CACHE

from tasks.adapters.errors import ConfigError, FatalAPIError


def retry_unless_fatal(task, task_run, state) -> bool:
    """Retry after transient trouble; never after a fatal API error or a configuration error."""
    try:
        state.result()
    except (FatalAPIError, ConfigError):
        return False
    except Exception:
        return True
    return False


# Inputs are clients, recipes and shard ids: caching them buys nothing (the lake is the record of
# what is done) and hashing them is fragile (PREFECT.md §5).
SHARD_TASK = {"retries": 1, "retry_delay_seconds": 10, "retry_condition_fn": retry_unless_fatal,
              "cache_policy": NO_CACHE}
