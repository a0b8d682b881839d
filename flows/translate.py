"""Flow `translate`: a landed or exported set in another language, same structure, ids and
scores (docs/translation.md).

Reads: a recipe (flows/recipes/translate.yaml + overrides) and the set it names. Writes to the
lake: exports/<set>-<lang>/<name>/ (Parquet + JSONL per split, flags.jsonl, README.md card,
DatasetDict) and runs/translate/<run>/manifest.json. Publishes a summary artifact with the
counts, flags by reason, and tokens and cost.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any, ClassVar

from prefect import flow

from flows.params import RECIPE, ShardedParams
from tasks.adapters.resources import current
from tasks.adapters.settings import RECIPES_DIR
from tasks.core.shards import PartRun
from tasks.core.tokens import estimate_tokens
from tasks.core.translate.prompt import system_prompt
from tasks.core.translate.recipe import TranslateRecipe
from tasks.core.usage import usage_table
from tasks.reporting import markdown_table, publish_summary, write_manifest
from tasks.translate.sets import (
    TranslateExport,
    block_chunks,
    chunk_digest,
    input_splits,
    plan,
    translate_set,
)


class TranslateParams(ShardedParams):
    """The translate recipe (flows/recipes/translate.yaml by default). `set` and `lang` are
    shorthands of the recipe's `set` and `translation.lang`, as the CLI's options."""

    default_file: ClassVar[Path] = RECIPES_DIR / "translate.yaml"
    recipe: TranslateRecipe = RECIPE

    @classmethod
    def shorthand(cls, data: dict[str, Any]) -> dict[str, Any]:
        given = [f"set={data.pop('set')}"] if "set" in data else []
        given += [f"translation.lang={data.pop('lang')}"] if "lang" in data else []
        return {**data, "overrides": [*given, *(data.get("overrides") or [])]}


@flow(name="translate")
def translate(params: TranslateParams) -> TranslateExport | PartRun:
    """Any set → the same set in another language (text fields translated, the rest kept)."""
    res = current()
    recipe = params.recipe
    out = translate_set(recipe, params, params.scale)
    if isinstance(out, PartRun):
        return out
    write_manifest(res, "translate", recipe, out.counts.model_dump())
    splits = [{"split": s, "rows": n} for s, n in out.rows.items()]
    counts = [{"count": k, "value": v} for k, v in out.counts.model_dump().items()]
    flags = [{"reason": k, "chunks": v, "records": out.flagged_records.get(k, 0)}
             for k, v in out.flags.items()]
    usage = usage_table(out.usage)
    publish_summary(f"translate-{recipe.set}-{recipe.lang}-summary", "\n".join([
        f"# {recipe.set} → {recipe.lang}", "", "## Splits", markdown_table(splits),
        "## Counts", markdown_table(counts),
        *(["## Parts", markdown_table([c.model_dump() for c in out.parts])] if out.parts else []),
        "## Flags by reason", markdown_table(flags),
        *(["Flagged records:", *(f"- {e}" for e in out.flagged_examples)] if out.flagged_examples else []),
        "## Tokens and cost", markdown_table(usage)]),
        {"splits": splits, "counts": counts, "flags": flags, "usage": usage})
    return out


def dry_run(params: TranslateParams) -> dict[str, Any]:
    """Chunks, unique chunks, estimated tokens and cost per route, before anything is paid:
    input = system prompt + chunk, output ≈ `dry_run_output_ratio` × the chunk's tokens; the
    first attempts only (retranslations come on top)."""
    res = current()
    recipe = params.recipe
    spec = recipe.translation
    system = estimate_tokens(system_prompt(spec.lang))
    tin = tout = 0
    unique: Counter[int] = Counter()
    records = 0
    _, options = input_splits(res.lake, recipe.input_path())
    for n, chunks in block_chunks(recipe, plan(res, recipe), options):
        records += n
        for chunk in chunks:
            digest = chunk_digest(chunk)
            if digest not in unique:  # a repeat is a journal hit: free
                tin += system + estimate_tokens(chunk.text)
                tout += round(recipe.dry_run_output_ratio * estimate_tokens(chunk.text))
            unique[digest] += 1
    return {"set": recipe.set, "lang": spec.lang,
            "records": records, "chunks": sum(unique.values()), "unique_chunks": len(unique),
            "input_tokens": tin, "output_tokens": tout,
            "online_cost_usd": round(res.pool.cost(spec.model, tin, tout, "online"), 4),
            "batch_cost_usd": round(res.pool.cost(spec.model, tin, tout, "batch"), 4)}
