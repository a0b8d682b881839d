"""The model pool and its endpoints, as validated configuration (YAML → pydantic, extra keys rejected)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlparse

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

from tasks.core.chat import Route
from tasks.core.yamlconf import load_yaml_model

# Sampling parameters a request may carry (OpenAI chat completions); anything else is a typo that
# would otherwise surface as a 400 only after earlier stages were paid for.
SAMPLING_PARAMS = ("temperature", "top_p", "max_tokens", "max_completion_tokens", "presence_penalty",
                   "frequency_penalty", "stop", "seed", "n", "logit_bias", "response_format")


def _known_sampling(v: dict[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(v) - set(SAMPLING_PARAMS))
    if unknown:
        raise ValueError(f"unknown sampling parameter(s) {', '.join(map(repr, unknown))} "
                         f"(allowed: {', '.join(SAMPLING_PARAMS)})")
    return v


Sampling = Annotated[dict[str, Any], AfterValidator(_known_sampling)]


def merge_sampling(defaults: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Request parameters over the model's defaults; a request's max_completion_tokens replaces a
    default max_tokens (and vice versa): newer OpenAI models reject requests that carry both."""
    merged = {**defaults, **overrides}
    for mine, other in (("max_tokens", "max_completion_tokens"), ("max_completion_tokens", "max_tokens")):
        if mine in overrides and other not in overrides:
            merged.pop(other, None)
    return merged


def max_tokens_of(params: dict[str, Any], default: int) -> int:
    """The completion-token cap a request carries (either field), or `default`."""
    return int(params.get("max_tokens") or params.get("max_completion_tokens") or default)


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Limits(Strict):
    """Budgets for one (endpoint, model) bucket. Omit rpm/tpm for endpoints that send no limits."""

    rpm: int | None = Field(default=None, gt=0, description="Requests per minute.")
    tpm: int | None = Field(default=None, gt=0, description="Tokens per minute (prompt + max_tokens).")
    max_concurrency: int = Field(default=256, gt=0, description="Ceiling on requests in flight.")
    initial_concurrency: int = Field(default=16, gt=0,
                                     description="Adaptive concurrency start when no limits are known.")
    refund_unused_tokens: bool = Field(
        default=False, description="Whether the endpoint refunds unused max_tokens reservation.")
    shared: bool = Field(
        default=False, description="`rpm` is one budget for every process (workers on several "
        "machines): each takes slices of it from a Prefect global rate limit "
        "(docs/rate-limits.md#shared-budgets). Needs the Prefect API.")


class Price(Strict):
    """USD per million tokens online; the batch route pays `batch_share` of that."""

    input_per_mtok: float = Field(default=0.0, ge=0)
    output_per_mtok: float = Field(default=0.0, ge=0)
    batch_share: float = Field(
        default=0.5, ge=0, le=1,
        description="Share of the online price paid on the batch route (the Batch API bills half).")

    def cost(self, prompt_tokens: int, completion_tokens: int, route: Route = "online") -> float:
        online = (prompt_tokens * self.input_per_mtok + completion_tokens * self.output_per_mtok) / 1e6
        return online * self.batch_share if route == "batch" else online


class Endpoint(Strict):
    """An OpenAI-compatible base URL plus how to authenticate and pace requests to it."""

    base_url: str
    api_key_env: str | None = Field(
        default=None, description="Name of the environment variable that holds the key.")
    api_key_secret: str | None = Field(
        default=None, description="Name of a Prefect Secret block holding the key (instead of env).")
    limits: Limits = Field(default_factory=Limits)
    timeout_s: float = Field(default=120.0, gt=0)
    max_attempts: int = Field(default=8, ge=1, description="Tries per request for retryable errors.")
    batch_api: bool = Field(default=True, description="Whether it serves the Batch API (OpenAI "
                            "does; vLLM and Ollama do not): `route: auto` uses it only if so.")
    batch_turnaround_s: float = Field(
        default=86_400, gt=0, description="Expected seconds from submitting a batch to its "
        "results (the API promises 24 h at most, often sooner): `route: auto` weighs it.")

    @field_validator("base_url")
    @classmethod
    def _url(cls, v: str) -> str:
        u = urlparse(v)
        if u.username or u.password:  # never echo it: the userinfo may be a credential
            raise ValueError("credentials in the URL are not allowed (use api_key_env)")
        if u.scheme not in ("http", "https") or not u.netloc:
            raise ValueError(f"malformed URL {v!r}: expected http(s)://host[:port]/path")
        return v.rstrip("/")

    @field_validator("api_key_env")
    @classmethod
    def _env_name(cls, v: str | None) -> str | None:
        # Never echo the value: a key pasted here by mistake must not reach logs.
        if v is not None and not re.fullmatch(r"[A-Z_][A-Z0-9_]*", v):
            raise ValueError("must name the environment variable that holds the key (UPPER_CASE), "
                             "never the key itself")
        return v


class ModelSpec(Strict):
    """One model of the pool: where it is served, what it costs, how it samples by default."""

    endpoint: str
    api_model: str | None = Field(default=None, description="Name sent to the API; default: key.")
    price: Price = Field(default_factory=Price)
    sampling: Sampling = Field(default_factory=lambda: {
        "temperature": 1.0, "top_p": 1.0, "max_tokens": 1024})
    limits: Limits | None = Field(default=None, description="Overrides the endpoint's limits.")


class PoolConfig(Strict):
    """Endpoints and the models served on them."""

    endpoints: dict[str, Endpoint]
    models: dict[str, ModelSpec]

    @model_validator(mode="after")
    def _endpoints_exist(self) -> PoolConfig:
        for name, spec in self.models.items():
            if spec.endpoint not in self.endpoints:
                raise ValueError(f"model {name!r} names unknown endpoint {spec.endpoint!r} "
                                 f"(known: {', '.join(self.endpoints)})")
        return self

    def api_model(self, name: str) -> str:
        return self.models[name].api_model or name

    def cost(self, name: str, prompt_tokens: int, completion_tokens: int,
             route: Route = "online") -> float:
        """USD for a call to model `name` on `route` at the pool's prices."""
        return self.models[name].price.cost(prompt_tokens, completion_tokens, route)

    def limits(self, name: str) -> Limits:
        spec = self.models[name]
        return spec.limits or self.endpoints[spec.endpoint].limits

    def with_base_url(self, base_url: str) -> PoolConfig:
        """A copy with every endpoint pointed at `base_url` (demo/tests: all models on one server)."""
        eps = {k: e.model_copy(update={"base_url": base_url.rstrip("/")})
               for k, e in self.endpoints.items()}
        return self.model_copy(update={"endpoints": eps})

    @classmethod
    def load(cls, path: str | Path) -> PoolConfig:
        return load_yaml_model(path, cls)
