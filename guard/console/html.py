"""Server-rendered HTML for the console: one layout, escaped values, plain forms. No script anywhere."""

from __future__ import annotations

from collections.abc import Iterable
from html import escape
from typing import Any
from urllib.parse import urlencode

CSS = """
:root { --fg:#1b1f24; --muted:#5a6270; --line:#d0d7de; --bad:#b3261e; --ok:#1a7f37; --warn:#9a6700; --bg:#fff; }
* { box-sizing: border-box; }
body { font: 15px/1.45 system-ui, sans-serif; color: var(--fg); background: var(--bg); margin: 0; }
header { background: #24292f; color: #fff; padding: .5rem 1rem; display: flex; gap: 1.5rem; align-items: center;
  flex-wrap: wrap; }
header a { color: #fff; } header .who { margin-left: auto; font-size: .9em; }
nav a { margin-right: 1rem; } main { padding: 1rem; max-width: 1400px; }
a:focus, button:focus, input:focus, select:focus { outline: 3px solid #0969da; outline-offset: 1px; }
.skip { position: absolute; left: -999px; }
.skip:focus { left: 1rem; top: .5rem; background: #fff; color: #000; padding: .3rem; }
table { border-collapse: collapse; width: 100%; }
th, td { border-bottom: 1px solid var(--line); padding: .3rem .5rem; text-align: left; vertical-align: top; }
th { background: #f6f8fa; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
form.filters { display: grid; grid-template-columns: repeat(auto-fill, minmax(13rem, 1fr)); gap: .5rem 1rem;
  margin-bottom: 1rem; }
label { display: flex; flex-direction: column; font-size: .85em; color: var(--muted); }
input, select, button { font: inherit; padding: .3rem .4rem; }
button { cursor: pointer; background: #0969da; color: #fff; border: 0; border-radius: 4px; padding: .4rem .9rem; }
.bad { color: var(--bad); font-weight: 600; } .ok { color: var(--ok); font-weight: 600; } .warn { color: var(--warn); }
.box { border: 1px solid var(--line); border-radius: 6px; padding: .8rem 1rem; margin: 0 0 1rem; }
.box.bad { border-color: var(--bad); background: #fff5f5; }
pre { background: #f6f8fa; padding: .8rem; overflow: auto; font-size: .85em; white-space: pre-wrap;
  word-break: break-all; }
.inline { display: inline; }
.pager a, .pager span { margin-right: 1rem; } .muted { color: var(--muted); }
.charts { display: grid; grid-template-columns: repeat(auto-fit, minmax(30rem, 1fr)); gap: 1rem; }
"""

NAV = (
    ("search", "Search"),
    ("integrity", "Integrity"),
    ("charts", "Charts"),
    ("export", "Export"),
    ("policy", "Policy"),
)


def esc(v: Any) -> str:
    return escape("" if v is None else str(v), quote=True)


def page(title: str, body: str, who: str = "", refresh: int | None = None, status_line: str = "") -> str:
    nav = "".join(f'<a href="/console/{p}">{esc(n)}</a>' for p, n in NAV)
    meta = f'<meta http-equiv="refresh" content="{int(refresh)}">' if refresh else ""
    logout = (
        ('<form method="post" action="/console/logout" class="inline"><button type="submit">Log out</button></form>')
        if who == "token"
        else ""
    )
    whoami = f'<span class="who">signed in: {esc(who)} {logout}</span>' if who else ""
    return (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8">{meta}'
        f'<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{esc(title)} - Guard compliance console</title>"
        f'<link rel="stylesheet" href="/console/static/console.css"></head><body>'
        f'<a class="skip" href="#main">Skip to content</a>'
        f'<header><strong>Guard compliance console</strong><nav aria-label="Console">{nav}</nav>{whoami}</header>'
        f'<main id="main"><h1>{esc(title)}</h1>{status_line}{body}</main></body></html>'
    )


def table(headers: Iterable[str], rows: Iterable[Iterable[str]], caption: str = "", raw: bool = True) -> str:
    """``rows`` cells are HTML already when ``raw`` (build them with esc/link)."""
    head = "".join(f'<th scope="col">{esc(h)}</th>' for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{c if raw else esc(c)}</td>" for c in r) + "</tr>" for r in rows)
    cap = f"<caption>{esc(caption)}</caption>" if caption else ""
    return f"<table>{cap}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def link(href: str, text: Any) -> str:
    return f'<a href="{esc(href)}">{esc(text)}</a>'


def qs(params: dict[str, Any]) -> str:
    return urlencode({k: v for k, v in params.items() if v not in (None, "")})


def field_input(name: str, label: str, value: Any = "", kind: str = "text", **attrs: Any) -> str:
    extra = "".join(f' {k.replace("_", "-")}="{esc(v)}"' for k, v in attrs.items())
    field = f'<input id="f-{name}" name="{name}" type="{kind}" value="{esc(value)}"{extra}>'
    return f'<label for="f-{name}">{esc(label)}{field}</label>'


def select(name: str, label: str, options: Iterable[tuple[str, str]], value: str = "") -> str:
    opts = "".join(f'<option value="{esc(v)}"{" selected" if v == value else ""}>{esc(t)}</option>' for v, t in options)
    return f'<label for="f-{name}">{esc(label)}<select id="f-{name}" name="{name}">{opts}</select></label>'


def datalist(name: str, values: Iterable[str]) -> str:
    return f'<datalist id="dl-{name}">' + "".join(f'<option value="{esc(v)}">' for v in values) + "</datalist>"
