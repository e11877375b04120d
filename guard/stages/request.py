"""The first stages: who is calling and which endpoint (identity), the body read strictly (parse), the model's
route and upstreams (route)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

from guard import canonical, gc_tuning, heavy
from guard.apis import ROUTES, api_of_path, fields, listing_api, strictjson, translate
from guard.apis.wire import WIRE
from guard.client_watch import ClientGone
from guard.config import Route as RouteConfig
from guard.config import Upstream
from guard.errors import GuardError, bad_request, forbidden
from guard.exchange import Exchange
from guard.identity import ANONYMOUS, Principal, XFCCError, peer_is_trusted, principal_from_xfcc
from guard.stages.base import LARGE_BODY, Flow, Receive, Services, header


def identify(scope: dict[str, Any], trusted: Sequence[Any], xfcc_multi: str = "refuse") -> Principal:
    """Principal from the verified client certificate, or from XFCC when the peer is a trusted proxy."""
    xfcc = header(scope["headers"], b"x-forwarded-client-cert")
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


class Identify:
    """The Principal, then the endpoint: (method, path) -> wire API and operation (404 when none)."""

    name: ClassVar[str] = "identity"
    timed: ClassVar[bool] = True

    def __init__(self, svc: Services) -> None:
        self._trusted = tuple(svc.config.tls.networks())
        self._xfcc_multi = svc.config.tls.xfcc_multi

    def run(self, flow: Flow) -> None:  # never awaits: the driver calls it as a plain function
        scope, ex = flow.scope, flow.ex
        endpoint = ROUTES.get((scope["method"], scope["path"]))
        ex.principal = identify(scope, self._trusted, self._xfcc_multi)
        if endpoint is None:
            ex.api = api_of_path(scope["path"], scope["headers"])  # its error shape: an Ollama client gets Ollama's
            raise GuardError(
                404, f"no such endpoint: {scope['method']} {scope['path']}", "invalid_request_error", "not_found"
            )
        ex.api, ex.operation = endpoint
        if ex.operation == "models":  # a listing is about every model
            ex.model = "*"
            ex.api = listing_api(ex.api, scope["headers"])


async def read_body(receive: Receive, limit: int, declared: bytes | None) -> bytes:
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


class Parse:
    """The body read strictly (guard.canonical: duplicate or case-folded keys, NaN refused), its fields
    checked and validated by the client API's module: the Exchange's model, stream flag and body."""

    name: ClassVar[str] = "parse"
    timed: ClassVar[bool] = True

    def __init__(self, svc: Services) -> None:
        self._limits = svc.config.limits

    async def run(self, flow: Flow) -> None:
        ex, headers, limits = flow.ex, flow.scope["headers"], self._limits
        ctype = header(headers, b"content-type") or b""
        if not ctype.split(b";")[0].strip().lower() == b"application/json":
            raise GuardError(
                415, "Content-Type must be application/json", "invalid_request_error", "unsupported_media_type"
            )
        raw = await read_body(flow.receive, limits.max_body_bytes, header(headers, b"content-length"))
        ex.body_bytes = len(raw)
        if len(raw) > LARGE_BODY:  # resumed when the request ends (guard.pipeline)
            gc_tuning.defer()
        flow.wire = api = WIRE[ex.api]
        if len(raw) <= LARGE_BODY:
            body, flow.unknown, ex.model, ex.stream = _parse(raw, api, ex.api, ex.operation, limits.max_json_depth)
        else:  # linear, but a megabyte of small objects is too much for the event loop (and for its GIL)
            parsed = await canonical.parse_large(raw, limits.max_json_depth)  # depth checked there
            body, flow.unknown, ex.model, ex.stream = await heavy.run(_check, parsed, raw, api, ex.api, ex.operation, 0)
        ex.body = body


def _parse(raw: bytes, api: Any, wire: str, operation: str, depth: int) -> tuple[Any, Any, str, bool]:
    """Strict parse, depth and field checks, validation: (body, unknown fields, model, stream)."""
    return _check(canonical.parse(raw), raw, api, wire, operation, depth)


def _check(body: Any, raw: bytes, api: Any, wire: str, operation: str, depth: int) -> tuple[Any, Any, str, bool]:
    """Depth (unless ``depth`` is 0: checked already) and field checks and validation of a strictly read body:
    (body, unknown fields, model, stream)."""
    if depth and not strictjson.depth_ok(body, depth, raw):
        raise bad_request(f"JSON nested deeper than {depth}", "invalid_json")
    unknown = fields.check(wire, operation, body)  # refuses case-variant spellings of known fields
    model, stream = api.validate(operation, body)
    return body, unknown, model, stream


def _label_for(route: RouteConfig, model: str, listed: frozenset[str]) -> str:
    """A metric label for a routed model: its own name when a route names it exactly (or the operator
    listed it), else ``other``: names a wildcard route matched come from clients and are unbounded."""
    if model in listed or not any(c in route.model for c in "*?["):
        return model
    return "other"


def _stateful(ex: Exchange, used: list[str], chain: list[Upstream]) -> None:
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


class Route:
    """model -> route -> upstream and fallbacks; each must take this API (translated where configured), and
    the body's unknown fields and unscreenable inputs are admitted or refused for them (guard.canonical)."""

    name: ClassVar[str] = "route"
    timed: ClassVar[bool] = True
    heavy: ClassVar[bool] = True  # walks every message (canonical.admit): in a thread for large bodies

    def __init__(self, svc: Services) -> None:
        self._config = svc.config
        self._model_labels = frozenset(svc.config.telemetry.model_labels)

    def run(self, flow: Flow) -> None:  # never awaits: the driver calls it as a plain function
        try:
            self._route(flow)
        except GuardError as e:  # answered after the access decision: denied clients get 403 whatever the route
            flow.refusal = e

    def _route(self, flow: Flow) -> None:
        ex, cfg, api, body = flow.ex, self._config, flow.wire, flow.ex.body
        r = cfg.route(ex.model)
        if r is None:
            raise GuardError(
                404, f"model {ex.model!r} is not routed by this gateway", "invalid_request_error", "model_not_found"
            )
        ex.upstream = r.upstream
        ex.model_label = _label_for(r, ex.model, self._model_labels)
        up = cfg.upstreams[r.upstream]
        ex.upstream_api, ex.external = up.api, up.external
        chain = [cfg.upstreams[n] for n in (r.upstream, *r.fallbacks)]
        modes = []
        for u in chain:  # before any screen runs: a route this API cannot take is refused as such
            kind = translate.mode(ex.api, u, ex.operation)
            if kind is None:
                raise translate.mismatch(ex.api, u, ex.model, ex.operation)  # type: ignore[misc]
            if kind:
                translate.check_for(kind, body)
            modes.append(kind)
        canonical.admit(ex, api, flow.unknown, chain)
        state = getattr(api, "stateful", None)
        if state is not None:
            _stateful(ex, state(body), chain)
        flow.route, flow.chain, flow.modes = r, tuple(chain), tuple(modes)
