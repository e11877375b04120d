"""Search, event and integrity pages."""

from __future__ import annotations

import contextlib
import json
from typing import Any

from starlette.datastructures import FormData, QueryParams

from guard.audit.export import parse_time
from guard.audit.facts import VERDICTS
from guard.console.html import datalist, esc, field_input, link, page, qs, select, table
from guard.console.index import Query
from guard.console.integrity import chain_overview, check_event, read_line

FILTER_FIELDS = (
    "since",
    "until",
    "principal",
    "group",
    "model",
    "upstream",
    "api",
    "type",
    "decision",
    "screen",
    "finding",
    "rule",
)
TYPES = (
    "exchange.completed",
    "exchange.denied",
    "exchange.started",
    "policy.reloaded",
    "policy.reload_failed",
    "config.loaded",
    "guard.started",
    "guard.stopped",
    "audit.checkpoint",
    "console.view",
    "console.export",
)


class BadInput(ValueError):
    pass


def query_from(params: QueryParams | FormData) -> Query:
    q = Query()
    for k in FILTER_FIELDS:
        v = str(params.get(k) or "").strip()[:300]
        if not v:
            continue
        if k in ("since", "until"):
            try:
                v = parse_time(v)
            except ValueError as e:
                raise BadInput(f"{k}: {e}") from None
        if k == "decision" and v not in VERDICTS:
            raise BadInput(f"decision must be one of {', '.join(VERDICTS)}")
        setattr(q, k, v)
    return q


def shown(q: Query) -> dict[str, str]:
    """Filters as the form shows them again (times without microseconds and Z: datetime-local fields)."""
    d = q.as_dict()
    for k in ("since", "until"):
        if k in d:
            d[k] = d[k][:16]
    return d


def filter_form(c: Any, q: Query, action: str, submit: str, extra: str = "", method: str = "get") -> str:
    s = shown(q)
    idx = c.index
    fields = [
        field_input("since", "From (UTC)", s.get("since", ""), "datetime-local"),
        field_input("until", "Until (UTC, exclusive)", s.get("until", ""), "datetime-local"),
        field_input("principal", "Principal (CN, subject or fingerprint)", q.principal, list="dl-principal"),
        field_input("group", "Group (OU)", q.group),
        field_input("model", "Model (glob allowed)", q.model, list="dl-model"),
        field_input("upstream", "Upstream", q.upstream, list="dl-upstream"),
        field_input("api", "Wire API", q.api, list="dl-api"),
        select("type", "Event type", [("", "any")] + [(t, t) for t in TYPES], q.type),
        select(
            "decision",
            "Decision",
            [("", "any"), ("allowed", "allowed"), ("denied", "denied by a rule"), ("blocked", "blocked by a screen")],
            q.decision,
        ),
        field_input("screen", "Blocking screen", q.screen),
        field_input("finding", "Finding type (e.g. EMAIL_ADDRESS, S1)", q.finding),
        field_input("rule", "Deciding rule (file:line)", q.rule, list="dl-rule"),
    ]
    lists = "".join(datalist(col, idx.distinct(col)) for col in ("principal", "model", "upstream", "api", "rule"))
    return (
        f'<form class="filters" method="{method}" action="{action}" aria-label="Filters">{"".join(fields)}'
        f'{extra}<div><button type="submit">{esc(submit)}</button></div></form>{lists}'
    )


def _verdict(v: str | None) -> str:
    cls = {"allowed": "ok", "denied": "bad", "blocked": "warn"}.get(v or "", "")
    return f'<span class="{cls}">{esc(v or "")}</span>'


def search_page(c: Any, params: QueryParams, who: str) -> tuple[str, int, int]:
    """The page, its status and the number of matching events (for the audit record)."""
    q = query_from(params)
    try:
        page_no = max(0, int(params.get("page") or 0))
    except ValueError:
        page_no = 0
    size = c.settings.page_size
    rows, total = c.index.search(q, size, page_no * size)
    body = [filter_form(c, q, "/console/search", "Search")]
    first = page_no * size + 1 if rows else 0
    body.append(
        f'<p role="status" id="result-count">{total} events match; showing {first}-{page_no * size + len(rows)}. '
        f"{link('/console/export?' + qs(shown(q)), 'Export these as an evidence pack')}</p>"
    )
    trs = []
    for r in rows:
        why = r["rule"] or ""
        if r["screens"]:
            why = (why + " " if why else "") + "screens " + r["screens"].strip("|").replace("|", ", ")
        trs.append(
            [
                link(f"/console/event/{r['chain']}/{r['seq']}", r["time"]),
                esc(r["type"]),
                esc(r["principal"]),
                esc(r["model"]),
                esc(r["upstream"]),
                esc(r["api"]),
                _verdict(r["verdict"]),
                esc(why),
                esc((r["findings"] or "").strip("|").replace("|", ", ")),
                esc(r["status"]),
                esc(f"{r['chain']} #{r['seq']}"),
            ]
        )
    body.append(
        table(
            [
                "Time (UTC)",
                "Type",
                "Principal",
                "Model",
                "Upstream",
                "API",
                "Decision",
                "Rule / screen",
                "Findings",
                "Status",
                "Chain position",
            ],
            trs,
            caption="Events, newest first",
        )
    )
    base = shown(q)
    nav = []
    if page_no > 0:
        nav.append(link("/console/search?" + qs({**base, "page": page_no - 1}), "Previous page"))
    if (page_no + 1) * size < total:
        nav.append(link("/console/search?" + qs({**base, "page": page_no + 1}), "Next page"))
    body.append(f'<p class="pager">{" ".join(nav)}</p>')
    return page("Search the audit journal", "".join(body), who), 200, total


def event_page(c: Any, chain: str, seq: int, who: str) -> tuple[str, int]:
    row = c.index.get(chain, seq)
    if row is None:
        return page("Event not found", f"<p>No event {esc(chain)} #{seq} in the index.</p>", who), 404
    line = read_line(c.root, chain, row["segment"], row["offset"])
    if line is None:
        return page(
            "Event not readable",
            '<p class="bad">The journal no longer holds the line the index points at '
            "(the index is stale: it is rebuilt on the next search).</p>",
            who,
        ), 409
    prev_row = c.index.get(chain, seq - 1) if seq > 1 else None
    prev_line = read_line(c.root, chain, prev_row["segment"], prev_row["offset"]) if prev_row else None
    chk = check_event(line, c.keys(), chain, seq, prev_line, c.root)
    journal: Any = getattr(c.runtime, "journal", None)
    if chk.get("sig_ok") is False and getattr(journal, "chain", None) == chain and getattr(journal, "healthy", False):
        # an event of this worker's chain that no signed checkpoint covers yet: sign one now and check again
        # (other workers' chains sign on their own cadence; the page then says none covers it yet)
        with contextlib.suppress(Exception):
            journal.checkpoint_now()
            chk = check_event(line, c.keys(), chain, seq, prev_line, c.root)
    ov = {o["chain"]: o for o in chain_overview(c.root, c.index)}.get(chain, {})
    v = ov.get("verify")
    if v is None:
        chain_msg = '<span class="warn">not verified yet: use Verify now on the Integrity page</span>'
    elif v["last_seq"] is not None and v["last_seq"] >= seq:
        chain_msg = (
            f'<span class="ok">the chain verifies from its start up to seq {v["last_seq"]} '
            f"(checked {esc(v['at'])}), which includes this event</span>"
        )
    elif v["status"] == "tampered":
        chain_msg = f'<span class="bad">the chain is broken before this event: {esc(v["detail"])}</span>'
    else:
        chain_msg = (
            f'<span class="warn">the last verification ({esc(v["at"])}) reached seq {v["last_seq"]}; '
            "this event was written after it</span>"
        )
    cp = c.index.query(
        "SELECT seq, time FROM events WHERE chain = ? AND type = 'audit.checkpoint' AND seq > ? ORDER BY seq LIMIT 1",
        (chain, seq),
    )
    cp_msg = (
        f"sealed by the checkpoint at seq {cp[0]['seq']} ({esc(cp[0]['time'])})"
        if cp
        else "after the chain's last checkpoint (covered by the next one)"
    )
    ok = not chk["problems"]
    checks = [
        ("Hash of the content", chk.get("hash_ok")),
        ("Ed25519 signature", chk.get("sig_ok")),
        ("Link to the event before it", chk.get("link_ok")),
    ]
    items = "".join(
        f"<li>{esc(n)}: "
        + (
            '<span class="ok">holds</span>'
            if r
            else '<span class="muted">not checked (event before it not in the journal)</span>'
            if r is None
            else '<span class="bad">FAILS</span>'
        )
        + "</li>"
        for n, r in checks
    )
    probs = "".join(f"<li>{esc(p)}</li>" for p in chk["problems"])
    body = (
        f'<div class="box{"" if ok else " bad"}" id="integrity"><h2>Integrity</h2><ul>{items}</ul>'
        f"{f'<ul class=bad>{probs}</ul>' if probs else ''}<p>Chain: {chain_msg}</p></div>"
        f'<div class="box"><h2>Position</h2><p>Chain <strong>{esc(chain)}</strong>, seq <strong>{seq}</strong> '
        f"(of {ov.get('last_seq')}), file {esc(row['segment'])} at byte {row['offset']}; {cp_msg}.</p></div>"
        f'<h2>The record as the journal holds it</h2><pre id="record">'
        f"{esc(json.dumps(chk['event'], indent=2, ensure_ascii=False)) if chk['event'] else esc(line[:4000])}</pre>"
    )
    return page(f"Event {chain} #{seq}", body, who), 200


def integrity_page(c: Any, who: str) -> tuple[str, int]:
    prog = c.verifier.progress()
    rows = []
    for o in chain_overview(c.root, c.index):
        v = o["verify"]
        if v is None:
            status = '<span class="warn">not verified yet</span>'
        elif v["status"] == "tampered":
            status = f'<span class="bad">TAMPERED: {esc(v["detail"])}</span>'
        else:
            status = f'<span class="ok">{esc(v["status"])}</span>'
        cp = o["checkpoint"]
        rows.append(
            [
                esc(o["chain"]),
                f"{o['events']}",
                esc(o["last_seq"]),
                esc(f"seq {o['verified_to']} at {v['at']}" if v and o["verified_to"] is not None else "-"),
                esc(f"seq {cp[0]} at {cp[1]}" if cp else "none yet"),
                esc(f"seq {o['head']['seq']}" if o["head"] else "-"),
                status,
            ]
        )
    state = ""
    if prog["running"]:
        pct = 100 * prog["done"] // prog["total"] if prog["total"] else 0
        state = (
            f'<p role="status" id="verify-progress">Verifying: {prog["done"]} of about {prog["total"]} events '
            f"({pct}%), started {esc(prog['started'])}. This page refreshes every second.</p>"
            f'<progress max="{prog["total"] or 1}" value="{prog["done"]}"></progress>'
        )
    elif prog["error"]:
        state = f'<p class="bad" role="status">Verification failed to run: {esc(prog["error"])}</p>'
    bad = any("TAMPERED" in r[-1] for r in rows)
    summary = (
        '<div class="box bad" role="alert">A chain does not verify. The reason is what '
        "<code>guard audit verify</code> reports.</div>"
        if bad
        else ""
    )
    body = (
        summary
        + state
        + table(
            [
                "Chain",
                "Events indexed",
                "Last seq",
                "Last verified position",
                "Last checkpoint",
                "Head record",
                "Verification",
            ],
            rows,
            caption="Chains",
        )
        + '<form method="post" action="/console/verify"><p><button type="submit" id="verify-now">Verify now'
        "</button> checks every event's hash, signature and link, every checkpoint and head record, as "
        "<code>guard audit verify</code> does.</p></form>"
    )
    return page("Integrity at a glance", body, who, refresh=1 if prog["running"] else None), 200
