"""Charts, export, policy and login pages."""

from __future__ import annotations

import json
from typing import Any

from starlette.datastructures import FormData, QueryParams

from guard.audit.export import FORMATS, Filter
from guard.console import charts
from guard.console.html import esc, field_input, page, select, table
from guard.console.index import Query
from guard.console.views import filter_form, query_from, shown

ACTIONS = ("chat", "completion", "embeddings", "models")


def charts_page(c: Any, params: QueryParams, who: str) -> tuple[str, int]:
    q = query_from(params)
    note = ""
    if not q.since and not q.until:  # a whole large journal takes seconds to draw: the latest 30 days
        newest = c.index.query("SELECT MAX(time) FROM events")[0][0]
        if newest:
            from datetime import datetime, timedelta

            start = datetime.fromisoformat(newest[:19]) - timedelta(days=30)
            q.since = start.strftime("%Y-%m-%dT%H:%M:%S.000000Z")
            note = (
                f'<p class="muted">The 30 days up to the newest event (from {esc(q.since[:16])} UTC); set From '
                "and Until for another period.</p>"
            )
    unit, series = charts.over_time(c.index, q)
    body = (
        filter_form(c, q, "/console/charts", "Draw")
        + note
        + '<div class="charts">'
        + charts.stacked_bars(series, f"Exchanges per {unit} by decision")
        + charts.hbars(charts.refusals_by_screen(c.index, q), "Refusals by screen or rule")
        + charts.hbars(charts.top(c.index, q, "principal"), "Top principals (exchanges, refused)")
        + charts.hbars(charts.top(c.index, q, "model"), "Top models (exchanges, refused)")
        + "</div>"
    )
    return page("Charts", body, who), 200


def export_page(c: Any, params: QueryParams, who: str) -> tuple[str, int]:
    q = query_from(params)
    boxes = "".join(
        f'<label><span><input type="checkbox" name="format" value="{f}"'
        f"{' checked disabled' if f == 'jsonl' else ''}> {f}{' (always: what verify checks)' if f == 'jsonl' else ''}"
        f"</span></label>"
        for f in FORMATS
    )
    extra = f"<fieldset><legend>Formats</legend>{boxes}</fieldset>"
    _, total = c.index.search(q, 1, 0)
    body = (
        f"<p>The evidence pack holds the matching events ({total} now), a signed manifest for each format, "
        "a short summary (period, counts, verification result, key fingerprints, policy version in force) and "
        "the public keys. Check it anywhere with <code>guard audit verify PACK.zip --public-key KEY</code>.</p>"
        + filter_form(c, q, "/console/export", "Download evidence pack", extra, method="post")
    )
    return page("Export an evidence pack", body, who), 200


def pack_filter(form: FormData) -> tuple[Filter, list[str], Query]:
    q = query_from(form)
    fmts = [f for f in form.getlist("format") if f in FORMATS]
    extra = {k: getattr(q, k) or None for k in Filter.EXTRA}
    flt = Filter(q.since or None, q.until or None, q.principal or None, q.model or None, q.decision or None, **extra)
    flt.since, flt.until = q.since or None, q.until or None  # already in the journal's form
    return flt, fmts, q


def policy_page(c: Any, params: QueryParams, who: str) -> tuple[str, int]:
    from guard.policy.testing import explain

    pol = c.policy.active
    from guard.policy.files import display_path

    files = ", ".join(esc(display_path(p)) for p in [pol.model_path, *pol.rule_paths])
    rules = table(
        ["Rule", "Effect", "Condition"],
        [[esc(r.loc), esc(r.eft), f"<code>{esc(r.source)}</code>"] for r in pol.engine.rules],
    )
    form = (
        '<form class="filters" method="get" action="/console/policy" aria-label="Explain">'
        + field_input("cn", "Principal CN", params.get("cn", ""))
        + field_input("ou", "Groups (OU, comma-separated)", params.get("ou", ""))
        + field_input("spiffe_id", "SPIFFE ID", params.get("spiffe_id", ""))
        + field_input("model", "Model", params.get("model", ""))
        + select("external", "Upstream outside our network", [("", "no"), ("1", "yes")], params.get("external", ""))
        + select("act", "Action", [(a, a) for a in ACTIONS], params.get("act", "chat"))
        + '<div><button type="submit">Explain</button></div></form>'
    )
    result = ""
    if params.get("model") or params.get("cn"):
        sub: dict[str, Any] = {
            "cn": params.get("cn", "")[:200],
            "ou": [x.strip() for x in params.get("ou", "").split(",") if x.strip()][:20],
        }
        if params.get("spiffe_id"):
            sub["spiffe_id"] = params["spiffe_id"][:300]
        obj = {"model": params.get("model", "")[:200], "external": params.get("external") == "1"}
        act = params.get("act", "chat") if params.get("act") in ACTIONS else "chat"
        out = explain(pol, sub, obj, act, {})
        verdict = "ok" if out["decision"] == "allow" else "bad"
        result = (
            f'<div class="box" id="explain-result"><p>Decision: <span class="{verdict}">{esc(out["decision"])}'
            f"</span> at stage {esc(out['stage'])}, rule {esc(out['rule'] or 'none: no allow rule matched')}.</p>"
            f'<pre>{esc(json.dumps(out, indent=2))}</pre><p class="muted">The same as <code>guard policy explain '
            f"--sub '{esc(json.dumps(sub))}' --obj '{esc(json.dumps(obj))}' --act {esc(act)}</code></p></div>"
        )
    body = (
        f'<div class="box"><p>Policy version in force: <code id="policy-version">{esc(pol.version)}</code></p>'
        f"<p>Files: {files}; {len(pol.engine.rules)} rules.</p></div><h2>Explain a request</h2>{form}{result}"
        f"<details><summary>Rules</summary>{rules}</details>"
    )
    return page("Policy in force", body, who), 200


def login_page(error: str = "") -> str:
    err = f'<p class="bad" role="alert">{esc(error)}</p>' if error else ""
    return page(
        "Log in",
        f'{err}<form method="post" action="/console/login" class="filters">'
        + field_input("token", "Console token", "", "password", autocomplete="current-password", required="")
        + '<div><button type="submit">Log in</button></div></form>'
        '<p class="muted">Or present an auditor client certificate: the policy must grant it audit_read '
        "at stage console.</p>",
    )


def query_echo(q: Query) -> dict[str, str]:
    return shown(q)
