"""The page kit: one self-contained HTML file; escaping, embedding, sorting rules (in a real browser too)."""

from __future__ import annotations

import base64
import io
import re

import pytest
from browser import PHONE, browser, column, sort_by, visit
from PIL import Image

from promptblend.errors import ConfigError
from promptblend.figures import new_figure
from promptblend.page import CSP, Cell, Column, Page


def _png(colour: str = "red", size: tuple[int, int] = (40, 20)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, format="PNG")
    return buf.getvalue()


def _sample() -> Page:
    page = Page("Kit <test>", subtitle="a & b")
    page.section("Numbers")
    rows = [("e10", 0.5, None, Cell("1-3", sort=2.0)), ("e2", 0.25, 7, Cell("0-1", sort=0.5)),
            ("E1", float("nan"), 3, Cell("?", sort=float("nan"))), ("e3", 0.75, 5, Cell("2-2", sort=2.0))]
    page.table([Column("name"), Column("score", fmt=".2f"), Column("n"), Column("range")], rows, name="t", pin=2)
    page.table(["a", "b"], [{"a": "x", "b": 1}], sortable=False, name="plain")
    page.section("Numbers")  # same title twice: unique ids
    page.image(_png(), "red box")
    return page


def test_one_self_contained_document():
    text = _sample().html()
    assert text.startswith("<!doctype html>") and f'content="{CSP}"' in text
    assert "<script>alert" not in text and "Kit &lt;test&gt;" in text and "a &amp; b" in text
    assert not re.search(r"""(src|href)=["'](?!data:|#)""", text), "only data: URIs and in-page links"
    assert "http://" not in text and "https://" not in text and "@import" not in text and "url(" not in text
    assert 'id="s-numbers"' in text and 'id="s-numbers-2"' in text


def test_cells_numbers_and_sort_keys():
    text = _sample().html()
    assert '<th scope="col" class="num" data-key="score">' in text  # numbers (NaN aside) -> numeric column
    assert '<td class="num" data-sort="0.5">0.50</td>' in text
    assert '<td class="num" data-sort=""></td>' in text  # None in a numeric column: empty, sorts last
    assert '<td class="num" data-sort="2.0">1-3</td>' in text  # Cell: its text, its own sort key
    assert "<button" not in text.split('id="plain"')[1].split("</table>")[0]
    wrapped = Page("w").table([Column("path", wrap=True), Column("n")], [["/a/long/path", 3]]).html()
    assert '<td class="wrap">/a/long/path</td><td class="num" data-sort="3.0">3</td>' in wrapped


def test_images_from_bytes_paths_and_figures(tmp_path):
    png = _png("blue")
    (tmp_path / "p.png").write_bytes(png)
    fig = new_figure(2, 1)
    fig.subplots().plot([0, 1], [1, 0])
    page = Page("img").image(png, "bytes").image(tmp_path / "p.png", "path").image(fig, "figure", min_width=500)
    uris = re.findall(r'src="data:image/png;base64,([^"]+)"', page.html())
    assert len(uris) == 3 and base64.b64decode(uris[0]) == png == base64.b64decode(uris[1])
    with Image.open(io.BytesIO(base64.b64decode(uris[2]))) as im:
        assert im.width > 100
    assert 'class="wide" style="--min-width:500px"' in page.html()
    with pytest.raises(ConfigError, match="not found"):
        Page("x").image(tmp_path / "nope.png", "missing")
    (tmp_path / "a.gif").write_bytes(b"GIF89a")
    with pytest.raises(ConfigError, match="not a.gif"):
        Page("x").image(tmp_path / "a.gif", "gif")


def test_table_names_are_unique_and_write_is_atomic(tmp_path):
    page = Page("t").table(["a"], [[1]], name="x")
    with pytest.raises(ConfigError, match="two tables"):
        page.table(["a"], [[2]], name="x")
    out = page.write(tmp_path / "sub" / "p.html")
    assert out.read_text() == page.html() and [p.name for p in out.parent.iterdir()] == ["p.html"]


def test_sorting_in_a_browser(tmp_path):
    path = _sample().write(tmp_path / "kit.html")
    with browser(tmp_path) as context:
        v = visit(context, path)
        v.assert_clean()
        assert sort_by(v, "t", "score") == "descending"  # numbers: best first, empty last
        assert column(v, "t", "name") == ["e3", "e10", "e2", "E1"]
        assert sort_by(v, "t", "score") == "ascending"
        assert column(v, "t", "name") == ["e2", "e10", "e3", "E1"]
        assert sort_by(v, "t", "n") == "descending"
        assert column(v, "t", "n") == ["7", "5", "3", ""]
        assert sort_by(v, "t", "name") == "ascending"  # text: natural order, case-insensitive
        assert column(v, "t", "name") == ["E1", "e2", "e3", "e10"]
        assert sort_by(v, "t", "range") == "descending"  # by the Cell's key; ties keep their order
        assert column(v, "t", "range") == ["2-2", "1-3", "0-1", "?"]
        assert v.page.locator("#plain button").count() == 0
        phone = visit(context, path, PHONE)
        lefts = phone.page.evaluate(
            "Array.from(document.querySelectorAll('#t tbody tr:first-child td'), td => td.style.left)"
        )
        width = phone.page.evaluate("document.querySelector('#t thead th').getBoundingClientRect().width")
        assert lefts[0] == "0px" and float(lefts[1][:-2]) == pytest.approx(width, abs=0.01) and lefts[2:] == ["", ""]
        assert phone.overflow() == 0


def test_pinned_columns_leave_room_on_a_phone(tmp_path):
    """At 390 px, long names in pinned columns must not cover the box: other columns scroll into view."""
    names = ["clip-interrogator-tiny-3f9a2b7c41d2-8e0f6b2a9c11", "clipcap-tiny-0a1b2c3d4e5f-8e0f6b2a9c11", "blend"]
    cols = [Column("rank", "#"), Column("name", "entry"), *(Column(f"m{k}", f"metric {k}", fmt=".4f") for k in range(8))]
    rows = [{"rank": i + 1, "name": n, **{f"m{k}": 0.5 + i / 10 + k / 100 for k in range(8)}} for i, n in enumerate(names)]
    path = Page("pins").table(cols, rows, name="board", pin=2).write(tmp_path / "pins.html")
    with browser(tmp_path) as context:
        phone = visit(context, path, PHONE)
        view = phone.pinned_view("board")
        phone.screenshot(tmp_path / "screens", "pins-390.png")
        overflow = phone.overflow()
        wide = visit(context, path).pinned_view("board")
    assert view["pinned"] <= 0.5 * view["box"], view
    assert view["start"] >= 1 and view["end"] >= 2, view
    assert wide["start"] == len(cols) - 2  # on a desktop everything fits and nothing wraps away
    assert overflow == 0


def test_browser_tests_skip_without_chromium(monkeypatch, tmp_path):
    """A skip (under CI=true every skip fails: tests/test_ci_skips.py)."""
    import browser as helper

    monkeypatch.setattr(helper, "CHROMIUM", tmp_path / "no-chromium")
    with pytest.raises(pytest.skip.Exception, match="no-chromium"):
        helper.require_chromium()
