"""The warehouse: a DuckDB file whose views read the lake. The only module that holds SQL.

DuckDB reaches an `s3://` lake through fsspec: the constructor registers an s3fs instance built
from the lake's own storage options (`register_filesystem`), so no DuckDB extension (httpfs) is
ever downloaded and the endpoint and keys are configured in one place (Settings). Registration
lives in the DuckDB instance, not in the file, hence on every open; the views stored in the file
name only the lake's glob URL, never a credential. A local lake needs no registration.

API:
    Warehouse(path, lake, read_only=False), Warehouse.from_settings(settings)   context manager
    refresh_views(tables) -> list[str]      one view per lake table that has shards
    query(sql, params=None) -> list[dict], query_arrow(sql, params=None) -> pyarrow.Table
    execute(sql, params=None), close()

A view globs the lake on every statement, so shards landed after `refresh_views` are included;
call it again only for tables that had no shards before. DuckDB allows one read-write process
per file; analysts can open it with `read_only=True` meanwhile.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import duckdb
import fsspec
import pyarrow as pa

from tasks.adapters.lake import Lake

if TYPE_CHECKING:
    from tasks.adapters.settings import Settings


class Warehouse:
    """A DuckDB connection with the lake's tables as views."""

    def __init__(self, path: Path, lake: Lake, *, read_only: bool = False):
        self.path = Path(path)
        self.lake = lake
        if not read_only:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self.con = duckdb.connect(str(self.path), read_only=read_only)
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

    def __enter__(self) -> Warehouse:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection (the file stays; views persist in it)."""
        self.con.close()

    def refresh_views(self, tables: Iterable[str]) -> list[str]:
        """Create or replace one view per lake table with shards; return the tables with views.

        A table without shards gets no view (DuckDB cannot read an empty glob), and a view left
        from an earlier run under that name is dropped, so a query fails with "does not exist"
        rather than reading stale files.
        """
        done = []
        views = self.query("SELECT view_name FROM duckdb_views() WHERE NOT internal")
        existing = {r["view_name"] for r in views}
        for table in tables:
            if self.lake.shard_keys(table):
                self._run(f"CREATE OR REPLACE VIEW {_ident(table)} AS SELECT * FROM "
                          f"read_parquet({_literal(self.lake.glob(table))}, "
                          "union_by_name = true)", None)
                done.append(table)
            elif table in existing:
                self._run(f"DROP VIEW {_ident(table)}", None)
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
