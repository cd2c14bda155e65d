"""Write-ahead persistence in SQLite (WAL mode): a change is acknowledged only after it is committed.

One table of JSON documents keyed by (table, key); the global index is a
row of its own, written in the same transaction as the change it counts,
so a restart — also after `kill -9` — resumes at or above every index a
client has seen. `synchronous=NORMAL` in WAL mode makes a committed write
survive a crash of the process (an OS crash may lose the last commits).

Checkpoints (copying the WAL back into the database file, with an fsync)
run on a thread of their own every second, not inside a commit: SQLite's
automatic checkpoint would stall the one commit that crosses 1,000 pages —
and every request and woken watcher behind it — for tens of milliseconds.
A checkpoint moves what is already committed; it adds and removes no durability.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
from pathlib import Path
from typing import Iterable, Iterator

SCHEMA = """
CREATE TABLE IF NOT EXISTS records (
    tbl TEXT NOT NULL,
    key TEXT NOT NULL,
    doc TEXT NOT NULL,
    PRIMARY KEY (tbl, key)
) WITHOUT ROWID;
"""

log = logging.getLogger("catalog.persist")

CHECKPOINT_INTERVAL = 1.0   # seconds between background checkpoints of the WAL


class Journal:
    """The catalog's data file, `<data-dir>/catalog.db`."""

    def __init__(self, data_dir: Path):
        data_dir.mkdir(parents=True, exist_ok=True)
        self.path = data_dir / "catalog.db"
        self.db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.execute("PRAGMA wal_autocheckpoint=0")     # see _checkpoints
        self.db.executescript(SCHEMA)
        self._closing = threading.Event()
        self._checkpointer = threading.Thread(target=self._checkpoints, name="catalog-checkpoint", daemon=True)
        self._checkpointer.start()

    def _checkpoints(self) -> None:
        """Copy committed pages from the WAL into the database file, off the event loop (PASSIVE: never blocks a commit)."""
        db = sqlite3.connect(self.path, isolation_level=None)
        try:
            while not self._closing.wait(CHECKPOINT_INTERVAL):
                try:
                    db.execute("PRAGMA wal_checkpoint(PASSIVE)")
                except sqlite3.Error as exc:     # e.g. a full disk: the WAL keeps every commit meanwhile
                    log.warning("checkpoint of %s failed (will retry): %s", self.path, exc)
        finally:
            db.close()

    def load(self) -> tuple[int, Iterator[tuple[str, dict]]]:
        """(last index, every stored record as (table, doc))."""
        row = self.db.execute("SELECT doc FROM records WHERE tbl='meta' AND key='index'").fetchone()
        index = json.loads(row[0])["index"] if row else 0
        rows = self.db.execute("SELECT tbl, doc FROM records WHERE tbl != 'meta' ORDER BY tbl, key").fetchall()
        return index, ((tbl, json.loads(doc)) for tbl, doc in rows)

    def meta(self, key: str) -> dict | None:
        row = self.db.execute("SELECT doc FROM records WHERE tbl='meta' AND key=?", (key,)).fetchone()
        return json.loads(row[0]) if row else None

    def write(self, rows: Iterable[tuple[str, str, dict | None]]) -> None:
        """Commit all rows in one transaction (a None doc deletes the row)."""
        rows = list(rows)
        if not rows:
            return
        with self.db:
            self.db.execute("BEGIN")
            for table, key, doc in rows:
                if doc is None:
                    self.db.execute("DELETE FROM records WHERE tbl=? AND key=?", (table, key))
                else:
                    self.db.execute("INSERT OR REPLACE INTO records (tbl, key, doc) VALUES (?, ?, ?)",
                                    (table, key, json.dumps(doc, separators=(",", ":"))))

    def close(self) -> None:
        self._closing.set()
        self._checkpointer.join()
        self.db.close()     # the last connection to close checkpoints the rest and removes the WAL
