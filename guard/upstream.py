"""Pooled client to model servers (guard.http1): request target and header building per upstream API,
timeouts, fallbacks."""
from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass
from functools import lru_cache
from urllib.parse import quote, urlsplit

from guard import http1, telemetry
from guard.config import Config, Upstream
from guard.errors import GuardError

# Never forwarded: hop-by-hop headers (RFC 9110 7.6.1), the client's own credentials, and headers Guard sets.
_DROP = frozenset({
    b"connection", b"keep-alive", b"proxy-connection", b"te", b"trailer", b"transfer-encoding", b"upgrade",
    b"proxy-authorization", b"proxy-authenticate", b"authorization", b"api-key", b"x-api-key", b"cookie", b"host",
    b"content-length", b"accept-encoding", b"x-forwarded-client-cert", b"traceparent", b"tracestate",
    b"x-guard-request-id", b"expect", b"content-type",
    b"anthropic-version", b"anthropic-beta",  # Guard sets the upstream's version; betas change the reference
})
ANTHROPIC_VERSION = "2023-06-01"


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

    def target(self, name: str, client_api: str, operation: str, path: str, model: str,
               client_headers: list[tuple[bytes, bytes]], extra: dict[str, str]) -> Target:
        up = self.config.upstreams[name]
        lines = [k + b": " + v + b"\r\n" for k, v in client_headers if k not in _DROP]
        lines.extend(f"{k}: {v}\r\n".encode("latin-1") for k, v in extra.items())
        lines.append(b"accept-encoding: identity\r\n")
        key = os.environ.get(up.api_key_env, "") if up.api_key_env else ""
        if key and not key.isprintable():  # a newline in the variable would end the header early
            raise GuardError(502, f"upstream {name!r}: the key in ${up.api_key_env} has control characters",
                             "upstream_error", "upstream_misconfigured")
        base = _path_of(up.url)
        if up.api == "azure-openai":
            sub = path.removeprefix("/v1")
            target = (f"{base}/openai/deployments/{quote(model, safe='')}{sub}"
                      f"?api-version={quote(up.api_version or '2024-10-21', safe='')}")
            if key:
                lines.append(f"api-key: {key}\r\n".encode("latin-1"))
        else:
            if base.endswith("/v1") and path.startswith("/v1/"):
                base = base[:-3]
            target = base + path
            if up.api == "anthropic":
                lines.append(f"anthropic-version: {up.api_version or ANTHROPIC_VERSION}\r\n".encode("latin-1"))
                if key:
                    lines.append(f"x-api-key: {key}\r\n".encode("latin-1"))
            elif key:
                lines.append(f"authorization: Bearer {key}\r\n".encode("latin-1"))
        return Target(name, up, target.encode("ascii"), b"".join(lines))

    async def send(self, target: Target, method: str, body: bytes) -> http1.Response:
        """Send and wait for the response head. Raises UpstreamUnreachable (nothing was sent, a fallback may
        be tried) or GuardError 502/504."""
        up = target.upstream
        try:
            return await self._pool(target.name).request(
                method.encode(), target.path, target.headers, body, total=up.timeout_s,
                idle=up.idle_timeout_s or up.timeout_s, first_byte=up.first_byte_timeout_s)
        except http1.ConnectError as e:
            telemetry.UPSTREAM_ERRORS.labels(target.name, "unreachable").inc()
            raise UpstreamUnreachable(f"upstream {target.name!r} unreachable: {e}") from None
        except (http1.ReadTimeout, asyncio.TimeoutError, TimeoutError):
            telemetry.UPSTREAM_ERRORS.labels(target.name, "timeout").inc()
            raise GuardError(504, f"upstream {target.name!r} did not answer in time", "upstream_error",
                             "upstream_timeout") from None
        except http1.ProtocolError as e:
            telemetry.UPSTREAM_ERRORS.labels(target.name, "protocol").inc()
            raise GuardError(502, f"upstream {target.name!r} failed: {e}", "upstream_error",
                             "upstream_error") from None


@lru_cache(maxsize=256)
def _path_of(url: str) -> str:
    """The upstream URL's path, percent-encoded (``http://h:8000/v1`` -> ``/v1``); the config strips its
    trailing slash."""
    path = urlsplit(url).path
    return quote(path, safe="/%:@!$&'()*+,;=~-._")


def read_error(exc: BaseException, name: str) -> GuardError:
    """Map an error while reading an upstream body to the client error."""
    if isinstance(exc, (http1.ReadTimeout, asyncio.TimeoutError, TimeoutError)):
        telemetry.UPSTREAM_ERRORS.labels(name, "timeout").inc()
        return GuardError(504, f"upstream {name!r} stopped answering", "upstream_error", "upstream_timeout")
    telemetry.UPSTREAM_ERRORS.labels(name, "protocol").inc()
    return GuardError(502, f"upstream {name!r} failed while answering: {exc or type(exc).__name__}",
                      "upstream_error", "upstream_error")


def drop_response_headers(headers: Any) -> list[tuple[bytes, bytes]]:
    """Response headers passed back to the client: content type and a few informative ones."""
    out = []
    for k in ("content-type", "openai-processing-ms", "x-request-id", "openai-model"):
        v = headers.get(k)
        if v:
            out.append((k.encode(), v.encode("latin-1")))
    return out
