"""Shared by the factory benchmarks: synthetic prompts, recipe and pool files, one flow run."""

from __future__ import annotations

import json
import resource
from pathlib import Path

import yaml

from tasks.adapters.settings import RECIPES_DIR

SOURCES = ("evol_instruct", "false_qa", "flan", "sharegpt", "truthful_qa", "ultrachat")


def cpu_s() -> float:
    """CPU seconds (user + system) of this process so far."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def peak_rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def recipe_file(tmp: Path, n: int, **overrides) -> Path:
    """The bundled recipe reading `n` distinct synthetic prompts over the six sources."""
    prompts = tmp / "prompts.jsonl"
    with prompts.open("w") as f:
        for i in range(n):
            f.write(json.dumps({"instruction": f"Prompt {i}: explain topic number "
                                               f"{i * 7919 % 10007} to a curious reader in a "
                                               "few sentences.",
                                "source": SOURCES[i % len(SOURCES)]}) + "\n")
    recipe = yaml.safe_load((RECIPES_DIR / "ultrafeedback.yaml").read_text())
    recipe["sources"] = [{"name": "synthetic", "path": str(prompts)}]
    recipe["max_parallel_shards"] = 8
    recipe.update(overrides)
    path = tmp / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def pool_file(tmp: Path, endpoints: dict[str, tuple[str, dict]], judge: str = "local") -> Path:
    """The bundled pool with these endpoints ({name: (base_url, limits)}): the models on
    `local`, the judge on `judge`."""
    pool = yaml.safe_load((RECIPES_DIR / "pool.yaml").read_text())
    template = pool["endpoints"]["local"]
    pool["endpoints"] = {name: {**template, "base_url": url, "limits": limits}
                         for name, (url, limits) in endpoints.items()}
    pool["models"]["gpt-4-judge"]["endpoint"] = judge
    path = tmp / "pool.yaml"
    path.write_text(yaml.safe_dump(pool))
    return path


def warm_up() -> None:
    """Start Prefect (its temporary server, imports) before anything is timed."""
    from prefect import flow

    import flows.ultrafeedback  # noqa: F401

    flow(name="warm-up")(lambda: None)()


def run_flow(tmp: Path, recipe: Path, pool: Path):
    """One `ultrafeedback` flow run in this process, data under `tmp/data`; its result."""
    from flows.ultrafeedback import UltraFeedbackParams, ultrafeedback
    from tasks.adapters.resources import Resources, activate
    from tasks.adapters.settings import Settings

    activate(Resources.build(Settings(data_dir=tmp / "data", pool_path=pool)))
    try:
        return ultrafeedback(UltraFeedbackParams(recipe=str(recipe)))
    finally:
        activate(None)
