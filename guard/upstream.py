"""Pooled aiohttp client to model servers: URL and header building per upstream API, timeouts, fallbacks."""
from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass
from typing import Any

import aiohttp

from guard import telemetry
from guard.config import Config, Upstream
from guard.errors import GuardError

# Never forwarded: hop-by-hop headers (RFC 9110 7.6.1), the client's own credentials, and headers Guard sets.
_DROP = frozenset({
    "connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade",
    "proxy-authorization", "proxy-authenticate", "authorization", "api-key", "x-api-key", "cookie", "host",
    "content-length", "accept-encoding", "x-forwarded-client-cert", "traceparent", "tracestate",
    "x-guard-request-id", "expect",
})


class UpstreamUnreachable(Exception):
    pass


@dataclass
class Target:
    name: str
    upstream: Upstream
    url: str
    headers: dict[str, str]


class Upstreams:
    """One aiohttp session per upstream (connection pool, keep-alive)."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self._sessions: dict[str, aiohttp.ClientSession] = {}
        self._timeouts: dict[str, aiohttp.ClientTimeout] = {}

    def _session(self, name: str) -> aiohttp.ClientSession:
        s = self._sessions.get(name)
        if s is None or s.closed:
            up = self.config.upstreams[name]
            conn = aiohttp.TCPConnector(limit=up.max_connections, ttl_dns_cache=300, enable_cleanup_closed=True)
            # No cookie jar: the pool is shared by every principal, so a cookie an upstream sets would be sent
            # back on other callers' requests (tests/core/test_proxy.py).
            s = aiohttp.ClientSession(connector=conn, auto_decompress=False, skip_auto_headers=("User-Agent",),
                                      cookie_jar=aiohttp.DummyCookieJar())
            self._sessions[name] = s
        return s

    async def close(self) -> None:
        for s in self._sessions.values():
            await s.close()
        self._sessions.clear()

    def target(self, name: str, client_api: str, operation: str, path: str, model: str,
               client_headers: list[tuple[bytes, bytes]], extra: dict[str, str]) -> Target:
        up = self.config.upstreams[name]
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in client_headers
                   if k.decode("latin-1") not in _DROP}
        headers.update(extra)
        headers["accept-encoding"] = "identity"
        key = os.environ.get(up.api_key_env, "") if up.api_key_env else ""
        if up.api == "azure-openai":
            sub = path.removeprefix("/v1")
            url = f"{up.url}/openai/deployments/{model}{sub}?api-version={up.api_version or '2024-10-21'}"
            if key:
                headers["api-key"] = key
        else:
            base = up.url
            if base.endswith("/v1") and path.startswith("/v1/"):
                base = base[:-3]
            url = base + path
            if key:
                headers["authorization"] = f"Bearer {key}"
        return Target(name, up, url, headers)

    async def send(self, target: Target, method: str, body: bytes | None) -> aiohttp.ClientResponse:
        """Send and wait for the response headers. Raises UpstreamUnreachable (nothing was sent, a fallback may
        be tried) or GuardError 502/504."""
        up = target.upstream
        timeout = self._timeouts.get(target.name)
        if timeout is None:
            timeout = self._timeouts[target.name] = aiohttp.ClientTimeout(
                total=up.timeout_s, sock_connect=up.connect_timeout_s, sock_read=up.idle_timeout_s or up.timeout_s)
        try:
            request = self._session(target.name).request(method, target.url, data=body, headers=target.headers,
                                                         timeout=timeout, allow_redirects=False)
            if up.first_byte_timeout_s is None:  # the headers are bounded by the read and total timeouts
                return await request
            async with asyncio.timeout(up.first_byte_timeout_s):
                return await request
        except (aiohttp.ClientConnectorError, ConnectionRefusedError) as e:
            telemetry.UPSTREAM_ERRORS.labels(target.name, "unreachable").inc()
            raise UpstreamUnreachable(f"upstream {target.name!r} unreachable: {type(e).__name__}") from None
        except (asyncio.TimeoutError, TimeoutError):
            telemetry.UPSTREAM_ERRORS.labels(target.name, "timeout").inc()
            raise GuardError(504, f"upstream {target.name!r} did not answer in time", "upstream_error",
                             "upstream_timeout") from None
        except aiohttp.ClientError as e:
            telemetry.UPSTREAM_ERRORS.labels(target.name, "protocol").inc()
            raise GuardError(502, f"upstream {target.name!r} failed: {type(e).__name__}", "upstream_error",
                             "upstream_error") from None


def read_error(exc: BaseException, name: str) -> GuardError:
    """Map an error while reading an upstream body to the client error."""
    if isinstance(exc, (asyncio.TimeoutError, TimeoutError, aiohttp.ServerTimeoutError)):
        telemetry.UPSTREAM_ERRORS.labels(name, "timeout").inc()
        return GuardError(504, f"upstream {name!r} stopped answering", "upstream_error", "upstream_timeout")
    telemetry.UPSTREAM_ERRORS.labels(name, "protocol").inc()
    return GuardError(502, f"upstream {name!r} failed while answering: {type(exc).__name__}", "upstream_error",
                      "upstream_error")


def drop_response_headers(headers: Any) -> list[tuple[bytes, bytes]]:
    """Response headers passed back to the client: content type and a few informative ones."""
    out = []
    for k in ("content-type", "openai-processing-ms", "x-request-id", "openai-model"):
        v = headers.get(k)
        if v:
            out.append((k.encode(), v.encode("latin-1")))
    return out
