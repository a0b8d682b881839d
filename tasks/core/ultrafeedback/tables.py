"""The UltraFeedback lake tables: names, Arrow schemas, and deduplication when reading them.

Every row carries a content id, so a table may be read as a set: `uf_prompts(prompt_id)`,
`uf_quarantine(origin, row)`, `uf_plan(completion_id)`, `uf_completions(completion_id)`,
`uf_annotations(annotation_id, completion_id)`, `uf_critiques(critique_id)`,
`uf_usage(shard, stage, model)`. Shards are only formed from missing work, but a failed row and
its later success (or rows of an older recipe) can share the table, so readers go through
`latest_rows`. Schemas are explicit so that empty or all-null shards still have typed columns.
"""

from __future__ import annotations

import pyarrow as pa

from tasks.core.ids import canonical_json

TABLES = ("uf_prompts", "uf_quarantine", "uf_plan", "uf_completions", "uf_annotations",
          "uf_critiques", "uf_usage")

_STR, _INT, _FLOAT, _BOOL = pa.string(), pa.int64(), pa.float64(), pa.bool_()
SCHEMAS = {
    "uf_prompts": pa.schema([("prompt_id", _STR), ("source", _STR), ("instruction", _STR),
                             ("correct_answers", pa.list_(_STR)),
                             ("incorrect_answers", pa.list_(_STR)), ("origin", _STR),
                             ("row", _INT)]),
    "uf_quarantine": pa.schema([("origin", _STR), ("row", _INT), ("field", _STR),
                                ("reason", _STR), ("raw", _STR)]),
    "uf_plan": pa.schema([("completion_id", _STR), ("prompt_id", _STR), ("model", _STR),
                          ("rank", _INT), ("principle", _STR), ("system_prompt_index", _INT),
                          ("custom_system_prompt", _STR), ("system_prompt_sent", _BOOL)]),
    "uf_completions": pa.schema([("completion_id", _STR), ("prompt_id", _STR), ("model", _STR),
                                 ("api_model", _STR), ("endpoint", _STR), ("request_key", _STR),
                                 ("response", _STR), ("finish_reason", _STR),
                                 ("prompt_tokens", _INT), ("completion_tokens", _INT),
                                 ("latency_s", _FLOAT), ("attempts", _INT), ("error", _STR)]),
    "uf_annotations": pa.schema([("annotation_id", _STR), ("prompt_id", _STR), ("aspect", _STR),
                                 ("completion_id", _STR), ("text_number", _INT),
                                 ("annotation", _STR), ("rating", _STR), ("error", _STR),
                                 ("call_failed", _BOOL), ("raw", _STR), ("calls", _INT),
                                 ("parse_failures", _INT), ("judge_model", _STR)]),
    "uf_critiques": pa.schema([("critique_id", _STR), ("completion_id", _STR),
                               ("prompt_id", _STR), ("critique", _STR),
                               ("overall_score", _FLOAT), ("error", _STR),
                               ("call_failed", _BOOL), ("raw", _STR), ("calls", _INT),
                               ("parse_failures", _INT), ("judge_model", _STR)]),
    "uf_usage": pa.schema([("shard", _STR), ("stage", _STR), ("model", _STR), ("api_model", _STR),
                           ("endpoint", _STR), ("requests", _INT), ("from_journal", _INT),
                           ("failed", _INT), ("prompt_tokens", _INT), ("completion_tokens", _INT),
                           ("cost_usd", _FLOAT)]),
}


def latest_rows(table: pa.Table, key_cols: tuple[str, ...], prefer_ok: str) -> dict[tuple, dict]:
    """One row per key: a successful row (`prefer_ok` column falsy) if any, else the
    smallest by canonical JSON, so the pick never depends on shard order."""
    rows = table.to_pylist()
    rows.sort(key=lambda r: (bool(r.get(prefer_ok)), canonical_json(r)))
    out: dict[tuple, dict] = {}
    for r in rows:
        out.setdefault(tuple(r[c] for c in key_cols), r)
    return out
