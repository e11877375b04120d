"""The request path, top to bottom (DESIGN.md):

identity -> parse (Exchange) -> access decision -> prompt screens -> content decision
-> audit "exchange.started" (durable) -> upstream -> response screens -> audit "exchange.completed"
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import os
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from guard import canonical, telemetry
from guard.accesslog import AccessLog, open_log
from guard.apis import ROUTES, api_of_path, fields, set_path, strictjson, translate
from guard.apis import answer as answers
from guard.apis.wire import WIRE, module
from guard.config import Config
from guard.errors import GuardError, bad_request, forbidden, policy_violation, unavailable
from guard.exchange import REQUEST_KEY, Exchange
from guard.filters import budget
from guard.filters.base import ScreenSet, Segment, Verdict
from guard.identity import ANONYMOUS, Principal, XFCCError, peer_is_trusted, principal_from_xfcc
from guard.policy.attributes import WEEKDAYS, Attrs
from guard.quota import hook as quota
from guard.quota import stream as quota_stream
from guard.ratelog import Throttled
from guard.relay import Relay, StreamEventTooLarge, UpstreamReportedError, UpstreamStreamError, scan_tail
from guard.upstream import (
    Upstreams,
    UpstreamUnreachable,
    drop_response_headers,
    max_response_bytes,
    rate_limit_headers,
    read_error,
    too_large,
)
from guard.upstream_errors import screen_error_body

log = logging.getLogger("guard.pipeline")
Send = Callable[[dict[str, Any]], Awaitable[None]]
Receive = Callable[[], Awaitable[dict[str, Any]]]
APIS = WIRE
Attributes = Mapping[str, Any] | Attrs  # what the policy engine reads (guard.policy.holder)


class Policy(Protocol):
    def decide_access(self, sub: Attributes, obj: Attributes, act: str, env: Attributes) -> Any: ...

    def decide_content(self, sub: Attributes, obj: Attributes, act: str, env: Attributes) -> Any: ...


class Recorder(Protocol):
    """Writes the audit trail of an exchange (guard.audit). ``started`` returns once durable."""

    async def started(self, ex: Exchange) -> None: ...

    async def finished(self, ex: Exchange, kind: str, outcome: dict[str, Any], wait: bool = True) -> None:
        """Record the exchange's end; ``wait=False``: the answer is out and ``exchange.started`` is durable,
        so the record need not be durable on return (the journal writes it with its next group commit)."""


@dataclass
class Services:
    config: Config
    upstreams: Upstreams
    policy: Policy
    recorder: Recorder
    screens: Callable[[str], ScreenSet]  # profile name -> screens
    clock: Callable[[], datetime] = lambda: datetime.now(UTC)
    tracing: telemetry.Tracing | None = None
    quotas: Any = None  # guard.quota.Quotas when ``quotas:`` is configured


class ClientGone(Exception):
    pass


# --- small helpers -------------------------------------------------------------------------------------


def _header(headers: list[tuple[bytes, bytes]], name: bytes) -> bytes | None:
    for k, v in headers:
        if k == name:
            return v
    return None


async def _read_body(receive: Receive, limit: int, declared: bytes | None) -> bytes:
    if declared is not None:
        try:
            if int(declared) > limit:
                raise GuardError(413, f"request body exceeds {limit} bytes", "invalid_request_error", "body_too_large")
        except ValueError:
            raise bad_request("invalid Content-Length", "invalid_request") from None
    chunks, n = [], 0
    while True:
        msg = await receive()
        if msg["type"] == "http.disconnect":
            raise ClientGone()
        body = msg.get("body", b"")
        n += len(body)
        if n > limit:
            raise GuardError(413, f"request body exceeds {limit} bytes", "invalid_request_error", "body_too_large")
        chunks.append(body)
        if not msg.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _depth_ok(obj: Any, limit: int, raw: bytes = b"") -> bool:
    if raw and raw.count(b"[") + raw.count(b"{") < limit:
        return True  # fewer brackets than the limit: it cannot nest that deep
    stack = [(obj, 1)]
    while stack:
        o, d = stack.pop()
        if d > limit:
            return False
        if isinstance(o, dict):
            stack.extend((v, d + 1) for v in o.values())
        elif isinstance(o, list):
            stack.extend((v, d + 1) for v in o)
    return True


def _stage(ex: Exchange, name: str, t0: float) -> None:
    t1 = time.perf_counter()
    ex.stage_ms[name] = (t1 - t0) * 1000
    ex.stage_times[name] = (t0, t1)
    telemetry.stage(name).observe(t1 - t0)


def _trace_id(traceparent: bytes | None) -> str:
    """The caller's W3C trace id, kept so the exchange joins the caller's trace; a new one otherwise."""
    parent = telemetry.parse_traceparent(traceparent.decode("latin-1")) if traceparent is not None else None
    return parent[0] if parent else os.urandom(16).hex()


def identify(scope: dict[str, Any], trusted: Sequence[Any], xfcc_multi: str = "refuse") -> Principal:
    """Principal from the verified client certificate, or from XFCC when the peer is a trusted proxy."""
    xfcc = _header(scope["headers"], b"x-forwarded-client-cert")
    client = scope.get("client") or ("", 0)
    if xfcc is not None and peer_is_trusted(client[0], trusted):
        lines = [v for k, v in scope["headers"] if k == b"x-forwarded-client-cert"]
        if len(lines) > 1:  # several header lines are one list (RFC 9110 5.3): one element per line at least
            xfcc = b",".join(lines)
        try:
            return principal_from_xfcc(xfcc.decode("latin-1"), multi=xfcc_multi)
        except XFCCError as e:
            raise forbidden(f"unusable x-forwarded-client-cert: {e}", "bad_client_identity") from None
    tls = (scope.get("extensions") or {}).get("tls") or {}
    return tls.get("guard.principal") or ANONYMOUS


_second: tuple[Any, ...] = (None, "", 0, "")  # the last whole second seen, its time, hour and weekday: one
# strftime a second; replaced whole, so threads (one Guard per thread in tests) never read a mix of two


def policy_env(ex: Exchange, now: datetime) -> dict[str, Any]:
    global _second
    second = int(now.timestamp())
    key, t, hour, weekday = _second
    if key != second:
        _second = key, t, hour, weekday = second, now.strftime("%Y-%m-%dT%H:%M:%SZ"), now.hour, WEEKDAYS[now.weekday()]
    return {
        "time": t,
        "hour": hour,
        "weekday": weekday,
        "client_ip": ex.client_ip,
        "body_bytes": ex.body_bytes,
        "stream": ex.stream,
    }


def _obj(ex: Exchange) -> Attrs:
    """The request's resource attributes, made once for both decisions (they do not change between them)."""
    obj = ex.context.get(_OBJ)
    if obj is None:
        obj = ex.context[_OBJ] = Attrs(
            {
                "model": ex.model,
                "upstream": ex.upstream,
                "api": ex.upstream_api or ex.api,
                "wire": ex.api,
                "external": ex.external,
                "path": ex.path,
            }
        )
    return obj


_OBJ = "guard.policy.obj"  # Exchange.context key
_throttled = Throttled(log)  # audit failures repeat for every request while the disk is full


def _ours(ex: Exchange) -> bool:
    """Claim the request's one record for the app; False when the HTTP layer already made it (an invalid
    body refused by guard.server under this request's id): the app then neither records nor answers."""
    req = ex.context.get(REQUEST_KEY)
    if req is None:
        return True
    if req["owner"] is None:
        req["owner"] = "app"
    return req["owner"] == "app"


# --- the exchange ----------------------------------------------------------------------------------------


class Pipeline:
    def __init__(self, svc: Services) -> None:
        self.svc = svc
        self._trusted = tuple(svc.config.tls.networks())
        self._access_log: AccessLog | None = open_log(svc.config.access_log_file) if svc.config.access_log else None
        self._xfcc_multi = svc.config.tls.xfcc_multi
        self._model_labels = frozenset(svc.config.telemetry.model_labels)

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        req = scope.get(REQUEST_KEY)  # guard.server: the request's id, and who records it (_ours)
        rid = req["id"] if req else os.urandom(12).hex()
        ex = Exchange(request_id=rid, api="", operation="", model="", path=scope["path"], body={})
        if req:
            ex.context[REQUEST_KEY] = req
        ex.client_ip = (scope.get("client") or ("",))[0]
        tp = _header(scope["headers"], b"traceparent")
        tracing = self.svc.tracing
        if tracing is not None:
            ex.context["wall_ns"] = time.time_ns()
            ex.context["span"], ex.trace_id, ex.context["traceparent"] = tracing.start(
                tp.decode("latin-1") if tp else None, ex.context["wall_ns"]
            )
        else:
            ex.trace_id = _trace_id(tp)
        started = False
        try:
            started = await self._run(ex, scope, receive, send)
        except GuardError as e:  # after exchange.started, the record is exchange.completed (not .denied)
            await self._refuse(ex, e, send, started or ex.context.get("audit_started", False))
        except ClientGone:
            await self._after(
                ex, started or ex.context.get("audit_started", False), {"status": 499, "reason": "client_disconnected"}
            )
        except Exception:
            log.exception("internal error handling request %s", ex.request_id)
            await self._refuse(ex, GuardError(500, "internal error", "server_error", "internal_error"), send, started)
        finally:
            if quota.TICKET in ex.context:  # after the answer: settle tokens, free slots (errors included)
                await quota.finish(self.svc.quotas, ex)
            telemetry.child(telemetry.REQUEST_SECONDS, ex.api or "none", ex.operation or "none").observe(
                time.perf_counter() - ex.started
            )
            if tracing is not None:
                tracing.finish(ex, ex.context.get("outcome") or {})
            if self._access_log is not None:
                self._access_log.record(ex, ex.context.get("outcome") or {}, _decision(ex))

    async def refused_by_protocol(
        self, rid: str, status: int, msg: str, code: str, tls: dict[str, Any] | None, client_ip: str
    ) -> GuardError | None:
        """A request the HTTP layer refused before it became an exchange (guard.server): its
        ``exchange.denied`` record (stage ``request``) and its count. Returns the error to answer instead
        when the record could not be written (503 ``audit_unavailable``), else None."""
        ex = Exchange(request_id=rid, api="", operation="", model="", path="", body={})
        ex.client_ip = client_ip
        ex.principal = (tls or {}).get("guard.principal") or ANONYMOUS
        ex.trace_id = os.urandom(16).hex()
        answer: GuardError | None = None
        try:
            await self._after(ex, False, {"status": status, "reason": code, "error_type": "invalid_request_error"})
        except GuardError as je:
            answer = je
        telemetry.child(telemetry.REQUESTS, "none", "none", "", "none", str(answer.status if answer else status)).inc()
        if self._access_log is not None:
            self._access_log.record(ex, {"status": answer.status if answer else status, "reason": code}, "none")
        return answer

    async def _refuse(self, ex: Exchange, e: GuardError, send: Send, started: bool) -> None:
        if not _ours(ex):
            return
        outcome = {"status": e.status, "reason": e.code or e.type, "error_type": e.type}
        try:
            await self._after(ex, started, outcome)
        except GuardError as je:  # the refusal itself could not be recorded: refuse harder, never unrecorded
            e = je
        await _send_error(send, e, ex.request_id, ex.api)
        telemetry.child(
            telemetry.REQUESTS, ex.api or "none", ex.operation or "none", _model_label(ex), _decision(ex), str(e.status)
        ).inc()

    async def _after(self, ex: Exchange, started: bool, outcome: dict[str, Any]) -> None:
        if not _ours(ex):
            return
        ex.context["outcome"] = outcome
        kind = "exchange.completed" if started else "exchange.denied"
        try:
            await self.svc.recorder.finished(ex, kind, outcome)
        except Exception as err:
            telemetry.FAIL_CLOSED.labels("audit").inc()
            _throttled.error("record", "audit record for %s failed: %s", ex.request_id, err)
            if not started:
                raise unavailable("audit journal unavailable; request refused", "audit_unavailable") from None

    async def _completed(self, ex: Exchange, outcome: dict[str, Any]) -> None:
        ex.context["outcome"] = outcome
        if quota.TICKET in ex.context:
            quota.account(ex, outcome)
        u = outcome.get("usage")
        if u:
            telemetry.child(telemetry.TOKENS, _model_label(ex), "input").inc(u.get("input_tokens", 0))
            telemetry.child(telemetry.TOKENS, _model_label(ex), "output").inc(u.get("output_tokens", 0))
        try:
            await self.svc.recorder.finished(ex, "exchange.completed", outcome, wait=False)
        except Exception as err:
            telemetry.FAIL_CLOSED.labels("audit").inc()
            _throttled.error("completion", "audit completion record for %s failed: %s", ex.request_id, err)

    async def _run(self, ex: Exchange, scope: dict[str, Any], receive: Receive, send: Send) -> bool:
        svc, cfg = self.svc, self.svc.config
        t0 = time.perf_counter()
        route = ROUTES.get((scope["method"], scope["path"]))
        ex.principal = identify(scope, self._trusted, self._xfcc_multi)
        _stage(ex, "identity", t0)
        if route is None:
            ex.api = api_of_path(scope["path"])  # its error shape: an Ollama client gets Ollama's
            raise GuardError(
                404, f"no such endpoint: {scope['method']} {scope['path']}", "invalid_request_error", "not_found"
            )
        ex.api, ex.operation = route
        if ex.operation == "models":
            await self._models(ex, scope, receive, send)
            return False
        headers = scope["headers"]
        ctype = _header(headers, b"content-type") or b""
        if not ctype.split(b";")[0].strip().lower() == b"application/json":
            raise GuardError(
                415, "Content-Type must be application/json", "invalid_request_error", "unsupported_media_type"
            )
        raw = await _read_body(receive, cfg.limits.max_body_bytes, _header(headers, b"content-length"))
        ex.body_bytes = len(raw)
        body = canonical.parse(raw)
        if not _depth_ok(body, cfg.limits.max_json_depth, raw):
            raise bad_request(f"JSON nested deeper than {cfg.limits.max_json_depth}", "invalid_json")
        ex.body = body
        api = APIS[ex.api]
        unknown = fields.check(ex.api, ex.operation, body)  # refuses case-variant spellings of known fields
        ex.model, ex.stream = api.validate(ex.operation, body)
        r = cfg.route(ex.model)
        if r is None:
            raise GuardError(
                404, f"model {ex.model!r} is not routed by this gateway", "invalid_request_error", "model_not_found"
            )
        ex.upstream = r.upstream
        ex.context[_LABEL] = _label_for(r, ex.model, self._model_labels)
        up = cfg.upstreams[r.upstream]
        ex.upstream_api, ex.external = up.api, up.external
        chain = [cfg.upstreams[n] for n in (r.upstream, *r.fallbacks)]
        for u in chain:  # before any screen runs: a route this API cannot take is refused as such
            kind = translate.mode(ex.api, u, ex.operation)
            if kind is None:
                raise translate.mismatch(ex.api, u, ex.model, ex.operation)  # type: ignore[misc]
            if kind:
                translate.check_for(kind, body)
        canonical.admit(ex, api, unknown, chain)
        state = getattr(api, "stateful", None)
        if state is not None:
            _stateful(ex, state(body), chain)
        _stage(ex, "parse", t0)

        env = await self._access(ex)
        screens = svc.screens(ex.profile)
        prompt = await self._screen_prompt(ex, screens, api)
        await self._content(ex, env)
        if svc.quotas is not None:  # a refusal here is an exchange.denied (stage quota)
            await quota.admit(svc.quotas, ex, prompt)

        t = time.perf_counter()
        if not _ours(ex):
            raise ClientGone()
        try:
            await svc.recorder.started(ex)
            ex.context["audit_started"] = True
        except Exception as err:
            telemetry.FAIL_CLOSED.labels("audit").inc()
            _throttled.error("refusing", "audit journal failed, refusing %s: %s", ex.request_id, err)
            raise unavailable("audit journal unavailable; request refused", "audit_unavailable") from None
        _stage(ex, "audit", t)
        await self._forward(ex, scope, r, prompt, screens, receive, send)
        return True

    async def _access(self, ex: Exchange) -> dict[str, Any]:
        t = time.perf_counter()
        env = policy_env(ex, self.svc.clock())
        assert ex.principal is not None
        ex.access = d = self.svc.policy.decide_access(ex.principal.policy_view, _obj(ex), ex.operation, env)
        _stage(ex, "policy", t)
        if d.effect != "allow":
            raise forbidden("access denied by policy")  # which rule: the audit record (decisions.access)
        ex.profile = getattr(d, "profile", None) or "default"
        return env

    async def _content(self, ex: Exchange, env: dict[str, Any]) -> None:
        pii = sorted({t for v in ex.verdicts if v.screen == "pii" for t in v.entities})
        cats = sorted({c for v in ex.verdicts if v.screen == "safety" for c in v.categories})
        scores = [v.score for v in ex.verdicts if v.screen == "safety" and v.score is not None]
        env = {**env, "pii": pii, "safety": cats, "safety_score": max(scores) if scores else 0.0}
        assert ex.principal is not None
        ex.content = d = self.svc.policy.decide_content(ex.principal.policy_view, _obj(ex), ex.operation, env)
        if d.effect != "allow":
            raise GuardError(
                403, "content denied by policy", "guard_policy_violation", "content_denied", outcome="denied"
            )  # which rule: the audit record (decisions.content)

    async def _screen_prompt(self, ex: Exchange, screens: ScreenSet, api: Any) -> list[Segment]:
        segs = api.prompt_segments(ex.operation, ex.body)
        if not screens.prompt:
            return segs
        t = time.perf_counter()
        before = [s.text for s in segs]
        # Screens run concurrently, each on its own copy; their rewrites are merged in profile order.
        copies = [[Segment(s.text, s.role, s.kind, s.path) for s in segs] for _ in screens.prompt]
        verdicts = list(
            await budget.run(
                lambda: asyncio.gather(
                    *(scr.screen_prompt(c, ex.context) for scr, c in zip(screens.prompt, copies, strict=False))
                ),
                self.svc.config.limits.screen_budget_ms,
            )
        )
        for i, (scr, copy) in enumerate(zip(screens.prompt, copies, strict=False)):
            if any(v.blocked for v in verdicts):
                break
            edits = [(k, c.text) for k, c in enumerate(copy) if c.text != before[k]]
            if any(segs[k].text != before[k] for k, _ in edits):  # two screens rewrote one text: redo in order
                verdicts[i] = await budget.run(
                    functools.partial(scr.screen_prompt, segs, ex.context), self.svc.config.limits.screen_budget_ms
                )
            else:
                for k, text in edits:
                    segs[k].text = text
        _stage(ex, "screens_prompt", t)
        ex.verdicts.extend(verdicts)
        for v in verdicts:
            if v.blocked and v.code == "screen_error":  # the screen could not do its job: fail closed
                telemetry.child(telemetry.FAIL_CLOSED, v.screen).inc()
                raise unavailable(v.message or f"the {v.screen} screen is unavailable; request refused", "screen_error")
            if v.blocked:
                raise policy_violation(
                    v.message or f"prompt blocked by the {v.screen} screen", v.code or f"{v.screen}_blocked"
                )
        if _write_back(ex.body, segs, before):
            ex.context["body_changed"] = True
        return segs

    async def _models(self, ex: Exchange, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        ex.model = "*"
        env = await self._access(ex)
        catalog = getattr(APIS[ex.api], "catalog", None)  # an API's own catalogue (guard.apis.ollama_catalog)
        if catalog is not None:
            raw = b""
            if scope["method"] == "POST":
                cl = _header(scope["headers"], b"content-length")
                raw = await _read_body(receive, self.svc.config.limits.max_body_bytes, cl)
            status, data = await catalog(self.svc, ex, env, scope["path"], raw)
            ex.context["outcome"] = {"status": status}
            await self._listed(ex)
            await _send_json(send, status, data, ex.request_id)
            return
        names = [r.model for r in self.svc.config.routes if not any(c in r.model for c in "*?[")]
        now = int(time.time())
        if ex.api == "openai":
            body = {
                "object": "list",
                "data": [{"id": n, "object": "model", "created": now, "owned_by": "guard"} for n in names],
            }
        else:
            body = {
                "models": [{"name": n, "model": n, "modified_at": "1970-01-01T00:00:00Z", "size": 0} for n in names]
            }
        ex.context["outcome"] = {"status": 200}
        await self._listed(ex)
        await _send_json(send, 200, json.dumps(body).encode(), ex.request_id)

    async def _listed(self, ex: Exchange) -> None:
        """The record of a catalogue request, durable before the answer goes out."""
        try:
            await self.svc.recorder.finished(ex, "exchange.completed", ex.context["outcome"])
        except Exception as err:
            telemetry.FAIL_CLOSED.labels("audit").inc()
            _throttled.error("record", "audit record for %s failed: %s", ex.request_id, err)
            raise unavailable("audit journal unavailable; request refused", "audit_unavailable") from None

    async def _forward(
        self,
        ex: Exchange,
        scope: dict[str, Any],
        route: Any,
        prompt: list[Segment],
        screens: ScreenSet,
        receive: Receive,
        send: Send,
    ) -> None:
        cfg = self.svc.config
        if route.upstream_model:
            ex.body["model"] = route.upstream_model
        bodies: dict[str, bytes] = {}  # per upstream API: what was judged, never the client's bytes (canonical.py)
        tp = ex.context.get("traceparent") or f"00-{ex.trace_id}-{os.urandom(8).hex()}-01"
        extra = {"x-guard-request-id": ex.request_id, "traceparent": tp, "content-type": "application/json"}
        t = time.perf_counter()
        resp = None
        for name in [route.upstream, *route.fallbacks]:
            model = route.upstream_model or ex.model
            kind = translate.mode(ex.api, cfg.upstreams[name], ex.operation) or ""
            if kind not in bodies:
                bodies[kind] = strictjson.dumps(translate.request(kind, ex.body) if kind else ex.body)
            path = translate.upstream_path(kind, ex.path)
            target = self.svc.upstreams.target(name, ex.api, ex.operation, path, model, scope["headers"], extra)
            try:
                resp = await self.svc.upstreams.send(target, "POST", bodies[kind])
                ex.upstream = name
                ex.context[_TRANSLATED] = kind
                break
            except UpstreamUnreachable as e:
                last = e
        if resp is None:
            raise GuardError(502, str(last), "upstream_error", "upstream_unreachable")  # names no upstream
        _stage(ex, "upstream_first_byte", t)
        try:
            ctype = resp.headers.get("content-type", "")
            is_stream = ex.stream and resp.status == 200 and ("event-stream" in ctype or "ndjson" in ctype)
            if is_stream:
                kind = ex.context[_TRANSLATED]
                src = translate.Stream(kind, resp, ex.model, ex.body) if kind else resp
                await self._stream(ex, src, prompt, screens, receive, send)
            else:
                await self._whole(ex, resp, prompt, screens, send)
        finally:
            resp.release()
        _stage(ex, "upstream_total", t)

    async def _whole(self, ex: Exchange, resp: Any, prompt: list[Segment], screens: ScreenSet, send: Send) -> None:
        try:
            data = await resp.read(max_response_bytes(self.svc.config, ex.upstream))
        except Exception as e:
            raise read_error(e, ex.upstream, ex.request_id) from None
        outcome: dict[str, Any] = {"status": resp.status, "bytes": len(data)}
        if ex.context.get(_TRANSLATED):
            data = translate.whole(ex.context[_TRANSLATED], resp.status, data, ex.model)
        if resp.status != 200:  # the upstream's error answer: capped and screened like an answer
            data, verdicts, done = await screen_error_body(ex.api, data, screens.response, prompt, ex.context)
            ex.verdicts.extend(verdicts)
            if done:
                outcome["reason"] = f"upstream_error_{done}"
            outcome["bytes"] = len(data)
        else:
            try:
                body = json.loads(data)
                if not isinstance(body, dict):
                    raise ValueError
            except (ValueError, RecursionError):
                telemetry.UPSTREAM_ERRORS.labels(ex.upstream, "bad_body").inc()
                log.warning(
                    "request %s: upstream %r returned a body that is not a JSON object", ex.request_id, ex.upstream
                )
                raise GuardError(
                    502,
                    "the model server returned a body that is not a JSON object",
                    "upstream_error",
                    "upstream_bad_response",
                ) from None
            api = APIS[ex.api]
            outcome["usage"] = api.usage(body)
            if screens.response and ex.operation != "embeddings":
                data = await self._screen_whole(ex, body, prompt, screens, api)
            outcome["finish_reasons"] = api.finish_reasons(body)
            outcome["bytes"] = len(data)
            capture = getattr(getattr(self.svc.recorder, "capture", None), "level", "none")
            if capture != "none":  # the recorder hashes, redacts or keeps it per audit.capture
                outcome["answer_text"] = "\n".join(s.text for s in api.response_segments(ex.operation, body))
        # exchange.started is already durable; the completion record need not delay the answer.
        headers = drop_response_headers(resp.headers)
        if quota.TICKET in ex.context:
            headers = quota.merge_headers(ex, headers)
        await _send_raw(send, resp.status, headers, data, ex.request_id)
        telemetry.child(
            telemetry.REQUESTS, ex.api, ex.operation, _model_label(ex), _decision(ex), str(resp.status)
        ).inc()
        await self._completed(ex, outcome)

    async def _screen_whole(
        self, ex: Exchange, body: dict[str, Any], prompt: list[Segment], screens: ScreenSet, api: Any
    ) -> bytes:
        if ex.api in answers.APIS:
            answers.drop_unscreenable(ex.api, body)  # logprobs, token ids: cannot be judged
        segs = api.response_segments(ex.operation, body)
        before = [s.text for s in segs]
        t = time.perf_counter()
        verdicts: list[Verdict] = []

        async def run_screens() -> None:
            for s in screens.response:
                v = await s.screen_response(segs, prompt, ex.context)
                verdicts.append(v)
                if v.blocked:
                    break

        await budget.run(run_screens, self.svc.config.limits.screen_budget_ms)
        _stage(ex, "screens_response", t)
        ex.verdicts.extend(verdicts)
        if any(v.blocked for v in verdicts):
            APIS[ex.api].filter_whole(ex.operation, body)
        else:
            _write_back(body, segs, before)
        # the judged object, never the upstream's bytes: a key given twice is read as its last value here, as
        # its first by some clients (docs/threat-model.md)
        return json.dumps(body).encode()

    async def _stream(
        self, ex: Exchange, resp: Any, prompt: list[Segment], screens: ScreenSet, receive: Receive, send: Send
    ) -> None:
        api = APIS[ex.api]
        headers = [
            (b"content-type", api.STREAM_MEDIA_TYPE),
            (b"cache-control", b"no-cache"),
            (b"x-guard-request-id", ex.request_id.encode()),
            *rate_limit_headers(resp.headers),
        ]
        strip = None
        if quota.TICKET in ex.context:
            headers = quota.merge_headers(ex, headers)
            strip = quota.UsageStripper() if ex.context.get(quota.STRIP_USAGE) else None
        meter = quota_stream.meter(self.svc.quotas, ex)  # None unless the tier counts tokens
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        telemetry.ACTIVE_STREAMS.inc()
        gone = asyncio.Event()

        async def watch() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            gone.set()

        watcher = asyncio.ensure_future(watch())
        outcome: dict[str, Any] = {"status": 200}
        screened = bool(screens.response) and screens.stream_screens
        relay = (
            Relay(
                ex.api,
                ex.operation,
                ex.model,
                lambda kind: [s.open_stream(prompt, ex.context, kind) for s in screens.response],
                max_event_bytes=max_response_bytes(self.svc.config, ex.upstream),
            )
            if screened
            else None
        )
        if relay is not None and strip is not None:
            relay.strip_usage, strip = True, None
        sent, tail = 0, b""
        try:
            stop = None
            while True:
                nxt = asyncio.ensure_future(resp.next_chunk())
                done, _ = await asyncio.wait({nxt, watcher}, return_when=asyncio.FIRST_COMPLETED)
                if nxt not in done:
                    nxt.cancel()
                    raise ClientGone()
                data = nxt.result()
                if data is None:
                    break
                if relay is None:
                    if strip is not None and not (data := strip.feed(data)):
                        continue
                    if meter is not None and meter.feed(data):
                        await meter.check()  # raises StreamExhausted when the budget cannot cover it
                    tail = (tail + data)[-4096:]
                    sent += len(data)
                    await send({"type": "http.response.body", "body": data, "more_body": True})
                    continue
                out, stop = await relay.feed(data)
                if out and meter is not None and meter.feed(out):
                    await meter.check()
                if out:
                    sent += len(out)
                    await send({"type": "http.response.body", "body": out, "more_body": True})
                if stop:
                    break
            if strip is not None and (rest := strip.finish()):
                sent += len(rest)
                await send({"type": "http.response.body", "body": rest, "more_body": True})
            if relay is not None and stop is None:
                out, stop = await relay.finish()
                if out:
                    sent += len(out)
                    await send({"type": "http.response.body", "body": out, "more_body": True})
            if stop is not None:
                ex.verdicts.append(stop)
                end = relay.stop_bytes() if relay else b""
                sent += len(end)
                outcome["finish_reasons"] = ["content_filter"]
                await send({"type": "http.response.body", "body": end, "more_body": False})
            else:
                await send({"type": "http.response.body", "body": b"", "more_body": False})
                if relay is None:
                    outcome["usage"], outcome["finish_reasons"] = scan_tail(ex.api, tail)
                    if strip is not None and strip.usage:
                        outcome["usage"] = strip.usage
                else:
                    outcome["usage"], outcome["finish_reasons"] = relay.usage, relay.finish_reasons
        except ClientGone:
            outcome.update(status=499, reason="client_disconnected")
        except quota_stream.StreamExhausted as e:  # the budget ran out mid-answer: the API's error event
            outcome.update(quota_stream.record(ex, e))
            await send({"type": "http.response.body", "body": module(ex.api).stream_error(e.error), "more_body": False})
        except StreamEventTooLarge as e:
            telemetry.UPSTREAM_ERRORS.labels(ex.upstream, "too_large").inc()
            log.warning("request %s: upstream %r: %s", ex.request_id, ex.upstream, e)
            err = too_large()
            outcome.update(status=502, reason=err.code)
            await send({"type": "http.response.body", "body": module(ex.api).stream_error(err), "more_body": False})
        except UpstreamReportedError:
            telemetry.UPSTREAM_ERRORS.labels(ex.upstream, "stream_error").inc()
            log.warning(
                "request %s: upstream %r reported an error mid-stream (text withheld)", ex.request_id, ex.upstream
            )
            err = GuardError(
                502, "the model server reported an error during the stream", "upstream_error", "upstream_error"
            )
            outcome.update(status=502, reason="upstream_stream_error")
            await send({"type": "http.response.body", "body": module(ex.api).stream_error(err), "more_body": False})
        except UpstreamStreamError as e:
            telemetry.UPSTREAM_ERRORS.labels(ex.upstream, "bad_body").inc()
            log.warning("request %s: upstream %r sent an invalid stream: %s", ex.request_id, ex.upstream, e)
            outcome.update(status=502, reason="upstream_bad_stream")
            err = GuardError(502, "the model server sent an invalid stream", "upstream_error", "upstream_bad_stream")
            await send({"type": "http.response.body", "body": module(ex.api).stream_error(err), "more_body": False})
        except Exception as e:
            err = read_error(e, ex.upstream, ex.request_id)
            outcome.update(status=err.status, reason=err.code)
            await send({"type": "http.response.body", "body": module(ex.api).stream_error(err), "more_body": False})
        finally:
            watcher.cancel()
            telemetry.ACTIVE_STREAMS.dec()
            if relay is not None:
                ex.verdicts.extend(v for v in relay.verdicts() if all(v is not w for w in ex.verdicts))
        outcome["bytes"] = sent
        await self._completed(ex, outcome)
        telemetry.child(
            telemetry.REQUESTS, ex.api, ex.operation, _model_label(ex), _decision(ex), str(outcome["status"])
        ).inc()


def _write_back(body: dict[str, Any], segs: list[Segment], before: list[str]) -> bool:
    """Put the segments screens rewrote back into the JSON body; True if any changed. A ``__json__`` path
    marks text that stands for a JSON value (a schema, Ollama tool-call arguments) and is written back
    parsed; a rewrite that left it invalid JSON refuses the request (it cannot be forwarded as judged)."""
    changed = False
    for seg, old in zip(segs, before, strict=False):
        if seg.text != old:
            changed = True
            if seg.path and seg.path[-1] == "__json__":
                try:
                    value = json.loads(seg.text)
                except ValueError:
                    raise policy_violation(
                        "a screen's rewrite of a JSON field is no longer JSON; request refused", "rewrite_failed"
                    ) from None
                set_path(body, seg.path[:-1], value)
            else:
                set_path(body, seg.path, seg.text)
    return changed


_TRANSLATED = "guard.translated"  # Exchange.context key: translation to the upstream (guard.apis.translate.mode)


def _stateful(ex: Exchange, used: list[str], chain: list[Any]) -> None:
    """Context the upstream keeps (Responses API) is refused unless every upstream of the route is
    ``stateful``; otherwise ``store: false`` is sent, so no later request can refer to this one's context."""
    if all(u.stateful for u in chain):
        return
    if used:
        raise bad_request(
            f"$.{used[0]} refers to context kept by the upstream, which Guard cannot screen or "
            "audit; not allowed for this model (upstreams.<name>.stateful)",
            "stateful_refused",
            param=f"$.{used[0]}",
        )
    ex.body["store"] = False


_LABEL = "guard.metrics.model"  # Exchange.context: the request's ``model`` metric label


def _label_for(route: Any, model: str, listed: frozenset[str]) -> str:
    """A metric label for a routed model: its own name when a route names it exactly (or the operator
    listed it), else ``other``: names a wildcard route matched come from clients and are unbounded."""
    if model in listed or not any(c in route.model for c in "*?["):
        return model
    return "other"


def _model_label(ex: Exchange) -> str:
    return ex.context.get(_LABEL, "other" if ex.model else "")


def _decision(ex: Exchange) -> str:
    for d in (ex.content, ex.access):
        if d is not None:
            return d.effect
    return "none"


async def _send_raw(send: Send, status: int, headers: list[tuple[bytes, bytes]], body: bytes, rid: str) -> None:
    headers = [*headers, (b"content-length", str(len(body)).encode()), (b"x-guard-request-id", rid.encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


async def _send_json(send: Send, status: int, body: bytes, rid: str) -> None:
    await _send_raw(send, status, [(b"content-type", b"application/json")], body, rid)


async def _send_error(send: Send, e: GuardError, rid: str, api: str = "") -> None:
    """The error in the client's API's own shape (OpenAI's before the API is known)."""
    await _send_raw(
        send, e.status, [(b"content-type", b"application/json"), *e.headers], module(api).error_body(e), rid
    )
