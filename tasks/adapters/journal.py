"""The paid-call journal: every successful response, keyed by its request's content key.

SQLite in WAL mode, one file per data dir, shared by every process on the machine (SQLite
locking, busy timeout). Reads are batched: a shard looks up all of its keys in one query
(`get_many`) before it sends anything. Writes are batched off the event loop: `put` hands the
result to a writer thread that commits everything queued in one transaction, at once when the
queue was idle and otherwise as soon as the previous commit ends, so a response is on disk a few
milliseconds after it arrived; `flush` waits for that. A shard lands its lake rows only after
`flush`, so nothing lands that the journal could not replay. A `kill -9` loses the responses
still in flight and the few queued for the next commit; a rerun pays for those again, nothing
else (docs/engine.md#exactly-once).
"""

from __future__ import annotations

import queue
import sqlite3
import threading
from collections.abc import Iterable
from pathlib import Path

from tasks.core.chat import ChatResult

_SCHEMA = "CREATE TABLE IF NOT EXISTS responses (key TEXT PRIMARY KEY, result TEXT NOT NULL)"
_LOOKUP_CHUNK = 500  # keys per SELECT ... IN (...), under SQLite's host-parameter limit
_STOP = object()


class Journal:
    """Append-only map content key → ChatResult."""

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._lock = threading.Lock()
        self._db = self._connect()
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(_SCHEMA)
        self._queue: queue.Queue = queue.Queue()
        self._idle = threading.Condition()
        self._pending = 0
        self._error: BaseException | None = None
        self._writer = threading.Thread(target=self._write_loop, name="journal-writer", daemon=True)
        self._writer.start()

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, check_same_thread=False, timeout=30, isolation_level=None)
        db.execute("PRAGMA synchronous=NORMAL")
        return db

    def get(self, key: str) -> ChatResult | None:
        return self.get_many([key]).get(key)

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

    def put(self, result: ChatResult) -> None:
        """Queue a successful response for the next commit (errors are never journaled)."""
        if self._error is not None:
            raise RuntimeError(f"journal {self.path}: writer failed: {self._error}")
        with self._idle:
            self._pending += 1
        self._queue.put((result.key, result.model_dump_json()))

    def flush(self, timeout: float = 60.0) -> None:
        """Block until every queued response is committed."""
        with self._idle:
            if not self._idle.wait_for(lambda: self._pending == 0 or self._error, timeout):
                raise TimeoutError(f"journal {self.path}: {self._pending} writes not committed")
        if self._error is not None:
            raise RuntimeError(f"journal {self.path}: writer failed: {self._error}")

    def _write_loop(self) -> None:
        db = self._connect()
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            batch = [item]
            while True:  # everything that queued up meanwhile goes into the same transaction
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            stop = _STOP in batch
            rows = [b for b in batch if b is not _STOP]
            try:
                with db:
                    db.execute("BEGIN")
                    db.executemany("INSERT OR IGNORE INTO responses VALUES (?, ?)", rows)
            except BaseException as exc:  # surfaced by the next put/flush
                self._error = exc
            with self._idle:
                self._pending -= len(rows)
                self._idle.notify_all()
            if stop:
                return

    def __len__(self) -> int:
        self.flush()
        with self._lock:
            return self._db.execute("SELECT count(*) FROM responses").fetchone()[0]


_OPEN: dict[Path, Journal] = {}
_OPEN_LOCK = threading.Lock()


def journal_at(directory: Path) -> Journal:
    """The process-wide Journal for `directory` (opened once, shared by every shard)."""
    path = (directory / "journal.sqlite").resolve()
    with _OPEN_LOCK:
        if path not in _OPEN:
            _OPEN[path] = Journal(path)
        return _OPEN[path]
