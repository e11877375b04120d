"""Where quotas meet the request path (guard.pipeline): admission after the content decision, the
rate-limit headers, token accounting at completion, settlement after the answer is out."""

from __future__ import annotations

import json
import math
from typing import Any

from guard.apis.wire import module
from guard.errors import GuardError
from guard.quota.core import Quotas, Refusal, Ticket
from guard.quota.memory import Admission, CounterState
from guard.quota.metrics import TOKENS, count

TICKET = "guard.quota.ticket"  # Exchange.context: the admitted Ticket
AUDIT = "guard.quota.audit"  # Exchange.context: the quota decision as the audit record shows it
STRIP_USAGE = "guard.quota.strip_usage"  # Exchange.context: Guard asked for the stream's usage chunk
METER = "guard.quota.meter"  # Exchange.context: the stream's guard.quota.stream.StreamMeter
_RL = ("x-ratelimit-limit-", "x-ratelimit-remaining-", "x-ratelimit-reset-")


def principal_key(p: Any) -> str:
    """Whose counters: the SPIFFE ID, else the certificate subject, else the CN (a renewed certificate keeps
    its counters); clients without a certificate share ``anonymous``."""
    if p is None:
        return "anonymous"
    return p.spiffe_id or p.subject or p.cn or "anonymous"


def estimate_tokens(chars: int) -> int:
    """The documented heuristic where no tokenizer is at hand: one token per four characters, rounded up."""
    return math.ceil(chars / 4) if chars > 0 else 0


async def admit(quotas: Quotas, ex: Any, prompt: list[Any]) -> None:
    """Admit the exchange or raise its 429/503 (an ``exchange.denied`` record with tier and counter)."""
    d = ex.access
    tier = getattr(d, "quota_tier", None) or "default"
    chars = 0
    for s in prompt:
        chars += len(s.text)
    prompt_tokens = -(-chars // 4)  # estimate_tokens
    wire = module(ex.api)
    answer = wire.completion_limit(ex.body)
    if answer is None:
        answer = quotas.completion_estimate
    ctx = ex.context
    ctx["guard.quota.prompt_estimate"] = prompt_tokens
    if quotas.local is not None:  # the in-process backend: no coroutine
        res = quotas.admit_now(
            principal_key(ex.principal), tier, prompt_tokens + answer, bool(ex.stream), ex.model, answer
        )
    else:
        res = await quotas.admit(
            principal_key(ex.principal),
            tier,
            prompt_tokens + answer,
            bool(ex.stream),
            model=ex.model,
            answer_estimate=answer,
        )
    if isinstance(res, Refusal):
        ctx[AUDIT] = {
            "tier": res.tier,
            "effect": "deny",
            "counter": res.counter,
            **({"backend": "unavailable"} if res.status == 503 else {}),
        }
        e = GuardError(
            res.status,
            res.message,
            "rate_limit_error" if res.status == 429 else "service_unavailable",
            res.code,
            outcome="denied" if res.status == 429 else "fail_closed",
        )
        e.headers = tuple(refusal_headers(res))
        raise e
    ctx[TICKET] = res
    ctx[AUDIT] = (
        {"tier": res.tier, "effect": "allow", "backend": "unavailable"}
        if res.admission is None
        else {"tier": res.tier, "effect": "allow"}
    )
    if ex.stream and quotas.counts_tokens(tier) and wire.ask_stream_usage(ex.operation, ex.body):
        # the upstream's usage settles the stream; the client gets its stream as it asked for it
        ex.body_changed = True
        ctx[STRIP_USAGE] = True


def account(ex: Any, outcome: dict[str, Any]) -> None:
    """At completion, before the record is written: the tokens to settle, from the upstream's usage or,
    without it, estimated (prompt: 4 characters a token; answer: 4 characters of a metered stream's text a
    token, else 4 bytes of the answer body a token, an over-estimate since framing counts) and marked
    ``usage_estimated`` in the audit record. A metered stream that ended early (budget, upstream fault)
    is charged for the text it released."""
    ticket: Ticket | None = ex.context.get(TICKET)
    if ticket is None:
        return
    u = outcome.get("usage")
    tokens: tuple[int, int]
    if u:
        # a stream's tail may carry only the answer's count (Anthropic's message_delta): the prompt's estimate
        # stands for an input count the usage does not give
        i = u.get("input_tokens")
        tokens = (
            int(i or 0) if i is not None else int(ex.context.get("guard.quota.prompt_estimate", 0)),
            int(u.get("output_tokens", 0) or 0),
        )
        if ticket.plan is not None:
            ticket.plan.tokens_usage.inc(tokens[0] + tokens[1])
        else:
            count(TOKENS, ticket.tier, "usage", by=tokens[0] + tokens[1])
    elif (status := int(outcome.get("status") or 0)) == 200 or status == 499 or METER in ex.context:
        # a stream that started: its text was made
        meter = ex.context.get(METER)
        tokens = (
            int(ex.context.get("guard.quota.prompt_estimate", 0)),
            meter.final_tokens() if meter is not None else estimate_tokens(int(outcome.get("bytes", 0) or 0)),
        )
        outcome["usage"] = {"input_tokens": tokens[0], "output_tokens": tokens[1]}
        audit = ex.context.get(AUDIT)
        if audit is not None:
            ex.context[AUDIT] = {**audit, "usage_estimated": True}
        count(TOKENS, ticket.tier, "estimated", by=sum(tokens))
    else:
        tokens = (0, 0)  # the upstream refused or failed before answering: nothing was generated
    ex.context["guard.quota.tokens"] = tokens


async def finish(quotas: Quotas, ex: Any) -> None:
    """After the answer is out: settle the tokens and free the slots (every path, errors included)."""
    ticket: Ticket | None = ex.context.get(TICKET)
    if ticket is None or ticket.done:
        return
    tokens = ex.context.get("guard.quota.tokens")
    if tokens is None:  # ended by an error before completion: no answer, nothing generated
        out = ex.outcome or {}
        tokens = (0, 0) if int(out.get("status") or 0) != 499 else None
    if quotas.local is not None:
        quotas.settle_now(ticket, tokens)
    else:
        await quotas.settle(ticket, tokens)


# --- headers -----------------------------------------------------------------------------------------


def _duration(s: float) -> str:
    """OpenAI's reset format: ``20ms``, ``1.5s``, ``6m0s``."""
    if s < 1:
        return f"{max(0, round(s * 1000))}ms"
    if s < 60:
        return f"{round(s, 3):g}s"
    m, sec = divmod(round(s), 60)
    return f"{m // 60}h{m % 60}m{sec}s" if m >= 60 else f"{m}m{sec}s"


_FAMILY = {
    "requests_per_minute": "requests",
    "tokens_per_minute": "tokens",
    "tokens_per_day": "tokens",
    "tokens_per_month": "tokens",
}


def _families(adm: Admission | None, refused: str = "") -> dict[str, CounterState]:
    """The counter that stands for ``requests`` and for ``tokens`` in the headers: the refusing one, else
    the per-minute one, else the shortest period configured (counters come in that order)."""
    out: dict[str, CounterState] = {}
    if adm is None:
        return out
    for name, st in adm.counters.items():
        fam = _FAMILY.get(name)
        if fam is not None and (fam not in out or name == refused):
            out[fam] = st
    return out


_NAMES = {fam: tuple(f"{p}{fam}".encode() for p in _RL) for fam in ("requests", "tokens")}
_REMAINING = frozenset(names[1] for names in _NAMES.values())


def _family_headers(fam: str, st: CounterState) -> list[tuple[bytes, bytes]]:
    lim, rem, reset = _NAMES[fam]
    s = st.reset_s
    return [
        (lim, b"%d" % st.limit),
        (rem, b"%d" % st.remaining),
        (reset, b"%dms" % max(0, round(s * 1000)) if s < 1 else _duration(s).encode()),
    ]


def refusal_headers(r: Refusal) -> list[tuple[bytes, bytes]]:
    retry = max(r.retry_after_s, 0.001)
    out = [
        (b"retry-after", str(max(1, math.ceil(retry))).encode()),
        (b"retry-after-ms", str(math.ceil(retry * 1000)).encode()),
    ]
    for fam, st in _families(r.admission, r.counter).items():
        out += _family_headers(fam, st)
    return out


def merge_headers(ex: Any, upstream: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """An admitted answer: the upstream's rate-limit headers, except a family (requests, tokens) where Guard's
    own counter has less left; then Guard's values are sent for it."""
    ticket: Ticket | None = ex.context.get(TICKET)
    if ticket is None or ticket.admission is None or not ticket.plan.headers:
        return upstream
    counters = ticket.admission.counters
    theirs: dict[bytes, bytes] | None = None
    for k, v in upstream:
        if k in _REMAINING:
            theirs = theirs or {}
            theirs[k] = v
    out = list(upstream)
    for counter, limit, names in ticket.plan.headers:
        st = counters.get(counter)
        if st is None:
            continue
        if theirs is not None and (their := theirs.get(names[1])) is not None:
            try:
                if st.remaining >= int(their):
                    continue  # the upstream's limit is the stricter one: its values stand
            except ValueError:
                pass
            out = [(k, v) for k, v in out if k not in names]
        s = st.reset_s
        out += (
            (names[0], limit),
            (names[1], b"%d" % st.remaining),
            (names[2], b"%dms" % round(s * 1000) if s < 1 else _duration(s).encode()),
        )
    return out


def _has_usage(data: bytes) -> bool:
    """A usage object (not ``null``) may be in ``data``; a spelling missed here only means the chunk reaches
    the client, whose stream's usage the tail scan still finds."""
    return b'"usage":{' in data or b'"usage": {' in data


class UsageStripper:
    """The unscreened stream path: passes the stream's bytes through, minus the usage chunk Guard asked for
    (``ask_stream_usage``), whose usage it keeps for accounting."""

    def __init__(self, api: str) -> None:
        self.wire = module(api)
        self._buf = b""
        self.usage: dict[str, int] | None = None

    def feed(self, data: bytes) -> bytes:
        sep = self.wire.SEP
        buf = self._buf + data
        end = buf.rfind(sep)
        if end < 0:
            if len(buf) > 65536:  # no event boundary this far (not the API's framing): pass it on as it is
                self._buf = b""
                return buf
            self._buf = buf
            return b""
        end += len(sep)
        whole, self._buf = buf[:end], buf[end:]
        if not _has_usage(whole):  # chunks carry "usage": null when usage is asked for: those pass untouched
            return whole
        out = []
        wire = self.wire
        for ev in whole.split(sep)[:-1]:
            if _has_usage(ev) and (payload := wire.payload(ev)) is not None:
                try:
                    chunk = json.loads(payload)
                except (ValueError, RecursionError):
                    chunk = None
                if isinstance(chunk, dict) and wire.usage_only(chunk):
                    self.usage = wire.usage(chunk)
                    continue
            out.append(ev + sep)
        return b"".join(out)

    def finish(self) -> bytes:
        rest, self._buf = self._buf, b""
        return rest
