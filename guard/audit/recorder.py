"""JournalRecorder: the pipeline's ``Recorder`` (guard.pipeline) written into the signed journal.

``started`` returns once ``exchange.started`` is durable (JournalError otherwise: the pipeline refuses
with 503); ``finished`` writes ``exchange.completed`` or ``exchange.denied`` from the outcome dict the
pipeline builds, durable when it returns, or with ``wait=False`` (a completion after the answer went out)
with the journal's next group commit, within ``batch_window_ms`` (status, reason, bytes, usage, finish_reasons, error;
``answer_text`` if the pipeline
wants the answer captured — it is hashed, redacted or kept per ``audit.capture``, never logged). Texts kept
(``redacted``, ``full``) are encrypted under the day's content key (guard.audit.content_keys), so that
``guard audit prune`` can delete them after ``audit.retention.content_days`` without touching the chain.
"""

from __future__ import annotations

import time
from typing import Any

from guard import heavy
from guard.audit import event as ev
from guard.audit.content_keys import ContentKeys
from guard.audit.journal import Journal
from guard.audit.logtree import origin_for

LARGE_PROMPT = 65_536  # request bodies above this (bytes) have their record's content built in a thread


def prompt_text(body: dict[str, Any], api: str = "", operation: str = "") -> str | None:
    """The prompt as forwarded (after screens rewrote it), for content capture; None when there is none. As
    the client API's wire module reads it (guard.apis.wire: ``prompt_text``)."""
    from guard.apis.wire import module

    return module(api).prompt_text(operation, body)


def _denial_stage(ex: Any) -> str:
    for stage, d in (("access", ex.access), ("content", ex.content)):
        effect = d.get("effect") if isinstance(d, dict) else getattr(d, "effect", None)
        if effect == "deny":
            return stage
    if any(getattr(v, "blocked", False) for v in ex.verdicts):
        return "screen"
    if ((getattr(ex, "context", None) or {}).get(ev.QUOTA) or {}).get("effect") == "deny":
        return "quota"
    return "request"


LEAF = "guard.audit.leaf"  # Exchange.context: "<log id>/<leaf index>" of the request's durable record


def receipt_header(ex: Any) -> list[tuple[bytes, bytes]]:
    """``x-guard-audit-leaf: <log id>/<leaf index>``: where the answer's record sits in the signed Merkle log
    (``GET /audit/v1/proof?log=..&index=..`` on the admin side returns its inclusion proof)."""
    leaf = (getattr(ex, "context", None) or {}).get(LEAF)
    return [(b"x-guard-audit-leaf", leaf.encode())] if leaf else []


_PROMPT = "guard.audit.prompt"  # Exchange.context: the prompt as forwarded (None when there is none)

# guard.screens.pii.transform.CTX_KEY: the request's map between personal values and their placeholders.
_PSEUDONYMS = "guard.pii.pseudonyms"


def _as_screened(ex: Any, text: str) -> str:
    """The answer as the screens left it: values the PII screen restored for the client go back to their
    placeholders (the client may see its own values again; the journal at ``redacted`` must not)."""
    ps = (getattr(ex, "context", None) or {}).get(_PSEUDONYMS)
    pairs = getattr(ps, "by_value", None) or {}
    for (_, value), placeholder in sorted(pairs.items(), key=lambda kv: -len(kv[0][1])):
        if value:
            text = text.replace(value, placeholder)
    return text


class JournalRecorder:
    def __init__(
        self, journal: Journal, capture: ev.ContentCapture | None = None, keys: ContentKeys | None = None
    ) -> None:
        self.journal = journal
        self.capture = capture or ev.ContentCapture.from_settings(journal.settings)
        if keys is None and self.capture.level in ("redacted", "full"):
            keys = ContentKeys(journal.settings.content_key_dir())
            keys.ready()  # ContentKeyError: the key folder is unusable (Guard does not start)
        self.keys = keys

    def _sealed(self, ex: Any, content: dict[str, Any] | None) -> dict[str, Any] | None:
        """Texts out of ``content`` and into its ``sealed`` ciphertext (ContentKeyError: the record fails)."""
        if content is None or self.keys is None:
            return content
        texts: dict[str, str] = {k: content.pop(k) for k in ("prompt", "answer") if k in content}
        if texts:
            content["sealed"] = self.keys.seal(texts, str(ex.request_id))
        return content

    def _prompt(self, ex: Any, stage: str = "") -> str | None:
        """The prompt as forwarded. At ``redacted`` only a prompt that passed the prompt screens (their
        rewrites applied): one refused before or by them (stage access, screen, request) was never redacted.
        At ``full`` too, a prompt a screen blocked is never stored as text (only ``hash`` keeps a trace of it):
        what a screen refused to let through must not sit in the journal instead."""
        if self.capture.level == "none" or not ex.body:
            return None
        if self.capture.level == "redacted" and stage in ("access", "screen", "request"):
            return None
        if self.capture.level == "full" and stage == "screen":
            return None
        # Built once: exchange.completed records the prompt exchange.started did (only "model" changes later).
        text = ex.context.get(_PROMPT, _PROMPT)
        if text is _PROMPT:
            text = ex.context[_PROMPT] = prompt_text(ex.body, getattr(ex, "api", ""), getattr(ex, "operation", ""))
        return text

    def _denied_content(self, ex: Any, stage: str) -> dict[str, Any] | None:
        return self._sealed(ex, self.capture.record(prompt=self._prompt(ex, stage)))  # only record: no memo

    def _answer(self, ex: Any, text: Any) -> str | None:
        """The answer as the screens left it (``full`` included: values a screen replaced by placeholders and
        restored for the client are stored as the placeholders, never as the values)."""
        if not isinstance(text, str):
            return None
        return _as_screened(ex, text) if self.capture.level in ("redacted", "full") else text

    def _leaf(self, ex: Any, sealed: Any) -> None:
        seq = sealed.get("seq") if isinstance(sealed, dict) else None
        if isinstance(seq, int) and seq > 0:
            ex.context[LEAF] = f"{origin_for(self.journal.chain)}/{seq - 1}"

    async def started(self, ex: Any) -> None:
        if getattr(ex, "body_bytes", 0) > LARGE_PROMPT:  # joining, hashing and sealing a megabyte: off the loop
            content = await heavy.run(self._started_content, ex)
        else:
            content = self._started_content(ex)
        self._leaf(ex, await self.journal.append_facts(ev.started_facts(ex, content)))

    def _started_content(self, ex: Any) -> dict[str, Any] | None:
        return self._sealed(ex, self.capture.record(prompt=self._prompt(ex), memo=ex.context))

    async def finished(self, ex: Any, kind: str, outcome: dict[str, Any], wait: bool = True) -> None:
        status = int(outcome.get("status", 0) or 0) or 500
        reason = str(outcome.get("reason") or outcome.get("error_type") or "")
        if kind == "exchange.denied":
            stage = _denial_stage(ex)
            if getattr(ex, "body_bytes", 0) > LARGE_PROMPT:
                content = await heavy.run(self._denied_content, ex, stage)
            else:
                content = self._denied_content(ex, stage)
            facts = ev.denied_facts(ex, status, reason or "denied", stage, content)
        else:
            finish = outcome.get("finish_reasons") or outcome.get("finish_reason")
            if isinstance(finish, (list, tuple)):
                finish = ",".join(dict.fromkeys(str(f) for f in finish if f))
            total = {"total": (time.perf_counter() - ex.started) * 1000} if getattr(ex, "started", None) else None
            content = self._sealed(
                ex,
                self.capture.record(
                    prompt=self._prompt(ex), answer=self._answer(ex, outcome.get("answer_text")), memo=ex.context
                ),
            )
            facts = ev.completed_facts(
                ex,
                status,
                finish or None,
                int(outcome.get("bytes", 0) or 0),
                outcome.get("usage"),
                content,
                total,
                error=reason if status >= 400 and reason else None,
            )
        sealed = await self.journal.append_facts(facts, wait=wait)
        if wait and kind == "exchange.denied":  # a refusal's own record is the one its answer points to
            self._leaf(ex, sealed)
