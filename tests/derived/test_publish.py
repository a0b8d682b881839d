"""Publishing a derived set (tasks/derived/publish.py): the split writer's row assignment, the
DatasetDict replacing an older one, and every way a Hub push is skipped, without a network."""

from __future__ import annotations

import socket

import datasets
import huggingface_hub.constants as hf_constants
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tasks.adapters.lake import Lake
from tasks.core.derived.binarize import MESSAGE
from tasks.core.derived.card import Card
from tasks.derived.publish import DPO_SPLITS, SFT_SPLITS, publish, push, write_splits

SCHEMA = pa.schema([("prompt", pa.string()), ("prompt_id", pa.string()),
                    ("messages", pa.list_(MESSAGE))])
STREAM = SCHEMA.append(pa.field("gen_messages", pa.list_(MESSAGE))).append(
    pa.field("split_rank", pa.int64()))


def stream(n: int, per_batch: int) -> list[pa.RecordBatch]:
    """Rows ranked 1..n in split order, `per_batch` to a batch; row k says "q<k>"."""
    rows = [{"prompt": f"q{k}", "prompt_id": f"id{k}",
             "messages": [{"content": f"q{k}", "role": "user"},
                          {"content": f"a{k}", "role": "assistant"}],
             "gen_messages": [{"content": f"q{k}", "role": "user"}], "split_rank": k}
            for k in range(1, n + 1)]
    table = pa.Table.from_pylist(rows, schema=STREAM)
    return table.to_batches(max_chunksize=per_batch)


def prompts(folder, split: str) -> list[str]:
    return pq.read_table(folder / "data" / f"{split}.parquet").column("prompt").to_pylist()


def test_write_splits_assigns_rows_by_rank_test_first_and_test_half_its_first_half(tmp_path):
    batches = stream(10, per_batch=3)
    assert len(batches) == 4  # rows cross batch boundaries
    rows = write_splits(batches, DPO_SPLITS, SCHEMA, test_rows=5, folder=tmp_path)
    assert rows == {"train_prefs": 5, "train_sft": 5, "train_gen": 5, "test_prefs": 5,
                    "test_sft": 3, "test_gen": 3}
    assert prompts(tmp_path, "test_prefs") == ["q1", "q2", "q3", "q4", "q5"]
    assert prompts(tmp_path, "test_sft") == ["q1", "q2", "q3"]  # (5 + 1) // 2
    assert prompts(tmp_path, "train_prefs") == ["q6", "q7", "q8", "q9", "q10"]
    assert prompts(tmp_path, "train_sft") == prompts(tmp_path, "train_prefs")


def test_write_splits_gen_splits_take_gen_messages_under_the_messages_name(tmp_path):
    rows = write_splits(stream(7, per_batch=2), SFT_SPLITS, SCHEMA, test_rows=2, folder=tmp_path)
    assert rows == {"train_sft": 5, "test_sft": 2, "train_gen": 5, "test_gen": 2}
    gen = pq.read_table(tmp_path / "data" / "test_gen.parquet")
    sft = pq.read_table(tmp_path / "data" / "test_sft.parquet")
    assert gen.schema == SCHEMA and sft.schema == SCHEMA
    assert gen.column("messages").to_pylist() == [[{"content": "q1", "role": "user"}],
                                                  [{"content": "q2", "role": "user"}]]
    assert [m[-1]["content"] for m in sft.column("messages").to_pylist()] == ["a1", "a2"]
    assert prompts(tmp_path, "train_gen") == ["q3", "q4", "q5", "q6", "q7"]


def test_write_splits_assigns_by_split_rank_not_by_position_in_the_stream(tmp_path):
    table = pa.Table.from_batches(stream(8, per_batch=8))
    shuffled = table.take([5, 0, 7, 2, 1, 6, 3, 4]).to_batches(max_chunksize=3)
    rows = write_splits(shuffled, DPO_SPLITS, SCHEMA, test_rows=3, folder=tmp_path)
    assert rows["test_prefs"] == 3 and rows["test_sft"] == 2 and rows["train_prefs"] == 5
    # each split keeps the stream's order
    assert prompts(tmp_path, "test_prefs") == ["q1", "q3", "q2"]
    assert prompts(tmp_path, "test_sft") == ["q1", "q2"]
    assert prompts(tmp_path, "train_prefs") == ["q6", "q8", "q7", "q4", "q5"]


def test_write_splits_writes_an_empty_file_with_the_schema_for_an_empty_split(tmp_path):
    rows = write_splits(stream(3, per_batch=5), DPO_SPLITS, SCHEMA, test_rows=1, folder=tmp_path)
    assert rows["test_sft"] == 1 and rows["train_prefs"] == 2
    rows = write_splits(iter(()), SFT_SPLITS, SCHEMA, test_rows=1, folder=tmp_path / "none")
    assert rows == dict.fromkeys(rows, 0)
    empty = pq.read_table(tmp_path / "none" / "data" / "train_sft.parquet")
    assert empty.num_rows == 0 and empty.schema == SCHEMA


def test_publish_replaces_a_bigger_earlier_dataset_dict(local_settings):
    lake = Lake.from_settings(local_settings)
    card = Card(title="t", summary="s", rule=["r"], splits={}, counts={"kept": 1}, recipe={})
    publish(lake, "exports/sft/x", stream(40, per_batch=7), SFT_SPLITS, SCHEMA, 4, card, None)
    out = publish(lake, "exports/sft/x", stream(6, per_batch=7), SFT_SPLITS, SCHEMA, 2, card,
                  None)
    assert out.rows == {"train_sft": 4, "test_sft": 2, "train_gen": 4, "test_gen": 2}
    dd = datasets.load_from_disk(out.dataset_dict)
    assert {s: len(d) for s, d in dd.items()} == out.rows
    assert dd["train_sft"]["prompt"] == ["q3", "q4", "q5", "q6"]
    assert out.hub == "not pushed: no push_to_hub repo in the recipe"
    text = lake.read_bytes("exports/sft/x/README.md").decode()
    assert "| train_sft | 4 |" in text and "path: data/test_gen.parquet" in text


# -- push -------------------------------------------------------------------------------------------

FAKE_TOKEN = "hf_ultraforgeFakeToken0123456789abcdef"


@pytest.fixture
def no_login(monkeypatch, tmp_path):
    """No token anywhere: HF_TOKEN unset, and an empty HF_HOME (huggingface_hub reads its paths at
    import, so its constants are pointed there too)."""
    home = tmp_path / "hf_home"
    home.mkdir()
    for var in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_OIDC_RESOURCE", "HF_TOKEN_PATH"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.setattr(hf_constants, "HF_HOME", str(home))
    monkeypatch.setattr(hf_constants, "HF_TOKEN_PATH", str(home / "token"))
    monkeypatch.setattr(hf_constants, "HF_STORED_TOKENS_PATH", str(home / "stored_tokens"))
    return home


@pytest.fixture
def folder(tmp_path):
    out = tmp_path / "set"
    write_splits(stream(3, per_batch=3), SFT_SPLITS, SCHEMA, 1, out)
    (out / "README.md").write_text("card\n")
    return out


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again on exit: connecting is refused


def test_push_without_a_repo_is_skipped(folder):
    assert push(folder, None) == "not pushed: no push_to_hub repo in the recipe"


def test_push_without_a_token_is_skipped_and_says_so(folder, no_login):
    assert push(folder, "someone/set") == (
        "not pushed to someone/set: no Hugging Face token (set HF_TOKEN or log in)")


def test_push_to_an_unreachable_hub_says_so_and_never_shows_the_token(folder, no_login,
                                                                       monkeypatch):
    endpoint = f"http://127.0.0.1:{closed_port()}"
    monkeypatch.setenv("HF_TOKEN", FAKE_TOKEN)
    monkeypatch.setenv("HF_ENDPOINT", endpoint)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(hf_constants, "ENDPOINT", endpoint)  # read at import, like the rest
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", False)
    message = push(folder, "someone/set")
    assert message.startswith("not pushed to someone/set: the Hub could not be reached (")
    assert "ConnectError" in message  # huggingface_hub 2.x raises httpx2.ConnectError
    assert FAKE_TOKEN not in message and "hf_" not in message
