"""The experiment record: an SQLite file of every scored run, blend and submission.

Safe for concurrent writers: WAL journal, a busy timeout, and each write in one
``BEGIN IMMEDIATE`` transaction (writers queue instead of failing with "database is locked").
``python -m experiments.record [--db FILE] [--image-set KEY] [--html OUT]`` lists the history, or
renders the whole record (every image set's best per day, every entry, every session) as one
self-contained HTML page.
"""

from __future__ import annotations

import argparse
import os
import socket
import sqlite3
import time
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator, Mapping, Sequence

from promptblend.cache import cache_dir
from promptblend.cli import entry_point
from promptblend.errors import ConfigError

BUSY_TIMEOUT_MS = 60_000
SCHEMA_VERSION = 1
SCHEMA = """
CREATE TABLE IF NOT EXISTS sessions (
    id INTEGER PRIMARY KEY,
    created TEXT NOT NULL,
    image_set TEXT NOT NULL,
    truth TEXT,
    n_images INTEGER,
    splits INTEGER,
    seed INTEGER,
    public_fraction REAL,
    fixed_split INTEGER,
    out TEXT,
    host TEXT,
    pid INTEGER
);
CREATE TABLE IF NOT EXISTS entries (
    id INTEGER PRIMARY KEY,
    image_set TEXT NOT NULL,
    name TEXT NOT NULL,
    kind TEXT NOT NULL,
    digest TEXT NOT NULL,
    predictor TEXT,
    config_hash TEXT,
    fingerprint TEXT,
    n_images INTEGER,
    score REAL,
    ci_low REAL,
    ci_high REAL,
    public_mean REAL,
    private_mean REAL,
    p_first_private REAL,
    in_sample REAL,
    out_of_fold REAL,
    wall_time_s REAL,
    created TEXT,
    source TEXT,
    first_seen TEXT NOT NULL,
    last_seen TEXT NOT NULL,
    times_seen INTEGER NOT NULL DEFAULT 1,
    last_session INTEGER REFERENCES sessions(id),
    UNIQUE (image_set, name, digest)
);
CREATE INDEX IF NOT EXISTS entries_by_set ON entries (image_set, score DESC);
"""
ENTRY_FIELDS = (
    "name", "kind", "digest", "predictor", "config_hash", "fingerprint", "n_images", "score", "ci_low",
    "ci_high", "public_mean", "private_mean", "p_first_private", "in_sample", "out_of_fold", "wall_time_s",
    "created", "source",
)
SESSION_FIELDS = ("truth", "n_images", "splits", "seed", "public_fraction", "fixed_split", "out")


def default_path() -> Path:
    """The record file used when none is given: ``<cache>/experiments.sqlite``."""
    return cache_dir() / "experiments.sqlite"


def connect(path: str | Path | None = None) -> sqlite3.Connection:
    """Open (and create if needed) the record at ``path`` in WAL mode with a busy timeout."""
    path = Path(path) if path is not None else default_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    try:  # an unwritable folder: "unable to open database file"
        con = sqlite3.connect(path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None)
    except sqlite3.DatabaseError as e:
        raise ConfigError(f"cannot open the record {path}: {e}") from e
    con.row_factory = sqlite3.Row
    try:
        con.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        _retry(lambda: _enable_wal(con))
        con.execute("PRAGMA synchronous = NORMAL")
        version = con.execute("PRAGMA user_version").fetchone()[0]
    except sqlite3.DatabaseError as e:
        con.close()
        raise ConfigError(f"{path} is not a usable SQLite record: {e}") from e
    if version > SCHEMA_VERSION:
        con.close()
        raise ConfigError(f"{path} was written by a newer promptblend (schema {version} > {SCHEMA_VERSION})")
    if version < SCHEMA_VERSION:
        with transaction(con):
            for stmt in SCHEMA.split(";"):
                if stmt.strip():
                    con.execute(stmt)
            con.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
    return con


def _enable_wal(con: sqlite3.Connection) -> None:
    if con.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
        con.execute("PRAGMA journal_mode = WAL")


def _retry(fn, attempts: int = 50):
    """Retry ``fn`` on 'database is locked' (only the journal-mode switch needs it)."""
    for i in range(attempts):
        try:
            return fn()
        except sqlite3.OperationalError as e:
            if "locked" not in str(e) or i == attempts - 1:
                raise
            time.sleep(0.05 * (1 + i % 5))


@contextmanager
def transaction(con: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """One write transaction that takes the write lock up front (waits up to the busy timeout)."""
    con.execute("BEGIN IMMEDIATE")
    try:
        yield con
    except BaseException:
        con.execute("ROLLBACK")
        raise
    con.execute("COMMIT")


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def record_session(
    path: str | Path | None, image_set: str, session: Mapping, entries: Sequence[Mapping]
) -> int:
    """Record one leaderboard session and upsert its entries in one transaction; return the session id.

    An entry is identified by (image set, name, digest of its per-image scores): seeing it again
    updates its scores, ``last_seen`` and ``times_seen`` instead of adding a row.
    """
    con = connect(path)
    try:
        now = _now()
        with transaction(con):
            cur = con.execute(
                f"INSERT INTO sessions (created, image_set, host, pid, {', '.join(SESSION_FIELDS)}) "
                f"VALUES (?, ?, ?, ?, {', '.join('?' * len(SESSION_FIELDS))})",
                (now, image_set, socket.gethostname(), os.getpid(), *(session.get(k) for k in SESSION_FIELDS)),
            )
            sid = int(cur.lastrowid)
            cols = ", ".join(ENTRY_FIELDS)
            updates = ", ".join(f"{k} = excluded.{k}" for k in ENTRY_FIELDS if k not in ("name", "digest"))
            con.executemany(
                f"INSERT INTO entries (image_set, {cols}, first_seen, last_seen, last_session) "
                f"VALUES (?, {', '.join('?' * len(ENTRY_FIELDS))}, ?, ?, ?) "
                f"ON CONFLICT (image_set, name, digest) DO UPDATE SET {updates}, "
                "last_seen = excluded.last_seen, last_session = excluded.last_session, times_seen = times_seen + 1",
                [(image_set, *(e.get(k) for k in ENTRY_FIELDS), now, now, sid) for e in entries],
            )
        return sid
    finally:
        con.close()


def history(path: str | Path | None = None, image_set: str | None = None) -> list[dict]:
    """Recorded entries (best score first within each image set), each with ``best`` marking the top one."""
    con = connect(path)
    try:
        where, args = ("WHERE image_set = ?", (image_set,)) if image_set else ("", ())
        rows = con.execute(
            f"SELECT *, score = MAX(score) OVER (PARTITION BY image_set) AS best FROM entries {where} "
            "ORDER BY image_set, score DESC, id",
            args,
        ).fetchall()
        return [dict(r) | {"best": bool(r["best"])} for r in rows]
    finally:
        con.close()


def sessions(path: str | Path | None = None) -> list[dict]:
    """Recorded leaderboard sessions, oldest first."""
    con = connect(path)
    try:
        return [dict(r) for r in con.execute("SELECT * FROM sessions ORDER BY id")]
    finally:
        con.close()


def write_html(path: str | Path, db: str | Path | None = None, image_set: str | None = None) -> Path:
    """Render the record (or one image set of it) as one self-contained HTML page at ``path``."""
    from .pages import record_page

    runs = [s for s in sessions(db) if image_set is None or s["image_set"] == image_set]
    return record_page(history(db, image_set), runs, str(db or default_path())).write(path)


@entry_point
def main(argv: list[str] | None = None) -> int:
    """CLI: print the recorded history (best entry per image set marked with *) or write it as HTML."""
    from rich.table import Table

    from .report import make_console

    ap = argparse.ArgumentParser(prog="python -m experiments.record", description=__doc__.splitlines()[0])
    ap.add_argument("--db", default=None, help=f"record file (default {default_path()})")
    ap.add_argument("--image-set", default=None, help="only this image-set key")
    ap.add_argument("--html", default=None, metavar="OUT",
                    help="write the record as one HTML page to OUT (a folder: OUT/record.html)")
    args = ap.parse_args(argv)
    if args.db and not Path(args.db).is_file():
        raise ConfigError(f"record not found: {args.db}")
    if args.html:
        out = Path(args.html)
        out = out / "record.html" if out.is_dir() else out
        print(f"wrote {write_html(out, args.db, args.image_set)}")
        return 0
    rows = history(args.db, args.image_set)
    table = Table(title=f"experiment record: {len(rows)} entries")
    for col in ("", "image set", "entry", "kind", "predictor", "score", "in-sample", "OOF", "seen", "last seen"):
        table.add_column(col)
    for r in rows:
        fmt = lambda v: "" if v is None else f"{v:.5f}"  # noqa: E731
        table.add_row(
            "*" if r["best"] else "", r["image_set"], r["name"], r["kind"], r["predictor"] or "", fmt(r["score"]),
            fmt(r["in_sample"]), fmt(r["out_of_fold"]), str(r["times_seen"]), r["last_seen"],
        )
    make_console().print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
