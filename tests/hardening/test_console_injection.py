"""Names a client chooses (model, request text reaching the journal) cannot inject markup or script into the
compliance console: every value is escaped, and the pages forbid scripts by Content-Security-Policy."""

from __future__ import annotations

from tests.conftest import GuardHandle
from tests.console.test_console import TOKEN, _chat, admin, console_guard  # noqa: F401 - fixture

PAYLOADS = [
    "<script>alert(1)</script>",
    '"><img src=x onerror=alert(1)>',
    "javascript:alert(1)//",
    "</pre><svg onload=alert(1)>",
]


def test_client_chosen_names_are_escaped_in_every_console_page(console_guard: GuardHandle) -> None:  # noqa: F811
    g = console_guard
    auth = {"authorization": "Bearer client-secret-0f1e2d3c4b5a"}
    with g.client("app") as c:
        for p in PAYLOADS:
            r = _chat(c, "hi", model=p, headers=auth)
            assert r.headers["x-guard-request-id"]  # answered or refused, recorded with the name the client sent
    with admin(g, "auditor") as c:
        pages = ["/console/search", "/console/charts", "/console/search?model=" + PAYLOADS[0]]
        r = c.get("/console/search", params={"model": "*<*"})
        import re

        links = re.findall(r'href="(/console/event/[^"]+)"', r.text)
        assert links
        pages += links[:6]
        for path in pages:
            r = c.get(path)
            assert r.status_code == 200, path
            assert "default-src 'none'" in r.headers["content-security-policy"]
            body = r.text
            for p in PAYLOADS:
                if "<" in p or '"' in p:
                    assert p not in body, (path, p)
            assert 'href="javascript' not in body.lower()
            assert "<script" not in body.lower() and "<img" not in body and "<svg onload" not in body
        found = c.get("/console/search", params={"model": PAYLOADS[0]}).text
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in found and "0 events match" not in found
