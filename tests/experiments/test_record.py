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


def test_best_per_day_and_the_html_record(tmp_path):
    from experiments.pages import best_per_day

    rows = [
        {"name": "a", "kind": "run", "score": 0.50, "first_seen": "2026-01-01T10:00:00+00:00"},
        {"name": "b", "kind": "run", "score": 0.55, "first_seen": "2026-01-01T12:00:00+00:00"},
        {"name": "c", "kind": "blend", "score": 0.52, "first_seen": "2026-01-03T09:00:00+00:00"},
        {"name": "d", "kind": "blend", "score": 0.60, "first_seen": "2026-01-04T09:00:00+00:00"},
    ]
    days = best_per_day(rows)
    assert [(d["day"], d["name"], d["best_so_far"], d["new"]) for d in days] == [
        ("2026-01-01", "b", 0.55, 2), ("2026-01-03", "c", 0.55, 1), ("2026-01-04", "d", 0.60, 1)
    ]
    db = tmp_path / "rec.sqlite"
    record.record_session(db, "set1", {"splits": 10}, [_entry("a", 0.5), _entry("b <i>", 0.6)])
    record.record_session(db, "set2", {"splits": 10}, [_entry("c", 0.3)])
    assert record.main(["--db", str(db), "--html", str(tmp_path / "r.html"), "--image-set", "set1"]) == 0
    page = (tmp_path / "r.html").read_text()
    assert "Image set set1" in page and "Image set set2" not in page and "b &lt;i&gt;" in page
    assert page.count("<tr") - page.count("<tr><th") == 1 + 2 + 1  # best per day, 2 entries, 1 session
