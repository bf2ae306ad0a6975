"""One self-contained HTML page: PNG figures embedded as base64 data URIs, CSS inline, no network.

The page sets ``data-images-loaded="OK/TOTAL"`` on ``<body>`` once loaded (images decoded with a
non-zero size), so a headless browser can check that every figure rendered.
"""
from __future__ import annotations

import base64
import datetime as _dt
import html
from pathlib import Path

CSS = """
body { font-family: system-ui, -apple-system, 'Segoe UI', sans-serif; margin: 2em auto; max-width: 1300px;
       color: #222; padding: 0 1em; }
h1 { margin-bottom: 0.2em; } h2 { border-bottom: 1px solid #ddd; padding-bottom: 0.2em; margin-top: 1.6em; }
.meta { color: #666; font-size: 0.9em; }
table { border-collapse: collapse; font-size: 0.85em; margin: 0.6em 0; }
th, td { border: 1px solid #ddd; padding: 3px 7px; text-align: right; }
th { background: #f4f4f4; } td:first-child, th:first-child { text-align: left; }
img { max-width: 100%; height: auto; margin: 0.4em 0.6em 0.4em 0; vertical-align: top; }
details { margin: 0.6em 0; border: 1px solid #e4e4e4; border-radius: 4px; padding: 0.4em 0.8em; }
summary { font-weight: 600; cursor: pointer; }
.figs { display: flex; flex-wrap: wrap; align-items: flex-start; }
"""

READY_JS = """
window.addEventListener('load', function () {
  var imgs = Array.prototype.slice.call(document.images);
  var ok = imgs.filter(function (i) { return i.complete && i.naturalWidth > 0; }).length;
  document.body.setAttribute('data-images-loaded', ok + '/' + imgs.length);
});
"""


def img(path: Path, alt: str, width: int | None = None) -> str:
    """An ``<img>`` with the PNG at ``path`` embedded."""
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    w = f' style="max-width:{width}px"' if width else ""
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}"{w}>'


def table(headers: list[str], rows: list[list], cls: str = "") -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>" for r in rows)
    c = f' class="{cls}"' if cls else ""
    return f"<table{c}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def page(title: str, sections: list[tuple[str, str]], meta: str = "") -> str:
    """The whole document: ``sections`` are (heading, inner HTML)."""
    stamp = _dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    parts = [f"<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>",
             f"<style>{CSS}</style></head><body>", f"<h1>{html.escape(title)}</h1>",
             f'<p class="meta">cifarlab report, {stamp}. {meta}</p>']
    for heading, inner in sections:
        parts.append(f"<section><h2>{html.escape(heading)}</h2>{inner}</section>")
    parts.append(f"<script>{READY_JS}</script></body></html>")
    return "\n".join(parts)
