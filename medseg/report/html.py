"""A self-contained HTML page: escaped text, tables and PNG pictures embedded as data URIs (no CDN, no external
file, so the page can be mailed or archived as one file)."""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path
from typing import Any, Sequence

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
h1 { font-size: 1.6em; } h2 { font-size: 1.25em; margin-top: 2em; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
th { background: #f2f2f2; } td.best { font-weight: bold; }
figure { display: inline-block; margin: 0.5em; vertical-align: top; }
figcaption { font-size: 0.85em; color: #555; max-width: 420px; }
img { max-width: 100%; }
.note { color: #555; font-size: 0.9em; }
"""


def text(value: Any) -> str:
    return html.escape(str(value))


def number(value: Any, digits: int = 3) -> str:
    if isinstance(value, bool) or value is None:
        return text(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return "nan" if value != value else f"{value:.{digits}f}"
    return text(value)


def table(header: Sequence[str], rows: Sequence[Sequence[Any]], *, best: dict[int, int] | None = None) -> str:
    """An HTML table; ``best`` maps a column index to the row index whose cell is printed bold."""
    head = "".join(f"<th>{text(h)}</th>" for h in header)
    body = []
    for r, row in enumerate(rows):
        cells = []
        for c, value in enumerate(row):
            cls = ' class="best"' if best and best.get(c) == r else ""
            cells.append(f"<td{cls}>{number(value)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def png_data_uri(png: bytes) -> str:
    if png[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError("not a PNG")
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def figure(png: bytes | Path, caption: str) -> str:
    data = Path(png).read_bytes() if isinstance(png, Path) else png
    return (f'<figure><img src="{png_data_uri(data)}" alt="{text(caption)}">'
            f"<figcaption>{text(caption)}</figcaption></figure>")


def matplotlib_png(fig) -> bytes:
    """The figure as PNG bytes (the figure is closed)."""
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    try:
        fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    finally:
        plt.close(fig)
    return buffer.getvalue()


def page(title: str, sections: Sequence[tuple[str, str]], *, subtitle: str = "") -> str:
    """The whole document: a title, an optional line under it, and ``(heading, html)`` sections."""
    parts = [f"<h1>{text(title)}</h1>"]
    if subtitle:
        parts.append(f'<p class="note">{text(subtitle)}</p>')
    for heading, content in sections:
        parts.append(f"<h2>{text(heading)}</h2>\n{content}")
    body = "\n".join(parts)
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{text(title)}</title>'
            f"<style>{STYLE}</style></head><body>\n{body}\n</body></html>\n")
