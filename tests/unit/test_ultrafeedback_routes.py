"""Route choice per stage and per model (issue 9): `auto` batches a model only where its endpoint
serves the Batch API within the recipe's acceptable wait; explicit routes are kept; a batch route
on an endpoint without the Batch API is a problem naming the recipe key."""

from __future__ import annotations

import pytest

from tasks.core.pool import PoolConfig
from tasks.core.ultrafeedback.recipe import UltraFeedbackRecipe, check_against_pool, resolve_routes


def pool(turnaround_s: float = 3600) -> PoolConfig:
    return PoolConfig.model_validate({
        "endpoints": {"openai": {"base_url": "https://api.example.com/v1",
                                 "batch_turnaround_s": turnaround_s},
                      "vllm": {"base_url": "http://127.0.0.1:8000/v1", "batch_api": False}},
        "models": {"gpt-4": {"endpoint": "openai"}, "gpt-3.5-turbo": {"endpoint": "openai"},
                   "llama": {"endpoint": "vllm"}, "judge": {"endpoint": "openai"}},
    })


def recipe(**sections) -> UltraFeedbackRecipe:
    judges = {s: {"judge_model": "judge", **sections.pop(s, {})} for s in ("annotation", "critique")}
    return UltraFeedbackRecipe.model_validate({
        "sources": [{"name": "s", "path": "x.jsonl"}],
        "plan": {"models": ["gpt-4", "gpt-3.5-turbo", "llama"], "n_models": 2},
        **judges, **sections})


def test_auto_batches_models_whose_endpoint_serves_the_batch_api_and_keeps_the_others_online():
    r = resolve_routes(recipe(generation={"route": "auto"}, annotation={"route": "auto"},
                              critique={"route": "online"}), pool())
    assert {m: r.generation.route_of(m) for m in r.plan.models} == {
        "gpt-4": "batch", "gpt-3.5-turbo": "batch", "llama": "online"}
    assert r.annotation.route_of("judge") == "batch"
    assert r.critique.route_of("judge") == "online"


def test_auto_stays_online_when_the_endpoint_turnaround_exceeds_the_acceptable_wait():
    r = resolve_routes(recipe(annotation={"route": "auto"}, batch={"max_wait_s": 600}), pool(3600))
    assert r.annotation.route_of("judge") == "online"
    r = resolve_routes(recipe(annotation={"route": "auto"}, batch={"max_wait_s": 7200}), pool(3600))
    assert r.annotation.route_of("judge") == "batch"


def test_per_model_routes_override_the_stage_route():
    r = resolve_routes(recipe(generation={"route": "batch", "model_routes": {"llama": "online"}}),
                       pool())
    assert [r.generation.route_of(m) for m in ("gpt-4", "gpt-3.5-turbo", "llama")] == [
        "batch", "batch", "online"]


def test_batch_on_an_endpoint_without_the_batch_api_is_a_problem_naming_the_stage_and_model():
    problems = check_against_pool(recipe(generation={"route": "batch"}), pool())
    assert problems == ["generation: route batch for 'llama', but its endpoint 'vllm' has no "
                        "Batch API (batch_api: false)"]
    problems = check_against_pool(recipe(generation={"model_routes": {"nope": "batch"}}), pool())
    assert problems == ["generation.model_routes: 'nope' is not in the model pool"]


def test_an_unresolved_auto_route_is_refused_rather_than_guessed():
    with pytest.raises(ValueError, match="still auto"):
        recipe(annotation={"route": "auto"}).annotation.route_of("judge")
