"""One SQLite database per service, shared by that service's instances on this machine.

Every instance (and every gunicorn worker thread) opens its own connection; WAL mode and
`BEGIN IMMEDIATE` write transactions keep concurrent instances consistent. The schema is
created and the demo data seeded once, on the first start, inside one transaction.
"""

from __future__ import annotations

import sqlite3
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

BUSY_TIMEOUT_MS = 5000

Seeder = Callable[[sqlite3.Connection], None]


class Store:
    def __init__(self, path: Path, schema: str, seed: Seeder):
        self.path = Path(path)
        self.schema = schema
        self.seed = seed
        self._local = threading.local()

    def initialize(self) -> None:
        """Create the schema and seed the demo data if this database is new."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = self._connect()
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            with self.transaction(conn) as tx:
                tx.execute("CREATE TABLE IF NOT EXISTS store_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
                _run_script(tx, self.schema)
                if tx.execute("SELECT 1 FROM store_meta WHERE key = 'seeded'").fetchone() is None:
                    self.seed(tx)
                    tx.execute("INSERT INTO store_meta (key, value) VALUES ('seeded', datetime('now'))")
        finally:
            conn.close()

    def ping(self) -> None:
        """Raise unless the database opens and answers (the readiness check)."""
        self.connection().execute("SELECT value FROM store_meta WHERE key = 'seeded'").fetchone()

    def connection(self) -> sqlite3.Connection:
        """This thread's connection (opened on first use)."""
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = self._connect()
        return conn

    def query(self, sql: str, params: tuple | dict = ()) -> list[dict[str, Any]]:
        return [dict(row) for row in self.connection().execute(sql, params).fetchall()]

    def query_one(self, sql: str, params: tuple | dict = ()) -> dict[str, Any] | None:
        row = self.connection().execute(sql, params).fetchone()
        return dict(row) if row is not None else None

    @contextmanager
    def transaction(self, conn: sqlite3.Connection | None = None) -> Iterator[sqlite3.Connection]:
        """A write transaction that holds the write lock from its first statement (no upgrade deadlocks)."""
        conn = conn or self.connection()
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None, check_same_thread=False)
        conn.row_factory = sqlite3.Row
        conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        conn.execute("PRAGMA foreign_keys=ON")
        return conn


def _run_script(conn: sqlite3.Connection, script: str) -> None:
    """Run `;`-separated DDL inside the current transaction (`executescript` would commit it)."""
    for statement in script.split(";"):
        if statement.strip():
            conn.execute(statement)
