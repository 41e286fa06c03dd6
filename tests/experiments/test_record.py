"""The SQLite experiment record: upserts, history, and several processes writing at once."""

from __future__ import annotations

import multiprocessing as mp
import sqlite3

import pytest

from experiments import record
from promptblend.errors import ConfigError


def _entry(name: str, score: float, digest: str = "d0") -> dict:
    return {"name": name, "kind": "run", "digest": digest, "predictor": "knn", "score": score, "n_images": 10}


def test_upsert_and_best_per_image_set(tmp_path):
    db = tmp_path / "rec.sqlite"
    record.record_session(db, "set1", {"splits": 10}, [_entry("a", 0.5), _entry("b", 0.6)])
    record.record_session(db, "set1", {"splits": 10}, [_entry("a", 0.5), _entry("a", 0.55, digest="d1")])
    record.record_session(db, "set2", {}, [_entry("c", 0.3)])
    rows = record.history(db)
    assert [(r["image_set"], r["name"], r["times_seen"], r["best"]) for r in rows] == [
        ("set1", "b", 1, True), ("set1", "a", 1, False), ("set1", "a", 2, False), ("set2", "c", 1, True)
    ]
    assert [r["name"] for r in record.history(db, "set2")] == ["c"]
    assert len(record.sessions(db)) == 3
    con = sqlite3.connect(db)
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_not_a_database(tmp_path):
    bad = tmp_path / "bad.sqlite"
    bad.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(ConfigError, match="not a usable SQLite record"):
        record.history(bad)


def _writer(db: str, worker: int, sessions: int, barrier) -> None:
    barrier.wait()
    for s in range(sessions):
        entries = [_entry(f"w{worker}-e{k}", 0.1 * k + 0.001 * s, digest=f"{s % 3}") for k in range(5)]
        record.record_session(db, "shared", {"seed": s}, entries)


def test_concurrent_writers(tmp_path):
    """Four processes record 15 sessions each at the same moment: nothing lost, nothing locked."""
    db = str(tmp_path / "rec.sqlite")
    ctx = mp.get_context("spawn")
    workers, sessions = 4, 15
    barrier = ctx.Barrier(workers)
    procs = [ctx.Process(target=_writer, args=(db, w, sessions, barrier)) for w in range(workers)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0] * workers
    assert len(record.sessions(db)) == workers * sessions
    rows = record.history(db, "shared")
    # each worker wrote 5 names x 3 digests, each seen 5 times
    assert len(rows) == workers * 5 * 3
    assert all(r["times_seen"] == sessions // 3 for r in rows)
    con = sqlite3.connect(db)
    assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
