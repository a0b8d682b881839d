"""Publish a derived set like the sets people already use (docs/derived.md#published):

    exports/<kind>/<name>/data/<split>.parquet   one Parquet file per split (the Hub's layout)
    exports/<kind>/<name>/README.md              the dataset card, naming those files
    exports/<kind>/<name>/dataset/               `datasets.DatasetDict.save_to_disk`

Rows arrive as a stream of record batches in input order, each with its `split_rank` (its place
in the seeded draw, tasks/core/derived/splits.py) and a `gen_messages` column; every split is
written from that one stream, a batch at a time, so memory does not grow with the set, and rows
keep the input's order within a split. Splits holding the same rows (train_prefs and
train_sft) are written once and copied. The files are built in a local
temporary folder and then copied to the lake, each appearing only once complete. With a repo
id, a token and a network, the same folder (data/ and README.md) is uploaded to the Hub;
otherwise the push is skipped and the reason returned.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Literal, NamedTuple

import datasets
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict

from tasks.adapters.lake import WRITER_OPTIONS, Lake
from tasks.core.derived.card import Card, render_card, split_path


class Split(NamedTuple):
    """A split: its name, which rows (by draw rank), and whether `messages` ends at the last
    user turn (the `*_gen` splits)."""

    name: str
    rows: Literal["train", "test", "test_half"]
    gen: bool = False


DATASET_DIR = "dataset"  # the DatasetDict, inside a set's folder

# docs/datasets.md#ultrafeedback_binarized: train_prefs = train_sft = the train part; test_prefs
# = the whole test part, test_sft its first half; *_gen = the sft splits without the last turn.
DPO_SPLITS = (Split("train_prefs", "train"), Split("train_sft", "train"),
              Split("train_gen", "train", gen=True), Split("test_prefs", "test"),
              Split("test_sft", "test_half"), Split("test_gen", "test_half", gen=True))
# docs/datasets.md#ultrachat_200k
SFT_SPLITS = (Split("train_sft", "train"), Split("test_sft", "test"),
              Split("train_gen", "train", gen=True), Split("test_gen", "test", gen=True))


def set_folder(kind: str, name: str) -> str:
    """The lake folder of a derived set: exports/<sft|dpo>/<name>."""
    return f"exports/{kind}/{name}"


def dataset_dict_path(kind: str, name: str) -> str:
    """Where a derived set's DatasetDict is saved in the lake."""
    return f"{set_folder(kind, name)}/{DATASET_DIR}"


class Published(BaseModel):
    """Where a derived set landed."""

    model_config = ConfigDict(extra="forbid")

    folder: str
    parquet: dict[str, str]
    rows: dict[str, int]
    dataset_dict: str
    card: str
    hub: str


def _mask(split: Split, rank: pa.Array, test_rows: int) -> pa.Array:
    if split.rows == "train":
        return pc.greater(rank, test_rows)
    return pc.less_equal(rank, test_rows if split.rows == "test" else (test_rows + 1) // 2)


def _columns(batch: pa.RecordBatch, schema: pa.Schema, gen: bool) -> pa.Table:
    cols = [batch.column("gen_messages" if gen and f.name == "messages" else f.name)
            for f in schema]
    return pa.Table.from_arrays(cols, schema=schema)


def _distinct(splits: Sequence[Split]) -> dict[str, Split]:
    """Each split, mapped to the first split with the same rows and shape (written once)."""
    first: dict[tuple, Split] = {}
    return {s.name: first.setdefault((s.rows, s.gen), s) for s in splits}


def _options(schema: pa.Schema) -> dict:
    """The lake's writer options, with min/max statistics only for the scalar columns: on long
    texts and message lists they cost a quarter of the writing time and no reader uses them."""
    scalar = [f.name for f in schema if not (pa.types.is_list(f.type) or f.name == "prompt")]
    return {**WRITER_OPTIONS, "write_statistics": scalar}


def write_splits(batches: Iterable[pa.RecordBatch], splits: Sequence[Split], schema: pa.Schema,
                 test_rows: int, folder: Path) -> dict[str, int]:
    """Write `folder`/data/<split>.parquet for every split from one stream; rows per split.
    Each file has its own writer thread (Arrow encodes without the GIL), so the splits are
    encoded side by side while the next batch is assembled."""
    (folder / "data").mkdir(parents=True, exist_ok=True)
    same = _distinct(splits)
    written = [s for s in splits if same[s.name] is s]
    rows = dict.fromkeys((s.name for s in written), 0)
    writers = {s.name: pq.ParquetWriter(folder / split_path(s.name), schema, **_options(schema))
               for s in written}
    threads = {s.name: ThreadPoolExecutor(1, thread_name_prefix=f"write-{s.name}")
               for s in written}
    pending: list[Future] = []
    try:
        for batch in batches:
            rank = batch.column("split_rank")
            for s in written:
                part = _columns(batch.filter(_mask(s, rank, test_rows)), schema, s.gen)
                if part.num_rows:
                    pending.append(threads[s.name].submit(writers[s.name].write_table, part))
                    rows[s.name] += part.num_rows
            while len(pending) > 2 * len(written):  # bounded: a slow disk slows the reading
                pending.pop(0).result()  # (and a failed write raises here)
        for f in pending:
            f.result()
    finally:
        for s in written:
            threads[s.name].shutdown()
            writers[s.name].close()
    for s in splits:
        if same[s.name] is not s:
            shutil.copyfile(folder / split_path(same[s.name].name), folder / split_path(s.name))
    return {s.name: rows[same[s.name].name] for s in splits}


def publish(lake: Lake, base: str, batches: Iterable[pa.RecordBatch], splits: Sequence[Split],
            schema: pa.Schema, test_rows: int, card: Card, push_to_hub: str | None) -> Published:
    """Write the splits, the card and the DatasetDict under `base` in the lake; push if asked.
    `card.splits` is filled in with the rows written."""
    with tempfile.TemporaryDirectory(prefix="ultraforge-derived-") as tmp:
        folder = Path(tmp) / "set"
        rows = write_splits(batches, splits, schema, test_rows, folder)
        text = render_card(card.model_copy(update={"splits": rows}))
        (folder / "README.md").write_text(text, encoding="utf-8")
        parquet = {}
        for s in rows:
            with open(folder / split_path(s), "rb") as src, \
                    lake.writer(f"{base}/{split_path(s)}") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
            parquet[s] = lake.url(f"{base}/{split_path(s)}")
        card_url = lake.write_bytes(f"{base}/README.md", text.encode("utf-8"))
        same = _distinct(splits)
        dataset_dict = save_dataset_dict(lake, f"{base}/{DATASET_DIR}", folder,
                                         {s.name: same[s.name].name for s in splits},
                                         Path(tmp) / "cache")
        hub = push(folder, push_to_hub)
    return Published(folder=lake.url(base), parquet=parquet, rows=rows,
                     dataset_dict=dataset_dict, card=card_url, hub=hub)


def save_dataset_dict(lake: Lake, relpath: str, folder: Path, files: dict[str, str],
                      cache: Path) -> str:
    """`DatasetDict.save_to_disk` at `relpath` (replacing what was there) of the splits in
    `files`: split → the split whose `folder`/data/<split>.parquet holds its rows."""
    datasets.disable_progress_bars()
    def load(split: str) -> datasets.Dataset:
        path = str(folder / split_path(split))
        if pq.ParquetFile(path).metadata.num_rows == 0:  # from_parquet refuses an empty file
            return datasets.Dataset(pq.read_table(path))
        return datasets.Dataset.from_parquet(path, cache_dir=str(cache))

    loaded = {f: load(f) for f in dict.fromkeys(files.values())}
    dd = datasets.DatasetDict({s: loaded[f] for s, f in files.items()})
    url = lake.url(relpath)
    if lake.exists(relpath):  # a smaller set must not leave stale shards of a bigger one
        lake.fs.rm(url, recursive=True)
    # a copy: datasets adds its own keys to the dict it is given
    dd.save_to_disk(url, storage_options=None if lake.is_local else dict(lake.fs.storage_options))
    return url


def push(folder: Path, repo_id: str | None) -> str:
    """Upload `folder` (data/ and README.md) to the Hub dataset `repo_id`; what happened, in
    one line. Needs a token (HF_TOKEN or a saved login) and a network; never logs the token."""
    if repo_id is None:
        return "not pushed: no push_to_hub repo in the recipe"
    import httpx2  # huggingface_hub 2.x's HTTP layer: a refused connection is httpx2.ConnectError
    from huggingface_hub import HfApi, constants, get_token
    from huggingface_hub.errors import HfHubHTTPError

    if not get_token():
        return f"not pushed to {repo_id}: no Hugging Face token (set HF_TOKEN or log in)"
    api = HfApi()
    try:
        api.create_repo(repo_id, repo_type="dataset", exist_ok=True)
        api.upload_folder(repo_id=repo_id, repo_type="dataset", folder_path=str(folder),
                          commit_message="ultraforge export")
    except HfHubHTTPError as exc:  # the Hub answered: say what it said, by status
        status = exc.response.status_code if exc.response is not None else "?"
        return f"not pushed to {repo_id}: the Hub refused it (HTTP {status})"
    except (httpx2.HTTPError, OSError) as exc:
        return f"not pushed to {repo_id}: the Hub could not be reached ({type(exc).__name__})"
    return f"pushed to {repo_id} on {constants.ENDPOINT}"
