"""A real browser for page tests: Debian's Chromium driven by Playwright, fresh profile, every request seen.

Tests that need it skip when ``/usr/bin/chromium`` or Playwright is absent; under ``CI=true`` (``.ci/run``
installs both) that skip is a failure, as every skip is (tests/conftest.py). Never ``playwright install``: the browser is Debian's.
Screenshots go to the folder a test chooses; set ``PROMPTBLEND_SCREENS=DIR`` to get a copy there too.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import pytest

CHROMIUM = Path(os.environ.get("PROMPTBLEND_CHROMIUM", "/usr/bin/chromium"))
FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
DESKTOP = (1280, 900)
PHONE = (390, 844)


def require_chromium() -> Path:
    """Chromium's path; skip without it (or without Playwright: under ``CI=true`` a failure)."""
    missing = []
    if not CHROMIUM.is_file():
        missing.append(f"{CHROMIUM} (apt-get install chromium)")
    if importlib.util.find_spec("playwright") is None:
        missing.append("the playwright package (pip install -e '.[dev]')")
    if missing:
        pytest.skip("browser tests need " + " and ".join(missing))
    return CHROMIUM


@dataclass
class Visit:
    """A page opened in the browser, with the console messages, page errors and requests it caused."""

    page: object
    url: str
    console: list[tuple[str, str]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)

    def assert_clean(self) -> None:
        """No console error, no uncaught exception, no request but the page itself."""
        assert [m for m in self.console if m[0] in ("error", "warning")] == []
        assert self.errors == []
        assert self.requests == [self.url]

    def overflow(self) -> int:
        """How many CSS pixels the page is wider than the window (0: no sideways scroll of the page)."""
        return self.page.evaluate("document.documentElement.scrollWidth - window.innerWidth")

    def pinned_view(self, table: str) -> dict:
        """How ``#table``'s pinned columns share its scrolling box: the box's width (``box``), the pinned
        columns' width (``pinned``) and how many other columns are wholly in view right of them with the box
        scrolled to its start (``start``) and to its end (``end``)."""
        return self.page.evaluate(
            """(id) => {
                const t = document.getElementById(id), wrap = t.parentElement, head = Array.from(t.tHead.rows[0].cells);
                const pinned = head.filter(c => c.classList.contains('pin'));
                const inView = () => {
                    const box = wrap.getBoundingClientRect();
                    const edge = Math.max(box.left, ...pinned.map(c => c.getBoundingClientRect().right));
                    return head.filter(c => !c.classList.contains('pin')).filter(c => {
                        const r = c.getBoundingClientRect();
                        return r.left >= edge - 1 && r.right <= box.right + 1;
                    }).length;
                };
                wrap.scrollLeft = 0;
                const start = inView();
                wrap.scrollLeft = wrap.scrollWidth;
                const end = inView();
                wrap.scrollLeft = 0;
                return {box: wrap.clientWidth, start, end,
                        pinned: pinned.reduce((w, c) => w + c.getBoundingClientRect().width, 0)};
            }""",
            table,
        )

    def screenshot(self, folder: Path, name: str) -> Path:
        """A full-page PNG in ``folder`` (and a copy in ``$PROMPTBLEND_SCREENS`` when set)."""
        path = folder / name
        folder.mkdir(parents=True, exist_ok=True)
        self.page.screenshot(path=str(path), full_page=True)
        extra = os.environ.get("PROMPTBLEND_SCREENS")
        if extra:
            Path(extra).mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, Path(extra) / name)
        return path


@contextlib.contextmanager
def browser(tmp: Path) -> Iterator[object]:
    """A headless Chromium context with a fresh ``--user-data-dir`` under ``tmp``."""
    chromium = require_chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            str(tmp / "chromium-profile"), executable_path=str(chromium), headless=True, args=FLAGS,
            viewport={"width": DESKTOP[0], "height": DESKTOP[1]},
        )
        try:
            yield context
        finally:
            context.close()


def visit(context, path: Path, size: tuple[int, int] = DESKTOP) -> Visit:
    """Open ``path`` at ``size`` (width, height) and wait until it has loaded."""
    page = context.new_page()
    page.set_viewport_size({"width": size[0], "height": size[1]})
    v = Visit(page, Path(path).resolve().as_uri())
    page.on("console", lambda m: v.console.append((m.type, m.text)))
    page.on("pageerror", lambda e: v.errors.append(str(e)))
    page.on("request", lambda r: v.requests.append(r.url))
    page.goto(v.url, wait_until="load")
    return v


def column(v: Visit, table: str, key: str, attr: str = "text") -> list[str]:
    """The cells of column ``key`` (its header's ``data-key``) of ``#table``: text or ``data-sort``."""
    return v.page.evaluate(
        """([table, key, attr]) => {
            const t = document.getElementById(table);
            const col = Array.from(t.tHead.rows[0].cells).findIndex(th => th.dataset.key === key);
            return Array.from(t.tBodies[0].rows, r => attr === 'text' ? r.cells[col].textContent
                                                                       : r.cells[col].getAttribute('data-sort'));
        }""",
        [table, key, attr],
    )


def sort_by(v: Visit, table: str, key: str) -> str:
    """Click the header of column ``key`` in ``#table``; return its ``aria-sort`` afterwards."""
    header = v.page.locator(f'#{table} thead th[data-key="{key}"]')
    header.locator("button").click()
    return header.get_attribute("aria-sort")
