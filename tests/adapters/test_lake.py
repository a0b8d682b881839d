"""The Parquet lake on a local directory and on a real S3-protocol server (moto)."""

import hashlib
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tasks.adapters import lake as lake_module
from tasks.adapters.errors import ConfigError
from tasks.adapters.lake import Lake, parquet_bytes
from tasks.core.tables import TableSpec, UnknownTableError
from tasks.core.ultrafeedback.tables import TABLES as UF_TABLES
from tests.fixtures.s3 import FAKE_SECRET

REPO = Path(__file__).resolve().parents[2]
ROWS = [{"id": "p1", "text": "hello", "score": 1.5}, {"id": "p2", "text": "world", "score": None}]


@pytest.fixture
def lake(any_settings) -> Lake:
    return Lake.from_settings(any_settings)


def _objects(lake: Lake) -> list[str]:
    """Every file under the lake root, temp files included."""
    return sorted(lake.fs.find(lake.root, withdirs=False)) if lake.fs.exists(lake.root) else []


def test_write_and_read_shards(lake):
    url_a = lake.write_shard("completions", "a1", ROWS)
    lake.write_shard("completions", "b2", pa.table({"id": ["p3"], "text": ["!"], "score": [2.0]}))

    assert url_a == lake.url("completions/a1.parquet")
    assert url_a.startswith("s3://" if not lake.is_local else "/")
    assert lake.has_shard("completions", "a1") and not lake.has_shard("completions", "zz")
    assert lake.shard_keys("completions") == {"a1", "b2"}
    assert lake.shard_keys("nothing_here") == set()
    got = lake.read_table("completions")
    assert got.column("id").to_pylist() == ["p1", "p2", "p3"]  # key order
    assert got.column("score").to_pylist() == [1.5, None, 2.0]
    assert lake.read_table("completions", columns=["text"]).column_names == ["text"]


def test_rewriting_a_shard_does_nothing(lake):
    first = lake.write_shard("t", "k", ROWS)
    before = lake.read_bytes("t/k.parquet")

    again = lake.write_shard("t", "k", [{"id": "other"}])

    assert again == first
    assert lake.read_bytes("t/k.parquet") == before
    assert lake.shard_keys("t") == {"k"}


def test_read_table_unions_columns_by_name(lake):
    lake.write_shard("t", "a", [{"id": 1, "text": "x"}])
    lake.write_shard("t", "b", [{"id": 2, "score": 0.5}])

    got = lake.read_table("t")
    assert got.to_pylist() == [{"id": 1, "text": "x", "score": None},
                               {"id": 2, "text": None, "score": 0.5}]
    proj = lake.read_table("t", columns=["score", "text"])
    assert proj.column_names == ["score", "text"]
    assert proj.column("score").to_pylist() == [None, 0.5]


def test_a_misspelt_table_or_column_is_an_error_naming_it(lake):
    lake.write_shard("t", "a", [{"id": 1, "score": 0.5}])
    with pytest.raises(UnknownTableError, match="table 't' has no column 'scroe'.*id, score"):
        lake.read_table("t", columns=["id", "scroe"])
    spec = TableSpec("t", pa.schema([("id", pa.int64()), ("score", pa.float64())]), ("id",))
    with pytest.raises(UnknownTableError, match="table 't' has no column 'scroe'"):
        lake.read_table(spec, columns=["scroe"])  # checked against the spec before any read
    with pytest.raises(UnknownTableError, match="unknown table 'uf_completion'.*uf_completions"):
        UF_TABLES["uf_completion"]
    with pytest.raises(UnknownTableError, match="table 'uf_completions' has no column 'respons'"):
        UF_TABLES["uf_completions"].columns(["completion_id", "respons"])


def test_rows_with_different_keys_keep_every_column(lake):
    lake.write_shard("t", "a", [{"id": 1}, {"id": 2, "parse_error": "no rating"}])
    assert lake.read_table("t").to_pylist() == [{"id": 1, "parse_error": None},
                                                {"id": 2, "parse_error": "no rating"}]


def test_empty_table_reads(lake):
    schema = pa.schema([("id", pa.string()), ("n", pa.int64())])
    assert lake.read_table("t").num_columns == 0
    assert lake.read_table("t", schema=schema).schema == schema
    assert lake.read_table("t", columns=["id"]).column_names == ["id"]
    with pytest.raises(ValueError, match="at least one column"):  # DuckDB could not read it
        lake.write_shard("t", "empty", [])
    # a typed empty shard lands, and reads back with its schema
    lake.write_shard("t", "empty", [], schema=schema)
    assert lake.read_table("t").schema == schema


def test_schema_conforms_rows(lake):
    schema = pa.schema([("id", pa.string()), ("n", pa.int32()), ("note", pa.string())])
    lake.write_shard("t", "a", pa.table({"n": [1], "id": ["x"], "extra": [True]}), schema=schema)
    got = lake.read_table("t")
    assert got.schema == schema
    assert got.to_pylist() == [{"id": "x", "n": 1, "note": None}]


def test_crash_while_serializing_leaves_no_shard(lake, monkeypatch):
    def broken_writer(table, where, **kwargs):
        where.write(b"PAR1 partial")
        raise OSError("simulated crash")

    monkeypatch.setattr(lake_module.pq, "write_table", broken_writer)
    with pytest.raises(OSError, match="simulated crash"):
        lake.write_shard("t", "k", ROWS)

    assert not lake.has_shard("t", "k")
    assert lake.shard_keys("t") == set()
    assert _objects(lake) == []


def test_crash_before_publish_leaves_no_shard_nor_temp_file(local_settings, monkeypatch):
    lake = Lake.from_settings(local_settings)

    def crash(fd):
        raise OSError("simulated crash after the bytes were written")

    monkeypatch.setattr(lake_module.os, "fsync", crash)
    with pytest.raises(OSError, match="simulated crash"):
        lake.write_shard("t", "k", ROWS)
    monkeypatch.undo()

    assert not lake.has_shard("t", "k")
    assert list((local_settings.data_dir / "lake" / "t").iterdir()) == []
    lake.write_shard("t", "k", ROWS)  # the next attempt lands it
    assert lake.read_table("t").num_rows == 2


def test_readers_never_see_a_partial_shard(lake):
    big = pa.table({"blob": [os.urandom(1 << 20) for _ in range(2)]})  # 2 MB, incompressible
    keys = [f"s{i}" for i in range(6)]
    errors: list[str] = []
    seen: set[str] = set()
    done = threading.Event()

    def reader():
        while not done.is_set():
            for key in lake.shard_keys("big"):
                try:
                    rows = pq.read_table(pa.BufferReader(lake.read_bytes(f"big/{key}.parquet")))
                    assert rows.num_rows == 2
                    seen.add(key)
                except Exception as exc:  # a partial file fails to parse
                    errors.append(f"{key}: {exc!r}")

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for key in keys:
            lake.write_shard("big", key, big)
    finally:
        done.set()
        thread.join()

    assert errors == []
    assert seen  # the reader did observe landed shards while writes went on
    assert lake.shard_keys("big") == set(keys)
    assert all(p.endswith(".parquet") for p in _objects(lake))  # no temp files left behind


def test_s3_shard_is_one_complete_object(s3_settings):
    import boto3

    lake = Lake.from_settings(s3_settings)
    lake.write_shard("t", "k", ROWS)
    bucket, prefix = s3_settings.lake.removeprefix("s3://").split("/", 1)
    s3 = boto3.client("s3", endpoint_url=s3_settings.s3_endpoint_url,
                      region_name=s3_settings.s3_region)

    listing = s3.list_objects_v2(Bucket=bucket)["Contents"]
    head = s3.head_object(Bucket=bucket, Key=f"{prefix}/t/k.parquet")
    assert [o["Key"] for o in listing] == [f"{prefix}/t/k.parquet"]
    assert "-" not in head["ETag"]  # a single PUT, not a multipart upload
    assert head["ContentLength"] == len(parquet_bytes(ROWS))


def test_write_and_read_bytes(lake):
    url = lake.write_bytes("exports/run-1/manifest.json", b'{"n": 1}')

    assert url == lake.url("exports/run-1/manifest.json")
    assert lake.exists("exports/run-1/manifest.json")
    assert not lake.exists("exports/run-1/other.json")
    assert lake.read_bytes("exports/run-1/manifest.json") == b'{"n": 1}'
    lake.write_bytes("exports/run-1/manifest.json", b'{"n": 2}')  # overwrite allowed
    assert lake.read_bytes("exports/run-1/manifest.json") == b'{"n": 2}'
    with pytest.raises(FileNotFoundError):
        lake.read_bytes("exports/run-1/other.json")
    assert [p.rsplit("/", 1)[-1] for p in _objects(lake)] == ["manifest.json"]


@pytest.mark.parametrize("bad", ["", "/abs", "a/../b", "a//b", "./a", "a\\b"])
def test_bad_relative_paths_are_refused(local_settings, bad):
    with pytest.raises(ValueError, match="invalid lake path"):
        Lake.from_settings(local_settings).write_bytes(bad, b"x")


@pytest.mark.parametrize(("table", "key"), [("t-1", "k"), ("1t", "k"), ("t", "../k"),
                                            ("t", ".hidden"), ("t", "k.parquet"), ("t", "")])
def test_bad_table_names_and_keys_are_refused(local_settings, table, key):
    with pytest.raises(ValueError, match="invalid"):
        Lake.from_settings(local_settings).write_shard(table, key, ROWS)


def test_same_rows_give_the_same_bytes(lake):
    lake.write_shard("t", "from_dicts", ROWS)
    lake.write_shard("t", "from_arrow", pa.Table.from_pylist(ROWS))

    blob = lake.read_bytes("t/from_dicts.parquet")
    assert blob == lake.read_bytes("t/from_arrow.parquet") == parquet_bytes(ROWS)


def test_parquet_bytes_are_stable_across_processes():
    code = ("import hashlib, json, sys; from tasks.adapters.lake import parquet_bytes; "
            "print(hashlib.sha256(parquet_bytes(json.loads(sys.argv[1]))).hexdigest())")
    other_process = subprocess.run([sys.executable, "-c", code, json.dumps(ROWS)],
                                   cwd=REPO, capture_output=True, text=True, check=True)
    assert other_process.stdout.strip() == hashlib.sha256(parquet_bytes(ROWS)).hexdigest()


def test_glob_names_every_shard(lake):
    lake.write_shard("t", "a", ROWS)
    lake.write_shard("t", "b", ROWS)
    lake.write_bytes("t/notes.txt", b"not a shard")

    found = lake.fs.glob(lake.glob("t"))
    assert sorted(p.rsplit("/", 1)[-1] for p in found) == ["a.parquet", "b.parquet"]


def test_credentials_stay_out_of_urls_reprs_and_errors(s3_settings):
    lake = Lake.from_settings(s3_settings)
    texts = [repr(lake), lake.root, lake.glob("t"), lake.write_shard("t", "k", ROWS)]
    try:
        lake.read_bytes("missing.json")
    except FileNotFoundError as exc:
        texts.append(str(exc))
    assert not any(FAKE_SECRET in t or s3_settings.s3_access_key_id.get_secret_value() in t
                   for t in texts)

    with pytest.raises(ConfigError) as err:
        Lake("s3://AKIDEXAMPLE:wJalrXUtnFEMI@bucket/lake")
    assert "wJalrXUtnFEMI" not in str(err.value)


def test_create_bytes_lets_exactly_one_of_racing_writers_win(lake):
    barrier = threading.Barrier(8)
    won: list[int] = []

    def claim(i: int) -> None:
        barrier.wait()
        if lake.create_bytes("_leases/k/00000000", str(i).encode()):
            won.append(i)

    threads = [threading.Thread(target=claim, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(won) == 1
    assert lake.read_bytes("_leases/k/00000000") == str(won[0]).encode()
    assert lake.ls("_leases/k") == ["00000000"]


def test_a_listing_names_only_complete_objects_while_a_write_is_in_progress(lake):
    # a lease claim once read a local temp file as the latest generation and failed on it
    lake.create_bytes("_leases/k/00000000", b"{}")
    with lake.writer("_leases/k/00000001") as f:
        f.write(b"{}")
        assert lake.ls("_leases/k") == ["00000000"]
        with lake.writer("_leases/j/00000000") as g:
            g.write(b"{}")
            assert lake.ls("_leases/j") == []
    assert lake.ls("_leases/k") == ["00000000", "00000001"]


def test_a_streamed_object_appears_only_when_its_writer_closes_cleanly(lake):
    with lake.writer("exports/x.jsonl") as f:
        f.write(b"one\n")
        assert not lake.exists("exports/x.jsonl")
        f.write(b"two\n")
    assert lake.read_bytes("exports/x.jsonl") == b"one\ntwo\n"
    with pytest.raises(RuntimeError), lake.writer("exports/x.jsonl") as f:
        f.write(b"half")
        raise RuntimeError("killed mid-export")
    assert lake.read_bytes("exports/x.jsonl") == b"one\ntwo\n"
