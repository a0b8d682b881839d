"""The UltraFeedback lake tables: names, Arrow schemas and key columns (tasks/core/tables.py).

Each table holds at most one row per id, so it can be read, and viewed in the warehouse, as a
set: `uf_prompts(prompt_id)`, `uf_plan(completion_id)`, `uf_completions(completion_id)`,
`uf_annotations(annotation_id, completion_id)`, `uf_critiques(critique_id)`. Intake and plan rows
land only when their id is not in the lake yet; the paid stages land a job's rows only when its
outcome is final (outcomes.py). Two tables are logs instead: `uf_failures` (one row per job whose
call failed for good in some run; the next run retries it) and `uf_usage` (one row per shard,
stage and model); `uf_quarantine` lands each distinct (origin, row, field, reason) once.
`uf_prompts` lands one shard per block of an intake (tasks/ultrafeedback/intake.py), which is
also the block's membership list; `uf_blocks` marks a block whose every call is final under one
work fingerprint.
Schemas are explicit so that empty or all-null shards still have typed columns.
"""

from __future__ import annotations

import pyarrow as pa

from tasks.core.tables import Registry, TableSpec

_STR, _INT, _FLOAT, _BOOL = pa.string(), pa.int64(), pa.float64(), pa.bool_()
_REPLY = [("raw", _STR), ("request_key", _STR), ("finish_reason", _STR), ("prompt_tokens", _INT),
          ("completion_tokens", _INT), ("latency_s", _FLOAT), ("calls", _INT),
          ("parse_failures", _INT), ("judge_model", _STR)]
_SCHEMAS = {
    "uf_prompts": pa.schema([("prompt_id", _STR), ("source", _STR), ("id", _STR),
                             ("instruction", _STR),
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
                                 ("latency_s", _FLOAT), ("attempts", _INT)]),
    "uf_annotations": pa.schema([("annotation_id", _STR), ("prompt_id", _STR), ("aspect", _STR),
                                 ("completion_id", _STR), ("text_number", _INT),
                                 ("annotation", _STR), ("rating", _STR), ("error", _STR),
                                 *_REPLY]),
    "uf_critiques": pa.schema([("critique_id", _STR), ("completion_id", _STR),
                               ("prompt_id", _STR), ("critique", _STR),
                               ("overall_score", _FLOAT), ("error", _STR), *_REPLY]),
    "uf_failures": pa.schema([("stage", _STR), ("job_id", _STR), ("prompt_id", _STR),
                              ("model", _STR), ("error", _STR), ("calls", _INT)]),
    "uf_usage": pa.schema([("shard", _STR), ("stage", _STR), ("model", _STR), ("api_model", _STR),
                           ("endpoint", _STR), ("route", _STR), ("requests", _INT),
                           ("from_journal", _INT), ("failed", _INT), ("pending", _INT),
                           ("prompt_tokens", _INT), ("completion_tokens", _INT),
                           ("cost_usd", _FLOAT), ("rate_limited", _INT), ("retried", _INT),
                           ("first_sent", _FLOAT), ("last_done", _FLOAT)]),
    "uf_blocks": pa.schema([("block_key", _STR), ("fingerprint", _STR), ("prompts", _INT)]),
}
_KEYS = {
    "uf_prompts": ("prompt_id",), "uf_quarantine": ("origin", "row", "field", "reason"),
    "uf_plan": ("completion_id",), "uf_completions": ("completion_id",),
    "uf_annotations": ("annotation_id", "completion_id"), "uf_critiques": ("critique_id",),
    "uf_usage": ("shard", "stage", "model", "route"), "uf_blocks": ("block_key", "fingerprint"),
}
TABLES = Registry(TableSpec(name, schema, _KEYS.get(name, ())) for name, schema in _SCHEMAS.items())
PROMPTS, QUARANTINE, PLAN = TABLES["uf_prompts"], TABLES["uf_quarantine"], TABLES["uf_plan"]
COMPLETIONS, ANNOTATIONS = TABLES["uf_completions"], TABLES["uf_annotations"]
CRITIQUES, FAILURES, USAGE = TABLES["uf_critiques"], TABLES["uf_failures"], TABLES["uf_usage"]
BLOCKS = TABLES["uf_blocks"]

