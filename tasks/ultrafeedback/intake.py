"""UltraFeedback intake: read the sources, quarantine bad rows, land the prompts in blocks.

The prompts of one intake (the recipe's sources as read now) are sorted by prompt_id and cut
into blocks of `recipe.shard_prompts`; each block lands as its own `uf_prompts` shard named
`<intake key>-<block>`, which is also the block's membership list, so a block shard reads
exactly one small file. The intake key is the content key of every prompt row and the block
size: the same sources give the same key, blocks and shard names in every run and on every
machine, which is what lets two runs claim the same block and never pay for it twice.
"""

from __future__ import annotations

from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, ConfigDict

from tasks.adapters.errors import ConfigError
from tasks.adapters.resources import current
from tasks.adapters.sources import RowError, read_records
from tasks.core.ids import content_key
from tasks.core.ultrafeedback.intake import PromptRecord, Quarantined, dedupe, to_prompt
from tasks.core.ultrafeedback.recipe import PromptSource, UltraFeedbackRecipe
from tasks.core.ultrafeedback.tables import PROMPTS, QUARANTINE

QUARANTINE_PREVIEW = 20


class IntakeCounts(BaseModel):
    model_config = ConfigDict(extra="forbid")

    rows_read: int
    prompts: int
    duplicates: int
    quarantined: int


class Intake(BaseModel):
    """What the intake task returns: the key and block count of the prompts it landed."""

    model_config = ConfigDict(extra="forbid")

    key: str
    blocks: int
    counts: IntakeCounts
    quarantined: list[Quarantined]  # the first QUARANTINE_PREVIEW rows, for the summary


def read_prompts(recipe: UltraFeedbackRecipe, base_dir: Path
                 ) -> tuple[list[PromptRecord], list[Quarantined], IntakeCounts]:
    """Read every source (no side effects): unique prompts, quarantined rows, counts.

    A source that yields no prompt at all is a ConfigError naming it: a wrong path, field
    mapping or `--set`, not bad data to quarantine.
    """
    records: list[PromptRecord] = []
    quarantined: list[Quarantined] = []
    rows_read = 0
    for src in recipe.sources:
        path = None
        if src.path is not None:
            path = Path(src.path) if Path(src.path).is_absolute() else base_dir / src.path
        found: list[PromptRecord] = []
        bad: list[Quarantined] = []
        for item in read_records(path=path, dataset=src.dataset, config=src.config,
                                 split=src.split, format=src.format, fields=src.fields,
                                 limit=src.limit):
            rows_read += 1
            if isinstance(item, RowError):
                bad.append(Quarantined(origin=src.name, row=item.row, field=item.field,
                                       reason=item.reason, raw=item.raw))
                continue
            result = to_prompt(src.name, item.row, item.data, source=src.source,
                               max_chars=recipe.max_instruction_chars)
            (found if isinstance(result, PromptRecord) else bad).append(result)
        if not found:
            raise ConfigError(_no_prompts(src, bad))
        records += found
        quarantined += bad
    unique, duplicates = dedupe(records)
    counts = IntakeCounts(rows_read=rows_read, prompts=len(unique), duplicates=duplicates,
                          quarantined=len(quarantined))
    return unique, quarantined, counts


def _no_prompts(src: PromptSource, bad: list[Quarantined]) -> str:
    where = src.path or src.dataset
    if not bad:
        return f"source {src.name!r} ({where}) has no rows"
    first = bad[0]
    return (f"source {src.name!r} ({where}) yielded no prompts: all {len(bad)} rows were "
            f"quarantined, e.g. row {first.row} {first.field}: {first.reason} (check its "
            f"`fields` mapping: {src.fields})")


def block_shard(intake: str, block: int) -> str:
    """Name of block `block`'s uf_prompts shard."""
    return f"{intake[:40]}-{block:05d}"


@task(name="uf-intake", cache_policy=NO_CACHE)
def load_prompts(recipe: UltraFeedbackRecipe, base_dir: str) -> Intake:
    """Read the sources; land the prompts block by block and the quarantined rows."""
    lake = current().lake
    prompts, quarantined, counts = read_prompts(recipe, Path(base_dir))
    prompts.sort(key=lambda p: p.prompt_id)
    rows = [p.model_dump() for p in prompts]
    size = recipe.shard_prompts
    # a prompt without a source id hashes as before ids existed, so older lakes keep their keys
    key = content_key("ultrafeedback/intake", size,
                      [{k: v for k, v in r.items() if k != "id" or v is not None} for r in rows])
    blocks = (len(rows) + size - 1) // size
    for b in range(blocks):
        lake.write_shard(PROMPTS, block_shard(key, b), rows[b * size:(b + 1) * size])
    if quarantined:
        qrows = [q.model_dump() for q in quarantined]
        lake.write_shard(QUARANTINE, f"quarantine-{content_key(qrows)[:40]}", qrows)
    return Intake(key=key, blocks=blocks, counts=counts,
                  quarantined=quarantined[:QUARANTINE_PREVIEW])
