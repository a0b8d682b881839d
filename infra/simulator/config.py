"""Simulator configuration: validated pydantic models, loaded from named presets plus overrides.

Defaults describe an ideal endpoint (no limits, no latency, no faults); `presets.yaml` only states
how each preset differs. Overrides use dotted keys (`faults.rate_5xx=0.01`, `limits.rpm=6000`;
see `load_config`), so the CLI, docker-compose and tests share one syntax.

The simulator stands in for a third-party endpoint, so it shares no code with the factory: this
module has its own small YAML/override loader and error class.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

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
        default=None, ge=0,
        description="Requests that may wait for a slot; one more gets a 503 (queue_full). None = unbounded.",
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
    # Translation twists, per choice of a translate reply. One uniform draw picks at most one of
    # them (in this order), so each rate is exact while they sum to at most 1.
    untranslated: float = Field(
        default=0.0, ge=0.0, le=1.0, description="Translations: the reply is the source text unchanged."
    )
    broken_code: float = Field(
        default=0.0, ge=0.0, le=1.0,
        description="Translations with code (a placeholder ⟦n⟧ or a fenced block; others are spared): "
                    "one placeholder dropped, unclosed or re-bracketed; without placeholders, a fence "
                    "line dropped or a code line replaced by Japanese.",
    )
    commentary: float = Field(
        default=0.0, ge=0.0, le=1.0,
        description="Translations: a preamble paragraph before the text, a （注：…） note after it, or both.",
    )
    hang_s: float = Field(default=30.0, ge=0)
    retry_after_s: float = Field(default=1.0, ge=0, description="retry-after of injected 429s.")


class Content(_Strict):
    """Length of generated prose (answers, user turns), in estimated tokens."""

    min_tokens: int = Field(default=40, gt=0)
    max_tokens: int = Field(default=400, gt=0, description="Cap even when max_tokens is larger.")
    max_list_items: int = Field(default=100, gt=0)


class Batch(_Strict):
    """The Batch API (/v1/files, /v1/batches) in compressed time: `window_s` seconds stand for the
    24 h completion window. Lines get the online route's content (and its content faults), never
    its rate limits, quota or request faults; the faults below are the batch's own."""

    window_s: float = Field(
        default=60.0, gt=0, description='What "24h" lasts: a batch expires this long after creation.'
    )
    validating_s: float = Field(default=1.0, ge=0)
    finalizing_s: float = Field(default=1.0, ge=0)
    cancelling_s: float = Field(default=1.0, ge=0)
    progress: float = Field(
        default=0.5, gt=0,
        description="Share of the window the lines take, evenly spaced after validation; above 1 the "
                    "window ends first and the batch expires part done.",
    )
    shuffle: bool = Field(
        default=True, description="Answer and write lines in a seeded order, not input order."
    )
    max_requests: int = Field(default=50_000, gt=0, description="Lines per batch; more fail the batch.")
    max_file_bytes: int = Field(default=200_000_000, gt=0, description="Largest upload; larger gets a 400.")
    enqueued_tokens: int | None = Field(
        default=None, gt=0,
        description="Prompt tokens per model that running batches may hold; a batch that would exceed "
                    "it fails (token_limit_exceeded). None = no limit.",
    )
    line_failure_rate: float = Field(
        default=0.0, ge=0.0, le=1.0,
        description="Share of lines answered with a failure status, drawn per (seed, body, attempt).",
    )
    line_failure_statuses: list[Literal[400, 500, 502, 503]] = Field(
        default=[500], min_length=1, description="Drawn evenly; 400 is an invalid_prompt, 5xx a server_error."
    )
    failed_lines_in: Literal["error_file", "output_file"] = Field(
        default="error_file", description="Where lines with a status other than 200 are written."
    )
    expire_after_fraction: float | None = Field(
        default=None, ge=0, le=1, description="Expire as soon as this share of lines is done."
    )
    fail_validation: bool = Field(default=False, description="Every batch fails validation.")


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
    batch: Batch = Batch()


class SimConfigError(ValueError):
    """A bad preset, override or simulator YAML file; the message is one line naming it."""


M = TypeVar("M", bound=BaseModel)


def preset_names() -> list[str]:
    """Names defined in presets.yaml."""
    return list(_presets())


def _presets() -> dict[str, dict]:
    return load_yaml(PRESETS_PATH) or {}


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
        raise SimConfigError(f"simulator preset {preset!r} unknown (presets: {', '.join(presets)})")
    data = dict(presets[preset] or {})
    if seed is not None:
        data["seed"] = seed
    if isinstance(overrides, dict):
        overrides = [f"{k}={json.dumps(v)}" for k, v in overrides.items()]
    data = apply_overrides(data, list(overrides or ()))
    source = f"{PRESETS_PATH.name} preset {preset!r}" + (" (with overrides)" if overrides else "")
    return validate(data, SimConfig, source)


def load_yaml(path: Path) -> Any:
    """A YAML file of the simulator's, parsed; errors name the file (and line, column)."""
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise SimConfigError(f"{path}: cannot read: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}:{mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).replace("\n", " ")
        raise SimConfigError(f"{path}{where}: not valid YAML: {problem}") from None


def validate(data: Any, model_cls: type[M], source: str) -> M:
    """`model_cls` from parsed data; a SimConfigError naming `source` and each bad key."""
    try:
        return model_cls.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            key = ".".join(str(p) for p in err["loc"]) or "<root>"
            if err["type"] == "extra_forbidden":
                problems.append(f"{key}: unknown key{_allowed(model_cls, err['loc'][:-1])}")
            else:
                problems.append(f"{key}: {err['msg']}")
        raise SimConfigError(f"{source}: " + "; ".join(problems)) from None


def _allowed(model_cls: type[BaseModel], path: tuple) -> str:
    """` (allowed keys: ...)` for the model at `path` (nested models and list items only)."""
    ann: Any = model_cls
    for part in path:
        if isinstance(part, int):
            continue  # a list item: same model (RootModel[list[Model]])
        field = ann.model_fields.get(str(part)) if isinstance(ann, type) else None
        ann = field.annotation if field else None
    if isinstance(ann, type) and issubclass(ann, BaseModel):
        if "root" in ann.model_fields:  # RootModel[list[Item]]: the item's keys
            ann = next(iter(getattr(ann.model_fields["root"].annotation, "__args__", ())), ann)
        return f" (allowed keys: {', '.join(ann.model_fields)})"
    return ""


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """`a.b.c=value` overrides on nested data (values parsed as YAML scalars); a numeric part
    indexes a list, other parts create mappings."""
    out = copy.deepcopy(data)
    for item in overrides:
        path, sep, raw = item.partition("=")
        if not sep or not path:
            raise SimConfigError(f"--set {item!r}: expected key.path=value")
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError:
            raise SimConfigError(f"--set {item!r}: the value is not a YAML scalar") from None
        node: Any = out
        parts = path.split(".")
        for i, part in enumerate(parts):
            key: Any = part
            if isinstance(node, list):
                if not part.isdigit() or int(part) >= len(node):
                    raise SimConfigError(f"--set {item!r}: {'.'.join(parts[:i]) or '<root>'} is a "
                                         f"list of {len(node)}; {part!r} is not an index in it")
                key = int(part)
            elif not isinstance(node, dict):
                raise SimConfigError(f"--set {item!r}: {'.'.join(parts[:i])} is not a mapping")
            if i == len(parts) - 1:
                node[key] = value
            else:
                if not isinstance(node, list) and not isinstance(node.get(key), dict | list):
                    node[key] = {}
                node = node[key]
    return out
