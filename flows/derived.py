"""Flows `export-sft` and `export-dpo`: the derived sets, from what the raw flows landed.

Reads: a recipe (flows/recipes/{sft,dpo}.yaml + `--set` overrides) and the raw export it names.
Writes to the lake: exports/{sft,dpo}/<name>/ (Parquet per split, README.md card, DatasetDict)
and runs/export-{sft,dpo}/<run>/manifest.json. Publishes a summary artifact with the counts.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from prefect import flow

from flows.params import RECIPE, RecipeParams
from tasks.adapters.resources import current
from tasks.adapters.settings import RECIPES_DIR
from tasks.core.derived.binarize import DPORecipe
from tasks.core.derived.sft import SFTRecipe
from tasks.derived.dpo import DPOExport, export_dpo
from tasks.derived.sft import SFTExport, export_sft
from tasks.reporting import markdown_table, publish_summary, write_manifest


class SFTExportParams(RecipeParams):
    """The SFT-set recipe (flows/recipes/sft.yaml by default)."""

    default_file: ClassVar[Path] = RECIPES_DIR / "sft.yaml"
    recipe: SFTRecipe = RECIPE


class DPOExportParams(RecipeParams):
    """The DPO-set recipe (flows/recipes/dpo.yaml by default): binarization preset, splits."""

    default_file: ClassVar[Path] = RECIPES_DIR / "dpo.yaml"
    recipe: DPORecipe = RECIPE


def _summary(kind: str, published_rows: dict[str, int], counts: dict[str, int],
             extra: list[str]) -> None:
    splits = [{"split": s, "rows": n} for s, n in published_rows.items()]
    rows = [{"count": k, "value": v} for k, v in counts.items()]
    publish_summary(f"export-{kind}-summary", "\n".join([
        f"# {kind.upper()} export", "", "## Splits", markdown_table(splits), "## Counts",
        markdown_table(rows), *extra]), {"splits": splits, "counts": rows})


@flow(name="export-dpo")
def dpo_export(params: DPOExportParams | None = None) -> DPOExport:
    """Raw UltraFeedback export → chosen/rejected pairs (ultrafeedback_binarized shape)."""
    res = current()
    params = params or DPOExportParams()
    recipe = params.recipe
    out = export_dpo(recipe, str(params.base))
    write_manifest(res, "export-dpo", recipe, out.counts.model_dump())
    _summary("dpo", out.published.rows, out.counts.model_dump(), [f"Hub: {out.published.hub}"])
    return out


@flow(name="export-sft")
def sft_export(params: SFTExportParams | None = None) -> SFTExport:
    """Landed UltraChat dialogues → truecased, filtered SFT dialogues (ultrachat_200k shape)."""
    res = current()
    params = params or SFTExportParams()
    recipe = params.recipe
    out = export_sft(recipe, str(params.base))
    write_manifest(res, "export-sft", recipe, out.counts.model_dump())
    phrases = [{"phrase": p, "dialogues dropped": n} for p, n in out.disclaimer_phrases.items()]
    _summary("sft", out.published.rows, out.counts.model_dump(),
             ["## Disclaimer phrases", markdown_table(phrases), f"Hub: {out.published.hub}"])
    return out
