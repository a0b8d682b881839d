"""The paid-call journal: every successful response, keyed by its request's content key.

SQLite in WAL mode: a committed row is in the WAL file before `put` returns, so a `kill -9` loses
only the requests still in flight. One connection per process, guarded by a lock, so the shard
tasks that run in threads share it. Several processes on one machine may share the file (SQLite
locking, busy timeout); workers on different machines each keep their own journal and the lake
stays the source of truth for what is done.
"""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

from tasks.core.chat import ChatResult

_SCHEMA = "CREATE TABLE IF NOT EXISTS responses (key TEXT PRIMARY KEY, result TEXT NOT NULL)"


class Journal:
    """Append-only map content key → ChatResult."""

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, timeout=30, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(_SCHEMA)

    def get(self, key: str) -> ChatResult | None:
        with self._lock:
            row = self._db.execute("SELECT result FROM responses WHERE key = ?", (key,)).fetchone()
        return ChatResult.model_validate_json(row[0]) if row else None

    def put(self, result: ChatResult) -> None:
        """Record a successful response (errors are never journaled: they are retried later)."""
        with self._lock:
            self._db.execute("INSERT OR IGNORE INTO responses VALUES (?, ?)",
                             (result.key, result.model_dump_json()))

    def __len__(self) -> int:
        with self._lock:
            return self._db.execute("SELECT count(*) FROM responses").fetchone()[0]


_OPEN: dict[Path, Journal] = {}
_OPEN_LOCK = threading.Lock()


def journal_at(directory: Path) -> Journal:
    """The process-wide Journal for `directory` (opened once, shared by concurrent shard tasks)."""
    path = (directory / "journal.sqlite").resolve()
    with _OPEN_LOCK:
        if path not in _OPEN:
            _OPEN[path] = Journal(path)
        return _OPEN[path]
