"""UltraChat's filter and export tasks: apply the filters to a run's dialogues and land the
outcome, then write the raw and messages exports and refresh the warehouse views.

Both land immutable lake shards named by a content key of what determines them (the dialogue
shards and the filter settings), so a rerun lands nothing new and writes the same bytes.
"""

from __future__ import annotations

from prefect import task

from tasks.adapters.lake import Lake, parquet_bytes
from tasks.adapters.resources import current
from tasks.core.ids import content_key, to_jsonl
from tasks.core.ultrachat import export as ex
from tasks.core.ultrachat import summary as sm
from tasks.core.ultrachat.dialogue import DialogueRecord
from tasks.core.ultrachat.filters import apply_filters, reject_rates
from tasks.core.ultrachat.recipe import UltraChatRecipe
from tasks.core.ultrachat.tables import (
    KEPT_SCHEMA,
    MESSAGES_SCHEMA,
    RAW_SCHEMA,
    REJECTS_SCHEMA,
    T_DIALOGUES,
    T_KEPT,
    T_REJECTS,
    TABLES,
)
from tasks.shards import SHARD_TASK


def _dialogue_records(lake: Lake, keys: list[str]) -> list[DialogueRecord]:
    return [DialogueRecord.model_validate(r) for k in sorted(keys)
            for r in lake.read_shard(T_DIALOGUES, k).to_pylist()]


@task(name="ultrachat-filter", **SHARD_TASK)
def filter_dialogues(recipe: UltraChatRecipe, dialogue_keys: list[str]) -> sm.FilterSummary:
    """Apply the filters to every dialogue of the run; land rejects (with reasons) and the kept
    list with export ids. Returns the summary tables."""
    lake = current().lake
    key = content_key("ultrachat/filter", sorted(dialogue_keys), recipe.filters.model_dump(),
                      {n: s.rounds for n, s in recipe.enabled()})
    dialogues = _dialogue_records(lake, dialogue_keys)
    kept, rejects = apply_filters(dialogues, recipe)
    if not lake.has_shard(T_KEPT, key):
        lake.write_shard(T_REJECTS, key, [r.model_dump() | {"filter_key": key} for r in rejects],
                         REJECTS_SCHEMA)
        lake.write_shard(T_KEPT, key, [{"dialogue_id": d.dialogue_id, "export_id": i,
                                        "sector": d.sector, "rounds": d.rounds, "filter_key": key}
                                       for i, d in ex.ordered(kept)], KEPT_SCHEMA)
    return sm.FilterSummary(key=key, dialogues=len(dialogues), kept=len(kept),
                            rejected=len(rejects), by_sector=sm.by_sector(dialogues, kept, rejects),
                            rounds=sm.rounds_histogram(kept),
                            stop_reasons=sm.stop_reasons(dialogues),
                            reject_reasons=reject_rates(rejects, len(dialogues)))


@task(name="ultrachat-export", **SHARD_TASK)
def export_dialogues(recipe: UltraChatRecipe, filter_key: str,
                     dialogue_keys: list[str]) -> sm.ExportSummary:
    """Write the raw export (JSONL + Parquet) and the messages rows; refresh warehouse views."""
    res = current()
    lake = res.lake
    ids = set(lake.read_shard(T_KEPT, filter_key, ["dialogue_id"]).column(0).to_pylist())
    kept = [d for d in _dialogue_records(lake, dialogue_keys) if d.dialogue_id in ids]
    raw, msgs = ex.raw_rows(kept), ex.messages_rows(kept)
    base = f"{recipe.export.prefix}/{recipe.name}"
    paths = {
        "raw_jsonl": lake.write_bytes(f"{base}/ultrachat.jsonl", to_jsonl(raw)),
        "raw_parquet": lake.write_bytes(f"{base}/ultrachat.parquet", parquet_bytes(raw, RAW_SCHEMA)),
        "messages_jsonl": lake.write_bytes(f"{base}/messages.jsonl", to_jsonl(msgs)),
        "messages_parquet": lake.write_bytes(f"{base}/messages.parquet",
                                             parquet_bytes(msgs, MESSAGES_SCHEMA)),
    }
    with res.warehouse() as wh:
        views = wh.refresh_views(TABLES)
    return sm.ExportSummary(count=len(raw), paths=paths, views=views)
