"""A stream's answer tokens counted while it is relayed, against its tier's token budget.

Admission reserved the prompt and the answer's ``max_tokens`` (or ``quotas.completion_estimate``). Past that
allowance, the meter charges the backend for more, ``step`` tokens at a time (one backend call per step, so
the concurrent requests of the principal see the stream's use as it grows); when a counter cannot give more,
the stream ends with the wire API's error event (``StreamExhausted``).

Counting is cheap on purpose: the released bytes are only added up until they could, at one token per byte
of the documented four characters a token, cross the allowance; only then are the pending events parsed for
their text (the estimate) and their upstream usage, when an event carries one (which then counts instead,
where it is larger). A stream far from its allowance is never parsed by the meter. The client's wire module
(guard.apis.wire) splits and reads the events: OpenAI chunks and their usage chunk, Ollama lines and their
counts, Anthropic Messages events (the running ``output_tokens`` of ``message_start``/``message_delta``),
Responses events (the usage of ``response.completed``).
"""

from __future__ import annotations

import json
from typing import Any

from guard.apis.wire import module
from guard.errors import GuardError
from guard.quota.core import Quotas, Refusal, Ticket
from guard.quota.hook import AUDIT, METER, TICKET, estimate_tokens
from guard.quota.metrics import DECISIONS, count

REASON = "quota_exhausted_mid_stream"  # the outcome reason in the audit record
MIN_STEP, MAX_STEP = 16, 4096


class StreamExhausted(Exception):
    """The tier's budget ran out mid-answer: ``error`` is what the client's stream ends with."""

    def __init__(self, refusal: Refusal) -> None:
        super().__init__(refusal.message)
        self.refusal = refusal
        self.error = GuardError(
            refusal.status,
            refusal.message,
            "rate_limit_error" if refusal.status == 429 else "service_unavailable",
            refusal.code,
        )


def step_for(quotas: Quotas, tier: str) -> int:
    """Tokens charged per extension: a twentieth of the tier's smallest token limit, within 16..4096."""
    limits = [limit for _, limit, _, kind in quotas._plan[tier][0] if kind == "tokens"]
    return max(MIN_STEP, min(MAX_STEP, min(limits) // 20)) if limits else 256


class StreamMeter:
    def __init__(self, quotas: Quotas, ticket: Ticket, api: str, operation: str, prompt_estimate: int) -> None:
        self.quotas, self.ticket, self.operation = quotas, ticket, operation
        self.wire = module(api)  # the client's wire API: how its events are split and read
        self.allowed = max(0, ticket.reserved - prompt_estimate)  # answer tokens paid for so far
        self.step = step_for(quotas, ticket.tier)
        self.chars = 0  # characters of answer text in the parsed events
        self.usage_out = 0  # the largest output-token count an event's usage reported
        self._pending = bytearray()  # released bytes not parsed yet

    @property
    def tokens(self) -> int:
        """Answer tokens of the parsed events: the upstream's count where it reported a larger one."""
        return max(estimate_tokens(self.chars), self.usage_out)

    def feed(self, data: bytes) -> bool:
        """Note released bytes; True when they may have crossed the allowance (then ``check``)."""
        self._pending += data
        return self.tokens + len(self._pending) // 4 + 1 > self.allowed

    async def check(self) -> None:
        """Parse the pending events; charge the backend for what exceeds the allowance, or raise
        ``StreamExhausted`` when the tier cannot give it."""
        self._parse()
        over = self.tokens - self.allowed
        if over <= 0:
            return
        want = max(over, self.step)
        refusal = await self.quotas.extend(self.ticket, want)
        if refusal is not None and refusal.status == 429 and want > over:
            refusal = await self.quotas.extend(self.ticket, over)  # the step is too much; what was used may fit
            want = over
        if refusal is not None:
            if refusal.status == 429:
                count(DECISIONS, self.ticket.tier, "exhausted_mid_stream", refusal.counter)
            raise StreamExhausted(refusal)
        self.allowed += want

    def final_tokens(self) -> int:
        """At the end, without the upstream's usage: the estimate over everything released."""
        self._parse(everything=True)
        return self.tokens

    def _parse(self, everything: bool = False) -> None:
        buf = self._pending
        wire = self.wire
        if everything and buf and not buf.endswith(wire.SEP):
            buf += wire.SEP
        for raw in wire.split(buf):
            payload = wire.payload(raw)
            if payload is not None and not wire.is_end(payload):
                self._chunk(payload)
        if everything and buf:  # an unfinished event at the end: every byte counts as a character
            self.chars += len(buf)
            buf.clear()

    def _chunk(self, payload: bytes) -> None:
        try:
            chunk = json.loads(payload)
        except (ValueError, RecursionError):
            self.chars += len(payload)
            return
        if not isinstance(chunk, dict):
            return
        wire = self.wire
        for _, _, text in wire.chunk_channels(self.operation, chunk):
            self.chars += len(text)
        u = wire.usage(chunk)
        if u and u.get("output_tokens", 0) > self.usage_out:
            self.usage_out = int(u["output_tokens"])


def meter(quotas: Quotas | None, ex: Any) -> StreamMeter | None:
    """The meter of an admitted stream whose tier counts tokens, else None."""
    ticket: Ticket | None = ex.context.get(TICKET)
    if quotas is None or ticket is None or ticket.unavailable or not ticket.reserved:
        return None
    m = StreamMeter(quotas, ticket, ex.api, ex.operation, int(ex.context.get("guard.quota.prompt_estimate", 0)))
    ex.context[METER] = m
    return m


def record(ex: Any, e: StreamExhausted) -> dict[str, Any]:
    """The audit record's quota decision and the outcome of a stream cut short by its budget."""
    audit = ex.context.get(AUDIT) or {}
    ex.context[AUDIT] = {
        **audit,
        "counter": e.refusal.counter,
        "exhausted_mid_stream": True,
        **({"backend": "unavailable"} if e.refusal.status == 503 else {}),
    }
    return {"status": e.refusal.status, "reason": REASON if e.refusal.status == 429 else e.refusal.code}
