"""Build the SFT set from landed UltraChat dialogues (tasks/core/derived/sft.py has the rules)
and publish it (publish.py).

The dialogues stream out of DuckDB in batches; each is repaired and filtered in Python (the
rules are per dialogue and not SQL-shaped), and the kept rows go to a local Parquet file. DuckDB
then draws the splits over that file's keys, and the rows go to the writers in input order.
Memory stays flat in the number of dialogues.
"""

from __future__ import annotations

import tempfile
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from prefect import task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, ConfigDict

from tasks.adapters.errors import ConfigError
from tasks.adapters.lake import WRITER_OPTIONS, Lake
from tasks.adapters.resources import current
from tasks.adapters.warehouse import Warehouse
from tasks.core.derived import sft as rules
from tasks.core.derived.binarize import literal
from tasks.core.derived.card import Card
from tasks.core.derived.splits import no_training_rows, ranks_sql
from tasks.derived.dpo import resolve_input
from tasks.derived.publish import SFT_SPLITS, Published, publish, set_folder

BATCH_ROWS = 2000
EXAMPLES = 5  # malformed rows named in the summary
_WORK_SCHEMA = rules.SFT_SCHEMA.append(pa.field("row_ix", pa.int64()))


class SFTCounts(BaseModel):
    """Dialogues read, dropped by reason, kept; truecasing repairs; phrases that dropped."""

    model_config = ConfigDict(extra="forbid")

    rows_read: int
    dropped_malformed: int
    dropped_disclaimer: int
    dropped_rounds: int
    dropped_length: int
    kept: int
    messages_truecased: int
    dialogues_truecased: int


class SFTExport(BaseModel):
    """What the SFT export made."""

    model_config = ConfigDict(extra="forbid")

    input: str
    published: Published
    counts: SFTCounts
    disclaimer_phrases: dict[str, int]
    malformed_examples: list[str]


def _input_columns(url: str, options: dict) -> list[str]:
    """The input's columns; a ConfigError if it is missing or not Parquet (dpo.read_schema's
    message would send the user to the ultrafeedback flow)."""
    try:
        with fsspec.open(url, "rb", **options) as f:
            return pq.read_schema(f).names
    except FileNotFoundError:
        raise ConfigError(f"input {url}: no such file (run the ultrachat flow first, or set "
                          "`input` to Parquet dialogues)") from None
    except pa.ArrowInvalid as exc:
        raise ConfigError(f"input {url}: not a Parquet file ({exc})") from None


def _patterns(recipe: rules.SFTRecipe, base_dir: Path) -> tuple:
    if recipe.disclaimers is None:
        return ()
    path = rules.DISCLAIMERS if recipe.disclaimers == rules.BUILTIN else Path(recipe.disclaimers)
    path = path if path.is_absolute() else base_dir / path
    try:
        return rules.phrases(str(path))
    except OSError as exc:
        raise ConfigError(f"disclaimers: {path}: {exc.strerror}") from None
    except ValueError as exc:
        raise ConfigError(f"disclaimers: {exc}") from None


def rule_in_words(recipe: rules.SFTRecipe, test_rows: int) -> list[str]:
    """The construction rule for the card."""
    steps = [f"Read the dialogues of `{recipe.input}`; drop a trailing user turn; drop "
             "dialogues that do not alternate user/assistant from the user or have an empty turn."]
    if recipe.disclaimers is not None:
        steps.append(f"Drop dialogues with an assistant turn matching an AI-disclaimer phrase "
                     f"(`{Path(recipe.disclaimers).name}`, counted per phrase below).")
    bounds = [f"{k.replace('_', ' ')} {v}" for k in ("min_rounds", "max_rounds", "min_chars",
                                                     "max_chars")
              if (v := getattr(recipe, k)) is not None]
    if bounds:
        steps.append("Drop dialogues outside " + ", ".join(bounds) + ".")
    if recipe.truecase:
        steps.append("Truecase: capitalize the first letter of each message and of each "
                     "sentence after . ! ?, outside code, abbreviations and quotes.")
    steps += ["prompt = the first user turn; prompt_id = sha256 of the prompt; messages = the "
              "dialogue as [{content, role}].",
              f"Splits (seed {recipe.splits.seed}): {test_rows} dialogues (test_size "
              f"{recipe.splits.test_size}) held out as test_sft, the rest train_sft; train_gen "
              "and test_gen = the same rows with messages ending at the last user turn."]
    return steps


@task(name="export-sft", cache_policy=NO_CACHE)
def export_sft(recipe: rules.SFTRecipe, base_dir: str) -> SFTExport:
    """Repair, filter and split the dialogues into exports/sft/<name>/."""
    res = current()
    url, options = resolve_input(res.lake, recipe.input)
    names = _input_columns(url, options)
    if "messages" not in names and "data" not in names:
        raise ConfigError(f"input {url}: no `messages` or `data` column (an UltraChat messages "
                          "or raw export has one)")
    out = _build(res.lake_db(), res.lake, recipe, url, names, _patterns(recipe, Path(base_dir)))
    if isinstance(out, str):  # raised once the database is closed (see tasks/derived/dpo.py)
        raise ConfigError(out)
    return out


def _build(wh: Warehouse, lake: Lake, recipe: rules.SFTRecipe, url: str, names: list[str],
           patterns: tuple) -> SFTExport | str:
    """The SFT set published, or what is wrong with the recipe for this input."""
    select = ", ".join(c if c in names else f"NULL AS {c}" for c in ("messages", "data", "id"))
    counts: Counter[str] = Counter()
    phrases: Counter[str] = Counter()
    examples: list[str] = []
    with tempfile.TemporaryDirectory(prefix="ultraforge-sft-") as tmp, wh:
        work = Path(tmp) / "kept.parquet"
        with pq.ParquetWriter(work, _WORK_SCHEMA, **WRITER_OPTIONS) as out:
            for batch in wh.stream(f"SELECT file_row_number AS row_ix, {select} FROM "
                                   f"read_parquet({literal(url)}, file_row_number = true)",
                                   rows=BATCH_ROWS):
                kept = []
                for r in batch.to_pylist():
                    counts["rows_read"] += 1
                    o = rules.process(recipe, r["messages"], r["data"], patterns)
                    if o.row is None:
                        counts[f"dropped_{o.drop}"] += 1
                        if o.drop == "disclaimer":
                            phrases[o.detail] += 1
                        elif o.drop == "malformed" and len(examples) < EXAMPLES:
                            who = f" (id {r['id']})" if r["id"] is not None else ""
                            examples.append(f"row {r['row_ix']}{who}: {o.detail}")
                        continue
                    counts["messages_truecased"] += o.truecased_messages
                    counts["dialogues_truecased"] += o.truecased_messages > 0
                    kept.append(o.row.model_dump() | {"row_ix": r["row_ix"]})
                counts["kept"] += len(kept)
                out.write_table(pa.Table.from_pylist(kept, schema=_WORK_SCHEMA))
        total = SFTCounts(**{f: counts[f] for f in SFTCounts.model_fields})
        if not total.kept:
            return (f"input {url}: no dialogue kept of {total.rows_read} ({dict(counts)}; "
                    f"first problems: {examples})")
        if problem := recipe.splits.problem(total.kept, "dialogues"):
            return problem
        test_rows = recipe.splits.test_rows(total.kept)
        ranks = wh.query_arrow(ranks_sql(recipe.splits.seed, f"SELECT row_ix, prompt_id FROM "
                                                             f"read_parquet({literal(str(work))})"))
        if problem := no_training_rows(ranks.column("split_rank"), test_rows, "dialogues"):
            return problem
        card = Card(title=f"{recipe.name}: SFT dialogues (ultrachat_200k shape)",
                    summary=f"Multi-turn dialogues for supervised fine-tuning built by "
                            f"ultraforge from `{recipe.input}`.",
                    rule=rule_in_words(recipe, test_rows), splits={}, tags=["sft", "dialogue"],
                    # `|` escaped: phrases like "(?:do not|don't)" would split the table row
                    counts=total.model_dump() | {"dropped for '" + p.replace("|", "\\|") + "'": n
                                                 for p, n in sorted(phrases.items())},
                    recipe=recipe.model_dump(mode="json"))
        published = publish(lake, set_folder("sft", recipe.name), ranked_batches(work, ranks),
                            SFT_SPLITS, rules.SFT_SCHEMA, test_rows, card, recipe.push_to_hub)
    return SFTExport(input=url, published=published, counts=total,
                     disclaimer_phrases=dict(sorted(phrases.items())),
                     malformed_examples=examples)


def without_last_turn(messages: pa.ListArray) -> pa.ListArray:
    """Each dialogue without its last message (the `*_gen` splits: ending at a user turn)."""
    offsets = messages.offsets.to_numpy()
    keep = np.ones(offsets[-1] - offsets[0], dtype=bool)
    keep[offsets[1:] - 1 - offsets[0]] = False
    values = messages.values.slice(offsets[0], offsets[-1] - offsets[0]).filter(pa.array(keep))
    return pa.ListArray.from_arrays(pa.array(offsets - offsets[0] - np.arange(len(offsets)),
                                             pa.int32()), values)


def ranked_batches(work: Path, ranks: pa.Table) -> Iterator[pa.RecordBatch]:
    """The kept rows of `work` (in row_ix order, as are `ranks`) with split_rank and
    gen_messages."""
    rank = ranks.column("split_rank").to_numpy()
    done = 0
    for batch in pq.ParquetFile(work).iter_batches(batch_size=BATCH_ROWS):
        n = batch.num_rows
        yield pa.RecordBatch.from_arrays(
            [*(batch.column(c) for c in rules.SFT_SCHEMA.names),
             without_last_turn(batch.column("messages")), pa.array(rank[done:done + n])],
            names=[*rules.SFT_SCHEMA.names, "gen_messages", "split_rank"])
        done += n
