"""Seeded splits of a derived set, the same rule for the SFT and DPO sets.

Every row gets a draw: the sha256 of `<seed>:<prompt_id>`. Rows are ranked by their draw (rows
sharing a prompt by input order), and every row of a prompt takes the rank of its first row, so
one prompt never lands on both sides of a cut. Ranks up to `test_size` are the test part, and the
first half of those is `test_sft`. So a row's split depends only on its prompt, the seed and the
sizes, not on the order rows were read in, and the same inputs always give the same splits.
Where HF's script calls `train_test_split(test_size=2000, seed=42)` and halves the test part
(docs/datasets.md#ultrafeedback_binarized), this gives the same sizes and the same construction,
with our own draw.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, ConfigDict, Field


class SplitSpec(BaseModel):
    """How many rows are held out for test."""

    model_config = ConfigDict(extra="forbid")

    test_size: int | float = Field(
        default=2000, gt=0, description="Held-out rows: a count (≥ 1), or a fraction in (0, 1) "
        "of all rows. HF's sets hold out 2,000 (DPO) and about 10% (SFT).")
    seed: int = Field(default=42, description="Seeds the draw that assigns rows to splits.")

    def test_rows(self, rows: int) -> int:
        """The held-out count for `rows` rows (see `problem` for when it is unusable)."""
        if isinstance(self.test_size, float) and not self.test_size.is_integer():
            return max(1, round(rows * self.test_size))
        return int(self.test_size)

    def problem(self, rows: int, what: str) -> str | None:
        """What is wrong with splitting `rows` rows (of `what`) this way, naming the field."""
        if isinstance(self.test_size, float) and not self.test_size.is_integer() \
                and not 0 < self.test_size < 1:
            return f"splits.test_size: a fraction must be in (0, 1), got {self.test_size}"
        n = self.test_rows(rows)
        if n >= rows:
            return (f"splits.test_size: {self.test_size} holds out {n} of {rows} {what}, leaving "
                    "none for training; lower it or give a fraction")
        return None


def no_training_rows(ranks: pa.Array | pa.ChunkedArray, test_rows: int, what: str) -> str | None:
    """The problem when every row's rank falls in the test part (rows sharing few prompts take
    their first row's rank), naming the field; None when some rows are left for training."""
    if pc.any(pc.greater(ranks, test_rows)).as_py():
        return None
    return (f"splits.test_size: every one of the {len(ranks)} {what} lands in the test part "
            f"(they share fewer than {test_rows + 1} prompts); lower it")


def ranks_sql(seed: int, rows_sql: str) -> str:
    """`(row_ix, split_rank)` of every row of `rows_sql` (a query with row_ix and prompt_id),
    ordered by row_ix."""
    return f"""
    SELECT row_ix, min(drawn) OVER (PARTITION BY prompt_id) AS split_rank FROM (
        SELECT row_ix, prompt_id,
               row_number() OVER (ORDER BY {draw_sql(seed, "prompt_id")}, row_ix) AS drawn
        FROM ({rows_sql}))
    ORDER BY row_ix
    """


def draw_sql(seed: int, key_sql: str) -> str:
    """SQL expression of a draw (see the module docstring) from the VARCHAR `key_sql`."""
    return f"sha256('{int(seed)}:' || {key_sql})"
