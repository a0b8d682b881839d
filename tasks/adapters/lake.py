"""The Parquet lake: immutable shards named by content key, on a local directory or S3 (fsspec).

The lake is the source of truth (docs/design.md#lake). Its root is a local directory (default
`./data/lake`) or `s3://bucket/prefix`, reached through s3fs at any S3-compatible endpoint (AWS,
MinIO, moto) given by the storage options. Layout: shards at `{root}/{table}/{key}.parquet`, and
free-form objects (exports, manifests) at `{root}/{relpath}`.

API:
    Lake(url, storage_options=None), Lake.from_settings(settings)
    write_shard(table, key, rows, schema=None) -> url     atomic, idempotent, deterministic bytes
    has_shard(table, key) -> bool
    shard_keys(table, prefix="") -> set[str]               one listing call
    read_table(table, columns=None, schema=None) -> pyarrow.Table    all shards, union by name
    glob(table) -> str                                     URL glob of the shards, for DuckDB
    write_bytes(relpath, data) -> url                      atomic, overwrites
    create_bytes(relpath, data) -> bool                    atomic, only if absent (leases)
    writer(relpath) -> context manager of a binary file    streamed, published whole at close
    read_bytes(relpath) -> bytes, exists(relpath) -> bool, url(relpath) -> str
    ls(relpath) -> list[str]                               names directly under a folder

`table` is a name or a TableSpec (tasks/core/tables.py); with a spec, its schema is the default
and an unknown column is an error naming it.

A reader never sees a partial file: locally a temp file in the same directory is renamed over the
target; on S3 one PUT (or a completed multipart upload, above 100 MB) publishes an object whole.
Listing caches are off, so a shard one worker lands is seen by every other at once. Credentials
live only in `storage_options`; they never enter a URL, a repr or an error message.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
from fsspec.implementations.local import LocalFileSystem

from tasks.adapters.errors import ConfigError
from tasks.core.tables import TableSpec, UnknownTableError

if TYPE_CHECKING:
    from tasks.adapters.settings import Settings

# Table names double as DuckDB view names; keys become file names.
_TABLE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.=-]*")
_SUFFIX = ".parquet"

# Fixed writer options: the same rows give the same bytes (byte-identical reruns and exports).
ROW_GROUP_SIZE = 64 * 1024
WRITER_OPTIONS = {
    "compression": "zstd",
    "compression_level": 3,
    "use_dictionary": True,
    "write_statistics": True,
    "version": "2.6",
    "data_page_version": "1.0",
}


class Lake:
    """Parquet shards and plain objects under one root URL (local path or s3://bucket/prefix)."""

    def __init__(self, url: str, storage_options: dict | None = None):
        protocol, path = fsspec.core.split_protocol(url)
        self.is_local = protocol in (None, "file", "local")
        if self.is_local:
            self.fs: fsspec.AbstractFileSystem = LocalFileSystem()
            self._root = Path(path).expanduser().resolve().as_posix()
            self.root = self._root
        else:
            if "@" in path.split("/", 1)[0]:
                raise ConfigError("lake URL must not embed credentials; set "
                                  "ULTRAFORGE_S3_ACCESS_KEY_ID and ULTRAFORGE_S3_SECRET_ACCESS_KEY")
            # No listing cache: another worker's new shard must be visible on the next call.
            options = {"use_listings_cache": False, **(storage_options or {})}
            self.fs = fsspec.filesystem(protocol, **options)
            self._root = path.strip("/")
            self.root = f"{protocol}://{self._root}"
        self._protocol = protocol

    @classmethod
    def from_settings(cls, settings: Settings) -> Lake:
        """The lake that `settings` points at (`lake_url` or `data_dir/lake`)."""
        return cls(settings.lake, settings.storage_options())

    def __repr__(self) -> str:
        return f"Lake({self.root!r})"

    # shards

    def write_shard(self, table: str | TableSpec, key: str, rows: pa.Table | Iterable[dict],
                    schema: pa.Schema | None = None) -> str:
        """Land `rows` as shard `key` of `table` unless it exists; return the shard's URL.

        Args:
            rows: an Arrow table or dicts; `schema` (if given) fixes column order and types, so an
                empty or all-null shard still has typed columns.
        """
        if isinstance(table, TableSpec):
            schema = schema or table.schema
        path = self._shard_path(table, key)
        if not self.fs.exists(path):
            self._put(path, parquet_bytes(rows, schema))
        return self._url(path)

    def has_shard(self, table: str | TableSpec, key: str) -> bool:
        """Whether shard `key` of `table` has landed."""
        return self.fs.exists(self._shard_path(table, key))

    def read_shard(self, table: str | TableSpec, key: str,
                   columns: list[str] | None = None) -> pa.Table:
        """One landed shard of `table` (optionally only `columns`)."""
        return _read_parquet(self.fs.cat_file(self._shard_path(table, key)), columns)

    def shard_keys(self, table: str | TableSpec, prefix: str = "") -> set[str]:
        """Keys of every landed shard of `table` starting with `prefix` (one listing call)."""
        return {n[: -len(_SUFFIX)] for n in self.ls(_table(table))
                if n.endswith(_SUFFIX) and n.startswith(prefix)}

    def read_table(self, table: str | TableSpec, columns: list[str] | None = None,
                   schema: pa.Schema | None = None, prefix: str = "") -> pa.Table:
        """All shards of `table` (whose key starts with `prefix`) in key order, columns unified
        by name (a column some shards lack is null in theirs).

        A requested column that is in neither the schema nor any shard is an error naming it.
        With no shards the result is empty: `schema.empty_table()`, the requested `columns`
        (typed null), or a table with no columns. Everything is read into memory: for whole
        tables, query the warehouse instead.
        """
        if isinstance(table, TableSpec):
            schema = schema or table.schema
            if columns is not None:
                table.columns(columns)
        elif schema is not None and columns is not None:
            TableSpec(table, schema).columns(columns)
        paths = [self._shard_path(table, k) for k in sorted(self.shard_keys(table, prefix))]
        blobs = self.fs.cat(paths) if paths else {}  # one batched, concurrent fetch on S3
        wanted = columns if columns is not None else (schema.names if schema else None)
        read = [_read_parquet_named(blob, wanted) for _, blob in sorted(blobs.items())]
        parts = [t for t, _ in read]
        present = sorted({n for _, names in read for n in names})
        out = pa.concat_tables(parts, promote_options="permissive") if parts else pa.table({})
        if schema is not None:
            out = conform(out, schema)
        if columns is not None:
            unknown = [c for c in columns if c not in present]
            if unknown and parts:
                raise UnknownTableError(f"table {_name(table)!r} has no column {unknown[0]!r} "
                                        f"(columns: {', '.join(present)})")
            out = conform(out, pa.schema([out.schema.field(c) if c in out.column_names
                                          else pa.field(c, pa.null()) for c in columns]))
        return out

    def glob(self, table: str | TableSpec) -> str:
        """URL glob matching every shard of `table` (for DuckDB's read_parquet)."""
        return self._url(self._path(f"{_table(table)}/*{_SUFFIX}"))

    # plain objects (exports, manifests)

    def write_bytes(self, relpath: str, data: bytes) -> str:
        """Write `data` at `relpath` atomically, replacing any previous object; return its URL."""
        path = self._path(_relpath(relpath))
        self._put(path, data)
        return self._url(path)

    @contextlib.contextmanager
    def writer(self, relpath: str) -> Iterator[BinaryIO]:
        """A binary file to stream an object into; it appears at `relpath` (replacing any
        previous one) only when the block ends without an error (locally a temp file renamed
        over the target; on S3 a multipart upload that completes at close)."""
        path = self._path(_relpath(relpath))
        if not self.is_local:
            f = self.fs.open(path, "wb")
            try:
                yield f
            except BaseException:
                f.discard()  # abort the upload: nothing appears
                f.closed = True  # (discard leaves it open, and closing it later would upload)
                raise
            f.close()
            return
        parent, name = path.rsplit("/", 1)
        os.makedirs(parent, exist_ok=True)
        tmp = f"{parent}/.{name}.{uuid.uuid4().hex}.tmp"
        try:
            with open(tmp, "wb") as f:
                yield f
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)

    def create_bytes(self, relpath: str, data: bytes) -> bool:
        """Write `data` at `relpath` only if nothing is there, atomically; whether it was written.

        Locally: link a complete temp file to the name (fails if it exists); on S3: a PUT with
        `If-None-Match: *`. Two writers racing for one name: exactly one gets True.
        """
        path = self._path(_relpath(relpath))
        if not self.is_local:
            try:
                self.fs.pipe_file(path, data, mode="create")
            except (FileExistsError, OSError):
                if self.fs.exists(path):
                    return False
                raise
            return True
        tmp = self._write_temp(path, data)
        try:
            os.link(tmp, path)
            return True
        except FileExistsError:
            return False
        finally:
            os.unlink(tmp)

    def ls(self, relpath: str) -> list[str]:
        """Names (not paths) directly under folder `relpath`, sorted; empty if none. Hidden
        names are left out: locally they are the temp files of writes still in progress."""
        try:
            found = self.fs.ls(self._path(_relpath(relpath)), detail=False)
        except FileNotFoundError:
            return []
        names = (n.rstrip("/").rsplit("/", 1)[-1] for n in found)
        return sorted(n for n in names if not n.startswith("."))

    def read_bytes(self, relpath: str) -> bytes:
        """The bytes at `relpath` (FileNotFoundError if absent)."""
        return self.fs.cat_file(self._path(_relpath(relpath)))

    def open(self, relpath: str) -> BinaryIO:
        """The object at `relpath` for reading, seekable (a Parquet footer without the rest);
        FileNotFoundError if absent."""
        return self.fs.open(self._path(_relpath(relpath)), "rb")

    def exists(self, relpath: str) -> bool:
        """Whether an object (or a shard directory) exists at `relpath`."""
        return self.fs.exists(self._path(_relpath(relpath)))

    def url(self, relpath: str) -> str:
        """The full URL (local absolute path or s3://...) of `relpath`."""
        return self._url(self._path(_relpath(relpath)))

    # internals

    def _path(self, rel: str) -> str:
        return f"{self._root}/{rel}"

    def _url(self, path: str) -> str:
        return path if self.is_local else f"{self._protocol}://{path}"

    def _shard_path(self, table: str | TableSpec, key: str) -> str:
        if not _KEY.fullmatch(key) or key.endswith(_SUFFIX):
            raise ValueError(f"invalid shard key {key!r}: use letters, digits and _ . = -")
        return self._path(f"{_table(table)}/{key}{_SUFFIX}")

    def _put(self, path: str, data: bytes) -> None:
        if not self.is_local:
            self.fs.pipe_file(path, data)  # one PUT: the object appears whole or not at all
            return
        tmp = self._write_temp(path, data)
        try:
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise

    @staticmethod
    def _write_temp(path: str, data: bytes) -> str:
        """A complete, synced temp file beside `path` (hidden and not *.parquet, so globs and
        listings never match it)."""
        parent, name = path.rsplit("/", 1)
        os.makedirs(parent, exist_ok=True)
        tmp = f"{parent}/.{name}.{uuid.uuid4().hex}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        return tmp


def parquet_bytes(rows: pa.Table | Iterable[dict], schema: pa.Schema | None = None) -> bytes:
    """Serialize rows as Parquet with the lake's fixed writer options (deterministic bytes)."""
    if isinstance(rows, pa.Table):
        table = conform(rows, schema) if schema is not None else rows
    elif schema is not None:
        table = pa.Table.from_pylist(list(rows), schema=schema)
    else:  # from_pylist would take the columns of the first row only, dropping later keys
        rows = list(rows)
        names = dict.fromkeys(k for row in rows for k in row)
        table = pa.Table.from_pydict({k: [row.get(k) for row in rows] for k in names})
    if table.num_columns == 0:  # DuckDB refuses such a file, and so the whole table's view
        raise ValueError("a shard needs at least one column: pass `schema` to land empty rows")
    buf = io.BytesIO()
    pq.write_table(table, buf, row_group_size=ROW_GROUP_SIZE, **WRITER_OPTIONS)
    return buf.getvalue()


def conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """`table` with exactly `schema`'s columns: missing ones null, extra ones dropped, cast."""
    cols = [table.column(f.name).cast(f.type) if f.name in table.column_names
            else pa.nulls(table.num_rows, f.type) for f in schema]
    return pa.Table.from_arrays(cols, schema=schema)


def _read_parquet(blob: bytes, columns: list[str] | None) -> pa.Table:
    return _read_parquet_named(blob, columns)[0]


def _read_parquet_named(blob: bytes, columns: list[str] | None) -> tuple[pa.Table, list[str]]:
    """The shard's `columns` (those it has; the row count survives an empty projection) and the
    names of all of its columns."""
    pf = pq.ParquetFile(pa.BufferReader(blob))
    names = pf.schema_arrow.names
    if columns is not None:
        columns = [c for c in columns if c in names]
    return pf.read(columns=columns), names


def _name(table: str | TableSpec) -> str:
    return table.name if isinstance(table, TableSpec) else table


def _table(table: str | TableSpec) -> str:
    name = _name(table)
    if not _TABLE.fullmatch(name):
        raise ValueError(f"invalid lake table name {name!r}: use letters, digits and _")
    return name


def _relpath(relpath: str) -> str:
    parts = relpath.split("/")
    if not relpath or any(p in ("", ".", "..") for p in parts) or "\\" in relpath:
        raise ValueError(f"invalid lake path {relpath!r}: expected a relative path like a/b.json")
    return relpath
