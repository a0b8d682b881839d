"""The paid-call journal: every successful response, keyed by its request's content key.

SQLite in WAL mode, one file per data dir, shared by every process on the machine (SQLite
locking, busy timeout). Reads are batched: a shard looks up all of its keys in one query
(`get_many`) before it sends anything. Writes are group commits off the event loop: `put`
appends the result to a buffer (waking the writer thread only when the buffer was empty) and
waits; the writer commits everything that arrived within `BATCH_WINDOW_S` in one transaction,
then wakes all of that batch's waiters with one call onto their event loop. So a response is on
disk before the gateway returns it (a `kill -9` loses only the requests in flight,
docs/engine.md#exactly-once), at the price of a few milliseconds of latency and none of the
per-reply thread hand-offs.

`LakeMirror` shares the journal between machines through the lake: every `SEGMENT_S` seconds
it lands the replies committed since the last segment as one Parquet file under `_journal/`,
and it imports the segments other processes landed (each once) into the local file. So a shard
run again on another machine repays only the calls of the last segment its first machine did
not land (docs/engine.md#journal-segments).
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import os
import socket
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from tasks.adapters.lake import Lake, parquet_bytes
from tasks.core.chat import ChatResult

_SCHEMA = "CREATE TABLE IF NOT EXISTS responses (key TEXT PRIMARY KEY, result TEXT NOT NULL)"
_IMPORTED = "CREATE TABLE IF NOT EXISTS imported_segments (name TEXT PRIMARY KEY)"
_LOOKUP_CHUNK = 500  # keys per SELECT ... IN (...), under SQLite's host-parameter limit
BATCH_WINDOW_S = 0.002


class Journal:
    """Append-only map content key → ChatResult."""

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._lock = threading.Lock()
        self._db = self._connect()
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(_SCHEMA)
        self._db.execute(_IMPORTED)
        self.committed: list[tuple[str, str]] | None = None  # (key, result) since the last segment
        self._buffer: list[tuple[str, str, asyncio.AbstractEventLoop, asyncio.Future]] = []
        self._buffer_lock = threading.Lock()
        self._settled = threading.Condition(self._buffer_lock)
        self._uncommitted = 0  # rows buffered or being committed
        self._wake = threading.Event()
        self._error: BaseException | None = None
        self._writer = threading.Thread(target=self._write_loop, name="journal-writer", daemon=True)
        self._writer.start()

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, check_same_thread=False, timeout=30, isolation_level=None)
        db.execute("PRAGMA synchronous=NORMAL")
        return db

    def get_many(self, keys: Iterable[str]) -> dict[str, ChatResult]:
        """The journaled results among `keys`, in one query per 500 keys."""
        wanted = list(dict.fromkeys(keys))
        found: dict[str, ChatResult] = {}
        with self._lock:
            for i in range(0, len(wanted), _LOOKUP_CHUNK):
                chunk = wanted[i: i + _LOOKUP_CHUNK]
                marks = ",".join("?" * len(chunk))
                rows = self._db.execute(
                    f"SELECT key, result FROM responses WHERE key IN ({marks})", chunk).fetchall()
                for key, blob in rows:
                    found[key] = ChatResult.model_validate_json(blob)
        return found

    async def put(self, result: ChatResult) -> None:
        """Commit a successful response (errors are never journaled); returns once it is on disk."""
        if self._error is not None:
            raise RuntimeError(f"journal {self.path}: writer failed: {self._error}")
        loop = asyncio.get_running_loop()
        done = loop.create_future()
        with self._buffer_lock:
            self._buffer.append((result.key, result.model_dump_json(), loop, done))
            self._uncommitted += 1
            first = len(self._buffer) == 1
        if first:
            self._wake.set()
        await done

    def _write_loop(self) -> None:
        db = self._connect()
        while True:
            self._wake.wait()
            self._wake.clear()
            time.sleep(BATCH_WINDOW_S)  # let the replies of this moment join one transaction
            with self._buffer_lock:
                batch, self._buffer = self._buffer, []
            if not batch:
                continue
            error = None
            try:
                with db:
                    db.execute("BEGIN")
                    db.executemany("INSERT OR IGNORE INTO responses VALUES (?, ?)",
                                   [(key, blob) for key, blob, _, _ in batch])
            except BaseException as exc:
                error = self._error = exc
            if error is None and self.committed is not None:
                with self._buffer_lock:
                    self.committed.extend((key, blob) for key, blob, _, _ in batch)
            with self._settled:
                self._uncommitted -= len(batch)
                self._settled.notify_all()
            waiters: dict[asyncio.AbstractEventLoop, list[asyncio.Future]] = {}
            for _, _, loop, done in batch:
                waiters.setdefault(loop, []).append(done)
            for loop, futures in waiters.items():
                loop.call_soon_threadsafe(_settle, futures, error)

    def drain(self, timeout: float = 30.0) -> None:
        """Wait until every buffered row is committed (even those whose waiter was cancelled)."""
        with self._settled:
            if not self._settled.wait_for(lambda: self._uncommitted == 0, timeout):
                raise TimeoutError(f"journal {self.path}: {self._uncommitted} rows not committed")

    def __len__(self) -> int:
        self.drain()
        with self._lock:
            return self._db.execute("SELECT count(*) FROM responses").fetchone()[0]


    def take_committed(self) -> list[tuple[str, str]]:
        """The (key, result) rows committed since the last call (for the lake's segments)."""
        with self._buffer_lock:
            rows, self.committed = self.committed or [], []
        return rows

    def give_back(self, rows: list[tuple[str, str]]) -> None:
        """Rows taken but not landed: first in line for the next segment."""
        with self._buffer_lock:
            self.committed = [*rows, *(self.committed or [])]

    def imported(self) -> set[str]:
        with self._lock:
            return {n for (n,) in self._db.execute("SELECT name FROM imported_segments")}

    def add_segment(self, name: str, rows: list[tuple[str, str]]) -> None:
        """Rows of a lake segment into the file (keys it has already are kept), and its name."""
        with self._lock, self._db:
            self._db.execute("BEGIN")
            self._db.executemany("INSERT OR IGNORE INTO responses VALUES (?, ?)", rows)
            self._db.execute("INSERT OR IGNORE INTO imported_segments VALUES (?)", (name,))


SEGMENTS = "_journal"
SEGMENT_S = 5.0
_SEGMENT_SCHEMA = pa.schema([("key", pa.string()), ("result", pa.string())])
log = logging.getLogger(__name__)


class LakeMirror:
    """One process's journal, shared through the lake (module docstring)."""

    def __init__(self, journal: Journal, lake: Lake, interval_s: float = SEGMENT_S):
        self.journal, self.lake, self.interval_s = journal, lake, interval_s
        self.writer = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self._seq = 0
        self._lock = threading.Lock()  # one segment at a time, in order
        self._stop = threading.Event()
        journal.take_committed()  # from now on, committed rows are kept for the next segment
        threading.Thread(target=self._loop, name="journal-segments", daemon=True).start()
        atexit.register(self._flush_quietly)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._flush_quietly()

    def _flush_quietly(self) -> None:
        try:
            self.flush()
        except Exception as exc:  # noqa: BLE001 - a lake hiccup: the rows go in the next one
            log.warning("journal segment to %s failed: %s", self.lake, exc)

    def flush(self) -> str | None:
        """Land the rows committed since the last segment as one; its name (None if none)."""
        with self._lock:
            rows = self.journal.take_committed()
            if not rows:
                return None
            name = f"{self.writer}-{self._seq:08d}.parquet"
            table = pa.Table.from_pylist([{"key": k, "result": r} for k, r in rows], schema=_SEGMENT_SCHEMA)
            try:
                self.lake.write_bytes(f"{SEGMENTS}/{name}", parquet_bytes(table))
            except BaseException:
                self.journal.give_back(rows)  # not landed: they go in the next segment
                raise
            self._seq += 1
            self.journal.add_segment(name, [])  # ours: never imported back
            return name

    def import_new(self) -> int:
        """Import every segment landed by others since the last import; rows read."""
        done = self.journal.imported()
        read = 0
        for name in self.lake.ls(SEGMENTS):
            if name in done or not name.endswith(".parquet"):
                continue
            table = pq.read_table(pa.BufferReader(self.lake.read_bytes(f"{SEGMENTS}/{name}")))
            rows = list(zip(table.column("key").to_pylist(), table.column("result").to_pylist(),
                            strict=True))
            self.journal.add_segment(name, rows)
            read += len(rows)
        return read


_MIRRORS: dict[tuple[Path, str], LakeMirror] = {}


def mirror_at(journal: Journal, lake: Lake, interval_s: float = SEGMENT_S) -> LakeMirror:
    """The process-wide mirror of `journal` in `lake` (started once)."""
    with _OPEN_LOCK:
        key = (journal.path, lake.url(SEGMENTS))
        if key not in _MIRRORS:
            _MIRRORS[key] = LakeMirror(journal, lake, interval_s)
        return _MIRRORS[key]


def _settle(futures: list[asyncio.Future], error: BaseException | None) -> None:
    for f in futures:
        if f.done():  # the waiter was cancelled; its row is committed all the same
            continue
        if error is None:
            f.set_result(None)
        else:
            f.set_exception(RuntimeError(f"journal write failed: {error}"))


_OPEN: dict[Path, Journal] = {}
_OPEN_LOCK = threading.Lock()


def journal_at(directory: Path) -> Journal:
    """The process-wide Journal for `directory` (opened once, shared by every shard)."""
    path = (directory / "journal.sqlite").resolve()
    with _OPEN_LOCK:
        if path not in _OPEN:
            _OPEN[path] = Journal(path)
        return _OPEN[path]
