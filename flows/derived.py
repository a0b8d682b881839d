"""Flows `export-sft` and `export-dpo`: the derived sets, from what the raw flows landed.

Reads: a recipe (flows/recipes/{sft,dpo}.yaml + `--set` overrides) and the raw export it names.
Writes to the lake: exports/{sft,dpo}/<name>/ (Parquet per split, README.md card, DatasetDict)
and runs/export-{sft,dpo}/<run>/manifest.json. Publishes a summary artifact with the counts.
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow
from pydantic import BaseModel, Field

from tasks.adapters.resources import current
from tasks.adapters.settings import RECIPES_DIR
from tasks.core.derived.binarize import DPORecipe
from tasks.core.derived.sft import SFTRecipe
from tasks.core.yamlconf import load_recipe
from tasks.derived.dpo import DPOExport, export_dpo
from tasks.derived.sft import SFTExport, export_sft
from tasks.reporting import markdown_table, publish_summary, write_manifest


class ExportParams(BaseModel):
    """Which recipe to run, and overrides of its keys."""

    recipe: str | None = Field(default=None, description="Path of the recipe YAML (default: "
                               "flows/recipes/<sft|dpo>.yaml).")
    overrides: list[str] = Field(default_factory=list,
                                 description="`key.path=value` overrides, like `--set` "
                                             "(e.g. preset=zephyr).")


DEFAULT_PARAMS = ExportParams()


RECIPES = {"sft": SFTRecipe, "dpo": DPORecipe}


def resolve(params: ExportParams, kind: str) -> tuple[SFTRecipe | DPORecipe, str]:
    """The validated recipe of a `kind` export and the directory its paths are relative to."""
    path = params.recipe or str(RECIPES_DIR / f"{kind}.yaml")
    return load_recipe(path, RECIPES[kind], params.overrides), str(Path(path).resolve().parent)


def _summary(kind: str, published_rows: dict[str, int], counts: dict[str, int],
             extra: list[str]) -> None:
    splits = [{"split": s, "rows": n} for s, n in published_rows.items()]
    rows = [{"count": k, "value": v} for k, v in counts.items()]
    publish_summary(f"export-{kind}-summary", "\n".join([
        f"# {kind.upper()} export", "", "## Splits", markdown_table(splits), "## Counts",
        markdown_table(rows), *extra]), {"splits": splits, "counts": rows})


@flow(name="export-dpo")
def dpo_export(params: ExportParams = DEFAULT_PARAMS) -> DPOExport:
    """Raw UltraFeedback export → chosen/rejected pairs (ultrafeedback_binarized shape)."""
    res = current()
    recipe, base_dir = resolve(params, "dpo")
    out = export_dpo(recipe, base_dir)
    write_manifest(res, "export-dpo", recipe, out.counts.model_dump())
    _summary("dpo", out.published.rows, out.counts.model_dump(), [f"Hub: {out.published.hub}"])
    return out


@flow(name="export-sft")
def sft_export(params: ExportParams = DEFAULT_PARAMS) -> SFTExport:
    """Landed UltraChat dialogues → truecased, filtered SFT dialogues (ultrachat_200k shape)."""
    res = current()
    recipe, base_dir = resolve(params, "sft")
    out = export_sft(recipe, base_dir)
    write_manifest(res, "export-sft", recipe, out.counts.model_dump())
    phrases = [{"phrase": p, "dialogues dropped": n} for p, n in out.disclaimer_phrases.items()]
    _summary("sft", out.published.rows, out.counts.model_dump(),
             ["## Disclaimer phrases", markdown_table(phrases), f"Hub: {out.published.hub}"])
    return out
