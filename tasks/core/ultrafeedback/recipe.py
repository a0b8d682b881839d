"""The UltraFeedback recipe: validated configuration for one reproduction run (YAML → pydantic).

Every knob of the flow lives here with its default and the dataset fact it comes from
(docs/datasets.md). Checks that need the model pool (model names, `n_models` ≤ pool size) are in
`check_against_pool`, called by the flow once the pool is loaded, so the errors still name the
recipe key.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from tasks.core.chat import Route
from tasks.core.pool import PoolConfig, Sampling
from tasks.core.ultrafeedback.principles import PRINCIPLES, SOURCES

# The 17 `model` strings of the released data (docs/datasets.md#model-pool, TRL's choices list).
ULTRAFEEDBACK_MODELS = (
    "alpaca-7b", "bard", "falcon-40b-instruct", "gpt-3.5-turbo", "gpt-4", "llama-2-13b-chat",
    "llama-2-70b-chat", "llama-2-7b-chat", "mpt-30b-chat", "pythia-12b", "starchat",
    "ultralm-13b", "ultralm-65b", "vicuna-33b", "wizardlm-13b", "wizardlm-70b", "wizardlm-7b",
)

FINE_GRAINED_ASPECTS = ("instruction_following", "honesty", "truthfulness", "helpfulness")
OVERALL_ASPECT = "overall-rating"


ScoreRevision = Literal["fixed", "zephyr"]  # docs/datasets.md#overall-score-fix
ROUTE_HELP = ("`online` (one request at a time), `batch` (the endpoint's Batch API, half the "
              "price, answers within its window; docs/rate-limits.md#batch-api) or `auto` (batch "
              "where the endpoint serves it and its turnaround is within `batch.max_wait_s`).")
RouteChoice = Literal["online", "batch", "auto"]

# `id` is optional: the prompt's id in its source dataset, carried through every export
MAPPABLE_FIELDS = ("instruction", "source", "correct_answers", "incorrect_answers", "id")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PromptSource(_Strict):
    """One place prompts come from, and how its fields map onto a prompt record."""

    name: str = Field(description="Label kept with every prompt and quarantine row of this source.")
    path: str | None = Field(
        default=None, description="Local JSON/JSONL/Parquet/CSV file or `datasets` save_to_disk "
        "directory; relative paths resolve against the recipe file's directory.")
    dataset: str | None = Field(default=None, description="Hugging Face dataset name (hub/cache).")
    config: str | None = Field(default=None, description="Dataset configuration name.")
    split: str = Field(default="train", description="Split to read (HF datasets).")
    format: Literal["auto", "jsonl", "json", "parquet", "csv", "hf_disk"] = "auto"
    source: str | None = Field(
        default=None, description="Constant source label (e.g. flan) for every row; otherwise "
        "read from the `source` field mapping.")
    fields: dict[str, str] = Field(
        default_factory=lambda: {"instruction": "instruction", "source": "source",
                                 "correct_answers": "correct_answers",
                                 "incorrect_answers": "incorrect_answers"},
        description="Prompt field → dotted path in the source row (e.g. conversations.0.value); "
        "`id` (optional) is the row's id in its source dataset, kept in every export.")
    limit: int | None = Field(default=None, gt=0, description="Read at most this many rows.")

    @model_validator(mode="after")
    def _one_location(self) -> PromptSource:
        if (self.path is None) == (self.dataset is None):
            raise ValueError(f"source {self.name!r}: give exactly one of `path` or `dataset`")
        if "instruction" not in self.fields:
            raise ValueError(f"source {self.name!r}: `fields` must map `instruction`")
        unknown = set(self.fields) - set(MAPPABLE_FIELDS)
        if unknown:
            raise ValueError(f"source {self.name!r}: unknown field mapping(s) {sorted(unknown)} "
                             f"(allowed: {', '.join(MAPPABLE_FIELDS)})")
        return self


class PlanSpec(_Strict):
    """Which models answer each prompt, and under which principle (docs/datasets.md#model-sampling,
    docs/datasets.md#principles)."""

    models: list[str] = Field(
        default_factory=lambda: list(ULTRAFEEDBACK_MODELS),
        description="Pool models eligible for generation (default: the 17 UltraFeedback models).")
    n_models: int = Field(default=4, ge=1, description="Distinct models sampled per prompt.")
    principle_mix: Literal["code", "paper", "custom"] = Field(
        default="code", description="`code`: the published sampling code (default, see "
        "principles.py); `paper`: the README table; `custom`: `custom_mix`.")
    custom_mix: dict[str, dict[str, float]] = Field(
        default_factory=dict, description="source → {principle: weight}; key `default` covers "
        "sources not listed. Used when principle_mix is custom.")
    no_system_prompt_models: list[str] = Field(
        default_factory=lambda: ["wizardlm-7b"],
        description="Models sent the instruction alone (the published code gives wizardlm-7b no "
        "system prompt); the sampled principle is still recorded.")

    @field_validator("models")
    @classmethod
    def _unique(cls, v: list[str]) -> list[str]:
        dupes = sorted({m for m in v if v.count(m) > 1})
        if dupes:
            raise ValueError(f"models listed twice: {', '.join(dupes)}")
        if not v:
            raise ValueError("at least one model is needed")
        return v

    @model_validator(mode="after")
    def _mix(self) -> PlanSpec:
        if self.n_models > len(self.models):
            raise ValueError(f"n_models={self.n_models} exceeds the {len(self.models)} models listed")
        if self.principle_mix == "custom" and not self.custom_mix:
            raise ValueError("principle_mix is custom but custom_mix is empty")
        for src, weights in self.custom_mix.items():
            if src != "default" and src not in SOURCES:
                raise ValueError(f"custom_mix: unknown source {src!r} "
                                 f"(known: {', '.join(SOURCES)}, default)")
            bad = set(weights) - set(PRINCIPLES)
            if bad:
                raise ValueError(f"custom_mix.{src}: unknown principle(s) {sorted(bad)} "
                                 f"(known: {', '.join(PRINCIPLES)})")
            if any(w < 0 for w in weights.values()) or sum(weights.values()) <= 0:
                raise ValueError(f"custom_mix.{src}: weights must be ≥ 0 with a positive sum")
        return self


class Routed(_Strict):
    """How a stage's calls are sent: one route for the stage, overridden per pool model."""

    route: RouteChoice = Field(default="online", description=ROUTE_HELP)
    model_routes: dict[str, RouteChoice] = Field(
        default_factory=dict, description="Per pool model, over `route` (e.g. one generator "
        "on a local vLLM online, the others batched).")

    def route_of(self, model: str) -> Route:
        """The route of `model`'s calls, once `resolve_routes` has decided every `auto`."""
        route = self.model_routes.get(model, self.route)
        if route == "auto":
            raise ValueError(f"route of {model!r} is still auto: resolve_routes decides it")
        return route


class GenerationSpec(Routed):
    """Completion requests: sampling on top of each pool model's defaults
    (docs/datasets.md#system-prompts: T=1, top_p=1, max_tokens=1024, which the bundled pool
    already sets)."""

    params: Sampling = Field(default_factory=dict, description="Overrides of pool sampling.")


class JudgeSpec(Routed):
    """A GPT-4-class judge call: model, sampling, re-asks on unparseable replies, shard size."""

    judge_model: str = Field(default="gpt-4-judge", description="Pool model used as the judge.")
    params: Sampling = Field(default_factory=lambda: {
        "temperature": 0, "top_p": 0.6, "max_tokens": 500})
    max_reasks: int = Field(default=3, ge=0, le=10,
                            description="Extra calls after an unparseable reply (original: ≤ 10).")
    shard_size: int = Field(default=128, ge=1, le=5000, description="Judge calls per Prefect task.")


class AnnotationSpec(JudgeSpec):
    """Fine-grained preference pass (docs/datasets.md#annotation), or distilabel's cheaper
    overall-rating mode."""

    mode: Literal["fine_grained", "overall_rating"] = Field(
        default="fine_grained", description="fine_grained: one call per (prompt, aspect) for the "
        "4 aspects; overall_rating: one holistic 1-5 call per prompt (4× cheaper).")

    @property
    def aspects(self) -> tuple[str, ...]:
        return FINE_GRAINED_ASPECTS if self.mode == "fine_grained" else (OVERALL_ASPECT,)


class CritiqueSpec(JudgeSpec):
    """Critique and overall score pass (docs/datasets.md#critique): one call per completion,
    score 1-10."""

    enabled: bool = True
    params: Sampling = Field(default_factory=lambda: {
        "temperature": 0, "top_p": 0.6, "max_tokens": 1024})


class ExportSpec(_Strict):
    """Where the raw UltraFeedback export lands in the lake."""

    name: str = Field(default="ultrafeedback", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$",
                      description="File stem: exports/ultrafeedback/<name>.{jsonl,parquet}.")
    score_revision: ScoreRevision = Field(
        default="fixed", description="`fixed`: overall scores as the judge wrote them; `zephyr`: "
        "the first release's bug, a score of 1 stored as 10 (zephyr-7b-beta's DPO data).")


class BatchSpec(_Strict):
    """How a run uses the batch route (stages with `route: batch`)."""

    wait_s: float = Field(default=3600, ge=0, description="How long a run waits for its "
                          "batches; calls still running then stay pending, and the next run "
                          "collects them without paying again.")
    linger_s: float = Field(default=2.0, ge=0, description="Batch calls arriving within this "
                            "many seconds of each other share one batch file.")
    poll_s: float = Field(default=30.0, gt=0, description="Seconds between status polls.")
    retry: Literal["batch", "online", "none"] = Field(
        default="batch", description="Lines that failed for a passing reason (5xx, 429, the "
        "expired or lost rest of a batch) are retried in this run: in a new batch, online "
        "(full price, at once), or not (the next run retries them).")
    max_resubmits: int = Field(default=2, ge=0, le=10, description="Retry rounds per call.")
    max_wait_s: float = Field(default=86_400, gt=0, description="`route: auto` batches a model "
                              "only if its endpoint's batch_turnaround_s is within this.")


class UltraFeedbackRecipe(_Strict):
    """A whole UltraFeedback reproduction: prompts, plan, generation, judging, export."""

    seed: int = Field(default=42, description="Seeds model/principle/system-prompt sampling and "
                      "judge shuffles; same seed + same journal ⇒ byte-identical export.")
    sources: list[PromptSource] = Field(min_length=1)
    max_instruction_chars: int = Field(
        default=8000, gt=0, description="Longer instructions are quarantined (FLAN 'overly long').")
    plan: PlanSpec = Field(default_factory=PlanSpec)
    generation: GenerationSpec = Field(default_factory=GenerationSpec)
    annotation: AnnotationSpec = Field(default_factory=AnnotationSpec)
    critique: CritiqueSpec = Field(default_factory=CritiqueSpec)
    shard_prompts: int = Field(
        default=32, ge=1, le=2000, description="Prompts per shard task; each makes about "
        "n_models × (1 + 1) + aspects calls per prompt (12 with the defaults: 384 per shard).")
    max_parallel_shards: int = Field(default=4, ge=1, le=64,
                                     description="Shard tasks running at once.")
    export: ExportSpec = Field(default_factory=ExportSpec)
    batch: BatchSpec = Field(default_factory=BatchSpec)

    @property
    def models(self) -> list[str]:
        """Every pool model this recipe calls (generators and judges), sorted."""
        judges = [self.annotation.judge_model, *([self.critique.judge_model]
                                                 if self.critique.enabled else [])]
        return sorted({*self.plan.models, *judges})

    @property
    def with_id(self) -> bool:
        """Whether the exports carry the source `id` (some source maps one)."""
        return any("id" in s.fields for s in self.sources)

    @model_validator(mode="after")
    def _unique_sources(self) -> UltraFeedbackRecipe:
        names = [s.name for s in self.sources]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"source names must be unique: {', '.join(dupes)}")
        return self


def check_against_pool(recipe: UltraFeedbackRecipe, pool: PoolConfig) -> list[str]:
    """Problems between the recipe and the pool, each naming the recipe key."""
    problems = [f"plan.models: {m!r} is not in the model pool" for m in recipe.plan.models
                if m not in pool.models]
    for key, spec in (("annotation", recipe.annotation), ("critique", recipe.critique)):
        if spec.judge_model not in pool.models:
            problems.append(f"{key}.judge_model: {spec.judge_model!r} is not in the model pool")
    for key, spec in _routed(recipe):
        for model in spec.model_routes:
            if model not in pool.models:
                problems.append(f"{key}.model_routes: {model!r} is not in the model pool")
        for model in _stage_models(recipe, key):
            endpoint = pool.models[model].endpoint if model in pool.models else None
            if (endpoint and spec.model_routes.get(model, spec.route) == "batch"
                    and not pool.endpoints[endpoint].batch_api):
                problems.append(f"{key}: route batch for {model!r}, but its endpoint "
                                f"{endpoint!r} has no Batch API (batch_api: false)")
    return problems


def resolve_routes(recipe: UltraFeedbackRecipe, pool: PoolConfig) -> UltraFeedbackRecipe:
    """The recipe with every stage's route fixed per model: `auto` becomes `batch` where the
    model's endpoint serves the Batch API with a turnaround within `batch.max_wait_s`, else
    `online` (an explicit `batch` where there is none is a `check_against_pool` problem)."""
    def decide(model: str, choice: RouteChoice) -> Route:
        endpoint = pool.endpoints[pool.models[model].endpoint]
        if choice != "auto":
            return choice
        ok = endpoint.batch_api and endpoint.batch_turnaround_s <= recipe.batch.max_wait_s
        return "batch" if ok else "online"

    updates = {}
    for key, spec in _routed(recipe):
        models = _stage_models(recipe, key)
        routes = {m: decide(m, spec.model_routes.get(m, spec.route)) for m in models}
        # stage-level route: the judges' one model, or the generators' common route
        stage = routes[models[0]] if len(set(routes.values())) == 1 else "online"
        updates[key] = spec.model_copy(update={"route": stage, "model_routes": {
            m: r for m, r in routes.items() if r != stage}})
    return recipe.model_copy(update=updates)


def _routed(recipe: UltraFeedbackRecipe) -> list[tuple[str, Routed]]:
    return [("generation", recipe.generation), ("annotation", recipe.annotation),
            ("critique", recipe.critique)]


def _stage_models(recipe: UltraFeedbackRecipe, stage: str) -> list[str]:
    if stage == "generation":
        return list(recipe.plan.models)
    return [(recipe.annotation if stage == "annotation" else recipe.critique).judge_model]
