"""The report's building blocks: Section, Figure, Table, and helpers to format numbers and HTML safely.

A section function reads one stage's artifacts from disk (docs/artifacts.md) and returns a `Section`, or None
when that stage's artifacts are absent. Text in `paragraphs`, `notes` and captions is plain text (escaped when
rendered); only `Table.html` is HTML, built with `table_html`, which escapes every cell that is not `Html`.
"""

from __future__ import annotations

import html
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

from rewardscope.errors import RewardscopeError


@dataclass
class Figure:
    """One PNG figure. `name` is its file stem (unique within the section; the file is <section>-<name>.png)."""

    name: str
    caption: str
    png: bytes
    alt: str = ""
    width_px: int | None = None  # display width in the HTML (default: the figure's design width)


@dataclass
class Table:
    """An HTML table (a <table> element, from `table_html`) with a plain-text caption."""

    caption: str
    html: str
    collapsed: bool = False  # long tables sit in a <details> element, closed
    lead: bool = False  # shown right after the paragraphs, before the figures (a headline table)


@dataclass
class Section:
    """One stage's part of the report."""

    title: str
    paragraphs: list[str] = field(default_factory=list)
    figures: list[Figure] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # caveats and null results, shown boxed above the figures
    key: str = ""  # set by write_report: the SECTIONS key (the HTML anchor and figure-file prefix)
    failed: bool = False  # set by write_report when the section function raised


class Html(str):
    """Trusted HTML: `table_html` leaves it unescaped."""


def esc(text: Any) -> str:
    return html.escape(str(text), quote=True)


def cell(value: Any) -> str:
    if isinstance(value, Html):
        return str(value)
    return esc("" if value is None else value)


def table_html(header: Sequence[Any], rows: Iterable[Sequence[Any]], *, numeric_from: int = 1,
               header_rows: Sequence[Sequence[Any]] = (), align: str | None = None) -> str:
    """A <table>; columns from `numeric_from` on are right-aligned (numbers), or `align` gives each column's
    alignment ("l" or "r", e.g. "lrrl"). `header_rows`: extra rows above `header` (cells may be (text,
    colspan) pairs)."""
    out = ['<table class="data">', "<thead>"]
    for extra in header_rows:
        tds = []
        for c in extra:
            text, span = c if isinstance(c, tuple) else (c, 1)
            tds.append(f'<th colspan="{span}">{cell(text)}</th>' if span > 1 else f"<th>{cell(text)}</th>")
        out.append("<tr>" + "".join(tds) + "</tr>")
    out.append("<tr>" + "".join(f"<th>{cell(h)}</th>" for h in header) + "</tr></thead><tbody>")
    for row in rows:
        right = [(align[i] == "r") if align and i < len(align) else i >= numeric_from for i in range(len(row))]
        tds = [f'<td class="{"num" if r else "txt"}">{cell(v)}</td>' for r, v in zip(right, row)]
        out.append("<tr>" + "".join(tds) + "</tr>")
    out.append("</tbody></table>")
    return "".join(out)


# ---------------------------------------------------------------------------------------------------------
# numbers


def is_num(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def f3(x: Any, digits: int = 3) -> str:
    return f"{x:.{digits}f}" if is_num(x) else "n/a"


def signed(x: Any, digits: int = 3) -> str:
    return f"{x:+.{digits}f}" if is_num(x) else "n/a"


def ci_text(ci: Any, digits: int = 3, sign: bool = False) -> str:
    if not (isinstance(ci, (list, tuple)) and len(ci) == 2 and all(is_num(v) for v in ci)):
        return "[n/a]"
    f = signed if sign else f3
    return f"[{f(ci[0], digits)}, {f(ci[1], digits)}]"


def excludes(ci: Any, value: float) -> bool:
    """Whether a CI [lo, hi] lies strictly on one side of `value`."""
    return isinstance(ci, (list, tuple)) and len(ci) == 2 and all(is_num(v) for v in ci) and (
        ci[0] > value or ci[1] < value)


def p_text(p: Any) -> str:
    """A p-value: 3 decimals, or scientific notation below 0.001."""
    if not is_num(p):
        return "n/a"
    return f"{p:.3f}" if p >= 0.001 else f"{p:.0e}"


def plural(n: Any, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def pct(x: Any, digits: int = 0) -> str:
    return f"{100 * x:.{digits}f}%" if is_num(x) else "n/a"


def num(x: Any) -> float:
    """A JSON number as float, NaN for null (plots leave a gap)."""
    return float(x) if is_num(x) else float("nan")


# ---------------------------------------------------------------------------------------------------------
# reading artifacts


def load_json(path: Path) -> Any | None:
    """The JSON at `path`, or None when the file is absent. Invalid JSON is an error naming the file."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise RewardscopeError(f"{path}: line {e.lineno}: invalid JSON ({e.msg})") from None


def load_yaml(path: Path) -> dict | None:
    path = Path(path)
    if not path.is_file():
        return None
    import yaml

    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    return data if isinstance(data, dict) else None


def sorted_layers(mapping: dict) -> list[int]:
    """The integer layer keys of a {"<layer>": ...} mapping, in order."""
    return sorted(int(k) for k in mapping)
