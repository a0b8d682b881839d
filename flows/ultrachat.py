"""Flow `ultrachat`: seeded openings in three sectors → user-simulator ⇄ assistant dialogues →
filters → lake/warehouse → raw export.

Reads: the recipe (flows/recipes/ultrachat.yaml and its data files), the model pool, the journal.
Writes: lake tables ultrachat_{openings,turns,dialogues,rejects,kept,usage} and their warehouse
views; exports under `<export.prefix>/<name>/` (ultrachat.jsonl/.parquet in the raw
{"id", "data"} shape, messages.jsonl/.parquet); a manifest under runs/ultrachat/; progress and
summary artifacts.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, ClassVar

from prefect import flow
from prefect.task_runners import ThreadPoolTaskRunner

from flows.params import RECIPE, ShardedParams
from tasks.adapters.errors import ConfigError
from tasks.adapters.resources import current, run
from tasks.adapters.settings import RECIPES_DIR
from tasks.core.shards import PartRun
from tasks.core.ultrachat import summary as sm
from tasks.core.ultrachat.dialogue import shard_plan
from tasks.core.ultrachat.recipe import UltraChatRecipe, check_against_pool
from tasks.reporting import markdown_table, publish_summary, write_manifest
from tasks.scaleout import plan_id, run_shared
from tasks.ultrachat.dialogues import run_dialogue_shard
from tasks.ultrachat.export import export_dialogues, filter_dialogues
from tasks.ultrachat.openings import dry_run_plan, make_openings


class UltraChatParams(ShardedParams):
    """The UltraChat recipe (flows/recipes/ultrachat.yaml by default; data paths relative to
    `base_dir`)."""

    default_file: ClassVar[Path] = RECIPES_DIR / "ultrachat.yaml"
    recipe: UltraChatRecipe = RECIPE

    def load(self) -> UltraChatRecipe:
        """The recipe with its data paths resolved, its models checked against the pool before
        anything is paid."""
        recipe = self.recipe.resolved(self.base)
        problems = check_against_pool(recipe, set(current().pool.models))
        if problems:
            raise ConfigError("recipe: " + "; ".join(problems))
        return recipe


def plan(params: UltraChatParams) -> dict[str, Any]:
    """What a run would do (for --dry-run): the resolved recipe and planned counts."""
    recipe = params.load()
    return {"recipe": recipe.model_dump(mode="json"), "plan": dry_run_plan(recipe)}


@flow(name="ultrachat", task_runner=ThreadPoolTaskRunner(max_workers=8))
def ultrachat(params: UltraChatParams | None = None) -> dict[str, Any] | PartRun:
    """Make UltraChat-style dialogues for the recipe; return counts and export paths."""
    params = params or UltraChatParams()
    res = current().new_run()
    recipe = params.load()
    run(res.gateway.preflight(recipe.models.model_dump().values()))
    openings = [f.result() for f in [make_openings.submit(recipe, n) for n, _ in recipe.enabled()]]
    jobs = shard_plan([(o.key, o.selected) for o in openings], recipe.dialogue.shard_size)
    started = time.monotonic()
    # the dialogue shards, shared with part runs if asked (the openings have landed)
    shared = run_shared("ultrachat", params, params.scale, plan_id(jobs), jobs,
                        lambda job: run_dialogue_shard.submit(recipe, *job),
                        recipe.dialogue.shard_concurrency, f"ultrachat {recipe.name} dialogues")
    if shared.part is not None:
        return shared.part
    shards, children = shared.shards, shared.children
    keys = [s.key for s in shards]
    elapsed = time.monotonic() - started

    filtered = filter_dialogues(recipe, keys)
    exported = export_dialogues(recipe, filtered.key, keys)

    counts, tables = sm.run_report(openings, shards, filtered, exported, elapsed)
    if children:
        tables["parts"] = [c.model_dump() for c in children]
    publish_summary(sm.artifact_key(recipe.name),
                    sm.run_markdown(recipe.name, counts, tables, markdown_table), tables)
    manifest = write_manifest(res, "ultrachat", recipe, counts)
    return {**counts, "exports": exported.paths, "manifest": manifest, "tables": tables}
