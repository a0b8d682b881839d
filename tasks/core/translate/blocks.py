"""Translation shards, pure: which rows each covers, what decides its work, what it lands
(docs/translation.md#shards).

A block is at most `batch_records` consecutive rows of one file of one split (a Hub split may be
several files, `train-00000-of-00003.parquet` …). Its key names the work fingerprint
(everything that decides its calls and its rows), the split and the first row, so a rerun of
the same recipe finds every block already landed, and a changed recipe lands new ones beside
the old (the journal still answers the chunks they share).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from tasks.core.ids import content_key
from tasks.core.translate.recipe import TranslateRecipe

STATS_KEY = b"ultraforge.translate_block"  # Parquet schema metadata of a landed block
ROW = "_row"  # the block file's extra column: the record's row in its split


class Block(BaseModel):
    """Rows [start, stop) of file `part` of a split, whose earlier files hold `offset` rows."""

    model_config = ConfigDict(frozen=True)

    split: str
    part: int = 0
    offset: int = 0
    start: int
    stop: int

    def row(self, i: int) -> int:
        """The split's row number of the block's `i`-th row."""
        return self.offset + self.start + i


class RecordFlag(BaseModel):
    """A record with a chunk that still failed after the retranslations, or got no answer."""

    model_config = ConfigDict(extra="forbid")

    row: int = Field(description="Row in the split (the English set's).")
    record: str = Field(description="How the record is named: split, row and id.")
    reasons: dict[str, str] = Field(description="Reason code → the first chunk's detail.")
    translated: bool = Field(description="False when a chunk has no translation: the record "
                             "cannot be published, whatever `flagged` says.")


class BlockStats(BaseModel):
    """What a landed block holds and cost to make, stored in its file's metadata: a rerun that
    finds the block reads its counts from here, so the card is the same."""

    model_config = ConfigDict(extra="forbid")

    fingerprint: str
    block: Block
    records: int
    texts: int
    chunks: int
    unique_chunks: int
    retranslations: int
    flagged_chunks: int
    chunk_flags: dict[str, int] = Field(description="Flagged chunks by reason.")
    failed: int = Field(description="Chunks whose call failed for good: the block is landed, "
                        "and a rerun does it again (the journal answers the rest).")
    flagged: list[RecordFlag]

    @property
    def complete(self) -> bool:
        return self.failed == 0


def work_fingerprint(recipe: TranslateRecipe, api_model: str) -> str:
    """The input, the fields, the translation settings and the API model: what decides a
    block's calls and rows. The route is how calls are sent, and `flagged`, `limit`, `name` and
    `overview` act at publishing: all left out."""
    parts = recipe.model_dump(mode="json", include={"set", "input", "source_lang", "originals",
                                                    "feedback", "translation"},
                              exclude={"translation": {"route"}})
    return content_key("translate/work", parts, recipe.input_path(), api_model)


def plan_blocks(rows: dict[str, list[int]], size: int, limit: int | None) -> list[Block]:
    """Each split's first `limit` rows (all if None) cut into blocks of at most `size`, split by
    split and file by file (`rows`: each split's files' row counts, in order)."""
    blocks = []
    for split, parts in rows.items():
        offset = 0
        for part, n in enumerate(parts):
            n = n if limit is None else max(0, min(n, limit - offset))
            blocks += [Block(split=split, part=part, offset=offset, start=s, stop=min(s + size, n))
                       for s in range(0, n, size)]
            offset += n
    return blocks


def block_key(fingerprint: str, block: Block) -> str:
    """The block's lease key and file name stem."""
    return f"translate-{fingerprint[:24]}-{block.split}-{block.part:05d}-{block.start:09d}-{block.stop:09d}"


def block_path(fingerprint: str, block: Block) -> str:
    """Where the block's translated rows land in the lake."""
    return (f"work/translate/{fingerprint[:24]}/{block.split}/"
            f"{block.part:05d}-{block.start:09d}-{block.stop:09d}.parquet")
