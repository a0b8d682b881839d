"""The DPO set in the ultrafeedback_binarized shape (docs/derived.md#dpo): its recipe, its schema,
and the SQL that builds it from a raw UltraFeedback export.

The rule, as HF's script has it (docs/datasets.md#ultrafeedback_binarized):
- score every completion (by default its `overall_score`); a null or NaN score, or a null
  response, takes no part, and a row with fewer than 2 scored completions is dropped and counted
  (as is a row without an instruction);
- chosen = the highest score, the first completion on ties;
- rejected = a seeded uniform pick among the other scored completions whose (score, response,
  model) differs from chosen's; ties are kept, so rejected may score as high as chosen;
- prompt = the instruction, prompt_id = sha256(prompt), chosen / rejected = [user, assistant]
  conversations, messages = chosen, scores as float64.
Our pick draws from sha256(seed, prompt_id, completion index) instead of Python's `random`
stream, so a row's pair depends only on that row, not on which rows came before it or where.

Presets: `zephyr` reproduces HF revision 292c163, the data zephyr-7b-beta was trained on:
overall scores with the first release's bug (a critique score of 1 read as 10) and TruthfulQA
kept. `current` reproduces the fixed revision: scores as written, rows of source `truthful_qa`
dropped, and prompts matching a TruthfulQA question (exactly, or after normalization) dropped;
each drop is counted. Options beyond HF's rule: the score (`overall_score`, `mean_aspects`,
`aspect:<name>`), the rejected pick (`random`, `lowest`), `drop_ties` and `min_margin`, which
drop pairs after the pick and change nothing else.
"""

from __future__ import annotations

from typing import Literal

import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field, field_validator

from tasks.core.derived.splits import SplitSpec, draw_sql, ranks_sql

MESSAGE = pa.struct([("content", pa.string()), ("role", pa.string())])
DPO_SCHEMA = pa.schema([
    ("prompt", pa.string()), ("prompt_id", pa.string()), ("chosen", pa.list_(MESSAGE)),
    ("rejected", pa.list_(MESSAGE)), ("messages", pa.list_(MESSAGE)),
    ("score_chosen", pa.float64()), ("score_rejected", pa.float64()),
])
FINE_GRAINED = "fine-grained_score"
HUB_REPO = r"^[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Decontamination(_Strict):
    """What is dropped as contamination by TruthfulQA (docs/derived.md#decontamination)."""

    drop_sources: list[str] = Field(
        default_factory=lambda: ["truthful_qa"],
        description="Rows of these sources are dropped, and their instructions join the "
        "question list (so the same question under another source is caught too).")
    questions: list[str] = Field(
        default_factory=list,
        description="Files of questions whose prompts are dropped (e.g. TruthfulQA's generation "
        "and multiple_choice validation questions): .txt one per line, .jsonl/.json/.parquet/.csv "
        "with a `question` column. Relative paths resolve against the recipe's directory.")
    normalized: bool = Field(
        default=True, description="Also drop prompts equal to a question after normalization "
        "(case, punctuation and spacing ignored), counted apart from exact matches.")


class DPORecipe(_Strict):
    """How a raw UltraFeedback export becomes the DPO set."""

    name: str = Field(default="ultrafeedback_binarized", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$",
                      description="Output folder: exports/dpo/<name>/.")
    input: str = Field(
        default="exports/ultrafeedback/ultrafeedback.parquet",
        description="The raw export to binarize: a path in the lake, or a local path or URL of "
        "Parquet in the openbmb/UltraFeedback shape.")
    preset: Literal["zephyr", "current"] = Field(
        default="current", description="`zephyr`: HF revision 292c163 (overall score with the "
        "1→10 bug, TruthfulQA kept), the data of zephyr-7b-beta; `current`: the fixed scores, "
        "TruthfulQA dropped.")
    score: str = Field(
        default="overall_score", description="What ranks completions: `overall_score`, "
        "`mean_aspects` (fine-grained_score, the mean of the aspect ratings) or `aspect:<name>`.")
    rejected: Literal["random", "lowest"] = Field(
        default="random", description="`random`: a seeded uniform pick among the other scored "
        "completions (HF's rule); `lowest`: the lowest-scored one (seeded pick among equals).")
    drop_ties: bool = Field(default=False,
                            description="Drop pairs whose chosen and rejected scores are equal.")
    min_margin: float = Field(default=0.0, ge=0, allow_inf_nan=False,
                              description="Drop pairs whose score_chosen − score_rejected is "
                              "below this.")
    seed: int = Field(default=42, description="Seeds the rejected pick.")
    decontamination: Decontamination | None = Field(
        default=None, description="TruthfulQA decontamination; by default on for `current` "
        "(drop truthful_qa rows and matching prompts) and off for `zephyr`.")
    splits: SplitSpec = Field(default_factory=SplitSpec)
    push_to_hub: str | None = Field(
        default=None, pattern=HUB_REPO, description="Hub repo id (`owner/name`) to push to "
        "(needs a token and network).")

    @field_validator("score")
    @classmethod
    def _score(cls, v: str) -> str:
        if v in ("overall_score", "mean_aspects") or (v.startswith("aspect:") and v[7:]):
            return v
        raise ValueError(f"expected overall_score, mean_aspects or aspect:<name>, got {v!r}")

    @property
    def decontaminate(self) -> Decontamination | None:
        """The decontamination in force: the recipe's, else the preset's."""
        if self.decontamination is not None:
            return self.decontamination
        return Decontamination() if self.preset == "current" else None

    @property
    def zephyr_scores(self) -> bool:
        """Whether overall scores are read with the first release's 1→10 bug."""
        return self.preset == "zephyr" and self.score == "overall_score"


class DPOCounts(_Strict):
    """Rows read, each reason a row was dropped, and rows kept."""

    rows_read: int
    dropped_no_prompt: int
    dropped_source: int
    dropped_question_exact: int
    dropped_question_normalized: int
    dropped_fewer_than_2_scored: int
    dropped_no_different_completion: int
    dropped_ties: int
    dropped_below_margin: int
    pairs: int
    ties_kept: int


# -- SQL ------------------------------------------------------------------------------------------
# Tables of a private in-memory database, built in order by `statements`: prompts (one row per
# input row), comps (one per scored completion; a response is kept as its 64-bit hash, enough to
# tell two completions apart within one run), pairs (chosen and rejected completion index per
# kept row). No table holds a response: the rows are assembled from the input afterwards
# (tasks/derived/dpo.py), one row group at a time.

ZEPHYR_UDF = "uf_zephyr_score"  # the raw export's revised_score(..., "zephyr"), registered as UDF


def literal(text: str) -> str:
    """A SQL string literal."""
    return "'" + text.replace("'", "''") + "'"


def ident(name: str) -> str:
    """A SQL identifier (quoted)."""
    return '"' + name.replace('"', '""') + '"'


def score_sql(recipe: DPORecipe) -> str:
    """SQL expression of completion `c`'s score."""
    if recipe.score == "overall_score":
        return f"{ZEPHYR_UDF}(c.overall_score)" if recipe.zephyr_scores else "c.overall_score"
    if recipe.score == "mean_aspects":
        return f"c.{ident(FINE_GRAINED)}"
    return f"TRY_CAST(c.annotations.{ident(recipe.score[7:])}.Rating AS DOUBLE)"


def normalize_sql(expr: str) -> str:
    """A question's normal form: lower case, runs of anything but letters and digits (of any
    script) as one space, trimmed."""
    return f"trim(regexp_replace(lower({expr}), '[^\\p{{L}}\\p{{N}}]+', ' ', 'g'))"


def statements(recipe: DPORecipe, source_sql: str) -> list[str]:
    """The statements that build prompts, comps and pairs from `source_sql` (a read_parquet call
    with file_row_number); a table `questions(q VARCHAR)` must exist first."""
    dec = recipe.decontaminate
    drop = ", ".join(literal(s) for s in (dec.drop_sources if dec else [])) or "NULL"
    normalized = bool(dec and dec.normalized)
    rejected_order = "k.score ASC, " if recipe.rejected == "lowest" else ""
    return [
        f"""CREATE TABLE prompts AS
        SELECT file_row_number AS row_ix, source, instruction, sha256(instruction) AS prompt_id,
               source IN ({drop}) AS from_dropped_source
        FROM {source_sql}""",
        # the question list: the files' questions, plus the instructions of dropped sources
        """INSERT INTO questions SELECT instruction FROM prompts WHERE from_dropped_source""",
        f"""CREATE TABLE question_keys AS
        SELECT DISTINCT q, {normalize_sql('q')} AS qn FROM questions WHERE q IS NOT NULL""",
        # a question of only punctuation normalizes to '' and must match nothing
        "UPDATE question_keys SET qn = NULL WHERE qn = ''",
        f"""CREATE TABLE dropped AS
        SELECT p.row_ix,
               CASE WHEN p.instruction IS NULL THEN 'no_prompt'
                    WHEN p.from_dropped_source THEN 'source'
                    WHEN p.instruction IN (SELECT q FROM question_keys) THEN 'question_exact'
                    WHEN {str(normalized).upper()} AND {normalize_sql('p.instruction')}
                         IN (SELECT qn FROM question_keys) THEN 'question_normalized'
               END AS reason
        FROM prompts p""",
        f"""CREATE TABLE comps AS
        SELECT row_ix, i, c.model AS model, hash(c.response) AS response_hash,
               CAST({score_sql(recipe)} AS DOUBLE) AS score
        FROM (SELECT s.file_row_number AS row_ix, generate_subscripts(s.completions, 1) AS i,
                     unnest(s.completions) AS c
              FROM {source_sql} s
              WHERE s.file_row_number IN (SELECT row_ix FROM dropped WHERE reason IS NULL))
        WHERE score IS NOT NULL AND NOT isnan(score) AND c.response IS NOT NULL""",
        """CREATE TABLE ranked AS
        SELECT c.*, p.prompt_id,
               row_number() OVER (PARTITION BY c.row_ix ORDER BY c.score DESC, c.i) AS place,
               count(*) OVER (PARTITION BY c.row_ix) AS scored
        FROM comps c JOIN prompts p USING (row_ix)""",
        f"""CREATE TABLE pairs AS
        WITH chosen AS (SELECT * FROM ranked WHERE place = 1 AND scored >= 2),
        candidates AS (
            SELECT k.row_ix, k.i, k.score,
                   row_number() OVER (PARTITION BY k.row_ix ORDER BY {rejected_order}
                       {draw_sql(recipe.seed, "k.prompt_id || ':' || k.i")}) AS pick
            FROM ranked k JOIN chosen c ON k.row_ix = c.row_ix
            WHERE k.i <> c.i AND NOT (k.score = c.score AND k.response_hash = c.response_hash
                                      AND k.model IS NOT DISTINCT FROM c.model))
        SELECT c.row_ix, c.prompt_id, c.i AS chosen_i, k.i AS rejected_i,
               c.score AS score_chosen, k.score AS score_rejected
        FROM chosen c JOIN candidates k ON k.row_ix = c.row_ix AND k.pick = 1""",
    ]


def counts_sql(recipe: DPORecipe) -> str:
    """One row of DPOCounts, before the split."""
    keep = _kept_condition(recipe)
    return f"""
    SELECT (SELECT count(*) FROM prompts) AS rows_read,
           (SELECT count(*) FROM dropped WHERE reason = 'no_prompt') AS dropped_no_prompt,
           (SELECT count(*) FROM dropped WHERE reason = 'source') AS dropped_source,
           (SELECT count(*) FROM dropped WHERE reason = 'question_exact') AS dropped_question_exact,
           (SELECT count(*) FROM dropped WHERE reason = 'question_normalized')
               AS dropped_question_normalized,
           (SELECT count(*) FROM dropped d WHERE reason IS NULL AND NOT EXISTS
               (SELECT 1 FROM ranked r WHERE r.row_ix = d.row_ix AND r.scored >= 2))
               AS dropped_fewer_than_2_scored,
           (SELECT count(DISTINCT row_ix) FROM ranked WHERE scored >= 2)
               - (SELECT count(*) FROM pairs) AS dropped_no_different_completion,
           (SELECT count(*) FROM pairs WHERE {str(recipe.drop_ties).upper()}
               AND score_chosen = score_rejected) AS dropped_ties,
           (SELECT count(*) FROM pairs WHERE NOT (score_chosen = score_rejected
               AND {str(recipe.drop_ties).upper()})
               AND score_chosen - score_rejected < {float(recipe.min_margin)!r}) AS dropped_below_margin,
           (SELECT count(*) FROM pairs WHERE {keep}) AS pairs,
           (SELECT count(*) FROM pairs WHERE {keep} AND score_chosen = score_rejected) AS ties_kept
    """


def _kept_condition(recipe: DPORecipe) -> str:
    tie = "score_chosen <> score_rejected" if recipe.drop_ties else "TRUE"
    return f"({tie} AND score_chosen - score_rejected >= {float(recipe.min_margin)!r})"


def picks_sql(recipe: DPORecipe) -> str:
    """The kept pairs, one row each: input row, chosen and rejected completion (1-based), scores,
    and the row's split rank (splits.py). Small: no texts. Ordered by input row."""
    kept = f"SELECT * FROM pairs WHERE {_kept_condition(recipe)}"
    return f"""
    SELECT p.row_ix, p.prompt_id, p.chosen_i, p.rejected_i, p.score_chosen, p.score_rejected,
           r.split_rank
    FROM ({kept}) p JOIN ({ranks_sql(recipe.splits.seed, kept)}) r USING (row_ix)
    ORDER BY p.row_ix
    """
