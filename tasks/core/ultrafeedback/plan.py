"""The generation plan: which models answer each prompt, under which principle and system prompt.

Everything is a pure function of (seed, prompt_id, model), with no shared random state:

- **Models** by rendezvous hashing: rank every eligible model by `content_key(seed, prompt_id,
  model)` and keep the first `n_models`. Raising `n_models` appends models to each prompt's
  list; adding a model to the pool inserts it only where it outranks a current pick. Either way
  the completions already made stay valid and only the missing ones are generated. The export's
  `models` order is this rank order.
- **Principle** per (prompt, model) from the source's mix (principles.py), by a seeded uniform
  number, and **system prompt** uniformly from that principle's pool by a second one.
- **completion_id** = content key of (model, messages, sampling overrides): the same request
  always has the same id, and a change of system prompt, instruction or sampling makes a new one.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from pydantic import BaseModel, ConfigDict

from tasks.core.chat import ChatRequest, Route
from tasks.core.ids import content_key
from tasks.core.ultrafeedback.intake import PromptRecord
from tasks.core.ultrafeedback.principles import (
    pick_weighted,
    principle_weights,
    system_prompts,
)
from tasks.core.ultrafeedback.recipe import UltraFeedbackRecipe


class PlanItem(BaseModel):
    """One completion to generate."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    completion_id: str
    prompt_id: str
    model: str
    rank: int
    principle: str
    system_prompt_index: int
    custom_system_prompt: str
    system_prompt_sent: bool
    messages: tuple[dict[str, Any], ...]
    params: dict[str, Any]

    def request(self, route: Route = "online") -> ChatRequest:
        """The paid call that produces this completion."""
        return ChatRequest(model=self.model, messages=self.messages, params=self.params,
                           route=route, stage="generation")

    def lake_row(self) -> dict[str, Any]:
        """The row kept in the `uf_plan` table (messages are derivable, so not stored)."""
        return self.model_dump(exclude={"messages", "params"})


def unit_interval(*parts: Any) -> float:
    """A number in [0, 1) determined by `parts` (first 52 bits of their content key)."""
    return int(content_key(*parts)[:13], 16) / float(16**13)


def rank_models(seed: int, pid: str, models: Iterable[str]) -> list[str]:
    """Models in rendezvous order for prompt `pid`: the first n are its sample of n."""
    return sorted(models, key=lambda m: (content_key("ultrafeedback/model", seed, pid, m), m))


def plan_prompt(recipe: UltraFeedbackRecipe, prompt: PromptRecord) -> list[PlanItem]:
    """The `n_models` completions of one prompt, in rank order."""
    spec = recipe.plan
    chosen = rank_models(recipe.seed, prompt.prompt_id, spec.models)[: spec.n_models]
    weights = principle_weights(spec.principle_mix, prompt.source, spec.custom_mix)
    items = []
    for rank, model in enumerate(chosen):
        u = unit_interval("ultrafeedback/principle", recipe.seed, prompt.prompt_id, model)
        principle = pick_weighted(weights, u)
        pool = system_prompts(principle)
        v = unit_interval("ultrafeedback/system_prompt", recipe.seed, prompt.prompt_id, model)
        index = min(int(v * len(pool)), len(pool) - 1)
        send_system = model not in spec.no_system_prompt_models
        messages: tuple[dict[str, Any], ...] = (
            ({"role": "system", "content": pool[index]},) if send_system else ()
        ) + ({"role": "user", "content": prompt.instruction},)
        params = dict(recipe.generation.params)
        items.append(PlanItem(
            completion_id=content_key("ultrafeedback/completion", model, list(messages), params),
            prompt_id=prompt.prompt_id, model=model, rank=rank, principle=principle,
            system_prompt_index=index, custom_system_prompt=pool[index],
            system_prompt_sent=send_system, messages=messages, params=params))
    return items


def build_plan(recipe: UltraFeedbackRecipe, prompts: Iterable[PromptRecord]) -> list[PlanItem]:
    """Plan items for all prompts, ordered by (prompt_id, rank)."""
    items = [it for p in prompts for it in plan_prompt(recipe, p)]
    return sorted(items, key=lambda it: (it.prompt_id, it.rank))


def shards(items: list[Any], size: int) -> list[list[Any]]:
    """Consecutive chunks of at most `size` items."""
    return [items[i: i + size] for i in range(0, len(items), size)]
