"""Translate a landed or exported set into another language and publish it in the same shape
(docs/translation.md#published):

    exports/<set>-<lang>/<name>/data/<split>.parquet   the input's splits, translated records
    exports/<set>-<lang>/<name>/data/<split>.jsonl     the same records as JSON lines
    exports/<set>-<lang>/<name>/flags.jsonl            every flagged record and its reasons
    exports/<set>-<lang>/<name>/README.md              card: translator, date, checks, counts
    exports/<set>-<lang>/<name>/dataset/               `datasets.DatasetDict.save_to_disk`

A raw export (one Parquet file) is the split `train`, as on the Hub; a derived set keeps each of
its splits, row for row. Records go through in batches of `batch_records`: their chunks share
calls, and the journal answers every chunk already paid for, so a rerun (or a run killed and run
again) pays only for chunks not answered before.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
import tempfile
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
from prefect import task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, ConfigDict, Field

from tasks.adapters.errors import ConfigError, UltraforgeError
from tasks.adapters.lake import WRITER_OPTIONS, Lake
from tasks.adapters.resources import current, run
from tasks.core.derived.card import Card, render_card, split_path
from tasks.core.translate import fields
from tasks.core.translate.prompt import language_name
from tasks.core.translate.recipe import TranslateRecipe
from tasks.core.usage import UsageRow, merge_usage, usage_of
from tasks.derived.dpo import read_schema, resolve_input
from tasks.derived.publish import DATASET_DIR, save_dataset_dict
from tasks.translate.engine import TranslationRun, translate_texts

FLAG_EXAMPLES = 20  # flagged records named in the summary


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
    dataset_dict: str


def output_folder(recipe: TranslateRecipe) -> str:
    name = recipe.name or Path(recipe.input_path().rstrip("/")).name.removesuffix(".parquet")
    return f"exports/{recipe.set}-{recipe.lang}/{name}"


def input_splits(lake: Lake, where: str) -> dict[str, tuple[str, dict]]:
    """split → (URL, fsspec options) of the input: one file is `train`; a folder has data/*."""
    if where.endswith(".parquet"):
        return {"train": resolve_input(lake, where)}
    url, options = resolve_input(lake, f"{where.rstrip('/')}/data")
    fs, path = fsspec.core.url_to_fs(url, **options)
    try:
        names = sorted(Path(p).name for p in fs.ls(path, detail=False) if p.endswith(".parquet"))
    except FileNotFoundError:
        names = []
    if not names:
        raise ConfigError(f"input {where}: neither a .parquet file nor a set folder with "
                          "data/<split>.parquet (run its export first)")
    return {n.removesuffix(".parquet"): (f"{url}/{n}", options) for n in names}


@task(name="translate-set", cache_policy=NO_CACHE)
def translate_set(recipe: TranslateRecipe) -> TranslateExport:
    """Every split of the input translated and published (see the module docstring)."""
    res = current()
    if recipe.translation.model not in res.pool.models:
        raise ConfigError(f"translation.model: {recipe.translation.model!r} is not in the model pool")
    splits = input_splits(res.lake, recipe.input_path())
    base = output_folder(recipe)
    if recipe.translation.route == "batch":
        res.gateway.batches.configure(**recipe.batch.model_dump(exclude={"max_wait_s"}))
    counts = TranslateCounts()
    tally = _Tally()
    rows: dict[str, int] = {}
    with tempfile.TemporaryDirectory(prefix="ultraforge-translate-") as tmp:
        folder = Path(tmp) / "set"
        (folder / "data").mkdir(parents=True)
        with open(folder / "flags.jsonl", "w", encoding="utf-8") as flag_file:
            for split, (url, options) in splits.items():
                source = read_schema(url, options)
                schema = fields.translated_schema(source, recipe.set, recipe.source_lang)
                rows[split] = _split(recipe, split, url, options, schema, folder, flag_file,
                                     counts, tally)
        if tally.pending:
            raise UltraforgeError(f"{tally.pending} chunks still wait in batches (batch.wait_s "
                              f"{recipe.batch.wait_s:g} s): nothing is published; run again to "
                              "collect them, without paying again")
        usage = merge_usage(tally.usage)
        counts.calls_paid = sum(u.requests for u in usage)
        counts.calls_from_journal = sum(u.from_journal for u in usage)
        card = _card(recipe, rows, counts, tally, res.pool.api_model(recipe.translation.model))
        (folder / "README.md").write_text(render_card(card), encoding="utf-8")
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            with open(path, "rb") as src, res.lake.writer(f"{base}/{path.relative_to(folder)}") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
        dataset_dict = save_dataset_dict(res.lake, f"{base}/{DATASET_DIR}", folder,
                                         {s: s for s in rows}, Path(tmp) / "cache")
    return TranslateExport(folder=res.lake.url(base), rows=rows, counts=counts,
                           flags=dict(sorted(tally.chunk_flags.items())),
                           flagged_records=dict(sorted(tally.record_flags.items())),
                           flagged_examples=tally.examples, usage=usage,
                           card=res.lake.url(f"{base}/README.md"), dataset_dict=dataset_dict)


class _Tally:
    """What a run adds up batch by batch: usage rows (not the results themselves, so memory
    does not grow with the set), chunk and record flags, examples, pending chunks."""

    def __init__(self) -> None:
        self.usage: list[UsageRow] = []
        self.chunk_flags: Counter[str] = Counter()
        self.record_flags: Counter[str] = Counter()
        self.examples: list[str] = []
        self.pending = 0

    def add(self, run_: TranslationRun, counts: TranslateCounts) -> None:
        self.usage = merge_usage([*self.usage, *usage_of("translation", run_.results, current().pool.cost)])
        self.chunk_flags.update(run_.flags)
        self.pending += run_.flags.get("pending", 0)
        for name in ("texts", "chunks", "unique_chunks", "retranslations", "flagged_chunks"):
            setattr(counts, name, getattr(counts, name) + getattr(run_, name))


def _split(recipe: TranslateRecipe, split: str, url: str, options: dict, schema: pa.Schema,
           folder: Path, flag_file, counts: TranslateCounts, tally: _Tally) -> int:
    """One split translated into `folder`/data/<split>.{parquet,jsonl}; rows written."""
    written, row_ix = 0, 0
    with pq.ParquetWriter(folder / split_path(split), schema, **WRITER_OPTIONS) as parquet, \
            open(folder / f"data/{split}.jsonl", "w", encoding="utf-8") as jsonl:
        for records in record_batches(url, options, recipe):
            out, run_ = _translate(recipe, records)
            tally.add(run_, counts)
            kept = []
            for record, (row, reasons) in zip(records, out, strict=True):
                counts.records_read += 1
                if reasons:
                    counts.records_flagged += 1
                    who = _who(record, split, row_ix)
                    tally.record_flags.update(reasons.keys())
                    if len(tally.examples) < FLAG_EXAMPLES:
                        tally.examples.append(f"{who}: " + "; ".join(f"{r}: {d}" for r, d in reasons.items()))
                    excluded = recipe.flagged == "exclude" or row is None
                    flag_file.write(json.dumps({"split": split, "row": row_ix, "record": who,
                                                "excluded": excluded, "reasons": reasons},
                                               ensure_ascii=False) + "\n")
                    if excluded:
                        counts.records_excluded += 1
                        row_ix += 1
                        continue
                kept.append(row)
                row_ix += 1
            if kept:
                parquet.write_table(pa.Table.from_pylist(kept, schema=schema))
                jsonl.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in kept)
            written += len(kept)
            counts.records_written += len(kept)
    return written


def record_batches(url: str, options: dict, recipe: TranslateRecipe) -> Iterator[list[dict[str, Any]]]:
    """The split's records in batches of `batch_records`, the first `limit` only if set."""
    left = recipe.limit
    with fsspec.open(url, "rb", **options) as f:
        for batch in pq.ParquetFile(f).iter_batches(batch_size=recipe.batch_records):
            records = batch.to_pylist()
            if left is not None:
                records, left = records[:left], left - min(left, len(records))
            if not records:
                return
            yield records


def _translate(recipe: TranslateRecipe, records: list[dict[str, Any]]
               ) -> tuple[list[tuple[dict | None, dict[str, str]]], TranslationRun]:
    """Each record translated (None when a chunk has no translation) with its flags."""
    slots = [fields.slots(r, recipe.set, recipe.feedback) for r in records]
    texts = [s.text for record_slots in slots for s in record_slots]
    outcomes, run_ = run(translate_texts(current().gateway, recipe.translation, texts))
    out, i = [], 0
    for record, record_slots in zip(records, slots, strict=True):
        mine = outcomes[i:i + len(record_slots)]
        i += len(record_slots)
        reasons: dict[str, str] = {}
        for o in mine:
            for reason, detail in o.flags.items():
                reasons.setdefault(reason, detail)
        if any(o.text is None for o in mine):
            out.append((None, reasons))
            continue
        texts_at = {s.path: o.text for s, o in zip(record_slots, mine, strict=True)}
        out.append((fields.translated(record, recipe.set, texts_at, recipe.source_lang), reasons))
    return out, run_


def _who(record: dict[str, Any], split: str, row: int) -> str:
    """How a flagged record is named: its id (prompt_id or the source id) and place."""
    ident = record.get("prompt_id") or record.get("id")
    return f"{split} row {row}" + (f" (id {ident})" if ident else "")


def _card(recipe: TranslateRecipe, rows: dict[str, int], counts: TranslateCounts,
          tally: _Tally, api_model: str) -> Card:
    lang = language_name(recipe.lang)
    return Card(
        title=f"{recipe.set} ({lang})",
        summary=(f"The {recipe.set} set with its text fields translated into {lang} by "
                 f"`{api_model}` (pool model `{recipe.translation.model}`) on "
                 f"{dt.date.today().isoformat()}. Ids, prompt ids, models, principles, ratings, "
                 f"types, scores and splits are those of the English set; each translated "
                 f"column is followed by its original (`*_{recipe.source_lang}`)."),
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
                **{f"flagged chunks: {k}": v for k, v in sorted(tally.chunk_flags.items())},
                **{f"flagged records: {k}": v for k, v in sorted(tally.record_flags.items())}},
        recipe=recipe.model_dump(mode="json"),
        tags=["translation", recipe.lang],
    )

