"""The Exchange: one client request, parsed once by its API adapter, read and rewritten by later stages."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from guard.attrs import Attrs
from guard.identity import Principal

# ASGI scope key (guard.server), kept as Exchange.claim: {"id": the request id the client is given, "owner":
# None, "app" or "http": who makes its one audit record}
REQUEST_KEY = "guard.request"


@dataclass(slots=True)  # slots: built once per request, and no stage can add an untyped attribute
class Exchange:
    """One request on its way through Guard.

    ``body`` is the parsed JSON body; adapters expose the screened text through ``texts()`` and write it
    back with ``set_texts()`` so screens never need to know the wire format.
    """

    request_id: str
    api: str  # openai | ollama | anthropic | responses  (wire API of the client request: guard.apis.wire)
    operation: str  # chat | completion | embeddings | models
    model: str
    path: str
    body: dict[str, Any]
    stream: bool = False
    principal: Principal | None = None
    client_ip: str = ""
    body_bytes: int = 0
    upstream: str = ""  # upstream name chosen by routing
    upstream_api: str = ""  # openai | azure-openai | ollama | anthropic
    external: bool = False
    trace_id: str = ""
    started: float = field(default_factory=time.perf_counter)
    stage_ms: dict[str, float] = field(default_factory=dict)
    stage_times: dict[str, tuple[float, float]] = field(default_factory=dict)  # perf_counter start, end
    # Filled by later stages.
    access: Any = None  # policy Decision
    content: Any = None  # policy Decision
    verdicts: list[Any] = field(default_factory=list)  # screen Verdicts
    profile: str = "default"  # screening profile chosen by policy
    # The request path's own bookkeeping (guard.pipeline, guard.stages).
    claim: dict[str, Any] | None = None  # the scope's REQUEST_KEY entry: the request id and its record's owner
    span: Any = None  # the exchange's trace span (guard.tracing.Tracing), None when not traced or sampled out
    wall_ns: int = 0  # wall clock at arrival, for the span's stage children
    traceparent: str = ""  # what goes upstream in ``traceparent`` when tracing made one
    model_label: str | None = None  # the ``model`` metric label (None: "other", or "" before a model is known)
    policy_obj: Attrs | None = None  # the resource attributes both decisions read, made once
    audit_started: bool = False  # ``exchange.started`` is durable: the exchange's end is ``exchange.completed``
    body_changed: bool = False  # a screen rewrote the body that goes upstream
    translated: str = ""  # translation to the upstream's API (guard.apis.translate.mode), "" when none
    outcome: dict[str, Any] | None = None  # how the exchange ended, as recorded (status, reason, usage, ...)
    context: dict[str, Any] = field(default_factory=dict)  # screens' and quotas' private state (pseudonym maps)

    @property
    def params(self) -> dict[str, Any]:
        skip = {"model", "messages", "prompt", "input", "stream"}
        return {k: v for k, v in self.body.items() if k not in skip}
