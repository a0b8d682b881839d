"""The warehouse: a DuckDB file whose views read the lake. The only module that runs SQL
(the derived sets build theirs in tasks/core/derived/ and run it here).

DuckDB reaches an `s3://` lake through fsspec: the constructor registers an s3fs instance built
from the lake's own storage options (`register_filesystem`), so no DuckDB extension (httpfs) is
ever downloaded and the endpoint and keys are configured in one place (Settings). Registration
lives in the DuckDB instance, not in the file, hence on every open; the views stored in the file
name only the lake's glob URL, never a credential. A local lake needs no registration.

API:
    Warehouse(path, lake, read_only=False), Warehouse.from_settings(settings)   context manager
    Warehouse.in_memory(lake)               the same views in a private in-memory database
    refresh_views(tables) -> list[str]      one view per lake table that has shards
    query(sql, params=None) -> list[dict], query_arrow(sql, params=None) -> pyarrow.Table
    stream(sql, params=None, rows=10_000) -> iterator of pyarrow.RecordBatch
    execute(sql, params=None), close()

A view globs the lake on every statement, so shards landed after `refresh_views` are included;
call it again only for tables that had no shards before. A table registered with key columns
(tasks/core/tables.py) is viewed with one row per key, the first by shard file name, so two
writers that raced and landed one id twice are still read once. DuckDB allows one read-write
process per file: flows that run side by side query the lake through `in_memory` and only the
final refresh touches the file, waiting (up to LOCK_WAIT_S) while another process holds it;
analysts open it with `read_only=True`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import duckdb
import fsspec
import pyarrow as pa
from tenacity import Retrying, retry_if_exception, stop_after_delay, wait_random_exponential

from tasks.adapters.lake import Lake
from tasks.core.tables import TableSpec

if TYPE_CHECKING:
    from tasks.adapters.settings import Settings

LOCK_WAIT_S = 60.0  # a refresh takes well under a second; two runs ending together wait in turn


def _locked(exc: BaseException) -> bool:
    return isinstance(exc, duckdb.IOException) and "Could not set lock" in str(exc)


class Warehouse:
    """A DuckDB connection with the lake's tables as views."""

    def __init__(self, path: Path | str, lake: Lake, *, read_only: bool = False):
        self.path = Path(path) if path != ":memory:" else None
        self.lake = lake
        if self.path is not None and not read_only:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self.con = Retrying(retry=retry_if_exception(_locked), stop=stop_after_delay(LOCK_WAIT_S),
                            wait=wait_random_exponential(0.05, 2), reraise=True)(
            duckdb.connect, str(path), read_only=read_only)
        # Else DuckDB resolves an unknown table name against the Python names of `query` (e.g.
        # `annotations` from this module) and fails with a baffling "replacement scan" error.
        # SET, not connect(config=...): a config would clash with other connections to the file.
        self.con.execute("SET python_enable_replacements = false")
        self._fs = None if lake.is_local else _duckdb_filesystem(lake)
        # Registered per DuckDB instance, which every connection to this file in this process
        # shares; a second Warehouse on the same lake gets the same fs instance anyway.
        if self._fs is not None and _protocol(self._fs) not in self.con.list_filesystems():
            self.con.register_filesystem(self._fs)

    @classmethod
    def from_settings(cls, settings: Settings, *, read_only: bool = False) -> Warehouse:
        """The warehouse file and lake that `settings` point at."""
        return cls(settings.warehouse, Lake.from_settings(settings), read_only=read_only)

    @classmethod
    def in_memory(cls, lake: Lake, tables: Iterable[TableSpec] = ()) -> Warehouse:
        """A private in-memory database with views of `tables` over `lake` (no file lock)."""
        wh = cls(":memory:", lake)
        wh.refresh_views(tables)
        return wh

    def __enter__(self) -> Warehouse:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection (the file stays; views persist in it)."""
        self.con.close()

    def refresh_views(self, tables: Iterable[TableSpec | str]) -> list[str]:
        """Create or replace one view per lake table with shards; return the tables with views.

        A table without shards gets a typed empty view when it has a spec (so anti-joins work on
        a fresh lake), and no view otherwise (DuckDB cannot read an empty glob); a view left from
        an earlier run under that name is replaced or dropped, never read stale.
        """
        done = []
        views = self.query("SELECT view_name FROM duckdb_views() WHERE NOT internal")
        existing = {r["view_name"] for r in views}
        for table in tables:
            name = table.name if isinstance(table, TableSpec) else table
            if self.lake.shard_keys(table):
                self._run(f"CREATE OR REPLACE VIEW {_ident(name)} AS {_select(self.lake, table)}",
                          None)
                done.append(name)
            elif isinstance(table, TableSpec):
                cols = ", ".join(f"CAST(NULL AS {_duck_type(f.type)}) AS {_ident(f.name)}"
                                 for f in table.schema)
                self._run(f"CREATE OR REPLACE VIEW {_ident(name)} AS SELECT {cols} LIMIT 0", None)
            elif name in existing:
                self._run(f"DROP VIEW {_ident(name)}", None)
        return done

    def query(self, sql: str, params: Any = None) -> list[dict]:
        """Rows of `sql` as dicts (column name -> value)."""
        cur = self._run(sql, params)
        if cur.description is None:
            return []
        names = [d[0] for d in cur.description]
        return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]

    def query_arrow(self, sql: str, params: Any = None) -> pa.Table:
        """The result of `sql` as an Arrow table."""
        self._forget_listings()
        return self.con.sql(sql, params=params).to_arrow_table()

    def stream(self, sql: str, params: Any = None, rows: int = 10_000) -> Iterator[pa.RecordBatch]:
        """The result of `sql` in record batches of about `rows` rows (DuckDB spills to disk
        rather than holding a large sort in memory)."""
        cur = self.con.cursor()
        if self._fs is not None:
            self._fs.invalidate_cache()
        reader = cur.sql(sql, params=params).to_arrow_reader(rows)
        try:
            yield from reader
        finally:
            cur.close()

    def execute(self, sql: str, params: Any = None) -> None:
        """Run a statement that returns nothing of interest (DDL, COPY, INSERT)."""
        self._run(sql, params)

    def _run(self, sql: str, params: Any) -> duckdb.DuckDBPyConnection:
        self._forget_listings()
        return self.con.execute(sql, params)

    def _forget_listings(self) -> None:
        # Each statement sees the lake as it is now, from one listing (see _duckdb_filesystem).
        if self._fs is not None:
            self._fs.invalidate_cache()


def _select(lake: Lake, table: TableSpec | str) -> str:
    """SELECT of a table's shards; one row per key (the first by file name) when it has keys."""
    source = f"read_parquet({_literal(lake.glob(table))}, union_by_name = true"
    if not isinstance(table, TableSpec) or not table.keys:
        return f"SELECT * FROM {source})"
    keys = ", ".join(_ident(k) for k in table.keys)
    return (f"SELECT * EXCLUDE (filename) FROM {source}, filename = true) "
            f"QUALIFY row_number() OVER (PARTITION BY {keys} ORDER BY filename) = 1")


def _duck_type(t: pa.DataType) -> str:
    """DuckDB type name of an Arrow type (for typed empty views)."""
    if pa.types.is_list(t):
        return _duck_type(t.value_type) + "[]"
    if pa.types.is_struct(t):
        return "STRUCT(" + ", ".join(f"{_ident(f.name)} {_duck_type(f.type)}" for f in t) + ")"
    names = {pa.string(): "VARCHAR", pa.int64(): "BIGINT", pa.int32(): "INTEGER",
             pa.float64(): "DOUBLE", pa.bool_(): "BOOLEAN"}
    if t not in names:
        raise ValueError(f"no DuckDB type for Arrow type {t}")
    return names[t]


def _duckdb_filesystem(lake: Lake) -> fsspec.AbstractFileSystem:
    """The lake's filesystem with listing cache on, for DuckDB to read through.

    Without it DuckDB makes several HEAD requests per file per query (200 shards on moto: 7 s);
    with it a query costs one LIST plus one GET per file (1.3 s), and DuckDB's own file cache
    makes repeated reads of immutable shards nearly free. The cache is cleared before every
    statement, so no query sees a stale listing. fsspec's instance cache hands every Warehouse
    on the same lake the same instance, so the one DuckDB registered is the one cleared.
    """
    options = {**lake.fs.storage_options, "use_listings_cache": True, "listings_expiry_time": None}
    return fsspec.filesystem(_protocol(lake.fs), **options)


def _protocol(fs: fsspec.AbstractFileSystem) -> str:
    return fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"
