"""Simulator configuration: validated pydantic models, loaded from named presets plus overrides.

Defaults describe an ideal endpoint (no limits, no latency, no faults); `presets.yaml` only states
how each preset differs. Overrides use dotted keys (`faults.rate_5xx=0.01`, `limits.rpm=6000`;
see `load_config`), so the CLI, docker-compose and tests share one syntax.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field

from tasks.adapters.errors import ConfigError
from tasks.core.yamlconf import apply_overrides, parse_yaml_model

PRESETS_PATH = Path(__file__).with_name("presets.yaml")

Rate = Field(default=0.0, ge=0.0, le=1.0)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Limits(_Strict):
    """Per-model admission (one pair of buckets per API model name) and the quota."""

    rpm: int | None = Field(default=None, gt=0, description="Requests per minute; None = no limit.")
    tpm: int | None = Field(default=None, gt=0, description="Tokens per minute; None = no limit.")
    bucket_seconds: float = Field(
        default=1.0, gt=0, description="Bucket capacity = limit × bucket_seconds / 60."
    )
    default_max_tokens: int = Field(
        default=1024, gt=0, description="Tokens reserved per choice when max_tokens is absent."
    )
    true_up: bool = Field(default=False, description="Refund unused reserved tokens after a 200.")
    quota_tokens: int | None = Field(
        default=None, gt=0, description="Total billed tokens before every request gets insufficient_quota."
    )
    ratelimit_headers: bool = True
    degenerate_headers: bool = Field(
        default=False, description="Azure-style quirk: x-ratelimit-* present but -1/0 values.")
    retry_after: bool = True
    retry_after_ms: bool = True


class Latency(_Strict):
    """Time per request: (ttft_s + per_token_s × tokens) × load factor, ± jitter."""

    ttft_s: float = Field(default=0.0, ge=0)
    per_token_s: float = Field(default=0.0, ge=0)
    jitter: float = Field(default=0.0, ge=0, le=1, description="Uniform ± fraction.")
    max_num_seqs: int | None = Field(
        default=None, gt=0, description="Concurrent sequences (vLLM); the rest wait in a queue."
    )
    max_waiting: int | None = Field(
        default=None, ge=0, description="Queue length beyond which requests get 503; None = unbounded."
    )
    time_factor_under_load: float = Field(
        default=1.0, ge=1, description="Latency multiplier when all max_num_seqs slots are busy."
    )


class Faults(_Strict):
    """Injected failures, each drawn per (seed, body hash, attempt); all off by default."""

    rate_429: float = Rate
    rate_5xx: float = Field(default=0.0, ge=0.0, le=1.0, description="Split evenly over 500/502/503.")
    rate_500: float = Rate
    rate_502: float = Rate
    rate_503: float = Rate
    hang: float = Rate
    malformed: float = Rate
    length: float = Rate
    role_leak: float = Rate
    hang_s: float = Field(default=30.0, ge=0)
    retry_after_s: float = Field(default=1.0, ge=0, description="retry-after of injected 429s.")


class Content(_Strict):
    """Length of generated prose (answers, user turns), in estimated tokens."""

    min_tokens: int = Field(default=40, gt=0)
    max_tokens: int = Field(default=400, gt=0, description="Cap even when max_tokens is larger.")
    max_list_items: int = Field(default=100, gt=0)


class SimConfig(_Strict):
    """Everything the simulator does; `seed` makes content and fault draws reproducible."""

    seed: int = 0
    models: list[str] = Field(
        default_factory=lambda: ["gpt-4o-mini", "gpt-4o", "gpt-4.1"],
        description="Listed by /v1/models; any model name is accepted.",
    )
    limits: Limits = Limits()
    latency: Latency = Latency()
    faults: Faults = Faults()
    content: Content = Content()


def preset_names() -> list[str]:
    """Names defined in presets.yaml."""
    return list(_presets())


def _presets() -> dict[str, dict]:
    return yaml.safe_load(PRESETS_PATH.read_text(encoding="utf-8")) or {}


def load_config(
    preset: str = "unlimited",
    seed: int | None = None,
    overrides: list[str] | dict[str, Any] | None = None,
) -> SimConfig:
    """Build a SimConfig from a preset, a seed and overrides.

    Args:
        overrides: `["limits.rpm=6000", ...]` (values parsed as YAML scalars) or
            `{"limits.rpm": 6000, ...}` (values used as given).
    """
    presets = _presets()
    if preset not in presets:
        raise ConfigError(f"simulator preset {preset!r} unknown (presets: {', '.join(presets)})")
    data = dict(presets[preset] or {})
    if seed is not None:
        data["seed"] = seed
    if isinstance(overrides, dict):
        overrides = [f"{k}={json.dumps(v)}" for k, v in overrides.items()]
    data = apply_overrides(data, list(overrides or ()))
    source = f"{PRESETS_PATH.name} preset {preset!r}" + (" (with overrides)" if overrides else "")
    return parse_yaml_model(yaml.safe_dump(data, sort_keys=False), SimConfig, source)
