"""The single-host store: one SQLite file in WAL mode.

Write transactions take SQLite's write lock up front (BEGIN IMMEDIATE), so concurrent
podnet processes serialise on the lock instead of failing with "database is locked" half
way through; readers never wait for writers (WAL).
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from podnet.store.failures import os_failure, sqlite_failure
from podnet.util.perms import FILE_MODE, private_dir

_SCHEMA = """
CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY, value TEXT NOT NULL, rev INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT OR IGNORE INTO meta VALUES ('revision', 0);
"""


def _prefix_end(prefix: str) -> str:
    """The first key after every key starting with prefix: a range scan instead of LIKE."""
    return prefix[:-1] + chr(ord(prefix[-1]) + 1) if prefix else "\U0010ffff"


class SqliteTxn:
    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db
        self._bumped = False

    def _bump(self) -> int:
        if not self._bumped:
            self._db.execute("UPDATE meta SET value = value + 1 WHERE name = 'revision'")
            self._bumped = True
        return self._db.execute("SELECT value FROM meta WHERE name = 'revision'").fetchone()[0]

    def get(self, key: str) -> Any | None:
        row = self._db.execute("SELECT value FROM kv WHERE key = ?", (key,)).fetchone()
        return json.loads(row[0]) if row else None

    def list(self, prefix: str) -> list[tuple[str, Any]]:
        rows = self._db.execute(
            "SELECT key, value FROM kv WHERE key >= ? AND key < ? ORDER BY key", (prefix, _prefix_end(prefix))
        )
        return [(k, json.loads(v)) for k, v in rows]

    def put(self, key: str, value: Any) -> None:
        rev = self._bump()
        self._db.execute(
            "INSERT INTO kv (key, value, rev) VALUES (?, ?, ?) "
            "ON CONFLICT(key) DO UPDATE SET value = excluded.value, rev = excluded.rev",
            (key, json.dumps(value, separators=(",", ":")), rev),
        )

    def create(self, key: str, value: Any) -> bool:
        rev = self._bump()
        cur = self._db.execute(
            "INSERT OR IGNORE INTO kv (key, value, rev) VALUES (?, ?, ?)",
            (key, json.dumps(value, separators=(",", ":")), rev),
        )
        return cur.rowcount == 1

    def delete(self, key: str) -> bool:
        self._bump()
        return self._db.execute("DELETE FROM kv WHERE key = ?", (key,)).rowcount == 1


class SqliteStore:
    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            private_dir(path.parent)
            # SQLite gives the -wal and -shm files the main file's mode: 0600 for all three. Only
            # a missing file is touched: closing any fd of an open database drops its locks.
            if not path.exists():
                try:
                    os.close(os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, FILE_MODE))
                except FileExistsError:
                    pass
        except OSError as exc:
            raise os_failure(exc, path.parent, "create") from None
        try:
            self._db = sqlite3.connect(path, timeout=60, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("PRAGMA busy_timeout=60000")
            has_schema = self._db.execute("SELECT name FROM sqlite_master WHERE name = 'meta'").fetchone()
        except sqlite3.Error as exc:
            raise sqlite_failure(exc, path, "open") from None
        if not has_schema:
            with self.transaction():
                for statement in _SCHEMA.strip().splitlines():
                    self._db.execute(statement)

    def get(self, key: str) -> Any | None:
        return SqliteTxn(self._db).get(key)

    def list(self, prefix: str) -> list[tuple[str, Any]]:
        return SqliteTxn(self._db).list(prefix)

    def wait_at_most(self, seconds: float) -> None:
        self._db.execute(f"PRAGMA busy_timeout={int(seconds * 1000)}")

    @contextmanager
    def transaction(self) -> Iterator[SqliteTxn]:
        """One write transaction; a full disk or a broken file ends it as one line, rolled back."""
        try:
            self._db.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise sqlite_failure(exc, self.path, "write") from None
        try:
            yield SqliteTxn(self._db)
            self._db.execute("COMMIT")
        except sqlite3.Error as exc:
            self._rollback()
            raise sqlite_failure(exc, self.path, "write") from None
        except BaseException:
            self._rollback()
            raise

    def _rollback(self) -> None:
        if self._db.in_transaction:
            self._db.execute("ROLLBACK")

    def revision(self) -> int:
        row = self._db.execute("SELECT value FROM meta WHERE name = 'revision'").fetchone()
        return row[0] if row else 0

    def close(self) -> None:
        self._db.close()
