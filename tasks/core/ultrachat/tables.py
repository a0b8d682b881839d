"""The UltraChat lake tables (warehouse views of the same names) and the Parquet schemas they land in.

    ultrachat_openings   every candidate opening with its status (selected, duplicate, ...)
    ultrachat_turns      every reply received in a dialogue, accepted or not, with its verdict
    ultrachat_dialogues  one row per dialogue: messages, rounds, stop reason
    ultrachat_rejects    dialogues the filters rejected, with reason codes
    ultrachat_kept       dialogues that passed, with their export id
    ultrachat_usage      requests, journal replays, tokens and cost per role and model per shard

Plus the two export shapes: RAW_SCHEMA ({"id", "data"}) and MESSAGES_SCHEMA (ultrachat_200k).
"""

from __future__ import annotations

import pyarrow as pa

T_OPENINGS, T_TURNS, T_DIALOGUES = "ultrachat_openings", "ultrachat_turns", "ultrachat_dialogues"
T_REJECTS, T_KEPT, T_USAGE = "ultrachat_rejects", "ultrachat_kept", "ultrachat_usage"
TABLES = (T_OPENINGS, T_TURNS, T_DIALOGUES, T_REJECTS, T_KEPT, T_USAGE)

_MSG = pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))
OPENINGS_SCHEMA = pa.schema([
    ("opening_id", pa.string()), ("sector", pa.string()), ("text", pa.string()),
    ("origin", pa.string()), ("status", pa.string()), ("dup_of", pa.string()),
    ("similarity", pa.float64()), ("shard_key", pa.string())])
DIALOGUES_SCHEMA = pa.schema([
    ("dialogue_id", pa.string()), ("opening_id", pa.string()), ("sector", pa.string()),
    ("target_rounds", pa.int32()), ("rounds", pa.int32()), ("stop_reason", pa.string()),
    ("stop_role", pa.string()), ("messages", _MSG), ("finish_reasons", pa.list_(pa.string())),
    ("user_turns_stripped", pa.int32()), ("user_reasks", pa.int32()),
    ("other_language_ok", pa.bool_()), ("shard_key", pa.string())])
REJECTS_SCHEMA = pa.schema([
    ("dialogue_id", pa.string()), ("sector", pa.string()), ("reason", pa.string()),
    ("reasons", pa.list_(pa.string())), ("detail", pa.string()), ("filter_key", pa.string())])
KEPT_SCHEMA = pa.schema([
    ("dialogue_id", pa.string()), ("export_id", pa.string()), ("sector", pa.string()),
    ("rounds", pa.int32()), ("filter_key", pa.string())])
USAGE_SCHEMA = pa.schema([
    ("shard_key", pa.string()), ("stage", pa.string()), ("role", pa.string()),
    ("model", pa.string()), ("route", pa.string()), ("requests", pa.int64()),
    ("from_journal", pa.int64()), ("failed", pa.int64()), ("pending", pa.int64()),
    ("prompt_tokens", pa.int64()), ("completion_tokens", pa.int64()), ("cost_usd", pa.float64()),
    ("rate_limited", pa.int64()), ("retried", pa.int64()), ("first_sent", pa.float64()),
    ("last_done", pa.float64())])
RAW_SCHEMA = pa.schema([("id", pa.string()), ("data", pa.list_(pa.string()))])
MESSAGES_SCHEMA = pa.schema([
    ("id", pa.string()), ("sector", pa.string()), ("prompt", pa.string()),
    ("prompt_id", pa.string()), ("messages", pa.list_(pa.struct([("content", pa.string()),
                                                                 ("role", pa.string())])))])
