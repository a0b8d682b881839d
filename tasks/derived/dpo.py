"""Build the DPO set from a raw UltraFeedback export, in DuckDB where the data lives
(tasks/core/derived/binarize.py has the rule and the SQL), and publish it (publish.py).

DuckDB reads the export's Parquet directly (through the lake's filesystem on S3) and picks the
pairs; its tables hold ids, scores and response hashes, never the texts. The rows are then
assembled from the input one row group at a time with Arrow kernels (take the two picked
responses, build the conversations) and go to the split writers in input order. Memory stays
flat in the number of prompts, and no step touches a row in Python.
"""

from __future__ import annotations

import time
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
from tasks.adapters.lake import Lake
from tasks.adapters.resources import current
from tasks.adapters.sources import RowError, read_records
from tasks.adapters.warehouse import Warehouse
from tasks.core.derived import binarize as bz
from tasks.core.derived.card import Card
from tasks.core.derived.splits import no_training_rows
from tasks.core.ultrafeedback.export import SCORE_REVISION_KEY, revised_score
from tasks.derived.publish import DPO_SPLITS, Published, publish, set_folder

REQUIRED = ("source", "instruction", "completions")
BATCH_ROWS = 2000
COMPLETION_FIELDS = ("model", "response")


class DPOExport(BaseModel):
    """What the DPO export made."""

    model_config = ConfigDict(extra="forbid")

    input: str
    published: Published
    counts: bz.DPOCounts
    seconds: dict[str, float]  # pairs (decontaminate, score, pick, in DuckDB) and publish


def resolve_input(lake: Lake, where: str) -> tuple[str, dict]:
    """(URL DuckDB and fsspec can read, fsspec options) of a recipe `input`: an `s3://` URL or an
    absolute path as given, anything else a path in the lake. Other URLs are refused: DuckDB
    would fetch an extension to read them, and nothing is downloaded at run time."""
    if "://" in where:
        if not where.startswith("s3://"):
            raise ConfigError(f"input {where}: only local paths, lake paths and s3:// URLs can be "
                              "read; copy the file into the lake or to this machine first")
        return where, {} if lake.is_local else dict(lake.fs.storage_options)
    if Path(where).is_absolute():
        return where, {}
    return lake.url(where), {} if lake.is_local else dict(lake.fs.storage_options)


def read_schema(url: str, options: dict) -> pa.Schema:
    try:
        with fsspec.open(url, "rb", **options) as f:
            return pq.read_schema(f)
    except FileNotFoundError:
        raise ConfigError(f"input {url}: no such file (run the ultrafeedback flow first, or set "
                          "`input` to a raw export)") from None
    except pa.ArrowInvalid as exc:
        raise ConfigError(f"input {url}: not a Parquet file ({exc})") from None


def check_input(recipe: bz.DPORecipe, url: str, schema: pa.Schema) -> bool:
    """Raise a ConfigError naming the file and column if the input cannot give this recipe's
    set; whether it has an `id` column."""
    missing = [c for c in REQUIRED if c not in schema.names]
    if missing:
        raise ConfigError(f"input {url}: no column {', '.join(missing)} (a raw UltraFeedback "
                          "export has source, instruction, completions)")
    completion = schema.field("completions").type.value_type
    names = {f.name for f in completion}
    need = [*COMPLETION_FIELDS, *({"overall_score": ["overall_score"],
                                   "mean_aspects": [bz.FINE_GRAINED]}.get(recipe.score,
                                                                          ["annotations"]))]
    if absent := [n for n in need if n not in names]:
        raise ConfigError(f"input {url}: completions have no {', '.join(absent)} field, which "
                          f"score={recipe.score!r} needs")
    if recipe.score.startswith("aspect:"):
        aspects = [f.name for f in completion.field("annotations").type]
        if recipe.score[7:] not in aspects:
            raise ConfigError(f"score: no aspect {recipe.score[7:]!r} in {url} "
                              f"(has: {', '.join(aspects)})")
    revision = (schema.metadata or {}).get(SCORE_REVISION_KEY)
    if recipe.preset == "current" and revision == b"zephyr" and recipe.score == "overall_score":
        raise ConfigError(f"input {url}: exported with score_revision zephyr (1 stored as 10); "
                          "preset current needs the fixed scores: export it with "
                          "export.score_revision=fixed")
    return "id" in schema.names


def load_questions(paths: list[str], base_dir: Path) -> list[str]:
    """The questions of the decontamination files (see binarize.Decontamination)."""
    out: list[str] = []
    for name in paths:
        path = Path(name) if Path(name).is_absolute() else base_dir / name
        if path.suffix.lower() == ".txt":
            try:
                lines = path.read_text(encoding="utf-8").splitlines()
            except OSError as exc:
                raise ConfigError(f"decontamination.questions: {path}: {exc.strerror}") from None
            out += [line.strip() for line in lines if line.strip()]
            continue
        for row in read_records(path=path, fields={"question": "question"}):
            if isinstance(row, RowError):
                raise ConfigError(f"decontamination.questions: {path} row {row.row}: {row.reason}")
            q = row.data.get("question")
            if not isinstance(q, str):
                raise ConfigError(f"decontamination.questions: {path} row {row.row}: field "
                                  f"`question` is {type(q).__name__}, not a string")
            out.append(q)
    return out


def rule_in_words(recipe: bz.DPORecipe, test_rows: int) -> list[str]:
    """The construction rule for the card."""
    dec = recipe.decontaminate
    score = {"overall_score": "its critique `overall_score`" + (
        " read as the first release did (a score of 1 taken as 10)" if recipe.zephyr_scores
        else " as the judge wrote it"),
        "mean_aspects": "its `fine-grained_score` (the mean of the aspect ratings)"}.get(
        recipe.score, f"its `{recipe.score[7:]}` rating")
    steps = [f"Read `{recipe.input}` (one row per prompt, its completions and their ratings)."]
    if dec:
        steps.append(
            f"Drop rows of source {', '.join(dec.drop_sources) or '(none)'}, and rows whose "
            "prompt equals a question of the TruthfulQA list (those rows' instructions"
            + (f" plus {len(dec.questions)} question file(s)" if dec.questions else "")
            + ")" + (", exactly or after normalizing case, punctuation and spaces."
                     if dec.normalized else ", exactly."))
    steps += [
        f"Score each completion by {score}; completions without a score take no part, and "
        "rows with fewer than 2 scored completions are dropped.",
        "Chosen: the highest-scored completion (the first one on ties).",
        ("Rejected: the lowest-scored other completion (a seeded pick among equals)."
         if recipe.rejected == "lowest" else
         f"Rejected: a uniformly random other completion (seed {recipe.seed}), any score; ties "
         "with chosen are kept."),
    ]
    if recipe.drop_ties or recipe.min_margin:
        steps.append("Drop pairs " + " and ".join(
            [*(["whose scores are equal"] if recipe.drop_ties else []),
             *([f"whose margin is below {recipe.min_margin}"] if recipe.min_margin else [])]) + ".")
    steps += [
        "prompt = the instruction; prompt_id = sha256 of the prompt; chosen and rejected = "
        "[user, assistant] conversations; messages = chosen; scores as float64.",
        f"Splits (seed {recipe.splits.seed}): {test_rows} pairs (test_size "
        f"{recipe.splits.test_size}) held out as test_prefs, its first half as test_sft; "
        "train_prefs = train_sft = the rest; train_gen and test_gen = the sft splits with "
        "messages ending at the user turn.",
    ]
    return steps


@task(name="export-dpo", cache_policy=NO_CACHE)
def export_dpo(recipe: bz.DPORecipe, base_dir: str) -> DPOExport:
    """Binarize the raw export into exports/dpo/<name>/ (see the module docstring)."""
    res = current()
    url, options = resolve_input(res.lake, recipe.input)
    has_id = check_input(recipe, url, read_schema(url, options))
    dec = recipe.decontaminate
    questions = load_questions(dec.questions, Path(base_dir)) if dec else []
    out = _binarize(res.lake_db(), res.lake, recipe, url, options, has_id, questions)
    if isinstance(out, str):  # raised here, once the database is closed and its frame gone
        raise ConfigError(out)
    return out


def _binarize(wh: Warehouse, lake: Lake, recipe: bz.DPORecipe, url: str, options: dict,
              has_id: bool, questions: list[str]) -> DPOExport | str:
    """The DPO set published, or what is wrong with the recipe for this input."""
    source = f"read_parquet({bz.literal(url)}, file_row_number = true)"
    dec = recipe.decontaminate
    started = time.perf_counter()
    with wh:
        if recipe.zephyr_scores:
            wh.con.create_function(bz.ZEPHYR_UDF, lambda s: revised_score(s, "zephyr"),
                                   ["DOUBLE"], "DOUBLE")
        wh.execute("CREATE TABLE questions (q VARCHAR)")
        if questions:
            wh.con.register("question_list", pa.table({"q": questions}))
            wh.execute("INSERT INTO questions SELECT q FROM question_list")
        for sql in bz.statements(recipe, source):
            wh.execute(sql)
        counts = bz.DPOCounts(**wh.query(bz.counts_sql(recipe))[0])
        if not counts.pairs:
            return (f"input {url}: no pairs ({counts.rows_read} rows read; "
                    f"{counts.dropped_fewer_than_2_scored} with fewer than 2 scored completions)")
        if problem := recipe.splits.problem(counts.pairs, "pairs"):
            return problem
        test_rows = recipe.splits.test_rows(counts.pairs)
        schema = bz.DPO_SCHEMA.append(pa.field("id", pa.string())) if has_id else bz.DPO_SCHEMA
        card = Card(title=f"{recipe.name}: preference pairs (ultrafeedback_binarized shape)",
                    summary=f"Chosen/rejected pairs for DPO built by ultraforge from `"
                            f"{recipe.input}` with preset `{recipe.preset}`.",
                    rule=rule_in_words(recipe, test_rows), splits={},
                    tags=["dpo", "preference"], counts=counts.model_dump(),
                    recipe=recipe.model_dump(mode="json") | {
                        "decontamination": dec.model_dump(mode="json") if dec else None})
        picks = wh.query_arrow(bz.picks_sql(recipe))
    if problem := no_training_rows(picks.column("split_rank"), test_rows, "pairs"):
        return problem
    paired = time.perf_counter()
    published = publish(lake, set_folder("dpo", recipe.name),
                        pair_batches(url, options, picks, schema), DPO_SPLITS, schema,
                        test_rows, card, recipe.push_to_hub)
    return DPOExport(input=url, published=published, counts=counts,
                     seconds={"pairs": round(paired - started, 3),
                              "publish": round(time.perf_counter() - paired, 3)})


def _leaf_paths(pf: pq.ParquetFile, fields: tuple[str, ...]) -> list[str]:
    """The Parquet leaf paths of these completion fields (`completions.list.element.<field>` as
    pyarrow writes them; other writers name the list levels differently)."""
    paths = [c.path for c in (pf.schema.column(i) for i in range(len(pf.schema)))]
    return [p for p in paths if p.startswith("completions.")
            and any(p.endswith("." + f) for f in fields)]


def pair_batches(url: str, options: dict, picks: pa.Table,
                 schema: pa.Schema) -> Iterator[pa.RecordBatch]:
    """The kept pairs as record batches of `schema` plus `gen_messages` and `split_rank`, in
    input order: each input row group is read once and its picked rows assembled."""
    rows = picks.column("row_ix").to_numpy()
    done = start = 0
    with fsspec.open(url, "rb", **options) as f:
        pf = pq.ParquetFile(f)
        # of the completions, only the responses are decoded (a third of the reading time)
        columns = ["instruction", *_leaf_paths(pf, ("response",)),
                   *(["id"] if "id" in schema.names else [])]
        for batch in pf.iter_batches(batch_size=BATCH_ROWS, columns=columns):
            end = int(np.searchsorted(rows, start + batch.num_rows))
            if end > done:
                yield _assemble(batch.take(pa.array(rows[done:end] - start)),
                                picks.slice(done, end - done), schema)
            done, start = end, start + batch.num_rows


def _conversation(prompt: pa.Array, *replies: pa.Array) -> pa.ListArray:
    """Per row, [user: prompt, assistant: reply] (or [user: prompt] with no reply)."""
    n, turns = len(prompt), 1 + len(replies)
    order = np.arange(n * turns).reshape(turns, n).T.ravel()  # row-major: p0, r0, p1, r1, ...
    content = pa.concat_arrays([prompt, *replies]).take(pa.array(order))
    role = pa.array(np.tile(np.array(["user", "assistant"][:turns], dtype=object), n),
                    pa.string())
    offsets = pa.array(np.arange(0, n * turns + 1, turns, dtype=np.int32))
    return pa.ListArray.from_arrays(offsets, pa.StructArray.from_arrays(
        [content, role], fields=list(bz.MESSAGE)))


def _assemble(rows: pa.RecordBatch, picks: pa.Table, schema: pa.Schema) -> pa.RecordBatch:
    prompt = rows.column("instruction").cast(pa.string())
    completions = rows.column("completions")
    starts = completions.offsets.to_numpy()[:-1]
    responses = completions.values.field("response").cast(pa.string())

    def picked(col: str) -> pa.Array:
        return responses.take(pa.array(starts + picks.column(col).to_numpy() - 1))

    chosen = _conversation(prompt, picked("chosen_i"))
    cols = {"prompt": prompt, "prompt_id": picks.column("prompt_id").combine_chunks(),
            "chosen": chosen, "rejected": _conversation(prompt, picked("rejected_i")),
            "messages": chosen,
            "score_chosen": picks.column("score_chosen").combine_chunks(),
            "score_rejected": picks.column("score_rejected").combine_chunks()}
    if "id" in schema.names:
        cols["id"] = rows.column("id").cast(pa.string())
    names = [*schema.names, "gen_messages", "split_rank"]
    arrays = [*(cols[n] for n in schema.names), _conversation(prompt),
              picks.column("split_rank").combine_chunks()]
    return pa.RecordBatch.from_arrays(arrays, names=names)
