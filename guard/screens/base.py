"""What every screen takes and returns: text Segments in, a Verdict out; streams through StreamScreens."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

STATUSES = ("ok", "error", "timeout", "skipped")


@dataclass
class Segment:
    """One piece of text the model sees or says, with where it lives in the JSON body.

    Screens read and may rewrite ``text``; the API adapter writes rewritten segments back by ``path``.
    kind: content | tool_arguments | tool_result | prompt | input | system | name | tool_definition |
    response_schema | prediction | suffix | template (the fields of each API: guard.apis.fields)
    """

    text: str
    role: str
    kind: str
    path: tuple[Any, ...]


@dataclass
class Verdict:
    """A screen's result for one direction. Never carries the matched values."""

    screen: str  # pii | safety | denylist | prompt_injection
    direction: str  # prompt | response
    status: str = "ok"  # ok | error | timeout | skipped
    action: str = "allow"  # allow | block | redact | pseudonymize | mask | hash | audit_only
    blocked: bool = False
    entities: dict[str, int] = field(default_factory=dict)  # entity type -> count
    categories: list[str] = field(default_factory=list)  # e.g. Llama Guard S1..S14
    score: float | None = None
    latency_ms: float = 0.0
    code: str = ""  # client error code when blocked: pii_blocked, unsafe_content, secret_blocked, screen_error
    message: str = ""  # client-safe explanation (never values)
    modified: bool = False  # the screen rewrote text
    fields: list[str] = field(default_factory=list)  # Segment kinds where it found something (provenance)
    sent_before_stop: int | None = None  # a stream cut after its text went out: characters already sent

    def to_audit(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "name": self.screen,
            "direction": self.direction,
            "status": self.status,
            "action": self.action,
            "blocked": self.blocked,
            "latency_ms": round(self.latency_ms, 3),
        }
        if self.entities:
            d["entities"] = dict(self.entities)
        if self.categories:
            d["categories"] = list(self.categories)
        if self.score is not None:
            d["score"] = round(float(self.score), 6)
        if self.code:
            d["code"] = self.code
        if self.fields:
            d["fields"] = list(self.fields)
        if self.sent_before_stop is not None:
            d["sent_before_stop"] = self.sent_before_stop
        return d


class PromptScreen(Protocol):
    name: str

    async def screen_prompt(self, segments: list[Segment], ctx: dict[str, Any]) -> Verdict:
        """Inspect (and possibly rewrite in place) the prompt segments. ``ctx`` is per-request private state
        (e.g. the pseudonym map), never logged or audited."""


class ResponseScreen(Protocol):
    name: str

    async def screen_response(self, segments: list[Segment], prompt: list[Segment], ctx: dict[str, Any]) -> Verdict:
        """Inspect (and possibly rewrite in place) a whole, non-streamed answer."""

    def open_stream(self, prompt: list[Segment], ctx: dict[str, Any], kind: str = "content") -> StreamScreen:
        """A fresh per-channel stream screen (one per choice and per kind of text: ``content`` or
        ``tool_arguments``)."""


@dataclass
class StreamStep:
    release: str = ""  # text that may go to the client now
    stop: Verdict | None = None  # set when the stream must end (content_filter)


class StreamScreen(Protocol):
    """``verdict`` (attribute or property, optional): what the stream found so far, for the audit record."""

    async def feed(self, text: str) -> StreamStep: ...

    async def finish(self) -> StreamStep: ...


@dataclass
class ScreenSet:
    """The screens of one profile, as the pipeline runs them (guard.screens.profiles builds them)."""

    prompt: list[PromptScreen] = field(default_factory=list)
    response: list[ResponseScreen] = field(default_factory=list)
    stream_screens: bool = True  # False when every response screen only records (audit_only)
