"""Charts as inline SVG drawn on the server (no library, no script): counts the index already holds."""

from __future__ import annotations

from typing import Any

from guard.console.html import esc
from guard.console.index import Index, Query

COLORS = {"allowed": "#1a7f37", "denied": "#b3261e", "blocked": "#9a6700"}
_EXCHANGES = "type IN ('exchange.completed', 'exchange.denied')"  # each exchange once


def _scope(q: Query) -> tuple[str, list[Any]]:
    where, args = q.where()
    return (where + " AND " if where else " WHERE ") + _EXCHANGES, args


def over_time(index: Index, q: Query) -> tuple[str, list[tuple[str, dict[str, int]]]]:
    """Exchanges per hour (a span up to 3 days) or per day, by verdict."""
    where, args = _scope(q)
    span = index.query(f"SELECT MIN(time), MAX(time) FROM events{where}", args)[0]
    if not span[0]:
        return "day", []
    hourly = span[1][:10] <= _add_days(span[0][:10], 2)
    width = 13 if hourly else 10
    rows = index.query(
        f"SELECT substr(time, 1, {width}) b, verdict, COUNT(*) FROM events{where} GROUP BY b, verdict ORDER BY b", args
    )
    out: dict[str, dict[str, int]] = {}
    for b, v, n in rows:
        out.setdefault(b, {})[v or "allowed"] = n
    return ("hour" if hourly else "day"), sorted(out.items())


def _add_days(day: str, n: int) -> str:
    from datetime import date, timedelta

    return (date.fromisoformat(day) + timedelta(days=n)).isoformat()


def top(index: Index, q: Query, col: str, n: int = 10) -> list[tuple[str, int, int]]:
    """(value, exchanges, refusals) for the ``n`` values of ``col`` with most exchanges."""
    assert col in ("principal", "model", "upstream", "screens", "rule")
    where, args = _scope(q)
    return [
        (r[0] or "(none)", r[1], r[2])
        for r in index.query(
            f"SELECT {col}, COUNT(*) c, SUM(verdict != 'allowed') FROM events{where} GROUP BY {col} "
            "ORDER BY c DESC LIMIT ?",
            [*args, n],
        )
    ]


def refusals_by_screen(index: Index, q: Query) -> list[tuple[str, int, int]]:
    where, args = _scope(q)
    counts: dict[str, int] = {}
    for screens, rule, verdict, c in index.query(
        f"SELECT screens, rule, verdict, COUNT(*) FROM events{where} AND verdict != 'allowed' "
        "GROUP BY screens, rule, verdict",
        args,
    ):
        names = [s for s in (screens or "").split("|") if s]
        key = [f"screen {s}" for s in names] if verdict == "blocked" and names else [f"rule {rule or '(none)'}"]
        for k in key:
            counts[k] = counts.get(k, 0) + c
    return sorted(((k, v, v) for k, v in counts.items()), key=lambda x: -x[1])[:10]


def stacked_bars(series: list[tuple[str, dict[str, int]]], title: str) -> str:
    if not series:
        return (
            f'<figure><figcaption>{esc(title)}</figcaption><p class="muted">No exchanges in this period.</p></figure>'
        )
    w, h, pad = 640, 240, 40
    peak = max(sum(d.values()) for _, d in series) or 1
    bw = max(2.0, (w - pad - 10) / len(series))
    parts = [
        f'<line x1="{pad}" y1="{h - 20}" x2="{w}" y2="{h - 20}" stroke="#888"/>',
        f'<text x="4" y="14" font-size="11">{peak}</text><text x="4" y="{h - 22}" font-size="11">0</text>',
    ]
    for i, (label, d) in enumerate(series):
        y: float = h - 20
        x = pad + i * bw
        for v in ("allowed", "denied", "blocked"):
            n = d.get(v, 0)
            if not n:
                continue
            bh = (h - 40) * n / peak
            y -= bh
            parts.append(
                f'<rect x="{x:.1f}" y="{y:.1f}" width="{max(bw - 2, 1):.1f}" height="{bh:.1f}" '
                f'fill="{COLORS[v]}"><title>{esc(label)}: {n} {v}</title></rect>'
            )
        if len(series) <= 14 or i % max(1, len(series) // 8) == 0:
            parts.append(f'<text x="{x:.1f}" y="{h - 5}" font-size="10">{esc(label[5:].replace("T", " "))}</text>')
    legend = " ".join(f'<tspan fill="{c}">■ {v}</tspan>' for v, c in COLORS.items())
    parts.append(f'<text x="{w - 220}" y="14" font-size="12">{legend}</text>')
    table_rows = "".join(
        f"<tr><td>{esc(b)}</td>" + "".join(f'<td class="num">{d.get(v, 0)}</td>' for v in COLORS) + "</tr>"
        for b, d in series
    )
    return (
        f'<figure><figcaption>{esc(title)}</figcaption><svg role="img" aria-label="{esc(title)}" '
        f'viewBox="0 0 {w} {h}" width="100%" height="{h}">{"".join(parts)}</svg>'
        f"<details><summary>Data</summary><table><thead><tr><th>period</th><th>allowed</th><th>denied</th>"
        f"<th>blocked</th></tr></thead><tbody>{table_rows}</tbody></table></details></figure>"
    )


def hbars(items: list[tuple[str, int, int]], title: str) -> str:
    if not items:
        return f'<figure><figcaption>{esc(title)}</figcaption><p class="muted">Nothing in this period.</p></figure>'
    w, row = 640, 22
    h = row * len(items) + 10
    peak = max(n for _, n, _ in items) or 1
    parts = []
    for i, (label, n, refused) in enumerate(items):
        y = 5 + i * row
        bw = (w - 360) * n / peak
        rw = (w - 360) * refused / peak
        parts.append(
            f'<text x="0" y="{y + 15}" font-size="12">{esc(label[:34])}</text>'
            f'<rect x="220" y="{y + 3}" width="{bw:.1f}" height="16" fill="#0969da"><title>{esc(label)}: '
            f"{n}, {refused} refused</title></rect>"
            f'<rect x="220" y="{y + 3}" width="{rw:.1f}" height="16" fill="#b3261e"/>'
            f'<text x="{224 + bw:.1f}" y="{y + 15}" font-size="12">{n} ({refused} refused)</text>'
        )
    return (
        f'<figure><figcaption>{esc(title)}</figcaption><svg role="img" aria-label="{esc(title)}" '
        f'viewBox="0 0 {w} {h}" width="100%" height="{h}">{"".join(parts)}</svg></figure>'
    )
