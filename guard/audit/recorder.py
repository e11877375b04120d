"""JournalRecorder: the pipeline's ``Recorder`` (guard.pipeline) written into the signed journal.

``started`` returns once ``exchange.started`` is durable (JournalError otherwise: the pipeline refuses
with 503); ``finished`` writes ``exchange.completed`` or ``exchange.denied`` from the outcome dict the
pipeline builds (status, reason, bytes, usage, finish_reasons, error; ``answer_text`` if the pipeline
wants the answer captured — it is hashed, redacted or kept per ``audit.capture``, never logged).
"""
from __future__ import annotations

import time
from typing import Any

from guard.audit import event as ev
from guard.audit.journal import Journal


def prompt_text(body: dict[str, Any]) -> str | None:
    """The prompt as forwarded (after screens rewrote it), for content capture; None when there is none."""
    parts: list[str] = []
    msgs = body.get("messages")
    for m in msgs if isinstance(msgs, list) else []:  # the body may be the invalid one being refused
        c = m.get("content") if isinstance(m, dict) else None
        if isinstance(c, str):
            parts.append(c)
        elif isinstance(c, list):
            parts += [p.get("text", "") for p in c if isinstance(p, dict) and isinstance(p.get("text"), str)]
    for key in ("prompt", "input", "system"):
        v = body.get(key)
        if isinstance(v, str):
            parts.append(v)
        elif isinstance(v, list):
            parts += [x for x in v if isinstance(x, str)]
    return "\n".join(parts) if parts else None


def _denial_stage(ex: Any) -> str:
    for stage, d in (("access", ex.access), ("content", ex.content)):
        effect = d.get("effect") if isinstance(d, dict) else getattr(d, "effect", None)
        if effect == "deny":
            return stage
    if any(getattr(v, "blocked", False) for v in ex.verdicts):
        return "screen"
    return "request"


class JournalRecorder:
    def __init__(self, journal: Journal, capture: ev.ContentCapture | None = None) -> None:
        self.journal = journal
        self.capture = capture or ev.ContentCapture.from_settings(journal.settings)

    def _prompt(self, ex: Any) -> str | None:
        return prompt_text(ex.body) if self.capture.level != "none" and ex.body else None

    async def started(self, ex: Any) -> None:
        await self.journal.append(ev.exchange_started(ex, self.capture, prompt=self._prompt(ex)))

    async def finished(self, ex: Any, kind: str, outcome: dict[str, Any]) -> None:
        status = int(outcome.get("status", 0) or 0) or 500
        reason = str(outcome.get("reason") or outcome.get("error_type") or "")
        if kind == "exchange.denied":
            e = ev.exchange_denied(ex, status, reason or "denied", _denial_stage(ex), self.capture, self._prompt(ex))
        else:
            finish = outcome.get("finish_reasons") or outcome.get("finish_reason")
            if isinstance(finish, (list, tuple)):
                finish = ",".join(dict.fromkeys(str(f) for f in finish if f))
            total = {"total": (time.perf_counter() - ex.started) * 1000} if getattr(ex, "started", None) else None
            e = ev.exchange_completed(
                ex, status, finish or None, int(outcome.get("bytes", 0) or 0), outcome.get("usage"), self.capture,
                prompt=self._prompt(ex), answer=outcome.get("answer_text"), latency_ms=total,
                error=reason if status >= 400 and reason else None)
        await self.journal.append(e)
