"""``leaderboard.html`` and ``experiments.record --html`` opened in a real browser (Debian's Chromium)."""

from __future__ import annotations

import pandas as pd
import pytest
from browser import PHONE, browser, column, require_chromium, sort_by, visit

from experiments import record
from experiments.leaderboard.__main__ import main


@pytest.fixture
def board(workspace):
    """Two recorded sessions of the workspace's five entries; the second one's page."""
    require_chromium()
    tmp, _, runs, outside = workspace
    out, db = tmp / "lb", tmp / "rec.sqlite"
    argv = ["--runs", str(runs), "--truth", str(tmp / "truth"), "--out", str(out), "--submission", f"outside={outside}",
            "--compare", "blend", "model0", "--splits", "200", "--record", str(db)]
    assert main(argv) == 0
    assert main(argv + ["--seed", "1"]) == 0
    return tmp, out, db


def test_leaderboard_page_loads_sorts_and_fits(board, tmp_path_factory, capsys):
    tmp, out, db = board
    table = pd.read_csv(out / "leaderboard.csv")
    page = out / "leaderboard.html"
    screens = tmp_path_factory.mktemp("screens")
    with capsys.disabled():
        print(f"\nscreenshots of leaderboard.html in {screens}")
    with browser(tmp) as context:
        v = visit(context, page)
        v.assert_clean()
        assert column(v, "leaderboard", "name") == list(table["name"])  # every entry, best first
        shown_widths = v.page.evaluate("Array.from(document.images, i => i.complete && i.naturalWidth)")
        assert sorted(shown_widths) == [  # wide plots come first: the order follows the widths
            pytest.approx(w, rel=0.02) for w in sorted(_png_widths(out))
        ]
        assert sort_by(v, "leaderboard", "private_mean") == "descending"
        by_private = table.sort_values("private_mean", ascending=False)
        assert column(v, "leaderboard", "name") == list(by_private["name"])
        shown = [float(x) for x in column(v, "leaderboard", "private_mean")]
        assert shown == pytest.approx(list(by_private["private_mean"]), abs=6e-6)  # 5 decimals shown
        assert sort_by(v, "leaderboard", "private_mean") == "ascending"
        assert column(v, "leaderboard", "name") == list(by_private["name"])[::-1]
        assert sort_by(v, "leaderboard", "name") == "ascending"
        assert column(v, "leaderboard", "name") == sorted(table["name"], key=str.lower)
        assert v.page.locator("#tuning tbody tr").count() == 1  # the blend's in-sample vs out-of-fold
        history = record.history(db, pd.read_json(out / "summary.json", typ="series")["image_set"])
        assert v.page.get_by_text(f"Every entry ever scored ({len(history)}; best in bold)").count() == 1
        assert v.overflow() == 0
        wrap = "(w => w.scrollWidth - w.clientWidth)(document.getElementById('leaderboard').parentElement)"
        assert v.page.evaluate(wrap) <= 0  # at 1,280 px the whole table fits: no sideways scrolling
        desktop = v.screenshot(screens, "leaderboard-1280.png")
        phone = visit(context, page, PHONE)
        phone.assert_clean()
        assert phone.overflow() == 0  # wide tables scroll inside their own box, not the page
        right = "Math.max(...Array.from(document.querySelectorAll('figure'), f => f.getBoundingClientRect().right))"
        assert phone.page.evaluate(right) <= PHONE[0]  # plots fit, or scroll inside their own box
        pins = phone.pinned_view("leaderboard")  # the pinned rank and entry leave room for the other columns
        assert pins["pinned"] <= 0.5 * pins["box"] and pins["start"] >= 1 and pins["end"] >= 1, pins
        small = phone.screenshot(screens, "leaderboard-390.png")
    for path, width in ((desktop, 1280), (small, 390)):
        from PIL import Image

        with Image.open(path) as im:
            assert im.width == width and im.height > 800


def _png_widths(out) -> list[int]:
    from PIL import Image

    widths = []
    for name in ("intervals", "public_private", "ranks", "per_image_hist"):
        with Image.open(out / f"{name}.png") as im:
            widths.append(im.width)
    return widths


def test_record_page_shows_every_entry_and_session(board, tmp_path_factory, capsys):
    tmp, _, db = board
    assert record.main(["--db", str(db), "--html", str(tmp)]) == 0
    assert f"wrote {tmp / 'record.html'}" in capsys.readouterr().out
    rows, sessions = record.history(db), record.sessions(db)
    screens = tmp_path_factory.mktemp("screens")
    with browser(tmp) as context:
        v = visit(context, tmp / "record.html")
        v.assert_clean()
        assert v.page.locator("#sessions tbody tr").count() == len(sessions) == 2
        names = v.page.locator("table:has(th[data-key='last']) tbody tr td:first-child").all_text_contents()
        assert sorted(names) == sorted(r["name"] for r in rows)
        assert v.page.locator("tr.mark").count() == 1  # the best entry, in bold
        v.screenshot(screens, "record-1280.png")
        phone = visit(context, tmp / "record.html", PHONE)
        phone.assert_clean()
        assert phone.overflow() == 0
        phone.screenshot(screens, "record-390.png")
