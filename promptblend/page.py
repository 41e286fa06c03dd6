"""One self-contained HTML page: sections, key figures, sortable tables and embedded PNG plots.

The page makes no network request: CSS and JavaScript are inline, images are base64 ``data:`` URIs,
and a Content-Security-Policy forbids any other source. It reads at a desktop's 1,280 px and a phone's
390 px: tables scroll sideways inside their own box (the first ``pin`` columns stay in view), plots
shrink to the width. Click a table header to sort by it (numbers numerically, best first; click
again to reverse; empty cells always last).

Example::

    from promptblend.page import Cell, Column, Page

    page = Page("Leaderboard", subtitle="300 images, 60 public / 240 private")
    page.section("Entries")
    page.facts({"entries": 3, "best": "blend"})
    page.table(
        [Column("name", "entry"), Column("score", fmt=".5f"), Column("interval")],
        [{"name": "blend", "score": 0.61234, "interval": Cell("0.60-0.62", sort=0.60)}],
        name="board", pin=1,
    )
    page.section("Plots")
    page.image("intervals.png", alt="scores and intervals")  # a path, PNG bytes or a matplotlib Figure
    page.write("leaderboard.html")  # atomic
"""

from __future__ import annotations

import base64
import html
import io
import math
import numbers
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from promptblend import atomic
from promptblend.errors import ConfigError

#: Forbids every request but inline style/script and ``data:`` images (the page itself excepted).
CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'"
MIME = {
    ".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".webp": "image/webp", ".svg": "image/svg+xml",
}

CSS = """
:root{--fg:#1f2328;--muted:#59636e;--bg:#fff;--panel:#f6f8fa;--line:#d1d9e0;--accent:#0969da;--hover:#fff8c5}
*{box-sizing:border-box}
body{margin:0;color:var(--fg);background:var(--bg);
 font:15px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif}
header,main,footer{max-width:1240px;margin:0 auto;padding:0 20px}
header{padding-top:20px}
h1{font-size:1.6rem;margin:0 0 2px;overflow-wrap:anywhere}
h2{font-size:1.2rem;margin:0 0 10px;padding-bottom:4px;border-bottom:1px solid var(--line)}
.subtitle,.muted,figcaption,footer,.caption{color:var(--muted)}
.subtitle{margin:0}
nav{display:flex;flex-wrap:wrap;gap:4px 14px;margin:10px 0 0;font-size:.9rem}
a{color:var(--accent);text-decoration:none}
a:hover{text-decoration:underline}
section{margin:26px 0}
p{margin:8px 0;max-width:80ch;overflow-wrap:anywhere}
.facts{display:grid;grid-template-columns:repeat(auto-fill,minmax(150px,1fr));gap:8px;margin:10px 0}
.fact{background:var(--panel);border:1px solid var(--line);border-radius:6px;padding:6px 10px;min-width:0}
.fact b{display:block;font-size:1.1rem;font-variant-numeric:tabular-nums;overflow-wrap:anywhere}
.fact span{color:var(--muted);font-size:.8rem}
.table-wrap{overflow-x:auto;border:1px solid var(--line);border-radius:6px;margin:8px 0}
table{border-collapse:separate;border-spacing:0;width:100%;font-size:.88rem;font-variant-numeric:tabular-nums}
th,td{padding:5px 8px;border-bottom:1px solid var(--line);text-align:left;background:var(--bg)}
th.num,td.num{text-align:right}
td{white-space:nowrap}
td.wrap{white-space:normal;overflow-wrap:anywhere;min-width:10em}
thead th{background:var(--panel);vertical-align:bottom}
th button{font:inherit;font-weight:600;color:inherit;background:none;border:0;padding:0;cursor:pointer;
 text-align:inherit}
th{white-space:normal;min-width:3.5em}
th button:hover,th button:focus-visible{text-decoration:underline}
th[aria-sort=ascending] button::after{content:"\\00A0\\25B2";color:var(--accent)}
th[aria-sort=descending] button::after{content:"\\00A0\\25BC";color:var(--accent)}
tbody tr:nth-child(even) td{background:#fafbfc}
tbody tr:hover td{background:var(--hover)}
.pin{position:sticky;z-index:1}
td.pin-last,th.pin-last{box-shadow:inset -1px 0 0 var(--line)}
tr.mark td{font-weight:600}
.caption{font-size:.85rem;margin:4px 0}
.gallery{display:grid;grid-template-columns:repeat(auto-fit,minmax(min(100%,460px),1fr));gap:14px}
figure{margin:12px 0;min-width:0}
figure img{display:block;max-width:100%;height:auto;border:1px solid var(--line);border-radius:6px;background:#fff}
figure.wide{overflow-x:auto}
figure.wide img{min-width:var(--min-width,0)}
figcaption{font-size:.85rem;margin-top:4px}
footer{padding-bottom:24px;font-size:.8rem}
@media (max-width:640px){
 body{font-size:14px}
 header,main,footer{padding:0 10px}
 header{padding-top:12px}
 h1{font-size:1.3rem}
 th,td{padding:4px 7px}
 th{white-space:nowrap}
 table{font-size:.82rem}
 .facts{grid-template-columns:repeat(2,minmax(0,1fr))}
 td.pin{white-space:normal;overflow-wrap:anywhere}
 td.pin:not(.num),th.pin:not(.num){min-width:8em}
}
"""

JS = """
(function(){
function key(td){var s=td.getAttribute('data-sort');return s===null?td.textContent.trim():s;}
function sortBy(table,col,th){
 var num=th.classList.contains('num'),cur=th.getAttribute('aria-sort');
 var first=num?'descending':'ascending',other=num?'ascending':'descending';
 var dir=cur===first?other:first,sign=dir==='ascending'?1:-1;
 var body=table.tBodies[0],rows=Array.prototype.slice.call(body.rows);
 rows.sort(function(a,b){
  var x=key(a.cells[col]),y=key(b.cells[col]);
  if(x===''||y==='')return (x==='')-(y==='');
  if(num)return sign*(parseFloat(x)-parseFloat(y));
  return sign*x.localeCompare(y,undefined,{numeric:true,sensitivity:'base'});
 });
 rows.forEach(function(r){body.appendChild(r);});
 Array.prototype.forEach.call(table.tHead.rows[0].cells,function(h){h.removeAttribute('aria-sort');});
 th.setAttribute('aria-sort',dir);
}
function pin(table){
 var n=+table.getAttribute('data-pin')||0;if(!n)return;
 var head=table.tHead.rows[0].cells,left=[],x=0;n=Math.min(n,head.length);
 Array.prototype.forEach.call(table.rows,function(r){
  for(var i=0;i<n&&i<r.cells.length;i++){r.cells[i].classList.add('pin');r.cells[i].classList.toggle('pin-last',i===n-1);}
 });
 for(var i=0;i<n;i++){left.push(x);x+=head[i].getBoundingClientRect().width;}
 Array.prototype.forEach.call(table.rows,function(r){
  for(var i=0;i<n&&i<r.cells.length;i++)r.cells[i].style.left=left[i]+'px';
 });
}
var tables=document.querySelectorAll('table');
Array.prototype.forEach.call(tables,function(t){
 pin(t);
 if(!t.classList.contains('sortable'))return;
 Array.prototype.forEach.call(t.tHead.rows[0].cells,function(th,col){
  th.querySelector('button').addEventListener('click',function(){sortBy(t,col,th);});
 });
});
window.addEventListener('resize',function(){Array.prototype.forEach.call(tables,pin);});
})();
"""


@dataclass(frozen=True)
class Column:
    """A table column: the row key, its header label, a number format and a header tooltip.

    ``fmt``: a format spec (``".5f"``, ``"+.3f"``, ``".1%"``) or a callable turning the value into text.
    ``wrap``: long text may wrap onto several lines (cells stay on one line otherwise).
    """

    key: str
    label: str | None = None
    fmt: str | Callable[[Any], str] | None = None
    tip: str | None = None
    wrap: bool = False

    @property
    def title(self) -> str:
        """The header text."""
        return self.label if self.label is not None else self.key


@dataclass(frozen=True)
class Cell:
    """A cell whose text differs from what it sorts by (``sort``: a number, text, None = its text, NaN = last)."""

    text: str
    sort: float | str | None = None


def _is_number(v: Any) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool)


def _sort_value(v: float | str | None) -> str:
    if v is None or (_is_number(v) and math.isnan(v)):
        return ""
    if _is_number(v):
        return "Infinity" if v == math.inf else "-Infinity" if v == -math.inf else repr(float(v))
    return str(v)


def _format(v: Any, fmt: str | Callable[[Any], str] | None) -> str:
    if callable(fmt):
        return fmt(v)
    if fmt is not None:
        return format(v, fmt)
    if isinstance(v, numbers.Integral):
        return str(int(v))
    return f"{v:.4f}" if abs(v) < 1e4 else f"{v:.4g}"


def _cell(v: Any, col: Column) -> tuple[str, str | None, bool]:
    """(escaped text, sort key or None for 'sort by the text', is numeric) of one value."""
    if isinstance(v, Cell):
        return html.escape(v.text), _sort_value(v.sort) if v.sort is not None else None, _is_number(v.sort)
    if v is None or (_is_number(v) and math.isnan(v)):
        return "", "", False
    if _is_number(v):
        return html.escape(_format(v, col.fmt)), _sort_value(v), True
    return html.escape(str(v)), None, False


def _numeric(column: list[tuple[str, str | None, bool]]) -> bool:
    """A column sorts as numbers when it holds a number and every other cell is empty."""
    return any(num for _, _, num in column) and all(num or key == "" for _, key, num in column)


def _image_bytes(source: str | Path | bytes | Any) -> tuple[bytes, str]:
    """(bytes, MIME type) of a path, PNG bytes or a matplotlib ``Figure`` (rendered to PNG)."""
    if isinstance(source, (bytes, bytearray)):
        return bytes(source), "image/png"
    if hasattr(source, "savefig"):
        buf = io.BytesIO()
        source.savefig(buf, format="png", dpi=110, bbox_inches="tight")
        return buf.getvalue(), "image/png"
    path = Path(source)
    if not path.is_file():
        raise ConfigError(f"image for the page not found: {path}")
    mime = MIME.get(path.suffix.lower())
    if mime is None:
        raise ConfigError(f"the page embeds {', '.join(MIME)} images, not {path.name}")
    return path.read_bytes(), mime


class Page:
    """A self-contained HTML page built from sections of text, facts, tables and images."""

    def __init__(self, title: str, subtitle: str | None = None, footer: str | None = None) -> None:
        self.title, self.subtitle, self.footer = title, subtitle, footer
        self._sections: list[tuple[str | None, str, list[str]]] = [(None, "top", [])]
        self._tables = 0
        self._table_ids: set[str] = set()

    def section(self, title: str) -> Page:
        """Start a new section (listed in the page's navigation, id ``s-<title slug>``); later parts go into it."""
        slug = "s-" + (re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-") or "section")
        taken = {s[1] for s in self._sections}
        sid, k = slug, 2
        while sid in taken:
            sid, k = f"{slug}-{k}", k + 1
        self._sections.append((title, sid, []))
        return self

    def _add(self, part: str) -> Page:
        self._sections[-1][2].append(part)
        return self

    def text(self, text: str, muted: bool = False) -> Page:
        """Paragraphs of plain text (blank lines separate paragraphs; the text is escaped)."""
        cls = ' class="muted"' if muted else ""
        paras = [p.strip() for p in re.split(r"\n\s*\n", text) if p.strip()]
        return self._add("".join(f"<p{cls}>{html.escape(p)}</p>" for p in paras))

    def facts(self, facts: Mapping[str, Any]) -> Page:
        """Key figures as a grid of small cards (label under value); numbers get 4 decimals."""
        cards = "".join(
            f'<div class="fact"><b>{html.escape(_format(v, None) if _is_number(v) else str(v))}</b>'
            f"<span>{html.escape(k)}</span></div>"
            for k, v in facts.items()
        )
        return self._add(f'<div class="facts">{cards}</div>')

    def table(
        self,
        columns: Sequence[Column | str],
        rows: Sequence[Mapping[str, Any] | Sequence[Any]],
        sortable: bool = True,
        caption: str | None = None,
        name: str | None = None,
        pin: int = 0,
        marked: Sequence[int] = (),
    ) -> Page:
        """A table; rows are mappings (by column key) or sequences (by position).

        Numbers are formatted by the column's ``fmt`` and sort numerically; :class:`Cell` sets a
        sort key apart from the text; ``None``/NaN cells are empty and sort last. ``name`` is the
        table's HTML id; ``pin`` keeps the first columns in view when the table scrolls sideways;
        ``marked``: row positions shown in bold.
        """
        cols = [c if isinstance(c, Column) else Column(c) for c in columns]
        self._tables += 1
        tid = name or f"table-{self._tables}"
        if tid in self._table_ids:
            raise ConfigError(f"two tables on the page are named '{tid}'")
        self._table_ids.add(tid)
        cells = [[_cell(r.get(c.key) if isinstance(r, Mapping) else r[i], c) for i, c in enumerate(cols)] for r in rows]
        numeric = [_numeric([row[i] for row in cells]) for i in range(len(cols))]
        head = "".join(self._header(c, num, sortable) for c, num in zip(cols, numeric))
        marks = set(marked)
        body = "".join(
            ('<tr class="mark">' if r in marks else "<tr>")
            + "".join(self._td(text, key, num, c.wrap) for (text, key, _), num, c in zip(row, numeric, cols))
            + "</tr>"
            for r, row in enumerate(cells)
        )
        cls = ' class="sortable"' if sortable else ""
        cap = f'<p class="caption">{html.escape(caption)}</p>' if caption else ""
        return self._add(
            f'{cap}<div class="table-wrap"><table id="{html.escape(tid)}"{cls} data-pin="{int(pin)}">'
            f"<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>"
        )

    @staticmethod
    def _header(col: Column, numeric: bool, sortable: bool) -> str:
        label = html.escape(col.title)
        tip = f' title="{html.escape(col.tip)}"' if col.tip else ""
        inner = f'<button type="button">{label}</button>' if sortable else label
        num = ' class="num"' if numeric else ""
        return f'<th scope="col"{num}{tip} data-key="{html.escape(col.key)}">{inner}</th>'

    @staticmethod
    def _td(text: str, key: str | None, numeric: bool, wrap: bool) -> str:
        sort = f' data-sort="{html.escape(key)}"' if key is not None else ""
        cls = ' class="num"' if numeric else ' class="wrap"' if wrap else ""
        return f"<td{cls}{sort}>{text}</td>"

    def image(self, source: str | Path | bytes | Any, alt: str, caption: str | None = None, min_width: int = 0) -> Page:
        """An image embedded as a ``data:`` URI: a file path, PNG bytes or a matplotlib ``Figure``.

        ``min_width`` (CSS px): a wide figure stretches to the page's width but never shrinks below
        this; on a narrower screen it scrolls sideways instead of becoming unreadable.
        """
        return self._add(self._figure(source, alt, caption, min_width))

    def images(self, items: Sequence[tuple]) -> Page:
        """Several images side by side where the width allows: ``(source, alt[, caption])`` each."""
        return self._add('<div class="gallery">' + "".join(self._figure(*item) for item in items) + "</div>")

    @staticmethod
    def _figure(source: str | Path | bytes | Any, alt: str, caption: str | None = None, min_width: int = 0) -> str:
        data, mime = _image_bytes(source)
        uri = f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"
        cap = f"<figcaption>{html.escape(caption)}</figcaption>" if caption else ""
        wide = f' class="wide" style="--min-width:{int(min_width)}px"' if min_width else ""
        return f'<figure{wide}><img src="{uri}" alt="{html.escape(alt)}">{cap}</figure>'

    def html(self) -> str:
        """The whole page as one HTML document."""
        nav = "".join(f'<a href="#{sid}">{html.escape(t)}</a>' for t, sid, parts in self._sections if t)
        sections = "".join(
            f'<section id="{sid}">' + (f"<h2>{html.escape(t)}</h2>" if t else "") + "".join(parts) + "</section>"
            for t, sid, parts in self._sections
            if t or parts
        )
        sub = f'<p class="subtitle">{html.escape(self.subtitle)}</p>' if self.subtitle else ""
        foot = f"<footer>{html.escape(self.footer)}</footer>" if self.footer else ""
        return (
            '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
            f'<link rel="icon" href="data:,"><title>{html.escape(self.title)}</title><style>{CSS}</style></head>'
            f"<body><header><h1>{html.escape(self.title)}</h1>{sub}"
            f"{f'<nav>{nav}</nav>' if nav else ''}</header><main>{sections}</main>{foot}"
            f"<script>{JS}</script></body></html>\n"
        )

    def write(self, path: str | Path) -> Path:
        """Write the page to ``path`` atomically and return the path."""
        path = Path(path)
        atomic.write_text(path, self.html())
        return path
