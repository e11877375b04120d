"""What every stage of the request path shares: the services it uses, the typed state it reads and fills in
(``Flow``), the ``Stage`` shape, stage timing, and the small answers (raw bodies, errors) stages send."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from types import ModuleType
from typing import Any, ClassVar, Protocol

from guard import telemetry
from guard.apis.wire import module
from guard.attrs import Attrs
from guard.audit import overlap
from guard.audit.recorder import receipt_header
from guard.config import Config, Route, Upstream
from guard.errors import GuardError
from guard.exchange import Exchange
from guard.ratelog import Throttled
from guard.screens.base import ScreenSet, Segment
from guard.tracing import Tracing
from guard.upstream import Upstreams

log = logging.getLogger("guard.pipeline")
Send = Callable[[dict[str, Any]], Awaitable[None]]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Attributes = Mapping[str, Any] | Attrs  # what the policy engine reads (guard.policy.holder)
throttled = Throttled(log)  # audit failures repeat for every request while the disk is full


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
    tracing: Tracing | None = None
    quotas: Any = None  # guard.quota.Quotas when ``quotas:`` is configured


LARGE_BODY = 65_536  # bodies larger than this are parsed, cut into segments and serialised in a worker thread


@dataclass(slots=True)
class Flow:
    """One request on its way through the stages: the Exchange (the facts the audit record reads) and what
    the stages hand each other. Each field is filled in by the stage named beside it."""

    ex: Exchange
    scope: dict[str, Any]
    receive: Receive
    send: Send
    wire: ModuleType | None = None  # parse: the client API's module (guard.apis.wire)
    unknown: Any = None  # parse: fields the strict reader did not know (guard.apis.fields.check)
    route: Route | None = None  # route
    chain: tuple[Upstream, ...] = ()  # route: the route's upstream and its fallbacks
    modes: tuple[str, ...] = ()  # route: per upstream of ``chain``, its translation (guard.apis.translate.mode)
    refusal: Exception | None = None  # route: why the route cannot take this request, raised by policy once
    # it allows the request (a client the policy denies learns nothing of the routing table from it)
    env: dict[str, Any] | None = None  # policy: the environment both decisions read
    screens: ScreenSet | None = None  # screens_prompt: the screens of the profile the policy chose
    prompt: list[Segment] | None = None  # screens_prompt: the prompt's text segments
    response: Any = None  # upstream_first_byte: the upstream's response (guard.http1.Response)


class Stage(Protocol):
    """A step of the request path. ``timed``: the driver records its duration under ``name``, unless ``run``
    returned ``SKIPPED`` (it had nothing to do, e.g. a profile without prompt screens). A stage may set
    ``active = False`` when the configuration gives it nothing to do on any request: it is not run."""

    name: ClassVar[str]
    timed: ClassVar[bool]

    def run(self, flow: Flow) -> bool | Awaitable[bool | None] | None:
        """A coroutine function, or a plain one for a stage that never awaits (the driver calls it directly)."""


SKIPPED = False  # what a stage's ``run`` returns when it had nothing to do: no duration is recorded


def record(ex: Exchange, name: str, t0: float) -> None:
    """A stage's duration: ``Exchange.stage_ms`` (audit), ``stage_times`` (trace spans) and the histogram."""
    t1 = time.perf_counter()
    ex.stage_ms[name] = (t1 - t0) * 1000
    ex.stage_times[name] = (t0, t1)
    telemetry.stage(name).observe(t1 - t0)


def header(headers: list[tuple[bytes, bytes]], name: bytes) -> bytes | None:
    for k, v in headers:
        if k == name:
            return v
    return None


def ours(ex: Exchange) -> bool:
    """Claim the request's one record for the app; False when the HTTP layer already made it (an invalid
    body refused by guard.server under this request's id): the app then neither records nor answers."""
    req = ex.claim
    if req is None:
        return True
    if req["owner"] is None:
        req["owner"] = "app"
    return bool(req["owner"] == "app")


def model_label(ex: Exchange) -> str:
    if ex.model_label is not None:
        return ex.model_label
    return "other" if ex.model else ""


def decision(ex: Exchange) -> str:
    for d in (ex.content, ex.access):
        if d is not None:
            return str(d.effect)
    return "none"


async def send_head(send: Send, ex: Exchange, status: int, headers: list[tuple[bytes, bytes]]) -> None:
    """The one place an exchange's response head is written: once its ``exchange.started`` is durable
    (``audit.start_record: overlap``: guard.audit.overlap; a record that failed turns the answer into 503
    ``audit_unavailable``), with Guard's own headers: ``x-guard-request-id`` and the record's receipt
    (``x-guard-audit-leaf``, known only now)."""
    try:
        await overlap.settle(ex)
    except Exception:
        raise overlap.refusal() from None
    own = [(b"x-guard-request-id", ex.request_id.encode()), *receipt_header(ex)]
    await send({"type": "http.response.start", "status": status, "headers": [*headers, *own]})


async def send_raw(send: Send, status: int, headers: list[tuple[bytes, bytes]], body: bytes, ex: Exchange) -> None:
    await send_head(send, ex, status, [*headers, (b"content-length", str(len(body)).encode())])
    await send({"type": "http.response.body", "body": body, "more_body": False})


async def send_json(send: Send, status: int, body: bytes, ex: Exchange) -> None:
    await send_raw(send, status, [(b"content-type", b"application/json")], body, ex)


async def send_error(send: Send, e: GuardError, ex: Exchange) -> None:
    """The error in the client's API's own shape (OpenAI's before the API is known)."""
    headers = [(b"content-type", b"application/json"), *e.headers]
    await send_raw(send, e.status, headers, module(ex.api).error_body(e), ex)
