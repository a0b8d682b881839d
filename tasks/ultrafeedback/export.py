"""The raw UltraFeedback export, streamed block by block: JSONL and Parquet, never the whole run
in memory.

Blocks are consecutive ranges of prompt ids, so reading them in order and each block's prompts
in order gives the export's order (by prompt_id). Each block's rows are read from its own
shards only (named by its block key), the records built by the pure join of
tasks/core/ultrafeedback/export.py, and written out a batch of blocks at a time: the Parquet
file gets one row group per batch, the JSONL one line per record. The bytes depend only on the
rows, so the same recipe and journal give the same files.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
from prefect import task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, ConfigDict

from tasks.adapters.lake import ROW_GROUP_SIZE, WRITER_OPTIONS
from tasks.adapters.resources import Resources, current
from tasks.core.ids import to_jsonl
from tasks.core.ultrafeedback.export import Summary, export_schema, join_records
from tasks.core.ultrafeedback.intake import PromptRecord
from tasks.core.ultrafeedback.judge import annotation_jobs, answered_completions, critique_jobs
from tasks.core.ultrafeedback.plan import plan_prompt
from tasks.core.ultrafeedback.recipe import UltraFeedbackRecipe
from tasks.core.ultrafeedback.tables import ANNOTATIONS, COMPLETIONS, CRITIQUES, PROMPTS
from tasks.ultrafeedback.blocks import block_key
from tasks.ultrafeedback.intake import block_shard

BATCH_RECORDS = 2000  # records per Parquet row group and per JSONL write


class Export(BaseModel):
    """Where the export landed and what it holds."""

    model_config = ConfigDict(extra="forbid")

    jsonl: str
    parquet: str
    counts: dict[str, int]
    rating_histogram: list[dict]
    score_histogram: list[dict]
    principles: list[dict]


def block_records(res: Resources, recipe: UltraFeedbackRecipe, intake: str,
                  block: int) -> list[dict]:
    """The export records of one block, in prompt_id order."""
    lake = res.lake
    key = block_key(intake, block)
    prompts = [PromptRecord.model_validate(r)
               for r in lake.read_shard(PROMPTS, block_shard(intake, block)).to_pylist()]
    plan = [it for p in prompts for it in plan_prompt(recipe, p)]
    completions = lake.read_table(COMPLETIONS, ["completion_id", "response"], prefix=key)
    annotations = lake.read_table(ANNOTATIONS, ["annotation_id", "completion_id", "aspect",
                                                "annotation"], prefix=key)
    critiques = lake.read_table(CRITIQUES, ["critique_id", "completion_id", "critique",
                                            "overall_score"], prefix=key)
    completions = completions.to_pylist()
    responses = {r["completion_id"]: r["response"] for r in completions
                 if r["response"] is not None}
    answered = answered_completions(plan, responses)
    by_id = {p.prompt_id: p for p in prompts}
    wanted_ann = [j.annotation_id for j in annotation_jobs(recipe.seed, recipe.annotation,
                                                           by_id, answered)]
    wanted_crit = ([j.critique_id for j in critique_jobs(recipe.critique, by_id, answered)]
                   if recipe.critique.enabled else [])
    return join_records(prompts, plan, completions, annotations.to_pylist(),
                        critiques.to_pylist(), annotation_ids=wanted_ann,
                        critique_ids=wanted_crit, aspects=recipe.annotation.aspects,
                        with_id=recipe.with_id, score_revision=recipe.export.score_revision)


@task(name="uf-export", cache_policy=NO_CACHE)
def export(recipe: UltraFeedbackRecipe, intake: str, blocks: int) -> Export:
    """Write exports/ultrafeedback/<name>.{jsonl,parquet} for this intake's prompts."""
    res = current()
    aspects = recipe.annotation.aspects
    schema = export_schema(aspects, with_id=recipe.with_id,
                           score_revision=recipe.export.score_revision)
    summary = Summary(aspects)
    base = f"exports/ultrafeedback/{recipe.export.name}"
    with res.lake.writer(f"{base}.jsonl") as jsonl, res.lake.writer(f"{base}.parquet") as raw, \
            pq.ParquetWriter(raw, schema, **WRITER_OPTIONS) as parquet:
        batch: list[dict] = []

        def flush() -> None:
            jsonl.write(to_jsonl(batch))
            parquet.write_table(pa.Table.from_pylist(batch, schema=schema),
                                row_group_size=ROW_GROUP_SIZE)
            summary.add(batch)
            batch.clear()

        for b in range(blocks):
            batch += block_records(res, recipe, intake, b)
            if len(batch) >= BATCH_RECORDS:
                flush()
        if batch or not summary.prompts:
            flush()
    return Export(jsonl=res.lake.url(f"{base}.jsonl"), parquet=res.lake.url(f"{base}.parquet"),
                  **summary.result())
