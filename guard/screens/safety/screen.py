"""The safety screen: Llama Guard on prompts, whole answers and streamed answers (in windows).

Prompts longer than ``prompt.window_chars`` are judged in windows of bounded size, prepared off the event loop;
answers are judged with a bounded part of the prompt (guard/screens/safety/windows.py).

Streams: text is released only after the window holding it was judged safe (a step that stops may still
carry ``release``: the windows judged safe before the unsafe one); windows are cut at a sentence
end where possible and judged together with the answer said so far (up to ``context_chars``). In
``audit_only`` mode text is released at once and windows are judged in the background, for the record.

``stream_mode`` (response side) chooses between the two for ``action: block``: ``hold`` (the default, fail
safe: a window's text waits for its verdict, so the added lag is one verdict per window) or ``monitor``
(text goes out at once, windows are judged behind it, and an unsafe verdict cuts the stream with
``finish_reason: content_filter``; the verdict's ``sent_before_stop`` says how many characters had
already gone out). A monitor judgement that fails is raised at the next feed, so the fail mode applies.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Sequence
from typing import Any, Protocol

import aiohttp

from guard import heavy
from guard.screens import budget
from guard.screens.base import Segment, StreamStep, Verdict
from guard.screens.safety import windows
from guard.screens.safety.llama_guard import Judgement, Taxonomy, Turn, conversation
from guard.screens.safety.settings import (
    LocalBackend,
    OllamaBackend,
    PromptSide,
    ResponseSide,
    SafetyProfile,
    SafetySettings,
)


class Judge(Protocol):
    async def classify(self, turns: Sequence[Turn]) -> Judgement: ...

    async def close(self) -> None: ...


def make_judge(profile: SafetyProfile, session: aiohttp.ClientSession | None = None) -> Judge:
    """The backend a profile names. ``local`` imports torch only when used."""
    tax, b = profile.taxonomy(), profile.backend
    if isinstance(b, LocalBackend):
        from guard.screens.safety.local import LocalJudge

        return LocalJudge(b, tax, profile.threshold)
    from guard.screens.safety.remote import OllamaJudge, OpenAIJudge

    if isinstance(b, OllamaBackend):
        return OllamaJudge(b, tax, profile.threshold, session)
    return OpenAIJudge(b, tax, profile.threshold, session)


class SafetyScreen:
    """PromptScreen and ResponseScreen for one safety profile. Wrap it in failmode.GuardedScreen."""

    name = "safety"
    reads_only = True  # judges the prompt, never rewrites a segment (guard.stages.decide: no copy for it)

    def __init__(
        self, profile: SafetyProfile, judge: Judge | None = None, session: aiohttp.ClientSession | None = None
    ) -> None:
        self.profile = profile
        self.taxonomy: Taxonomy = profile.taxonomy()
        self.judge = judge or make_judge(profile, session)

    @classmethod
    def from_settings(
        cls, settings: SafetySettings, profile: str | None = None, session: aiohttp.ClientSession | None = None
    ) -> SafetyScreen:
        return cls(settings.profile(profile), session=session)

    async def close(self) -> None:
        await self.judge.close()

    async def screen_prompt(self, segments: list[Segment], ctx: dict[str, Any]) -> Verdict:
        side = self.profile.prompt
        if not side.enabled or not any(s.text.strip() for s in segments):
            return Verdict(screen=self.name, direction="prompt", status="skipped")
        t0 = time.perf_counter()
        if budget.inline(segments):
            p = windows.plan(segments, side)
        else:  # cutting and neutralising a large prompt is linear, but not for the event loop
            p = await heavy.run(windows.plan, segments, side)
        if not p.calls:
            return self.too_long(side, t0)
        j = combine(await asyncio.gather(*(self.judge.classify(c) for c in p.calls)))
        v = self.verdict("prompt", j, side.action, t0)
        if p.too_long:  # too_long: allow: judged in part, marked as such in the audit record and metrics
            v.status = "partial"
        return v

    async def screen_response(self, segments: list[Segment], prompt: list[Segment], ctx: dict[str, Any]) -> Verdict:
        side = self.profile.response
        if not side.enabled or not any(s.text.strip() for s in segments):
            return Verdict(screen=self.name, direction="response", status="skipped")
        t0 = time.perf_counter()
        context = windows.answer_context(prompt, self.profile.prompt.window_chars)
        j = await self.judge.classify(conversation(context, segments))
        return self.verdict("response", j, side.action, t0)

    def open_stream(
        self, prompt: list[Segment], ctx: dict[str, Any], kind: str = "content"
    ) -> SafetyStream | PassStream:
        """``kind`` (content | tool_arguments): both are the model's words, judged as the Agent turn."""
        side = self.profile.response
        if not side.enabled:
            return PassStream(Verdict(screen=self.name, direction="response", status="skipped"))
        return SafetyStream(self, list(windows.answer_context(prompt, self.profile.prompt.window_chars)), side)

    def verdict(self, direction: str, j: Judgement, action: str, t0: float) -> Verdict:
        v = Verdict(
            screen=self.name,
            direction=direction,
            categories=list(j.categories),
            score=j.score,
            latency_ms=(time.perf_counter() - t0) * 1000,
        )
        if j.unsafe and action == "block":
            v.action, v.blocked, v.code, v.message = "block", True, "unsafe_content", self.message(j.categories)
        elif action == "audit_only":
            v.action = "audit_only"
        return v

    def too_long(self, side: PromptSide, t0: float) -> Verdict:
        return Verdict(
            screen=self.name,
            direction="prompt",
            action="block",
            blocked=True,
            code="prompt_too_long",
            message=(
                f"The prompt is too long for the safety screen: its last turn needs more than {side.max_windows}"
                f" judge windows of {side.window_chars} characters."
            ),
            latency_ms=(time.perf_counter() - t0) * 1000,
        )

    def message(self, codes: list[str]) -> str:
        named = ", ".join(f"{c} {self.taxonomy.name(c)}" for c in codes)
        return (
            f"Blocked by the safety screen: unsafe content ({named})."
            if named
            else "Blocked by the safety screen: unsafe content."
        )


def combine(js: Sequence[Judgement]) -> Judgement:
    """One judgement for a prompt judged in windows: unsafe if any window is, the highest score, every
    category named."""
    if len(js) == 1:
        return js[0]
    cats = list(dict.fromkeys(c for j in js for c in j.categories))
    scores = [j.score for j in js if j.score is not None]
    return Judgement(
        unsafe=any(j.unsafe for j in js),
        categories=cats,
        score=max(scores) if scores else None,
        raw="\n".join(j.raw for j in js if j.unsafe),
    )


class PassStream:
    """A stream screen that releases everything (screen disabled for answers)."""

    def __init__(self, verdict: Verdict) -> None:
        self.verdict = verdict

    async def feed(self, text: str) -> StreamStep:
        return StreamStep(release=text)

    async def finish(self) -> StreamStep:
        return StreamStep()


_SENTENCE_END = re.compile(r"(?<=[.!?;:])[\"')\]]*\s+|\n+")
_SPACE = re.compile(r"\s+")


def cut_point(text: str, window: int) -> int:
    """Where the next window ends: the last sentence end in the second half of the first ``window``
    characters, else the last whitespace there, else exactly ``window``."""
    lo = window // 2
    for pattern in (_SENTENCE_END, _SPACE):
        ends = [m.end() for m in pattern.finditer(text, lo, window)]
        if ends:
            return min(ends[-1], window)
    return window


class SafetyStream:
    """One channel of a streamed answer. ``verdict`` aggregates every window's result (max score, union of
    categories); read it after ``finish`` for the audit record."""

    def __init__(self, screen: SafetyScreen, prompt: list[Segment], side: ResponseSide) -> None:
        self.screen = screen
        self.prompt = prompt
        self.side = side
        self.audit_only = side.action == "audit_only"
        self.monitor = side.stream_mode == "monitor" and not self.audit_only
        self.sent = 0  # characters released (monitor: what the client may already have)
        self.failure: BaseException | None = None  # a monitor judgement that failed
        self.unsent = ""  # monitor: the text of a feed that raised a failed judgement
        self.buf = ""  # received, not yet judged
        self.ready = ""  # judged safe, not yet handed back
        self.said = ""  # answer text judged (context for later windows)
        self.stopped = False
        self.windows = 0
        self.tasks: list[asyncio.Task[None]] = []
        self.verdict = Verdict(
            screen=screen.name, direction="response", action="audit_only" if self.audit_only else "allow"
        )

    def pending(self) -> str:
        """Text received and not released (what a fail-open wrapper hands on after a failure)."""
        if self.monitor or self.audit_only:
            return self.unsent  # the rest went out already
        return self.ready + self.buf

    async def feed(self, text: str) -> StreamStep:
        if self.stopped:
            return StreamStep()
        if self.monitor:
            return self._monitor_feed(text)
        self.buf += text
        if self.audit_only:
            while len(self.buf) >= self.side.window_chars:
                self._background(self._take(cut_point(self.buf, self.side.window_chars)))
            return StreamStep(release=text)
        while len(self.buf) >= self.side.window_chars:
            stop = await self._judge_window(cut_point(self.buf, self.side.window_chars))
            if stop:
                return stop
        out, self.ready = self.ready, ""
        return StreamStep(release=out)

    async def finish(self) -> StreamStep:
        if self.stopped:
            return StreamStep()
        if self.monitor:
            if self.buf.strip():
                self._background(self._take(len(self.buf)))
            await asyncio.gather(*self.tasks)
            return self._monitor_check() or StreamStep()
        if self.audit_only:
            if self.buf.strip():
                self._background(self._take(len(self.buf)))
            await asyncio.gather(*self.tasks)
            return StreamStep()
        if self.buf.strip():
            stop = await self._judge_window(len(self.buf))
            if stop:
                return stop
        out, self.ready, self.buf = self.ready + self.buf, "", ""
        return StreamStep(release=out)

    def _monitor_feed(self, text: str) -> StreamStep:
        self.unsent = text
        stop = self._monitor_check()
        if stop:
            return stop
        self.buf += text
        while len(self.buf) >= self.side.window_chars:
            self._background(self._take(cut_point(self.buf, self.side.window_chars)))
        self.sent += len(text)
        self.unsent = ""
        return StreamStep(release=text)

    def _monitor_check(self) -> StreamStep | None:
        """A stop when a window judged behind the stream was unsafe; a failed judgement is raised here."""
        if self.failure is not None:
            raise self.failure
        if not self.verdict.blocked:
            return None
        self.stopped, self.buf = True, ""
        self.verdict.sent_before_stop = self.sent
        return StreamStep(stop=self.verdict)

    def _take(self, cut: int) -> str:
        """Detach the next window; return it with the context it is judged with."""
        answer = self._answer(cut)
        self.said += self.buf[:cut]
        self.buf = self.buf[cut:]
        return answer

    def _answer(self, cut: int) -> str:
        context = self.said[-self.side.context_chars :] if self.side.context_chars else ""
        return context + self.buf[:cut]

    async def _judge_window(self, cut: int) -> StreamStep | None:
        # The window stays in ``buf`` until judged, so a timeout or failure leaves it in pending().
        v = await self._classify(self._answer(cut))
        if v.blocked:  # windows judged safe earlier in this call still go out, then the stream stops
            step = StreamStep(release=self.ready, stop=self.verdict)
            self.stopped, self.buf, self.ready = True, "", ""
            return step
        self.ready += self.buf[:cut]
        self._take(cut)
        return None

    def _background(self, answer: str) -> None:
        async def run() -> None:
            try:
                await self._classify(answer)
            except Exception as e:
                self.verdict.status = "error"
                if self.monitor:
                    self.failure = e

        self.tasks.append(asyncio.ensure_future(run()))

    async def _classify(self, answer: str) -> Verdict:
        t0 = time.perf_counter()
        seg = Segment(answer, "assistant", "content", ())
        j = await self.screen.judge.classify(conversation(self.prompt, [seg]))
        v = self.screen.verdict("response", j, self.side.action, t0)
        self._merge(v)
        return v

    def _merge(self, v: Verdict) -> None:
        agg = self.verdict
        self.windows += 1
        agg.latency_ms += v.latency_ms
        if v.score is not None:
            agg.score = v.score if agg.score is None else max(agg.score, v.score)
        agg.categories = list(dict.fromkeys(agg.categories + v.categories))
        if v.blocked:
            agg.action, agg.blocked, agg.code = v.action, True, v.code
            agg.message = self.screen.message(agg.categories)
