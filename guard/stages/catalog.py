"""The model catalogue through Guard: ``GET /v1/models`` (OpenAI's list) and Ollama's ``GET /api/tags``,
``POST /api/show``, ``GET /api/ps`` and ``GET /api/version`` (the policy action ``models``).

Both listings name exactly the models the caller may use through the API it lists them with (``usable``): the
exact names of routes whose upstreams all take that API (as they are or translated), and for wildcard routes
the names the upstream's own list gives (``/api/tags`` of an Ollama upstream, ``/v1/models`` of an OpenAI one;
wildcard routes to other upstreams list nothing) that the pattern matches and no earlier route takes, each
kept only if the policy lets this principal use it (``chat``, ``completion`` or ``embeddings``). An upstream
list that cannot be read leaves that route's wildcard models out (logged): a listing shows less, never more.
``/api/show`` answers for such a model only (404 otherwise: the caller learns nothing about models it may not
use) and is proxied to the model's upstream; ``/api/ps`` is the upstreams' lists filtered alike;
``/api/version`` is the first reachable Ollama upstream's.
"""

from __future__ import annotations

import fnmatch
import json
import logging
from typing import Any

from guard.apis import translate
from guard.errors import GuardError, bad_request
from guard.policy.attributes import Attrs
from guard.upstream import UpstreamUnreachable, max_response_bytes

log = logging.getLogger("guard.stages.catalog")
USE = ("chat", "completion", "embeddings")  # a model the principal may do one of these with is usable
# An upstream's own model list, by the API it speaks: its path, the key of its entries, each entry's name keys.
LISTS: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "ollama": ("/api/tags", "models", ("name", "model")),
    "openai": ("/v1/models", "data", ("id",)),
}
_ENTRY_KEYS = ("name", "model", "modified_at", "size", "digest", "details", "expires_at", "size_vram", "context_length")


def _not_found(name: str) -> GuardError:
    return GuardError(404, f"model '{name}' not found", "invalid_request_error", "model_not_found")


class Catalog:
    """One catalogue request: the caller's view of the routes, resolved against the Ollama upstreams."""

    def __init__(self, svc: Any, ex: Any, env: dict[str, Any]) -> None:
        self.svc, self.ex, self.env = svc, ex, env
        self.cfg = svc.config
        self.wire = ex.api  # the client's API: the catalogue lists upstreams that speak it
        self._lists: dict[tuple[str, str], list[dict[str, Any]] | None] = {}

    def _serves(self, up: Any) -> bool:
        """Whether a model on upstream ``up`` can be used through the listing's API (translated or not)."""
        return any(translate.mode(self.wire, up, op) is not None for op in USE)

    def _route(self, name: str) -> Any:
        """The route ``name`` takes when every upstream of it takes the listing's API, else None."""
        r = self.cfg.route(name)
        if r is None:
            return None
        chain = [self.cfg.upstreams[u] for u in (r.upstream, *r.fallbacks)]
        return r if all(self._serves(u) for u in chain) else None

    def may_use(self, name: str, route: Any) -> bool:
        up = self.cfg.upstreams[route.upstream]
        obj = Attrs(
            {
                "model": name,
                "upstream": route.upstream,
                "api": up.api,
                "wire": self.wire,
                "external": up.external,
                "path": self.ex.path,
            }
        )
        sub = self.ex.principal.policy_view
        return any(self.svc.policy.decide_access(sub, obj, act, self.env).effect == "allow" for act in USE)

    async def _get(self, upstream: str, path: str, body: bytes = b"") -> tuple[int, Any]:
        """(status, parsed JSON) of one request to an Ollama upstream; raises GuardError when unreachable."""
        ups = self.svc.upstreams
        extra = {"x-guard-request-id": self.ex.request_id, "content-type": "application/json"}
        target = ups.target(upstream, self.wire, "models", path, "", [], extra)
        try:
            resp = await ups.send(target, "POST" if body else "GET", body)
        except UpstreamUnreachable as e:
            raise GuardError(502, str(e), "upstream_error", "upstream_unreachable") from None
        try:
            data = await resp.read(max_response_bytes(self.cfg, upstream))
        finally:
            resp.release()
        try:
            return resp.status, json.loads(data)
        except (ValueError, RecursionError):
            raise GuardError(
                502, "the model server returned a body that is not JSON", "upstream_error", "upstream_bad_response"
            ) from None

    async def _listed(self, upstream: str, path: str, key: str = "models") -> list[dict[str, Any]]:
        """The ``key`` entries of an upstream's list (/api/tags, /api/ps, /v1/models); empty when it cannot be
        read: a listing shows less, never more."""
        if (upstream, path) not in self._lists:
            try:
                status, body = await self._get(upstream, path)
                models = body.get(key) if status == 200 and isinstance(body, dict) else None
                self._lists[(upstream, path)] = (
                    [m for m in models if isinstance(m, dict)] if isinstance(models, list) else None
                )
                if models is None:
                    log.warning("request %s: %s of upstream %r answered %s", self.ex.request_id, path, upstream, status)
            except GuardError as e:
                log.warning("request %s: %s of upstream %r unavailable: %s", self.ex.request_id, path, upstream, e)
                self._lists[(upstream, path)] = None
        return self._lists[(upstream, path)] or []

    async def _upstream_models(self, upstream: str) -> list[tuple[str, dict[str, Any]]]:
        """(name, entry) of each model an upstream's own list names; none for an API without a list here."""
        spec = LISTS.get(self.cfg.upstreams[upstream].api)
        if spec is None:
            return []
        path, key, names = spec
        out = []
        for m in await self._listed(upstream, path, key):
            n = next((m[k] for k in names if m.get(k)), None)
            if isinstance(n, str):
                out.append((n, m))
        return out

    async def usable(self) -> dict[str, tuple[Any, dict[str, Any] | None]]:
        """Every model this principal may use through the listing's API, in route order: name -> (its route,
        the upstream list's entry for it when a wildcard route was resolved against that list)."""
        out: dict[str, tuple[Any, dict[str, Any] | None]] = {}
        for r in self.cfg.routes:
            if not self._serves(self.cfg.upstreams[r.upstream]):
                continue
            candidates: list[tuple[str, dict[str, Any] | None]]
            if not any(c in r.model for c in "*?["):
                candidates = [(r.model, None)]
            elif r.upstream_model:  # every name it matches is one upstream model: none to list
                continue
            else:
                listed = await self._upstream_models(r.upstream)
                candidates = [(n, m) for n, m in listed if fnmatch.fnmatchcase(n, r.model)]
            for name, entry in candidates:
                if name in out or self._route(name) is not r or not self.may_use(name, r):
                    continue
                out[name] = (r, entry)
        return out

    async def tags(self) -> dict[str, Any]:
        out: dict[str, dict[str, Any]] = {}
        for name, (r, entry) in (await self.usable()).items():
            if entry is None and self.cfg.upstreams[r.upstream].api == self.wire:  # an exact route: the
                want = r.upstream_model or name  # upstream's entry when it lists the model
                listed = await self._listed(r.upstream, "/api/tags")
                entry = next((m for m in listed if want in (m.get("name"), m.get("model"))), {})
            entry = entry or {}
            out[name] = {**{k: entry[k] for k in _ENTRY_KEYS if k in entry}, "name": name, "model": name}
            out[name].setdefault("modified_at", "1970-01-01T00:00:00Z")
            out[name].setdefault("size", 0)
        return {"models": list(out.values())}

    async def ps(self) -> dict[str, Any]:
        out: list[dict[str, Any]] = []
        seen: set[str] = set()
        for name in dict.fromkeys(u for u, up in self.cfg.upstreams.items() if up.api == self.wire):
            for m in await self._listed(name, "/api/ps"):
                n = m.get("name") or m.get("model")
                if not isinstance(n, str):
                    continue
                r = self._route(n)
                if r is None or n in seen or r.upstream != name or r.upstream_model or not self.may_use(n, r):
                    continue
                seen.add(n)
                out.append({k: m[k] for k in _ENTRY_KEYS if k in m})
        return {"models": out}

    async def show(self, raw: bytes) -> tuple[int, Any]:
        try:
            req = json.loads(raw or b"{}")
        except ValueError:
            raise bad_request("the body is not JSON", "invalid_json") from None
        name = req.get("model", req.get("name")) if isinstance(req, dict) else None
        if not isinstance(name, str) or not name.strip():
            raise bad_request("'model' is required and must be a non-empty string", "invalid_model")
        if set(req) - {"model", "name", "verbose"}:
            extra = sorted(set(req) - {"model", "name", "verbose"})[0]
            raise bad_request(f"unknown field '{extra}'", "unknown_field", param=f"$.{extra}")
        self.ex.model = name
        r = self._route(name)
        if r is None or self.cfg.upstreams[r.upstream].api != self.wire or not self.may_use(name, r):
            raise _not_found(name)
        self.ex.upstream = r.upstream
        fwd: dict[str, Any] = {"model": r.upstream_model or name}
        if isinstance(req.get("verbose"), bool):
            fwd["verbose"] = req["verbose"]
        return await self._get(r.upstream, "/api/show", json.dumps(fwd).encode())

    async def version(self) -> dict[str, Any]:
        last: GuardError | None = None
        for name, up in self.cfg.upstreams.items():
            if up.api != self.wire:
                continue
            try:
                status, body = await self._get(name, "/api/version")
            except GuardError as e:
                last = e
                continue
            if status == 200 and isinstance(body, dict) and isinstance(body.get("version"), str):
                return {"version": body["version"]}
        raise last or GuardError(404, "no Ollama upstream is configured", "invalid_request_error", "not_found")


async def answer(svc: Any, ex: Any, env: dict[str, Any], path: str, raw: bytes) -> tuple[int, bytes]:
    """(status, JSON body) for one catalogue request (``env``: the policy environment of its access
    decision). Raises GuardError for a refusal (written in Ollama's error shape by the caller)."""
    c = Catalog(svc, ex, env)
    if path == "/api/show":
        status, body = await c.show(raw)
        return status, json.dumps(body).encode()
    body = await (c.ps() if path == "/api/ps" else c.version() if path == "/api/version" else c.tags())
    return 200, json.dumps(body).encode()
