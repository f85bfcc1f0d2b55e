"""The SQLite store: rooms (with their topics), history, next ids, refs and
read markers in one database file.

The hub never reads the database while it serves: it keeps what it needs in
memory (:mod:`trio_chat._log`) and hands this store the operations each batch
of commands caused.  :meth:`SqliteStore.commit` writes one batch in one
transaction; it blocks, so the hub runs it in a worker thread
(``trio.to_thread.run_sync``), one batch at a time.  :meth:`SqliteStore.load`
reads everything back at startup.

The database is in WAL mode with ``synchronous=NORMAL``: a committed batch
survives the process being killed; a power cut may lose the last batches
(the WAL is synced at checkpoints, not at every commit).  A lock file in the
data directory (``flock``) keeps a second server out; other readers, such as
a backup (``sqlite3 FILE .backup COPY``), may read the database meanwhile.  Anything wrong
with the file (not a database, locked, unwritable) raises :class:`StoreError`
with a one-line message.
"""

from __future__ import annotations

import fcntl
import json
import os
import sqlite3
from collections.abc import Sequence
from typing import IO

import attrs

from ._log_ops import (
    AppendOp,
    DropRoomOp,
    ForgetMarkOp,
    LogOp,
    MarkOp,
    OpenRoomOp,
    RememberOp,
    ReplaceOp,
    TopicOp,
    TrimOp,
    encode_extra,
)
from ._mentions import find_mentions

__all__ = ["DB_NAME", "Snapshot", "SqliteStore", "StoreError"]

#: The database's file name inside the data directory.
DB_NAME = "trio-chat.sqlite3"
#: Version 2 added ``messages.extra`` (edits, tombstones, reactions,
#: mentions), version 3 ``rooms.topic`` and ``read_markers``; an older file
#: is migrated when opened.
SCHEMA_VERSION = 3

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS rooms (
    name TEXT PRIMARY KEY,
    epoch TEXT NOT NULL,
    last_id INTEGER NOT NULL,
    topic TEXT
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS messages (
    seq INTEGER PRIMARY KEY,
    room TEXT NOT NULL,
    id INTEGER NOT NULL,
    user_id TEXT NOT NULL,
    content TEXT NOT NULL,
    time TEXT NOT NULL,
    at REAL NOT NULL,
    extra TEXT
);
CREATE INDEX IF NOT EXISTS messages_by_room ON messages (room, id);
CREATE TABLE IF NOT EXISTS refs (
    seq INTEGER PRIMARY KEY,
    user_id TEXT NOT NULL,
    ref TEXT NOT NULL,
    ack TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS read_markers (
    user_id TEXT NOT NULL,
    name TEXT NOT NULL,
    epoch TEXT NOT NULL,
    id INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    PRIMARY KEY (user_id, name)
) WITHOUT ROWID;
"""
_MARK = (
    "INSERT INTO read_markers VALUES (?, ?, ?, ?, ?) ON CONFLICT (user_id, name) "
    "DO UPDATE SET epoch = excluded.epoch, id = excluded.id, seq = excluded.seq"
)


_INSERT = "INSERT INTO messages VALUES (?, ?, ?, ?, ?, ?, ?, ?)"


class StoreError(Exception):
    """The store cannot be opened or written; the message says why, in one line."""


@attrs.frozen
class Snapshot:
    """What a store kept, in the shapes :meth:`HubState.restore` takes."""

    #: (name, epoch, last_id), least recently used first.
    rooms: list[tuple[str, str, int]]
    #: (seq, room, id, user_id, content, time, at, extra), in seq order.
    messages: list[tuple[int, str, int, str, str, str, float, str | None]]
    #: (user_id, ref, ack JSON), oldest first.
    refs: list[tuple[str, str, str]]
    #: room name -> topic, for the rooms that have one.
    topics: dict[str, str] = attrs.Factory(dict)
    #: (user_id, log name, epoch, id), least recently moved first.
    markers: list[tuple[str, str, str, int]] = attrs.Factory(list)


class SqliteStore:
    """One SQLite database in *data_dir* (created if missing).

    Args:
        data_dir: the directory; the database is ``data_dir/trio-chat.sqlite3``.
        max_refs: refs kept on disk (the newest); older ones are deleted.

    Raises:
        StoreError: the directory cannot be created, the file is not a
            database (or is damaged), or another process holds it.
    """

    def __init__(self, data_dir: str, *, max_refs: int = 100_000) -> None:
        self.path = os.path.join(data_dir, DB_NAME)
        self.max_refs = max_refs
        self._refs_added = 0
        #: Orders the read markers by when they last moved.
        self._mark_seq = 0
        try:
            os.makedirs(data_dir, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"data directory {data_dir}: {exc.strerror or exc}") from None
        self._lock = _lock_directory(data_dir, self.path)
        try:
            db = sqlite3.connect(
                self.path, timeout=0.5, isolation_level=None, check_same_thread=False
            )
        except sqlite3.Error as exc:
            self._lock.close()
            raise StoreError(f"database {self.path}: {exc}") from None
        self._db = db
        try:
            mode = db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if mode.lower() != "wal":
                raise StoreError(f"database {self.path}: cannot use WAL mode (got {mode})")
            db.execute("PRAGMA synchronous=NORMAL")
            # Fails (locked) if another process is writing or holds the file.
            db.execute("BEGIN IMMEDIATE")
            db.execute("COMMIT")
            db.executescript(_SCHEMA)
            row = db.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
            if row is None:
                db.execute("INSERT INTO meta VALUES ('schema', ?)", (str(SCHEMA_VERSION),))
            elif row[0] in ("1", "2"):
                _migrate(db, int(row[0]))
            elif row[0] != str(SCHEMA_VERSION):
                raise StoreError(
                    f"database {self.path}: schema version {row[0]}, this server "
                    f"reads version {SCHEMA_VERSION}"
                )
            check = db.execute("PRAGMA quick_check").fetchone()[0]
            if check != "ok":
                raise StoreError(f"database {self.path}: damaged ({check})")
        except sqlite3.Error as exc:
            db.close()
            self._lock.close()
            raise StoreError(_explain(self.path, exc)) from None
        except StoreError:
            db.close()
            self._lock.close()
            raise

    def load(self) -> Snapshot:
        """Everything the database holds (call before serving)."""
        db = self._db
        try:
            rooms = db.execute(
                "SELECT r.name, r.epoch, r.last_id FROM rooms r LEFT JOIN "
                "(SELECT room, MAX(seq) AS used FROM messages GROUP BY room) m "
                "ON m.room = r.name ORDER BY COALESCE(m.used, 0), r.name"
            ).fetchall()
            messages = db.execute(
                "SELECT seq, room, id, user_id, content, time, at, extra FROM messages ORDER BY seq"
            ).fetchall()
            refs = db.execute("SELECT user_id, ref, ack FROM refs ORDER BY seq").fetchall()
            topics = dict(
                db.execute("SELECT name, topic FROM rooms WHERE topic IS NOT NULL").fetchall()
            )
            markers = db.execute(
                "SELECT user_id, name, epoch, id FROM read_markers ORDER BY seq"
            ).fetchall()
            row = db.execute("SELECT MAX(seq) FROM read_markers").fetchone()
        except sqlite3.Error as exc:
            raise StoreError(_explain(self.path, exc)) from None
        self._mark_seq = row[0] or 0
        return Snapshot(rooms, messages, refs, topics, markers)

    def commit(self, ops: Sequence[LogOp]) -> None:
        """Write *ops* in one transaction (blocking: run it in a thread).

        Raises:
            StoreError: the write failed (disk full, I/O error); nothing of
                the batch is kept.
        """
        if not ops:
            return
        db = self._db
        appends: list[tuple[int, str, int, str, str, str, float, str | None]] = []
        last_ids: dict[str, int] = {}
        refs: list[tuple[str, str, str]] = []
        marks: dict[tuple[str, str], tuple[str, int] | None] = {}
        try:
            db.execute("BEGIN")
            for op in ops:
                if isinstance(op, AppendOp):
                    m = op.message
                    appends.append(
                        (op.seq, m.room, m.id, m.user_id, m.content, m.time, op.at, encode_extra(m))
                    )
                    last_ids[m.room] = m.id
                    continue
                if isinstance(op, RememberOp):
                    refs.append((op.user_id, op.ref, op.ack))
                    continue
                if isinstance(op, MarkOp):
                    marks[op.user_id, op.name] = (op.epoch, op.id)
                    continue
                if isinstance(op, ForgetMarkOp):
                    marks[op.user_id, op.name] = None
                    continue
                if appends:
                    db.executemany(_INSERT, appends)
                    appends.clear()
                if isinstance(op, ReplaceOp):
                    m = op.message
                    db.execute(
                        "UPDATE messages SET content = ?, extra = ? WHERE room = ? AND id = ?",
                        (m.content, encode_extra(m), m.room, m.id),
                    )
                elif isinstance(op, TrimOp):
                    db.execute(
                        "DELETE FROM messages WHERE room = ? AND id < ?", (op.room, op.first_id)
                    )
                elif isinstance(op, OpenRoomOp):
                    db.execute(
                        "INSERT OR REPLACE INTO rooms VALUES (?, ?, 0, NULL)", (op.room, op.epoch)
                    )
                elif isinstance(op, TopicOp):
                    db.execute("UPDATE rooms SET topic = ? WHERE name = ?", (op.topic, op.room))
                elif isinstance(op, DropRoomOp):
                    last_ids.pop(op.room, None)
                    db.execute("DELETE FROM messages WHERE room = ?", (op.room,))
                    db.execute("DELETE FROM rooms WHERE name = ?", (op.room,))
            if appends:
                db.executemany(_INSERT, appends)
            if last_ids:
                db.executemany(
                    "UPDATE rooms SET last_id = ? WHERE name = ?",
                    [(id_, room) for room, id_ in last_ids.items()],
                )
            if marks:
                self._write_marks(marks)
            if refs:
                db.executemany("INSERT INTO refs (user_id, ref, ack) VALUES (?, ?, ?)", refs)
                self._refs_added += len(refs)
                if self._refs_added > self.max_refs // 10:
                    self._refs_added = 0
                    db.execute(
                        "DELETE FROM refs WHERE seq <= (SELECT MAX(seq) FROM refs) - ?",
                        (self.max_refs,),
                    )
            db.execute("COMMIT")
        except sqlite3.Error as exc:
            try:
                db.execute("ROLLBACK")
            except sqlite3.Error:
                pass
            raise StoreError(_explain(self.path, exc)) from None

    def _write_marks(self, marks: dict[tuple[str, str], tuple[str, int] | None]) -> None:
        """The last state of each marker a batch changed (None: forgotten)."""
        rows = []
        gone = []
        for (user_id, name), mark in marks.items():
            if mark is None:
                gone.append((user_id, name))
            else:
                self._mark_seq += 1
                rows.append((user_id, name, mark[0], mark[1], self._mark_seq))
        if gone:
            self._db.executemany("DELETE FROM read_markers WHERE user_id = ? AND name = ?", gone)
        if rows:
            self._db.executemany(_MARK, rows)

    def close(self) -> None:
        """Close the database (a checkpoint folds the WAL into the file)."""
        try:
            self._db.close()
        except sqlite3.Error:
            pass
        self._lock.close()


def _migrate(db: sqlite3.Connection, version: int) -> None:
    """Bring a version 1 or 2 database to this version, in one transaction:
    from 1, the ``extra`` column with the mentions of the messages it
    already holds; from 2 (and 1), the rooms' ``topic`` column (the
    ``read_markers`` table is new, made with the schema)."""
    db.execute("BEGIN IMMEDIATE")
    try:
        if version == 1:
            db.execute("ALTER TABLE messages ADD COLUMN extra TEXT")
            rows = db.execute(
                "SELECT seq, content FROM messages WHERE instr(content, '@')"
            ).fetchall()
            updates = []
            for seq, content in rows:
                mentions = find_mentions(content)
                if mentions:
                    updates.append((json.dumps({"mentions": mentions}, separators=(",", ":")), seq))
            db.executemany("UPDATE messages SET extra = ? WHERE seq = ?", updates)
        db.execute("ALTER TABLE rooms ADD COLUMN topic TEXT")
        db.execute("UPDATE meta SET value = ? WHERE key = 'schema'", (str(SCHEMA_VERSION),))
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise


#: The lock file that keeps a second server out of a data directory.
LOCK_NAME = "trio-chat.lock"


def _lock_directory(data_dir: str, path: str) -> IO[bytes]:
    """Hold an exclusive ``flock`` on the data directory's lock file (released
    when the file is closed, or the process dies)."""
    try:
        lock = open(os.path.join(data_dir, LOCK_NAME), "ab")  # noqa: SIM115 - held open
    except OSError as exc:
        raise StoreError(f"data directory {data_dir}: {exc.strerror or exc}") from None
    try:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        lock.close()
        raise StoreError(
            f"database {path} is locked: is another trio-chat server using this data directory?"
        ) from None
    return lock


def _explain(path: str, exc: sqlite3.Error) -> str:
    text = str(exc)
    if "locked" in text or "busy" in text:
        return f"database {path} is locked: is another trio-chat server using this data directory?"
    if "not a database" in text or "malformed" in text:
        return f"database {path} is damaged or not a trio-chat database ({text})"
    return f"database {path}: {text}"
