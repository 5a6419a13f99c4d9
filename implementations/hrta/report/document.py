"""The report as a small document tree, and its two renderings: one self-contained HTML file
(inline CSS, figures as base64 PNG, no script, no external asset) and a Markdown twin whose
figures are PNG files beside it. Both come from the same tree, so they say the same thing.

Text blocks take one inline markup: `code` in backticks.
"""

from __future__ import annotations

import base64
import html
import re
from collections.abc import Callable
from dataclasses import dataclass, field

import pandas as pd

VERDICT_CLASS = {"reproduced": "ok", "not reproduced": "bad", "inconclusive": "meh",
                 "for": "ok", "against": "bad", "neither": "meh", "no data": "meh",
                 "passed": "ok", "FAILED": "bad"}


@dataclass
class Text:
    """A paragraph; ``kind`` "p", "note" (a boxed remark) or "warn"."""

    text: str
    kind: str = "p"


@dataclass
class Code:
    text: str


@dataclass
class Table:
    """A table: ``header`` and formatted ``rows`` (strings) as shown; ``data`` the raw values
    (what ``--only ID`` writes as CSV); ``command`` regenerates it."""

    id: str
    title: str
    header: list[str]
    rows: list[list[str]]
    data: pd.DataFrame
    caption: str = ""
    command: str = ""


@dataclass
class Figure:
    """A figure drawn on demand by ``make`` (a matplotlib Figure); ``png`` once rendered."""

    id: str
    title: str
    caption: str
    make: Callable
    command: str = ""
    png: bytes | None = None

    def render(self) -> bytes:
        if self.png is None:
            from hrta.report.figures import to_png

            fig = self.make()
            self.png = to_png(fig)
        return self.png


@dataclass
class Section:
    id: str
    title: str
    blocks: list = field(default_factory=list)
    level: int = 2


@dataclass
class Document:
    title: str
    meta: list[tuple[str, str]]
    sections: list[Section]

    def items(self):
        """Every table and figure, in document order."""
        for section in self.sections:
            for block in section.blocks:
                if isinstance(block, (Table, Figure)):
                    yield block

    def numbers(self) -> dict[str, str]:
        """{id: "Figure 3" / "Table 5"}."""
        out, counts = {}, {"Figure": 0, "Table": 0}
        for item in self.items():
            kind = "Figure" if isinstance(item, Figure) else "Table"
            counts[kind] += 1
            out[item.id] = f"{kind} {counts[kind]}"
        return out


# ---------------------------------------------------------------------------- HTML

CSS = """
:root { --fg: #1b1b1b; --muted: #555; --line: #d0d0d0; --ok: #0b6e3b; --bad: #a4241a;
        --meh: #8a5a00; --bg-note: #f3f6fa; }
* { box-sizing: border-box; }
body { font-family: -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif;
       color: var(--fg); background: #fff; margin: 0; line-height: 1.45; font-size: 15px; }
main { max-width: 1180px; margin: 0 auto; padding: 24px 28px 64px; }
h1 { font-size: 1.7em; margin: 0.2em 0 0.3em; }
h2 { font-size: 1.35em; border-bottom: 2px solid var(--line); padding-bottom: 4px;
     margin-top: 2.2em; }
h3 { font-size: 1.12em; margin-top: 1.8em; }
code, pre { font-family: "SFMono-Regular", Menlo, Consolas, "Liberation Mono", monospace;
            font-size: 0.88em; }
code { background: #f2f2f2; padding: 1px 4px; border-radius: 3px; }
pre { background: #f6f6f6; border: 1px solid var(--line); padding: 10px 12px;
      overflow-x: auto; white-space: pre-wrap; word-break: break-word; }
dl.meta { display: grid; grid-template-columns: max-content 1fr; gap: 2px 14px;
          font-size: 0.92em; margin: 0 0 1em; }
dl.meta dt { color: var(--muted); }
dl.meta dd { margin: 0; word-break: break-all; }
nav.toc { font-size: 0.92em; border: 1px solid var(--line); padding: 8px 16px;
          background: #fafafa; }
nav.toc ol { margin: 4px 0; padding-left: 20px; }
.note { background: var(--bg-note); border-left: 4px solid #4a78b0; padding: 8px 12px; }
.warn { background: #fff6e5; border-left: 4px solid #c98a00; padding: 8px 12px; }
.table-wrap { overflow-x: auto; margin: 0.8em 0 0.3em; }
table { border-collapse: collapse; font-size: 0.86em; width: auto; }
caption { caption-side: top; text-align: left; font-weight: 600; padding: 4px 0; }
th, td { border: 1px solid var(--line); padding: 3px 7px; text-align: left;
         vertical-align: top; }
th { background: #f0f0f0; }
tbody tr:nth-child(even) { background: #fafafa; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
.v { font-weight: 700; padding: 1px 6px; border-radius: 3px; white-space: nowrap; }
.v.ok { color: var(--ok); background: #e5f4ea; }
.v.bad { color: var(--bad); background: #fbe9e7; }
.v.meh { color: var(--meh); background: #fbf3df; }
figure { margin: 1.2em 0; }
figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption, .tcap { font-size: 0.88em; color: #333; margin-top: 4px; }
.cmd { display: block; color: var(--muted); margin-top: 2px; }
footer { margin-top: 3em; font-size: 0.85em; color: var(--muted); }
@media print {
  body { font-size: 11pt; }
  main { max-width: none; padding: 0; }
  nav.toc { display: none; }
  figure, .table-wrap, pre { break-inside: avoid; }
  h2, h3 { break-after: avoid; }
  a { color: inherit; text-decoration: none; }
}
"""


def _inline_html(text: str) -> str:
    parts = text.split("`")
    out = []
    for i, part in enumerate(parts):
        out.append(f"<code>{html.escape(part)}</code>" if i % 2 else html.escape(part))
    return "".join(out)


NUMERIC = re.compile(r"^[<>~≤≥+-]?[\d.]+(e[+-]?\d+)?( ?\[.*\])?( ?\(.*\))?$|^-?inf$|^—$")


def _cell_html(value: str) -> str:
    cls = VERDICT_CLASS.get(value)
    if cls:
        return f'<td><span class="v {cls}">{html.escape(value)}</span></td>'
    if NUMERIC.match(value):
        return f'<td class="num">{_inline_html(value)}</td>'
    return f"<td>{_inline_html(value)}</td>"


def _block_html(block, numbers: dict[str, str]) -> str:
    if isinstance(block, Text):
        cls = "" if block.kind == "p" else f' class="{block.kind}"'
        return f"<p{cls}>{_inline_html(block.text)}</p>"
    if isinstance(block, Code):
        return f"<pre>{html.escape(block.text)}</pre>"
    if isinstance(block, Table):
        head = "".join(f"<th>{html.escape(h)}</th>" for h in block.header)
        body = "\n".join("<tr>" + "".join(_cell_html(c) for c in row) + "</tr>"
                         for row in block.rows)
        cap = f"{numbers[block.id]}. {block.title}"
        extra = f"<div class=\"tcap\">{_inline_html(block.caption)}" if block.caption else \
            "<div class=\"tcap\">"
        extra += (f"<span class=\"cmd\">Regenerate: <code>{html.escape(block.command)}</code>"
                  f"</span></div>")
        return (f'<div class="table-wrap" id="{block.id}"><table><caption>'
                f"{html.escape(cap)}</caption><thead><tr>{head}</tr></thead><tbody>\n{body}\n"
                f"</tbody></table></div>{extra}")
    if isinstance(block, Figure):
        data = base64.b64encode(block.render()).decode("ascii")
        alt = html.escape(f"{numbers[block.id]}: {block.title}", quote=True)
        return (f'<figure id="{block.id}"><img alt="{alt}" src="data:image/png;base64,{data}">'
                f"<figcaption><b>{html.escape(numbers[block.id])}.</b> "
                f"{html.escape(block.title)}. {_inline_html(block.caption)}"
                f"<span class=\"cmd\">Regenerate: <code>{html.escape(block.command)}</code>"
                f"</span></figcaption></figure>")
    raise TypeError(f"block: unknown type {type(block).__name__}")


def to_html(doc: Document) -> str:
    """The whole report as one self-contained HTML5 page."""
    numbers = doc.numbers()
    toc = "".join(f'<li><a href="#{s.id}">{html.escape(s.title)}</a></li>'
                  for s in doc.sections if s.level == 2)
    meta = "".join(f"<dt>{html.escape(k)}</dt><dd>{_inline_html(v)}</dd>" for k, v in doc.meta)
    body = []
    for s in doc.sections:
        tag = f"h{s.level}"
        body.append(f'<section id="{s.id}"><{tag}>{html.escape(s.title)}</{tag}>')
        body += [_block_html(b, numbers) for b in s.blocks]
        body.append("</section>")
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
            f"<title>{html.escape(doc.title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n"
            f"<main>\n<h1>{html.escape(doc.title)}</h1>\n<dl class=\"meta\">{meta}</dl>\n"
            f"<nav class=\"toc\"><b>Contents</b><ol>{toc}</ol></nav>\n" + "\n".join(body)
            + "\n<footer>Generated by <code>hrta report</code> (hrta-bench). Every number in "
              "this report is computed from the results tables named in Provenance.</footer>\n"
              "</main>\n</body>\n</html>\n")


# ---------------------------------------------------------------------------- Markdown


def _md_cell(value: str) -> str:
    value = value.replace("|", "\\|").replace("\n", " ")
    return f"**{value}**" if value in ("reproduced", "not reproduced", "inconclusive",
                                       "FAILED") else value


def _block_md(block, numbers: dict[str, str], figure_dir: str) -> str:
    if isinstance(block, Text):
        return f"> {block.text}" if block.kind in ("note", "warn") else block.text
    if isinstance(block, Code):
        return f"```\n{block.text}\n```"
    if isinstance(block, Table):
        lines = [f"**{numbers[block.id]}. {block.title}**", "",
                 "| " + " | ".join(_md_cell(h) for h in block.header) + " |",
                 "|" + "|".join("---" for _ in block.header) + "|"]
        lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in block.rows]
        lines.append("")
        if block.caption:
            lines.append(block.caption + " ")
        lines.append(f"Regenerate: `{block.command}`")
        return "\n".join(lines)
    if isinstance(block, Figure):
        return (f"![{numbers[block.id]}: {block.title}]({figure_dir}/{block.id}.png)\n\n"
                f"**{numbers[block.id]}.** {block.title}. {block.caption}  \n"
                f"Regenerate: `{block.command}`")
    raise TypeError(f"block: unknown type {type(block).__name__}")


def to_markdown(doc: Document, figure_dir: str = "figures") -> str:
    """The Markdown twin; figures are referenced as ``<figure_dir>/<id>.png``."""
    numbers = doc.numbers()
    out = [f"# {doc.title}", ""]
    out += [f"- **{k}:** {v}" for k, v in doc.meta]
    out += ["", "## Contents", ""]
    out += [f"{i}. [{s.title}](#{s.id})" for i, s in
            enumerate([s for s in doc.sections if s.level == 2], start=1)]
    for s in doc.sections:
        out += ["", f'<a id="{s.id}"></a>', "", "#" * s.level + " " + s.title, ""]
        for block in s.blocks:
            out += [_block_md(block, numbers, figure_dir), ""]
    return "\n".join(out).rstrip() + "\n"
