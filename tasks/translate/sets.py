"""Translate a landed or exported set into another language and publish it in the same shape
(docs/translation.md#published):

    exports/<set>-<lang>/<name>/data/<split>.parquet   the input's splits, translated records
    exports/<set>-<lang>/<name>/data/<split>.jsonl     the same records as JSON lines
    exports/<set>-<lang>/<name>/flags.jsonl            every flagged record and its reasons
    exports/<set>-<lang>/<name>/overview/<split>.jsonl (recipe `overview`) the overview's layout
    exports/<set>-<lang>/<name>/README.md              card: translator, date, checks, counts
    exports/<set>-<lang>/<name>/dataset/               `datasets.DatasetDict.save_to_disk`

A raw export (one Parquet file) is the split `train`, as on the Hub; a derived set keeps each of
its splits, row for row. The work runs on the shard engine (tasks/shards.py): each block of
`batch_records` rows is one shard task that takes the block's lease, reads its rows from the
input, translates them through the gateway and lands them in the lake
(tasks/core/translate/blocks.py). Publishing then streams the landed blocks, in order, into the
files above. A rerun finds the landed blocks and pays nothing; a run killed midway lands again
only the blocks it had not landed, whose chunks the journal mostly answers, so it repays at
most the calls in flight at the kill.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
import json
import re
import shutil
import tempfile
from collections import Counter
from collections.abc import Iterable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import fsspec
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from prefect import task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, ConfigDict, Field

from tasks.adapters.errors import ConfigError, UltraforgeError
from tasks.adapters.lake import WRITER_OPTIONS, Lake, parquet_bytes
from tasks.adapters.resources import Resources, current, run
from tasks.core.derived.card import Card, render_card, split_path
from tasks.core.ids import content_key, to_jsonl
from tasks.core.shards import PartRun, ScaleOut, ShardSummary
from tasks.core.translate import fields
from tasks.core.translate.blocks import (
    ROW,
    STATS_KEY,
    Block,
    BlockStats,
    RecordFlag,
    block_key,
    block_path,
    plan_blocks,
    work_fingerprint,
)
from tasks.core.translate.overview import overview_record
from tasks.core.translate.prompt import language_name
from tasks.core.translate.recipe import TranslateRecipe
from tasks.core.translate.spans import Masked
from tasks.core.translate.tables import FLAGS, TABLES, USAGE
from tasks.core.translate.work import plan_text
from tasks.core.usage import UsageRow, merge_usage, usage_of
from tasks.derived.dpo import read_schema, resolve_input
from tasks.derived.publish import DATASET_DIR, save_dataset_dict
from tasks.scaleout import ChildRun, plan_id, run_shared
from tasks.shards import SHARD_TASK, claimed
from tasks.translate.engine import translate_chunks, translate_texts

FLAG_EXAMPLES = 20  # flagged records named in the summary
ORIGINALS = {  # what the card says of the kept originals
    "columns": "Each translated column is followed by its original (`*_{lang}`).",
    "inline": "Each translated text inside a struct is followed by its original (`<field>_{lang}`); "
              "top-level texts and lists of texts by an original column (`*_{lang}`).",
    "none": "The originals are not kept: join on the ids to the English set.",
}


class TranslateCounts(BaseModel):
    """Records, chunks and calls of one translation run."""

    model_config = ConfigDict(extra="forbid")

    records_read: int = 0
    records_written: int = 0
    records_flagged: int = 0
    records_excluded: int = 0
    texts: int = 0
    chunks: int = 0
    unique_chunks: int = Field(default=0, description="Distinct chunks in each batch of "
                               "records, summed (repeats across batches are journal hits).")
    calls_paid: int = 0
    calls_from_journal: int = 0
    retranslations: int = 0
    flagged_chunks: int = 0


class TranslateExport(BaseModel):
    """What the translate flow made."""

    model_config = ConfigDict(extra="forbid")

    folder: str
    rows: dict[str, int]
    counts: TranslateCounts
    flags: dict[str, int] = Field(description="Flagged chunks by reason.")
    flagged_records: dict[str, int] = Field(description="Flagged records by reason.")
    flagged_examples: list[str]
    usage: list[UsageRow]
    card: str
    parts: list[ChildRun] = Field(default_factory=list, description="The part runs that shared "
                                  "the blocks (scale.parts), as they ended.")
    dataset_dict: str


def output_folder(recipe: TranslateRecipe) -> str:
    name = recipe.name or Path(recipe.input_path().rstrip("/")).name.removesuffix(".parquet")
    return f"exports/{recipe.set}-{recipe.lang}/{name}"


# a Hub split of several files: train-00000-of-00003.parquet, …
_PART = re.compile(r"^(?P<split>.+?)-\d{5}-of-\d{5}$")


def input_splits(lake: Lake, where: str) -> tuple[dict[str, list[str]], dict]:
    """(split → URLs of its files in order, fsspec options) of the input: one file is `train`;
    a folder has data/<split>.parquet or, as on the Hub, data/<split>-NNNNN-of-NNNNN.parquet."""
    if where.endswith(".parquet"):
        url, options = resolve_input(lake, where)
        return {"train": [url]}, options
    url, options = resolve_input(lake, f"{where.rstrip('/')}/data")
    fs, path = fsspec.core.url_to_fs(url, **options)
    try:
        names = sorted(Path(p).name for p in fs.ls(path, detail=False) if p.endswith(".parquet"))
    except FileNotFoundError:
        names = []
    if not names:
        raise ConfigError(f"input {where}: neither a .parquet file nor a set folder with "
                          "data/<split>.parquet (run its export first)")
    splits: dict[str, list[str]] = {}
    for name in names:
        stem = name.removesuffix(".parquet")
        split = m["split"] if (m := _PART.match(stem)) else stem
        splits.setdefault(split, []).append(f"{url}/{name}")
    return splits, options


class Input(BaseModel):
    """The input's splits and the work on them (no credentials: task parameters)."""

    model_config = ConfigDict(frozen=True)

    files: dict[str, list[str]] = Field(description="split → URLs of its files, in order.")
    rows: dict[str, list[int]] = Field(description="Rows of each split's files.")
    fingerprint: str
    blocks: list[Block]


def plan(res: Resources, recipe: TranslateRecipe) -> Input:
    """The input's splits, their sizes and the blocks to translate; refuses a translator that is
    not in the pool, a split whose files differ in schema, and an input whose columns the
    originals would clash with."""
    if recipe.translation.model not in res.pool.models:
        raise ConfigError(f"translation.model: {recipe.translation.model!r} is not in the model pool")
    files, options = input_splits(res.lake, recipe.input_path())
    rows: dict[str, list[int]] = {}
    for split, urls in files.items():
        first = read_schema(urls[0], options)
        try:
            output_schema(recipe, first)
        except ValueError as exc:
            raise ConfigError(f"input {urls[0]}: {exc}") from None
        rows[split] = []
        for url in urls:
            with fsspec.open(url, "rb", **options) as f:
                pf = pq.ParquetFile(f)
                if not pf.schema_arrow.equals(first):
                    raise ConfigError(f"input {url}: its columns differ from those of {urls[0]}, "
                                      f"the split {split!r}'s first file")
                rows[split].append(pf.metadata.num_rows)
    fingerprint = work_fingerprint(recipe, res.pool.api_model(recipe.translation.model))
    return Input(files=files, rows=rows, fingerprint=fingerprint,
                 blocks=plan_blocks(rows, recipe.batch_records, recipe.limit))


def output_schema(recipe: TranslateRecipe, source: pa.Schema) -> pa.Schema:
    return fields.translated_schema(source, recipe.set, recipe.source_lang, recipe.originals,
                                    recipe.feedback)


def translate_set(recipe: TranslateRecipe, params: BaseModel,
                  scale: ScaleOut) -> TranslateExport | PartRun:
    """Every block of every split translated as a shard (shared with part runs as `scale`
    says; `params` are the flow's, for them), then the set published (module docstring)."""
    res = current()
    work = plan(res, recipe)
    if recipe.translation.route == "batch":
        res.gateway.batches.configure(**recipe.batch.model_dump(exclude={"max_wait_s"}))
    shared = run_shared("translate", params, scale,
                        plan_id(work.fingerprint, [b.model_dump() for b in work.blocks]),
                        work.blocks, partial(translate_block.submit, recipe, work.fingerprint),
                        recipe.max_parallel_shards, f"translate {recipe.set} → {recipe.lang}",
                        before_parts=partial(_before_parts, recipe, work))
    if shared.part is not None:
        return shared.part
    summaries = shared.shards
    _none_pending(recipe, summaries)
    out = publish_translation(recipe, work, merge_usage([u for s in summaries for u in s.usage]))
    return out.model_copy(update={"parts": shared.children})


@task(name="translate-block", **SHARD_TASK)
def translate_block(recipe: TranslateRecipe, fingerprint: str, block: Block) -> ShardSummary:
    """Translate one block of rows and land it; a small summary."""
    res = current()
    return run(_translate_block(res, recipe, fingerprint, block))


async def _translate_block(res: Resources, recipe: TranslateRecipe, fingerprint: str,
                           block: Block) -> ShardSummary:
    key, path = block_key(fingerprint, block), block_path(fingerprint, block)
    async with claimed(res.lake, key, on_takeover=res.catch_up) as waited:
        landed = await asyncio.to_thread(landed_stats, res.lake, path)
        if landed is not None and landed.complete:
            return ShardSummary(stage="translation", key=key, status="skipped",
                                items=landed.records, waited_s=waited)
        files, options = input_splits(res.lake, recipe.input_path())
        url = files[block.split][block.part]
        records = await asyncio.to_thread(read_rows, url, options, block.start, block.stop)
        schema = output_schema(recipe, await asyncio.to_thread(read_schema, url, options))
        out, stats, results = await _translate(res, recipe, fingerprint, block, records)
        usage = usage_of("translation", results, res.pool.cost)
        pending = stats.chunk_flags.get("pending", 0)
        if not pending:  # a block waiting in batches lands nothing: the rerun collects it
            table = pa.Table.from_pylist(out, schema=schema.append(pa.field(ROW, pa.int64())))
            table = table.replace_schema_metadata({**(schema.metadata or {}),
                                                   STATS_KEY: stats.model_dump_json().encode()})
            await asyncio.to_thread(res.lake.write_bytes, path, parquet_bytes(table))
        await asyncio.to_thread(land_usage, res.lake, key, usage)
        status = "pending" if pending else "partial" if stats.failed else "done"
        return ShardSummary(stage="translation", key=key, status=status, items=len(records),
                            rows=len(out), failures=stats.failed, pending=pending,
                            waited_s=waited, usage=usage)


def _none_pending(recipe: TranslateRecipe, summaries: list[ShardSummary]) -> None:
    if pending := sum(s.pending for s in summaries):
        raise UltraforgeError(f"{pending} chunks still wait in batches (batch.wait_s "
                              f"{recipe.batch.wait_s:g} s): nothing is published; run again to "
                              "collect them, without paying again")


def _before_parts(recipe: TranslateRecipe, work: Input) -> ShardSummary:
    """The chunks of several blocks, translated before the parts start (translate_shared). If
    some still wait in a batch, the run stops here: the parts would poll that batch from several
    processes; the next run collects it first."""
    summary = translate_shared(recipe, work)
    _none_pending(recipe, [summary])
    return summary


def land_usage(lake: Lake, key: str, usage: list[UsageRow]) -> None:
    """What the shard `key` spent, landed under a name of its own (a rerun's journal hits are
    another row set)."""
    if usage:
        name = f"{key}-{content_key([u.model_dump() for u in usage])[:12]}"
        lake.write_shard(USAGE, name, [{"shard": name, **u.model_dump()} for u in usage])


@task(name="translate-shared-chunks", **SHARD_TASK)
def translate_shared(recipe: TranslateRecipe, work: Input) -> ShardSummary:
    """A parent's first step when it has parts: the chunks found in more than one block,
    translated here once. The parent lands its journal rows in the lake before it starts the
    parts (tasks/scaleout.py `fan_out`), and each part imports them when it starts. Otherwise
    two processes translating two blocks that share a chunk (a system prompt of thousands of
    records) would each pay for it. The blocks then find these chunks in the journal
    (docs/translation.md#parts)."""
    res = current()
    return run(_translate_shared(res, recipe, work))


async def _translate_shared(res: Resources, recipe: TranslateRecipe, work: Input) -> ShardSummary:
    # without journal segments in the lake the parts could not use these answers
    chunks = [] if res.mirror is None else await asyncio.to_thread(shared_chunks, res, recipe, work)
    _, done = await translate_chunks(res.gateway, recipe.translation, {c.text: c for c in chunks})
    usage = usage_of("translation", done.results, res.pool.cost)
    key = f"translate-{work.fingerprint[:24]}-shared"
    await asyncio.to_thread(land_usage, res.lake, key, usage)
    failed, pending = done.flags.get("failed", 0), done.flags.get("pending", 0)
    status = "pending" if pending else "partial" if failed else "done"
    return ShardSummary(stage="translation", key=key, status=status, items=len(chunks),
                        failures=failed, pending=pending, usage=usage)


def block_chunks(recipe: TranslateRecipe, work: Input, options: dict,
                 which: Iterable[int] | None = None) -> Iterator[tuple[int, list[Masked]]]:
    """Each block's records (of `which` blocks, all by default; `options`: the input's fsspec
    options): how many, and every chunk of their texts, in order."""
    for i in range(len(work.blocks)) if which is None else which:
        block = work.blocks[i]
        records = read_rows(work.files[block.split][block.part], options, block.start, block.stop)
        slots = [fields.slots(r, recipe.set, recipe.feedback) for r in records]
        yield len(records), [chunk for text in texts_of(slots)
                             for chunk in plan_text(text, recipe.translation).chunks]


def texts_of(slots: list[list[fields.Slot]]) -> list[str]:
    """The texts a block translates, in order: its records' slots (one rule for the blocks and
    the pre-pass, whose chunks must be the blocks' own)."""
    return [s.text for record_slots in slots for s in record_slots]


def chunk_digest(chunk: Masked) -> int:
    """64 bits of a chunk's masked text: the texts themselves would fill memory."""
    return int.from_bytes(hashlib.blake2b(chunk.text.encode(), digest_size=8).digest(), "little")


def shared_chunks(res: Resources, recipe: TranslateRecipe, work: Input) -> list[Masked]:
    """The chunks found in more than one block, each once: one pass over the input counts the
    blocks each chunk is in (by digest), a second reads again only the blocks where each of
    those first appears."""
    _, options = input_splits(res.lake, recipe.input_path())
    per_block = [pa.array(sorted({chunk_digest(c) for c in chunks}), pa.uint64())
                 for _, chunks in block_chunks(recipe, work, options)]
    if not per_block:
        return []
    counted = pc.value_counts(pa.concat_arrays(per_block))
    shared = counted.field("values").filter(pc.greater(counted.field("counts"), 1))
    wanted = set(shared.to_pylist())
    first, left = [], set(wanted)
    for i, digests in enumerate(per_block):
        if not left:
            break
        hits = left.intersection(digests.to_pylist())
        if hits:
            first.append(i)
            left -= hits
    found: dict[str, Masked] = {}
    for _, chunks in block_chunks(recipe, work, options, first):
        for chunk in chunks:
            if chunk_digest(chunk) in wanted:
                found.setdefault(chunk.text, chunk)
    return list(found.values())


def landed_stats(lake: Lake, path: str) -> BlockStats | None:
    """The stats of the block landed at `path` (its footer only), or None."""
    try:
        with lake.open(path) as f:
            metadata = pq.read_schema(f).metadata or {}
    except FileNotFoundError:
        return None
    return BlockStats.model_validate_json(metadata[STATS_KEY])


def read_rows(url: str, options: dict, start: int, stop: int) -> list[dict[str, Any]]:
    """Rows [start, stop) of a Parquet file, reading only the row groups that hold them."""
    with fsspec.open(url, "rb", **options) as f:
        pf = pq.ParquetFile(f)
        groups, first, at = [], None, 0
        for g in range(pf.metadata.num_row_groups):
            n = pf.metadata.row_group(g).num_rows
            if at < stop and at + n > start:
                groups.append(g)
                first = at if first is None else first
            at += n
        if not groups:
            return []
        table = pf.read_row_groups(groups)
    return table.slice(start - first, stop - start).to_pylist()


async def _translate(res: Resources, recipe: TranslateRecipe, fingerprint: str, block: Block,
                     records: list[dict[str, Any]]):
    """Each record translated (with its row in the split, records without a translation left
    out), the block's stats, and every call's result."""
    slots = [fields.slots(r, recipe.set, recipe.feedback) for r in records]
    outcomes, run_ = await translate_texts(res.gateway, recipe.translation, texts_of(slots))
    out, flagged, i = [], [], 0
    for offset, (record, record_slots) in enumerate(zip(records, slots, strict=True)):
        row = block.row(offset)
        mine = outcomes[i:i + len(record_slots)]
        i += len(record_slots)
        reasons: dict[str, str] = {}
        for o in mine:
            for reason, detail in o.flags.items():
                reasons.setdefault(reason, detail)
        complete = all(o.text is not None for o in mine)
        if reasons:
            flagged.append(RecordFlag(row=row, record=_who(record, block.split, row),
                                      reasons=reasons, translated=complete))
        if complete:
            texts_at = {s.path: o.text for s, o in zip(record_slots, mine, strict=True)}
            out.append({**fields.translated(record, recipe.set, texts_at, recipe.source_lang,
                                            recipe.originals, recipe.feedback), ROW: row})
    stats = BlockStats(fingerprint=fingerprint, block=block, records=len(records),
                       texts=run_.texts, chunks=run_.chunks, unique_chunks=run_.unique_chunks,
                       retranslations=run_.retranslations, flagged_chunks=run_.flagged_chunks,
                       chunk_flags=run_.flags, failed=run_.flags.get("failed", 0), flagged=flagged)
    return out, stats, run_.results


@task(name="publish-translation", cache_policy=NO_CACHE)
def publish_translation(recipe: TranslateRecipe, work: Input, usage: list[UsageRow]) -> TranslateExport:
    """The landed blocks streamed, in order, into the set's files (module docstring)."""
    res = current()
    base = output_folder(recipe)
    name = base.rsplit("/", 1)[-1]
    counts = TranslateCounts(calls_paid=sum(u.requests for u in usage),
                             calls_from_journal=sum(u.from_journal for u in usage))
    chunk_flags: Counter[str] = Counter()
    record_flags: Counter[str] = Counter()
    examples: list[str] = []
    flag_rows: list[dict[str, Any]] = []  # for the warehouse: one per flagged record and reason
    rows: dict[str, int] = {}
    with tempfile.TemporaryDirectory(prefix="ultraforge-translate-") as tmp:
        folder = Path(tmp) / "set"
        (folder / "data").mkdir(parents=True)
        if recipe.overview:
            (folder / "overview").mkdir()
        with open(folder / "flags.jsonl", "w", encoding="utf-8") as flag_file:
            _, options = input_splits(res.lake, recipe.input_path())
            for split, urls in work.files.items():
                schema = output_schema(recipe, read_schema(urls[0], options))
                rows[split] = 0
                with pq.ParquetWriter(folder / split_path(split), schema, **WRITER_OPTIONS) as parquet, \
                        open(folder / f"data/{split}.jsonl", "wb") as jsonl, \
                        _maybe_open(folder / f"overview/{split}.jsonl", recipe.overview) as overview:
                    for block in (b for b in work.blocks if b.split == split):
                        table, stats = _read_block(res.lake, work.fingerprint, block)
                        counts.records_read += stats.records
                        for name in ("texts", "chunks", "unique_chunks", "retranslations",
                                     "flagged_chunks"):
                            setattr(counts, name, getattr(counts, name) + getattr(stats, name))
                        chunk_flags.update(stats.chunk_flags)
                        excluded = set()
                        for flag in stats.flagged:
                            counts.records_flagged += 1
                            record_flags.update(flag.reasons.keys())
                            if len(examples) < FLAG_EXAMPLES:
                                examples.append(f"{flag.record}: " + "; ".join(
                                    f"{r}: {d}" for r, d in flag.reasons.items()))
                            flag_rows += [{"set": recipe.set, "lang": recipe.lang, "name": name,
                                           "fingerprint": work.fingerprint, "split": split,
                                           "row": flag.row, "record": flag.record, "reason": r,
                                           "detail": d, "translated": flag.translated}
                                          for r, d in flag.reasons.items()]
                            left_out = recipe.flagged == "exclude" or not flag.translated
                            if left_out:
                                excluded.add(flag.row)
                            flag_file.write(json.dumps(
                                {"split": split, "row": flag.row, "record": flag.record,
                                 "excluded": left_out, "reasons": flag.reasons},
                                ensure_ascii=False) + "\n")
                        counts.records_excluded += len(excluded)
                        if excluded:
                            table = table.filter(pa.array([r not in excluded for r in
                                                           table.column(ROW).to_pylist()],
                                                          pa.bool_()))
                        table = table.drop_columns([ROW]).cast(schema)
                        parquet.write_table(table)
                        records = table.to_pylist()
                        jsonl.write(to_jsonl(records))
                        if overview is not None:
                            overview.write(to_jsonl([overview_record(r, recipe.set) for r in records]))
                        rows[split] += table.num_rows
        counts.records_written = sum(rows.values())
        card = _card(recipe, rows, counts, chunk_flags, record_flags,
                     res.pool.api_model(recipe.translation.model))
        (folder / "README.md").write_text(render_card(card), encoding="utf-8")
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            with open(path, "rb") as src, res.lake.writer(f"{base}/{path.relative_to(folder)}") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
        dataset_dict = save_dataset_dict(res.lake, f"{base}/{DATASET_DIR}", folder,
                                         {s: s for s in rows}, Path(tmp) / "cache")
    res.lake.write_shard(FLAGS, f"{recipe.set}-{recipe.lang}-{name}-{work.fingerprint[:24]}", flag_rows)
    with res.warehouse() as wh:
        wh.refresh_views(TABLES)
    return TranslateExport(folder=res.lake.url(base), rows=rows, counts=counts,
                           flags=dict(sorted(chunk_flags.items())),
                           flagged_records=dict(sorted(record_flags.items())),
                           flagged_examples=examples, usage=usage,
                           card=res.lake.url(f"{base}/README.md"), dataset_dict=dataset_dict)


def _read_block(lake: Lake, fingerprint: str, block: Block) -> tuple[pa.Table, BlockStats]:
    path = block_path(fingerprint, block)
    try:
        table = pq.read_table(pa.BufferReader(lake.read_bytes(path)))
    except FileNotFoundError:
        raise UltraforgeError(f"block {block.split} rows {block.start}-{block.stop} is not "
                              f"landed ({lake.url(path)}): run again") from None
    return table, BlockStats.model_validate_json(table.schema.metadata[STATS_KEY])


def _maybe_open(path: Path, wanted: bool):
    return open(path, "wb") if wanted else contextlib.nullcontext()


def _who(record: dict[str, Any], split: str, row: int) -> str:
    """How a flagged record is named: its id (prompt_id or the source id) and place."""
    ident = record.get("prompt_id") or record.get("id")
    return f"{split} row {row}" + (f" (id {ident})" if ident else "")


def _card(recipe: TranslateRecipe, rows: dict[str, int], counts: TranslateCounts,
          chunk_flags: Counter[str], record_flags: Counter[str], api_model: str) -> Card:
    lang = language_name(recipe.lang)
    return Card(
        title=f"{recipe.set} ({lang})",
        summary=(f"The {recipe.set} set with its text fields translated into {lang} by "
                 f"`{api_model}` (pool model `{recipe.translation.model}`) on "
                 f"{dt.date.today().isoformat()}. Ids, prompt ids, models, principles, ratings, "
                 f"types, scores and splits are those of the English set. "
                 + ORIGINALS[recipe.originals].format(lang=recipe.source_lang)),
        rule=[
            "Protected spans (code blocks, inline code, URLs, special tokens, `Confidence:` "
            "lines) were replaced by placeholders, so they come back byte for byte.",
            f"Texts were cut at paragraph, line and sentence breaks into chunks of at most "
            f"{recipe.translation.max_chunk_tokens} tokens; each unique chunk was translated once.",
            "Every chunk was checked: empty, truncated, placeholders damaged, Markdown structure "
            "changed, commentary added, English left untranslated, wrong script, length ratio.",
            f"A failing chunk was retranslated up to {recipe.translation.max_retranslations} "
            f"times; records still failing were {'left out' if recipe.flagged == 'exclude' else 'kept'} "
            "and are listed in flags.jsonl.",
        ],
        splits=rows,
        # what the set is, not what this run paid: a rerun from the journal gives the same card
        counts={**counts.model_dump(exclude={"calls_paid", "calls_from_journal"}),
                **{f"flagged chunks: {k}": v for k, v in sorted(chunk_flags.items())},
                **{f"flagged records: {k}": v for k, v in sorted(record_flags.items())}},
        recipe=recipe.model_dump(mode="json"),
        tags=["translation", recipe.lang],
    )

