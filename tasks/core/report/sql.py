"""The report's SQL, run by the warehouse (tasks/adapters/warehouse.py) over its views and the lake.

Each query aggregates in DuckDB and returns the fields of one row model of rows.py. Queries over
views need the view; queries over lake files (`read_parquet`, `read_blob`, `read_json` on a
glob) fail on a glob that matches nothing, so the caller first counts the matches (`files_sql`).
"""

from __future__ import annotations

from collections.abc import Iterable

from tasks.core.derived.binarize import ident, literal
from tasks.core.report.rows import UNPARSED

# Usage views and how their rows name the stage: UltraFeedback and translation per stage,
# UltraChat per role.
USAGE_VIEWS = {"uf_usage": "'ultrafeedback/' || stage", "ultrachat_usage": "'ultrachat/' || role",
               "translate_usage": "'translate/' || stage"}
DPO_PAIRS = "exports/dpo/*/data/*_prefs.parquet"  # the preference splits of every DPO set
TRANSLATION_FLAGS = "exports/*/*/flags.jsonl"  # exports/<set>-<lang>/<name>/flags.jsonl


def files_sql(glob: str) -> str:
    """One row `files`: how many files `glob` matches."""
    return f"SELECT count(*) AS files FROM glob({literal(glob)})"


def counts_sql(views: Iterable[str]) -> str:
    """TableCount rows: the rows of each view."""
    return " UNION ALL ".join(
        f"SELECT {literal(v)} AS \"table\", count(*) AS \"rows\" FROM {ident(v)}" for v in views)


def _landed(glob: str, aggregates: str) -> str:
    """Per file of a table's shards and model: the file's write time and `aggregates`."""
    g = literal(glob)
    return f"""SELECT b.last_modified AS landed_at, t.model, {aggregates}
    FROM read_parquet({g}, filename = true, union_by_name = true) t
    JOIN read_blob({g}) b USING (filename)
    GROUP BY ALL"""


def landed_usage_sql(glob: str) -> str:
    """Landed rows of a usage table's shards (USAGE_VIEWS): paid and failed calls."""
    return _landed(glob, "CAST(sum(t.requests) AS BIGINT) AS requests, "
                         "CAST(sum(t.failed) AS BIGINT) AS failed")


def landed_retries_sql(glob: str) -> str:
    """Landed rows of uf_completions' shards: attempts beyond the first (a batch answer may
    record no attempt at all)."""
    return _landed(glob, "CAST(sum(greatest(t.attempts - 1, 0)) AS BIGINT) AS retries")


def usage_sql(view: str) -> str:
    """UsageRow fields summed per stage (`<flow>/<stage or role>`), model and route."""
    sums = ", ".join(f"CAST(sum({c}) AS BIGINT) AS {c}" for c in (
        "requests", "from_journal", "failed", "pending", "prompt_tokens", "completion_tokens"))
    return (f"SELECT {USAGE_VIEWS[view]} AS stage, model, route, {sums}, "
            f"sum(cost_usd) AS cost_usd FROM {view} GROUP BY ALL ORDER BY ALL")


RATINGS_SQL = f"""SELECT aspect, coalesce(rating, {literal(UNPARSED)}) AS rating, count(*) AS count
FROM uf_annotations GROUP BY ALL ORDER BY ALL"""

ROUNDS_SQL = """SELECT sector, rounds, count(*) AS dialogues FROM ultrachat_dialogues
GROUP BY ALL ORDER BY ALL"""

STOPS_SQL = """SELECT sector, coalesce(stop_reason, 'none') AS stop_reason, count(*) AS dialogues
FROM ultrachat_dialogues GROUP BY ALL ORDER BY ALL"""


def _dpo_set(column: str = "filename") -> str:
    return f"regexp_extract({column}, '/exports/(dpo/[^/]+)/data/', 1)"


def margins_sql(glob: str) -> str:
    """MarginCount rows of the DPO sets' preference splits under `glob`."""
    return f"""SELECT {_dpo_set()} AS set, parse_filename(filename, true) AS split,
           score_chosen - score_rejected AS margin, count(*) AS pairs
    FROM read_parquet({literal(glob)}, filename = true)
    GROUP BY ALL ORDER BY ALL"""


def picks_sql(glob: str) -> str:
    """ModelPicks rows: each pair's chosen and rejected answer traced to the model of the
    uf_completions row with the same prompt and response (the DPO set keeps no model); an
    answer found nowhere counts as model `unknown`. Two models that gave the very same answer
    to one prompt are credited as one of them (the first by name)."""
    return f"""WITH pairs AS (
        SELECT {_dpo_set()} AS set, prompt_id, chosen[-1].content AS chosen,
               rejected[-1].content AS rejected
        FROM read_parquet({literal(glob)}, filename = true)),
    answers AS (SELECT prompt_id, response, min(model) AS model FROM uf_completions GROUP BY ALL),
    sides AS (SELECT set, prompt_id, chosen AS response, 1 AS chosen, 0 AS rejected FROM pairs
              UNION ALL
              SELECT set, prompt_id, rejected, 0, 1 FROM pairs)
    SELECT s.set, coalesce(a.model, 'unknown') AS model,
           CAST(sum(s.chosen) AS BIGINT) AS chosen, CAST(sum(s.rejected) AS BIGINT) AS rejected
    FROM sides s LEFT JOIN answers a USING (prompt_id, response)
    GROUP BY ALL ORDER BY ALL"""


def flags_sql(glob: str) -> str:
    """FlagCount rows of the translations' flags.jsonl files under `glob` (one line per flagged
    record: `{"split", "row", "record", "excluded", "reasons": {reason: detail}}`)."""
    return f"""SELECT regexp_extract(filename, '/exports/([^/]+/[^/]+)/flags[.]jsonl$', 1) AS set,
           reason, count(*) AS records, count(*) FILTER (WHERE excluded) AS excluded
    FROM (SELECT filename, excluded, unnest(json_keys(reasons)) AS reason
          FROM read_json({literal(glob)}, format = 'newline_delimited', filename = true,
                         columns = {{excluded: 'BOOLEAN', reasons: 'JSON'}}))
    GROUP BY ALL ORDER BY ALL"""
