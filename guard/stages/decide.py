"""The decisions before anything goes upstream: access (policy), the prompt screens (screens_prompt), the
content decision with the screens' labels (content) and quota admission (quota)."""

from __future__ import annotations

import asyncio
import functools
from datetime import datetime
from typing import Any, ClassVar

from guard import heavy, telemetry
from guard.apis import set_text
from guard.errors import GuardError, forbidden, policy_violation, unavailable
from guard.exchange import Exchange
from guard.policy.attributes import WEEKDAYS, Attrs
from guard.quota import hook as quota
from guard.screens import budget
from guard.screens.base import Segment
from guard.stages.base import LARGE_BODY, SKIPPED, Flow, Services

_second: tuple[Any, ...] = (None, "", 0, "")  # the last whole second seen, its time, hour and weekday: one
# strftime a second; replaced whole, so threads (one Guard per thread in tests) never read a mix of two


def policy_env(ex: Exchange, now: datetime) -> dict[str, Any]:
    global _second
    second = int(now.timestamp())
    key, t, hour, weekday = _second
    if key != second:
        _second = key, t, hour, weekday = second, now.strftime("%Y-%m-%dT%H:%M:%SZ"), now.hour, WEEKDAYS[now.weekday()]
    return {
        "time": t,
        "hour": hour,
        "weekday": weekday,
        "client_ip": ex.client_ip,
        "body_bytes": ex.body_bytes,
        "stream": ex.stream,
    }


def _obj(ex: Exchange) -> Attrs:
    """The request's resource attributes, made once for both decisions (they do not change between them)."""
    obj = ex.policy_obj
    if obj is None:
        obj = ex.policy_obj = Attrs(
            {
                "model": ex.model,
                "upstream": ex.upstream,
                "api": ex.upstream_api or ex.api,
                "wire": ex.api,
                "external": ex.external,
                "path": ex.path,
            }
        )
    return obj


def write_back(body: dict[str, Any], segs: list[Segment], before: list[str]) -> bool:
    """Put the segments screens rewrote back into the JSON body; True if any changed. A ``JSON_MARK`` path
    marks text that stands for a JSON value (a schema, Ollama tool-call arguments) and is written back
    parsed; a rewrite that left it invalid JSON refuses the request (it cannot be forwarded as judged)."""
    changed = False
    for seg, old in zip(segs, before, strict=False):
        if seg.text != old:
            changed = True
            try:
                set_text(body, seg.path, seg.text)
            except ValueError:
                raise policy_violation(
                    "a screen's rewrite of a JSON field is no longer JSON; request refused", "rewrite_failed"
                ) from None
    return changed


class Access:
    """The access decision (casbin ABAC: who, which model, which operation); deny -> 403 access_denied. The
    decision names the screening profile."""

    name: ClassVar[str] = "policy"
    timed: ClassVar[bool] = True

    def __init__(self, svc: Services) -> None:
        self._policy, self._clock = svc.policy, svc.clock

    def run(self, flow: Flow) -> None:  # never awaits: the driver calls it as a plain function
        ex = flow.ex
        flow.env = env = policy_env(ex, self._clock())
        assert ex.principal is not None
        ex.access = d = self._policy.decide_access(ex.principal.policy_view, _obj(ex), ex.operation, env)
        if d.effect != "allow":
            raise forbidden("access denied by policy")  # which rule: the audit record (decisions.access)
        if flow.refusal is not None:
            raise flow.refusal
        ex.profile = getattr(d, "profile", None) or "default"


class PromptScreens:
    """The prompt screens of the profile the policy chose, concurrently; their rewrites merged in profile
    order. A block is 400 (a policy violation), a screen that could not answer 503 screen_error."""

    name: ClassVar[str] = "screens_prompt"
    timed: ClassVar[bool] = True

    def __init__(self, svc: Services) -> None:
        self._screens, self._budget_ms = svc.screens, svc.config.limits.screen_budget_ms

    async def run(self, flow: Flow) -> bool | None:
        ex = flow.ex
        flow.screens = screens = self._screens(ex.profile)
        writers = [not getattr(s, "reads_only", False) for s in screens.prompt]
        if ex.body_bytes <= LARGE_BODY:
            segs, before, copies = _segments(flow.wire, ex.operation, ex.body, writers)
        else:
            segs, before, copies = await heavy.run(_segments, flow.wire, ex.operation, ex.body, writers)
        flow.prompt = segs
        if not screens.prompt:
            return SKIPPED  # no screen to time
        verdicts = list(
            await budget.run(
                lambda: asyncio.gather(
                    *(scr.screen_prompt(c, ex.context) for scr, c in zip(screens.prompt, copies, strict=False))
                ),
                self._budget_ms,
            )
        )
        large = ex.body_bytes > LARGE_BODY
        for i, (scr, copy) in enumerate(zip(screens.prompt, copies, strict=False)):
            if any(v.blocked for v in verdicts):
                break
            if copy is segs:  # a screen that only reads, or the one screen that rewrote ``segs`` itself
                continue
            edits = await heavy.run(_edits, copy, before) if large else _edits(copy, before)
            if any(segs[k].text != before[k] for k, _ in edits):  # two screens rewrote one text: redo in order
                verdicts[i] = await budget.run(functools.partial(scr.screen_prompt, segs, ex.context), self._budget_ms)
            else:
                for k, text in edits:
                    segs[k].text = text
        if large:  # the screens' copies: freed in pieces in the heavy thread, not in one go on the event loop
            handed, copies, copy = copies, [], []
            heavy.release([handed])
            del handed
        ex.verdicts.extend(verdicts)
        for v in verdicts:
            if v.blocked and v.code == "screen_error":  # the screen could not do its job: fail closed
                telemetry.child(telemetry.FAIL_CLOSED, v.screen).inc()
                raise unavailable(v.message or f"the {v.screen} screen is unavailable; request refused", "screen_error")
            if v.blocked:
                raise policy_violation(
                    v.message or f"prompt blocked by the {v.screen} screen", v.code or f"{v.screen}_blocked"
                )
        if await heavy.run(write_back, ex.body, segs, before) if large else write_back(ex.body, segs, before):
            ex.body_changed = True
        return None


def _edits(copy: list[Segment], before: list[str]) -> list[tuple[int, str]]:
    """What one screen rewrote in its copy of the segments: (index, new text)."""
    return [(k, c.text) for k, c in enumerate(copy) if c.text != before[k]]


class Content:
    """The same policy with the screens' labels (env.pii, env.safety, ...); deny -> 403 content_denied."""

    name: ClassVar[str] = "content"
    timed: ClassVar[bool] = False

    def __init__(self, svc: Services) -> None:
        self._policy = svc.policy

    def run(self, flow: Flow) -> None:  # never awaits: the driver calls it as a plain function
        ex = flow.ex
        pii = sorted({t for v in ex.verdicts if v.screen == "pii" for t in v.entities})
        cats = sorted({c for v in ex.verdicts if v.screen == "safety" for c in v.categories})
        scores = [v.score for v in ex.verdicts if v.screen == "safety" and v.score is not None]
        env = {**(flow.env or {}), "pii": pii, "safety": cats, "safety_score": max(scores) if scores else 0.0}
        assert ex.principal is not None
        ex.content = d = self._policy.decide_content(ex.principal.policy_view, _obj(ex), ex.operation, env)
        if d.effect != "allow":
            raise GuardError(
                403, "content denied by policy", "guard_policy_violation", "content_denied", outcome="denied"
            )  # which rule: the audit record (decisions.content)


class Quota:
    """Quota admission (guard.quota) for the tier the policy chose: requests, tokens, concurrency; over ->
    429 rate_limit_exceeded. Nothing to do when no ``quotas:`` are configured."""

    name: ClassVar[str] = "quota"
    timed: ClassVar[bool] = False

    def __init__(self, svc: Services) -> None:
        self._quotas = svc.quotas
        self.active = svc.quotas is not None  # without quotas the driver leaves this stage out

    async def run(self, flow: Flow) -> None:
        if self._quotas is not None:  # a refusal here is an exchange.denied (stage quota)
            await quota.admit(self._quotas, flow.ex, flow.prompt or [])


def _segments(api: Any, operation: str, body: Any, writers: list[bool]) -> tuple[list[Segment], list[str], list[Any]]:
    """The prompt's segments, their texts as read, and per prompt screen (``writers``: whether it may rewrite)
    the segments it screens. Screens run concurrently: each that may rewrite works on its own copy, and
    their rewrites are merged in profile order; a screen that only reads (Llama Guard, the injection
    classifier) reads ``segs`` itself, which no screen changes while they run. A single screen has nothing
    to merge with: it screens ``segs`` itself. No copy is made for fewer than two screens, or for one
    rewriting screen among readers (it still gets a copy: the readers must see the text as sent)."""
    segs = api.prompt_segments(operation, body)
    if not writers:
        return segs, [], []
    if len(writers) == 1:
        return segs, [s.text for s in segs], [segs]
    return (
        segs,
        [s.text for s in segs],
        [[Segment(s.text, s.role, s.kind, s.path) for s in segs] if w else segs for w in writers],
    )
