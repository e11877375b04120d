"""The console's routes, mounted at /console on the admin listener only (guard.app.admin_app).

Every page view and export is recorded in the audit journal (``console.view`` / ``console.export``) before
the answer is sent; when that record cannot be written, the page is refused (503), as any exchange would be.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

from starlette.applications import Starlette
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from guard.console.auth import Auth, Identity, Refused
from guard.console.html import CSS, esc, page
from guard.console.index import Index
from guard.console.integrity import Verifier, trusted_keys

log = logging.getLogger("guard.console")

HEADERS = {
    "content-security-policy": "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'",
    "x-content-type-options": "nosniff",
    "referrer-policy": "same-origin",
    "cache-control": "no-store",
    "x-frame-options": "DENY",
}
_INDEX_FRESH_S = 1.0  # searches within this long of the last index update do not read the journal again
_WAIT_FOR_INDEX_S = 3.0  # a page waits this long for an index update, then shows the index as it is


class Console:
    def __init__(self, runtime: Any) -> None:
        cfg = runtime.config
        self.runtime = runtime
        self.settings = cfg.console
        self.root = Path(cfg.audit.dir)
        self.policy = runtime.policy
        self.index = Index(self.settings.index or self.root / "index" / "console.sqlite", self.root)
        self.auth = Auth(
            self.settings.token(),
            runtime.policy,
            self.settings.session_ttl_s,
            secure=self.settings.client_ca is not None,
        )
        self._keys: dict[str, Any] = {}
        self.verifier = Verifier(self.root, self.index, self.keys)
        self._updated = 0.0
        self._task: asyncio.Future[None] | None = None

    def keys(self) -> dict[str, Any]:
        if not self._keys:
            self._keys = trusted_keys(self.root, list(self.settings.public_keys))
        return self._keys

    async def fresh(self) -> bool:
        """Bring the index up to date with the journal (in a thread, at most once a second). A long update (a
        build from scratch) goes on in the background: pages then show what is indexed so far, and say so.
        Returns True when the index is up to date."""
        if self._task is None or self._task.done():
            if time.monotonic() - self._updated < _INDEX_FRESH_S:
                return True
            self._task = asyncio.ensure_future(asyncio.to_thread(self._update))
        try:
            await asyncio.wait_for(asyncio.shield(self._task), _WAIT_FOR_INDEX_S)
            return True
        except TimeoutError:
            return False

    def _update(self) -> None:
        try:
            self.index.update()
        finally:
            self._updated = time.monotonic()

    async def record(self, kind: str, ident: Identity, request: Request, status: int, **kw: Any) -> bool:
        from guard.audit import event as ev

        journal = getattr(self.runtime, "journal", None)
        if journal is None:
            return False
        query = kw.pop("query", None) or {k: v for k, v in request.query_params.items() if k != "token"}
        e = ev.console_access(
            kind, ident.who, ident.auth, request.url.path, status, ident.fingerprint, query=query, **kw
        )
        try:
            await journal.append(e)
            return True
        except Exception as x:
            log.error("console: could not record %s: %s", kind, x)
            return False


def _html(body: str, status: int = 200, **headers: str) -> Response:
    return HTMLResponse(body, status_code=status, headers={**HEADERS, **headers})


def console_app(runtime: Any) -> Starlette:
    c = Console(runtime)
    Handler = Callable[[Request, Identity], Awaitable[tuple[Any, ...] | Response]]

    def guarded(handler: Handler, kind: str = "console.view") -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            try:
                ident = c.auth.identify(request)
            except Refused as r:
                await c.record(kind, Identity(r.who, "certificate"), request, 403)
                return _html(page("Refused", f'<p class="bad" role="alert">{esc(r.reason)}.</p>'), 403)
            if ident is None:
                if request.method == "GET" and c.auth.token is not None:
                    return RedirectResponse("/console/login", 303, headers=HEADERS)
                return _html(
                    page("Not signed in", "<p>Log in with the console token or an auditor certificate.</p>"),
                    401,
                    **{"www-authenticate": "Bearer"},
                )
            if request.method == "POST" and not _same_origin(request):
                return _html(page("Refused", "<p>Cross-site form refused.</p>"), 403)
            current = await c.fresh()
            try:
                out = await handler(request, ident)
            except ValueError as e:  # a filter a person typed
                out = (page("Bad input", f'<p class="bad" role="alert">{esc(e)}</p>', ident.who), 400)
            status = out.status_code if isinstance(out, Response) else out[1]
            results = out[2] if isinstance(out, tuple) and len(out) > 2 else None
            if isinstance(out, Response) and kind == "console.export":
                return out  # the export handler records itself (it knows the pack's digest)
            if not await c.record(kind, ident, request, status, results=results):
                return _html(
                    page(
                        "Audit journal unavailable",
                        "<p class='bad'>This view could not be recorded in the audit journal, so it is refused.</p>",
                    ),
                    503,
                )
            if isinstance(out, Response):
                return out
            body = out[0]
            if not current:  # say so on the page: results may be missing the newest events
                body = body.replace(
                    '<main id="main">',
                    '<main id="main"><p class="warn" role="status">The search index '
                    f"is being brought up to date with the journal ({c.index.count():,} events so far); "
                    "results may be incomplete. Reload in a moment.</p>",
                    1,
                )
            return _html(body, out[1])

        return endpoint

    async def search(request: Request, ident: Identity) -> tuple[str, int, int]:
        from guard.console.views import search_page

        return await asyncio.to_thread(search_page, c, request.query_params, ident.who)

    async def event(request: Request, ident: Identity) -> tuple[str, int]:
        from guard.console.views import event_page

        try:
            seq = int(request.path_params["seq"])
        except ValueError:
            return page("Not found", "<p>No such event.</p>", ident.who), 404
        return await asyncio.to_thread(event_page, c, request.path_params["chain"], seq, ident.who)

    async def integrity(request: Request, ident: Identity) -> tuple[str, int]:
        from guard.console.views import integrity_page

        return await asyncio.to_thread(integrity_page, c, ident.who)

    async def verify_now(request: Request, ident: Identity) -> Response:
        c.verifier.start()
        return RedirectResponse("/console/integrity", 303, headers=HEADERS)

    async def verify_progress(request: Request, ident: Identity) -> Response:
        return JSONResponse(c.verifier.progress(), headers=HEADERS)

    async def charts(request: Request, ident: Identity) -> tuple[str, int]:
        from guard.console.pages import charts_page

        return await asyncio.to_thread(charts_page, c, request.query_params, ident.who)

    async def export_form(request: Request, ident: Identity) -> tuple[str, int]:
        from guard.console.pages import export_page

        return await asyncio.to_thread(export_page, c, request.query_params, ident.who)

    async def export_pack(request: Request, ident: Identity) -> Response:
        from guard.console.packs import make_pack

        form = await form_of(request)
        data, summary, q = await asyncio.to_thread(make_pack, c, form)
        digest = hashlib.sha256(data).hexdigest()
        if not await c.record(
            "console.export",
            ident,
            request,
            200,
            query=q,
            results=summary["counts"]["events"],
            formats=summary["formats"],
            pack_sha256=digest,
        ):
            return _html(
                page(
                    "Audit journal unavailable",
                    "<p class='bad'>The export could not be recorded in the audit journal, so it is refused.</p>",
                ),
                503,
            )
        name = f"guard-evidence-{summary['generated'][:19].replace(':', '').replace('-', '')}.zip"
        return Response(
            data,
            media_type="application/zip",
            headers={**HEADERS, "content-disposition": f'attachment; filename="{name}"'},
        )

    async def policy(request: Request, ident: Identity) -> tuple[str, int]:
        from guard.console.pages import policy_page

        return await asyncio.to_thread(policy_page, c, request.query_params, ident.who)

    async def home(request: Request, ident: Identity) -> Response:
        return RedirectResponse("/console/search", 303, headers=HEADERS)

    async def login(request: Request) -> Response:
        from guard.console.pages import login_page

        if c.auth.token is None:
            return _html(page("Log in", "<p>This console accepts auditor client certificates only.</p>"), 404)
        if request.method == "GET":
            return _html(login_page())
        if not _same_origin(request):
            return _html(page("Refused", "<p>Cross-site form refused.</p>"), 403)
        try:
            form = await form_of(request)
        except ValueError as e:
            return _html(login_page(str(e)), 400)
        if not c.auth.token_ok(str(form.get("token") or "")):
            await c.record("console.view", Identity("(wrong token)", "token"), request, 401)
            await asyncio.sleep(0.5)  # slows guessing; the token itself is long
            log.warning("console login refused from %s", request.client.host if request.client else "?")
            return _html(login_page("Wrong token."), 401)
        if not await c.record("console.view", Identity("token", "token"), request, 303):
            return _html(
                page(
                    "Audit journal unavailable",
                    "<p class='bad'>The login could not be recorded in the audit journal, so it is refused.</p>",
                ),
                503,
            )
        resp = RedirectResponse("/console/search", 303, headers=HEADERS)
        resp.headers.append("set-cookie", c.auth.cookie_header(c.auth.new_session()))
        return resp

    async def logout(request: Request) -> Response:
        resp = RedirectResponse("/console/login", 303, headers=HEADERS)
        resp.headers.append("set-cookie", c.auth.cookie_header("", 0))
        return resp

    async def css(request: Request) -> Response:
        return Response(CSS, media_type="text/css", headers={**HEADERS, "cache-control": "max-age=3600"})

    routes = [
        Route("/", guarded(home)),
        Route("/search", guarded(search)),
        Route("/event/{chain}/{seq}", guarded(event)),
        Route("/integrity", guarded(integrity)),
        Route("/verify", guarded(verify_now), methods=["POST"]),
        Route("/verify/progress", guarded(verify_progress)),
        Route("/charts", guarded(charts)),
        Route("/export", guarded(export_form)),
        Route("/export", guarded(export_pack, "console.export"), methods=["POST"]),
        Route("/policy", guarded(policy)),
        Route("/login", login, methods=["GET", "POST"]),
        Route("/logout", logout, methods=["POST"]),
        Route("/static/console.css", css),
    ]
    app = Starlette(routes=routes)
    app.state.console = c
    return app


async def form_of(request: Request, limit: int = 65536) -> FormData:
    """An application/x-www-form-urlencoded body (the console's only forms), at most ``limit`` bytes."""
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise ValueError("form too large")
    if not request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded") and body:
        raise ValueError("forms must be application/x-www-form-urlencoded")
    pairs: list[tuple[str, Any]] = parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True)
    return FormData(pairs)


def _same_origin(request: Request) -> bool:
    """A form POST must come from the console's own pages (SameSite=Strict already keeps the cookie off
    cross-site requests; this also covers certificate users, whose browser sends the certificate anyway)."""
    origin = request.headers.get("origin")
    if origin is None or origin == "null":
        return origin is None
    host = request.headers.get("host", "")
    return origin.split("://", 1)[-1] == host
