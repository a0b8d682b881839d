"""The DuckDB warehouse reading the lake (local directory and moto S3) through views."""

import json
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pyarrow as pa
import pytest

from tasks.adapters.lake import Lake
from tasks.adapters.warehouse import Warehouse
from tests.fixtures.s3 import FAKE_SECRET

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def lake(any_settings) -> Lake:
    lake = Lake.from_settings(any_settings)
    lake.write_shard("completions", "a", [{"id": "p1", "model": "m1", "text": "hi"},
                                          {"id": "p2", "model": "m2", "text": "yo"}])
    lake.write_shard("completions", "b", [{"id": "p3", "model": "m1", "text": "ok"}])
    return lake


def test_views_read_what_landed(any_settings, lake):
    with Warehouse.from_settings(any_settings) as wh:
        assert wh.refresh_views(["completions", "annotations"]) == ["completions"]

        assert wh.query("SELECT model, count(*) AS n FROM completions GROUP BY model "
                        "ORDER BY model") == [{"model": "m1", "n": 2}, {"model": "m2", "n": 1}]
        got = wh.query_arrow("SELECT id FROM completions WHERE model = ? ORDER BY id", ["m1"])
        assert got.column("id").to_pylist() == ["p1", "p3"]
        with pytest.raises(duckdb.CatalogException):  # no shards, no view
            wh.query("SELECT * FROM annotations")


def test_each_query_sees_shards_landed_since_the_last(any_settings, lake):
    with Warehouse.from_settings(any_settings) as wh:
        wh.refresh_views(["completions"])
        assert wh.query("SELECT count(*) AS n FROM completions") == [{"n": 3}]
        other_worker = Lake(any_settings.lake, any_settings.storage_options())
        other_worker.write_shard("completions", "c", [{"id": "p4", "model": "m3", "text": "new"}])

        assert wh.query("SELECT count(*) AS n FROM completions") == [{"n": 4}]
        assert wh.query_arrow("SELECT id FROM completions").num_rows == 4


def test_views_see_new_shards_and_survive_reopening(any_settings, lake):
    with Warehouse.from_settings(any_settings) as wh:
        wh.refresh_views(["completions"])
    lake.write_shard("completions", "c", [{"id": "p4", "model": "m3", "text": "new"}])

    with Warehouse.from_settings(any_settings) as wh:  # a fresh connection, no refresh
        assert wh.query("SELECT count(*) AS n FROM completions") == [{"n": 4}]


def test_views_work_in_a_fresh_process(any_settings, lake):
    with Warehouse.from_settings(any_settings) as wh:
        wh.refresh_views(["completions"])
    env = {f"ULTRAFORGE_{k.upper()}": str(v) for k, v in {
        "data_dir": any_settings.data_dir, "lake_url": any_settings.lake,
        "warehouse_path": any_settings.warehouse,
        "s3_endpoint_url": any_settings.s3_endpoint_url or "",
        "s3_access_key_id": _secret(any_settings.s3_access_key_id),
        "s3_secret_access_key": _secret(any_settings.s3_secret_access_key)}.items() if v}
    code = ("import json\n"
            "from tasks.adapters.settings import Settings\n"
            "from tasks.adapters.warehouse import Warehouse\n"
            "with Warehouse.from_settings(Settings(), read_only=True) as wh:\n"
            "    print(json.dumps(wh.query('SELECT id FROM completions ORDER BY id')))\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                         env={"PATH": "/usr/bin:/bin", **env}, timeout=60)
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads(out.stdout) == [{"id": "p1"}, {"id": "p2"}, {"id": "p3"}]


def test_union_by_name_across_shards(any_settings):
    lake = Lake.from_settings(any_settings)
    lake.write_shard("judgements", "a", [{"id": "p1", "rating": 4}])
    lake.write_shard("judgements", "b", [{"id": "p2", "parse_error": "no rating", "extra": 1.5}])

    with Warehouse.from_settings(any_settings) as wh:
        wh.refresh_views(["judgements"])
        rows = wh.query("SELECT id, rating, parse_error, extra FROM judgements ORDER BY id")
    assert rows == [{"id": "p1", "rating": 4, "parse_error": None, "extra": None},
                    {"id": "p2", "rating": None, "parse_error": "no rating", "extra": 1.5}]


def test_empty_typed_shard_reads_as_no_rows(any_settings):
    lake = Lake.from_settings(any_settings)
    lake.write_shard("t", "a", [], schema=pa.schema([("id", pa.string())]))
    with Warehouse.from_settings(any_settings) as wh:
        assert wh.refresh_views(["t"]) == ["t"]
        assert wh.query("SELECT count(id) AS n FROM t") == [{"n": 0}]


def test_view_of_a_table_whose_shards_vanished_is_dropped(any_settings, lake):
    with Warehouse.from_settings(any_settings) as wh:
        wh.refresh_views(["completions"])
        lake.fs.rm(lake.url("completions"), recursive=True)

        assert wh.refresh_views(["completions"]) == []
        assert wh.query("SELECT view_name FROM duckdb_views() WHERE NOT internal") == []


def test_execute_and_params(local_settings):
    with Warehouse.from_settings(local_settings) as wh:
        wh.execute("CREATE TABLE runs (run VARCHAR, n INTEGER)")
        for run, n in [("r1", 1), ("r2", 5), ("r3", 9), ("r4", 12)]:
            wh.execute("INSERT INTO runs VALUES (?, ?)", [run, n])

        assert wh.query("SELECT run FROM runs WHERE n > $min ORDER BY run", {"min": 4}) == [
            {"run": "r2"}, {"run": "r3"}, {"run": "r4"}]
        assert wh.query_arrow("SELECT * FROM runs").num_rows == 4
        assert wh.query("CREATE VIEW big_runs AS SELECT * FROM runs WHERE n > 8") == []


def test_python_names_are_not_tables(local_settings):
    # DuckDB's default replacement scan resolves an unknown table against the calling frame's
    # Python names: `annotations` (the __future__ import in warehouse.py) would give a baffling
    # "not suitable for replacement scans" instead of "does not exist".
    with Warehouse.from_settings(local_settings) as wh:
        for name in ("annotations", "duckdb", "sql", "self"):
            with pytest.raises(duckdb.CatalogException, match="does not exist"):
                wh.query(f"SELECT * FROM {name}")


def test_two_warehouses_on_one_file_share_the_s3_filesystem(s3_settings):
    Lake.from_settings(s3_settings).write_shard("t", "a", [{"x": 1}])
    with Warehouse.from_settings(s3_settings) as first:
        first.refresh_views(["t"])
        with Warehouse.from_settings(s3_settings) as second:
            assert second.query("SELECT x FROM t") == [{"x": 1}]


def test_no_credentials_in_the_warehouse_file(s3_settings):
    Lake.from_settings(s3_settings).write_shard("t", "a", [{"x": 1}])
    with Warehouse.from_settings(s3_settings) as wh:
        wh.refresh_views(["t"])
        (sql,) = [r["sql"] for r in wh.query("SELECT sql FROM duckdb_views() WHERE NOT internal")]
        wh.execute("CHECKPOINT")
    assert f"{s3_settings.lake}/t/*.parquet" in sql
    assert FAKE_SECRET.encode() not in s3_settings.warehouse.read_bytes()


def _secret(value) -> str:
    return value.get_secret_value() if value is not None else ""


def test_stream_yields_batches_of_at_most_rows_that_concatenate_to_the_query(local_settings):
    lake = Lake.from_settings(local_settings)
    lake.write_shard("numbers", "a", [{"n": i, "sq": i * i} for i in range(0, 60)])
    lake.write_shard("numbers", "b", [{"n": i, "sq": i * i} for i in range(60, 103)])
    sql = "SELECT n, sq FROM numbers WHERE n % $m <> 0 ORDER BY n DESC"
    with Warehouse.in_memory(lake) as wh:
        wh.refresh_views(["numbers"])
        expected = wh.query_arrow(sql, {"m": 7})
        batches = list(wh.stream(sql, {"m": 7}, rows=10))
        assert expected.num_rows == 103 - 15  # 0, 7, ..., 98 left out
        assert all(isinstance(b, pa.RecordBatch) and 0 < b.num_rows <= 10 for b in batches)
        assert len(batches) >= expected.num_rows // 10
        assert pa.Table.from_batches(batches).equals(expected)
        # a stream closed half read leaves the connection usable
        stream = wh.stream("SELECT n FROM numbers ORDER BY n", rows=5)
        assert next(stream).column("n").to_pylist() == [0, 1, 2, 3, 4]
        stream.close()
        assert wh.query("SELECT count(*) AS k FROM numbers") == [{"k": 103}]


def test_a_second_process_waits_for_the_file_lock_instead_of_failing(tmp_path):
    # two runs ending together refresh the views of one file: the second waits its turn
    path = tmp_path / "w.duckdb"
    holder = subprocess.Popen([sys.executable, "-c", (
        "import duckdb, sys, time; con = duckdb.connect(sys.argv[1]); print('held', flush=True); "
        "time.sleep(1.5); con.close()"), str(path)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    started = time.monotonic()
    with Warehouse(path, Lake(str(tmp_path / "lake"))) as wh:
        assert wh.query("SELECT 1 AS one") == [{"one": 1}]
    assert time.monotonic() - started > 0.5  # it did wait for the other process
    holder.wait(timeout=10)
