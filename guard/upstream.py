"""Pooled client to model servers (guard.http1): request target and header building per upstream API,
timeouts, fallbacks."""

from __future__ import annotations

import asyncio
import logging
import os
from dataclasses import dataclass
from functools import lru_cache
from typing import Any
from urllib.parse import quote, urlsplit

from guard import headers as header_rules
from guard import http1, telemetry
from guard.apis.wire import upstream_target
from guard.config import Config, Upstream
from guard.errors import GuardError

log = logging.getLogger("guard.upstream")

# Client-facing messages name no upstream, host or exception: those go to the log (with the request id) and
# the audit record (its ``upstream`` and ``outcome.error``).
UNREACHABLE = "the model server could not be reached"
TIMEOUT = "the model server did not answer in time"
FAILED = "the model server sent an invalid response"
TOO_LARGE = "the model server's response is larger than this gateway allows"


class UpstreamUnreachable(Exception):
    pass


@dataclass
class Target:
    name: str
    upstream: Upstream
    path: bytes  # the request target: path and query
    headers: bytes  # header lines, each ending in CRLF


class Upstreams:
    """One connection pool per upstream (keep-alive, at most ``max_connections``)."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self._pools: dict[str, http1.Pool] = {}
        self._fixed_parts: dict[str, tuple[Upstream, frozenset[bytes], bytes, str]] = {}

    def _pool(self, name: str) -> http1.Pool:
        p = self._pools.get(name)
        if p is None or p.closed:
            up = self.config.upstreams[name]
            p = self._pools[name] = http1.Pool(up.url, up.max_connections, up.connect_timeout_s)
        return p

    async def close(self) -> None:
        for p in self._pools.values():
            await p.close()
        self._pools.clear()

    def _fixed(self, name: str) -> tuple[Upstream, frozenset[bytes], bytes, str]:
        """What every request to upstream ``name`` shares, made once: the client headers it may receive (a
        header the operator sets for it never comes from the client as well), the operator's header lines,
        and its URL's path."""
        fixed = self._fixed_parts.get(name)
        if fixed is None:
            up = self.config.upstreams[name]
            allowed = header_rules.allowed(up.forward_headers) - {k.encode("latin-1") for k in up.headers}
            own = b"".join(f"{k}: {v}\r\n".encode("latin-1") for k, v in up.headers.items())
            fixed = self._fixed_parts[name] = (up, allowed, own, _path_of(up.url))
        return fixed

    def target(
        self,
        name: str,
        client_api: str,
        operation: str,
        path: str,
        model: str,
        client_headers: list[tuple[bytes, bytes]],
        extra: dict[str, str],
    ) -> Target:
        up, allowed, own, base = self._fixed(name)
        lines = [k + b": " + v + b"\r\n" for k, v in client_headers if k in allowed]
        if len(allowed) > 1 and any(k == b"connection" for k, _ in client_headers):
            hop = {n.strip().lower() for k, v in client_headers if k == b"connection" for n in v.split(b",")}
            lines = [ln for ln in lines if ln.split(b":", 1)[0] not in hop]  # RFC 9110 7.6.1
        lines.append(own)
        lines.extend(f"{k}: {v}\r\n".encode("latin-1") for k, v in extra.items())
        key = os.environ.get(up.api_key_env, "") if up.api_key_env else ""
        if key and not key.isprintable():  # a newline in the variable would end the header early
            log.error("upstream %r: the key in $%s has control characters", name, up.api_key_env)
            raise GuardError(
                502, "this model is misconfigured at the gateway", "upstream_error", "upstream_misconfigured"
            )
        target, auth = _addressed(up.api, base, path, model, up.api_version, key)
        lines.append(auth)
        return Target(name, up, target, b"".join(lines))

    async def send(self, target: Target, method: str, body: bytes) -> http1.Response:
        """Send and wait for the response head. Raises UpstreamUnreachable (nothing was sent, a fallback may
        be tried) or GuardError 502/504."""
        up = target.upstream
        try:
            return await self._pool(target.name).request(
                method.encode(),
                target.path,
                target.headers,
                body,
                total=up.timeout_s,
                idle=up.idle_timeout_s or up.timeout_s,
                first_byte=up.first_byte_timeout_s,
            )
        except http1.ConnectError as e:
            telemetry.UPSTREAM_ERRORS.labels(target.name, "unreachable").inc()
            log.warning("upstream %r unreachable: %s", target.name, e)
            raise UpstreamUnreachable(UNREACHABLE) from None
        except (http1.ReadTimeout, TimeoutError):
            telemetry.UPSTREAM_ERRORS.labels(target.name, "timeout").inc()
            log.warning("upstream %r did not answer in time", target.name)
            raise GuardError(504, TIMEOUT, "upstream_error", "upstream_timeout") from None
        except http1.ProtocolError as e:
            telemetry.UPSTREAM_ERRORS.labels(target.name, "protocol").inc()
            log.warning("upstream %r: %s", target.name, e)
            raise GuardError(502, FAILED, "upstream_error", "upstream_error") from None


@lru_cache(maxsize=1024)
def _addressed(api: str, base: str, path: str, model: str, version: str | None, key: str) -> tuple[bytes, bytes]:
    """The request target and the credential's header lines (``accept-encoding`` first) for one upstream API,
    path, model and key: the same few for every request (the model of a wildcard route comes from the client,
    hence the bound)."""
    target, auth = upstream_target(api)(base, path, model, version, key)
    return target.encode("ascii"), b"accept-encoding: identity\r\n" + b"".join(auth)


@lru_cache(maxsize=256)
def _path_of(url: str) -> str:
    """The upstream URL's path, percent-encoded (``http://h:8000/v1`` -> ``/v1``); the config strips its
    trailing slash."""
    path = urlsplit(url).path
    return quote(path, safe="/%:@!$&'()*+,;=~-._")


def read_error(exc: BaseException, name: str, rid: str = "") -> GuardError:
    """Map an error while reading an upstream body to the client error (details to the log only)."""
    if isinstance(exc, (http1.ReadTimeout, asyncio.TimeoutError, TimeoutError)):
        telemetry.UPSTREAM_ERRORS.labels(name, "timeout").inc()
        log.warning("request %s: upstream %r stopped answering", rid, name)
        return GuardError(504, "the model server stopped answering", "upstream_error", "upstream_timeout")
    if isinstance(exc, http1.TooLarge):
        telemetry.UPSTREAM_ERRORS.labels(name, "too_large").inc()
        log.warning("request %s: upstream %r: %s", rid, name, exc)
        return too_large()
    telemetry.UPSTREAM_ERRORS.labels(name, "protocol").inc()
    log.warning("request %s: upstream %r failed while answering: %s", rid, name, exc or type(exc).__name__)
    return GuardError(502, FAILED, "upstream_error", "upstream_error")


def too_large() -> GuardError:
    return GuardError(502, TOO_LARGE, "upstream_error", "upstream_response_too_large")


def max_response_bytes(config: Config, name: str) -> int:
    up = config.upstreams.get(name)
    return (
        up.max_response_bytes if up is not None and up.max_response_bytes else None
    ) or config.limits.max_response_bytes


def drop_response_headers(headers: Any) -> list[tuple[bytes, bytes]]:
    """Response headers passed back to the client: content type, a few informative ones, and the upstream's
    rate-limit advice (``retry-after``, ``x-ratelimit-*``; guard.quota replaces a family Guard limits more
    strictly)."""
    out = []
    for k in ("content-type", "openai-processing-ms", "x-request-id", "openai-model"):
        v = headers.get(k)
        if v:
            out.append((k.encode(), v.encode("latin-1")))
    return out + rate_limit_headers(headers)


def rate_limit_headers(headers: Any) -> list[tuple[bytes, bytes]]:
    """The upstream's ``retry-after``/``retry-after-ms`` and ``x-ratelimit-*`` headers (printable values only)."""
    return [
        (k.encode("latin-1"), v.encode("latin-1"))
        for k, v in headers.items()
        if (k.startswith("x-ratelimit-") or k in ("retry-after", "retry-after-ms"))
        and v.isprintable()
        and len(v) <= 256
    ]
