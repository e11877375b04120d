"""Fail modes for any screen: on_error block|allow, a timeout, and a circuit breaker.

A screen that cannot do its job is never silently "safe": its verdict says status error or timeout, and
either blocks (``on_error: block``, the default) or allows with the failure visible in the verdict, metrics
and audit record (``on_error: allow``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from guard.screens.base import Segment, StreamStep, Verdict
from guard.screens.budget import BudgetExceeded
from guard.screens.edits import Judged
from guard.telemetry import SCREEN_RESULTS

log = logging.getLogger("guard.filters")


class BreakerSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    failures: int = Field(5, ge=1)  # consecutive failures that open the circuit
    reset_s: float = Field(30.0, gt=0)  # how long it stays open before one trial call


class FailSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    on_error: Literal["block", "allow"] = "block"
    timeout_ms: float | None = Field(2000.0, gt=0)  # None: no timeout
    breaker: BreakerSettings | None = BreakerSettings()


class CircuitBreaker:
    """closed -> (N consecutive failures) -> open -> (reset_s) -> half_open -> one success closes it,
    one failure opens it again. While open, calls are not made."""

    def __init__(self, settings: BreakerSettings, clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings
        self.clock = clock
        self.failures = 0
        self.opened_at: float | None = None
        self.trial = False

    @property
    def state(self) -> str:
        if self.opened_at is None:
            return "closed"
        if self.clock() - self.opened_at >= self.settings.reset_s:
            return "half_open"
        return "open"

    def allow(self) -> bool:
        st = self.state
        if st == "closed":
            return True
        if st == "half_open" and not self.trial:
            self.trial = True  # one trial call at a time
            return True
        return False

    def success(self) -> None:
        self.failures, self.opened_at, self.trial = 0, None, False

    def failure(self) -> None:
        self.failures += 1
        self.trial = False
        if self.opened_at is not None or self.failures >= self.settings.failures:
            self.opened_at = self.clock()


class ScreenError(Exception):
    """A screen could not reach a verdict (backend down, bad output). The message is for logs only."""


def failed_verdict(screen: str, direction: str, status: str, on_error: str, reason: str) -> Verdict:
    block = on_error == "block"
    what = "timed out" if status == "timeout" else "is unavailable"
    msg = (
        f"The {screen} screen {what}; the request was refused."
        if block
        else f"The {screen} screen {what}; passed unscreened."
    )
    return Verdict(
        screen=screen,
        direction=direction,
        status=status,
        action="block" if block else "allow",
        blocked=block,
        code="screen_error" if block else "",
        message=msg,
    )


class GuardedScreen:
    """Wraps a PromptScreen and/or ResponseScreen with the fail mode; exposes the same methods.

    ``metrics``: count every verdict in guard_screen_results_total (one place for all screens).
    """

    def __init__(
        self,
        screen: Any,
        settings: FailSettings | None = None,
        *,
        metrics: bool = True,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.screen = screen
        self.name: str = screen.name
        self.reads_only: bool = bool(getattr(screen, "reads_only", False))  # never rewrites segments
        self.settings = settings or FailSettings()
        self.breaker = CircuitBreaker(self.settings.breaker, clock) if self.settings.breaker else None
        self.metrics = metrics

    @property
    def breaker_state(self) -> str:
        return self.breaker.state if self.breaker else "closed"

    async def screen_prompt(self, segments: list[Segment], ctx: dict[str, Any]) -> Verdict:
        return await self.call("prompt", lambda: self.screen.screen_prompt(segments, ctx))

    async def screen_response(self, segments: list[Segment], prompt: list[Segment], ctx: dict[str, Any]) -> Verdict:
        return await self.call("response", lambda: self.screen.screen_response(segments, prompt, ctx))

    def rewrites(self) -> bool:
        """Whether the screen reports its rewrites as edits (guard.screens.edits)."""
        return hasattr(self.screen, "screen_edits")

    async def screen_edits(
        self, segments: list[Segment], prompt: list[Segment], ctx: dict[str, Any]
    ) -> tuple[Verdict, Any]:
        """``screen_response`` as edits; a failed call gives its verdict and no edits."""
        got = await self.attempt("response", lambda: self.screen.screen_edits(segments, prompt, ctx))
        v, edits = (got, None) if isinstance(got, Verdict) else got
        self.count(v)
        return v, edits

    def open_stream(self, prompt: list[Segment], ctx: dict[str, Any], kind: str = "content") -> GuardedStream:
        return GuardedStream(self, self.screen.open_stream(prompt, ctx, kind=kind))

    async def close(self) -> None:
        closer = getattr(self.screen, "close", None)
        if closer is not None:
            await closer()

    async def call(self, direction: str, fn: Callable[[], Awaitable[Any]]) -> Any:
        """Run one screen call under the fail mode; returns its result or a failed Verdict."""
        v = await self.attempt(direction, fn)
        if isinstance(v, Verdict):
            self.count(v)
        return v

    async def attempt(self, direction: str, fn: Callable[[], Awaitable[Any]]) -> Any:
        if self.breaker and not self.breaker.allow():
            return failed_verdict(self.name, direction, "error", self.settings.on_error, "circuit open")
        t0 = time.perf_counter()
        timeout = self.settings.timeout_ms / 1000 if self.settings.timeout_ms else None
        try:
            result = await asyncio.wait_for(fn(), timeout)
        except TimeoutError:
            return self._failed(direction, "timeout", "timed out", t0)
        except (asyncio.CancelledError, BudgetExceeded):  # the request's budget, not the screen, ran out
            raise
        except Exception as e:
            log.warning("screen %s failed: %s: %s", self.name, type(e).__name__, e)
            return self._failed(direction, "error", str(e), t0)
        if isinstance(result, Verdict) and result.status in ("error", "timeout"):
            self._record_failure()
        elif self.breaker:
            self.breaker.success()
        return result

    def _failed(self, direction: str, status: str, reason: str, t0: float) -> Verdict:
        self._record_failure()
        v = failed_verdict(self.name, direction, status, self.settings.on_error, reason)
        v.latency_ms = (time.perf_counter() - t0) * 1000
        return v

    def _record_failure(self) -> None:
        if self.breaker:
            self.breaker.failure()

    def count(self, v: Verdict) -> None:
        if self.metrics:
            SCREEN_RESULTS.labels(v.screen, v.direction, v.status, v.action).inc()


class GuardedStream:
    """A stream screen under the fail mode. On failure with ``on_error: allow`` the stream degrades to
    pass-through (held text released at once) and ``verdict`` records the failure; with ``block`` it stops."""

    def __init__(self, guard: GuardedScreen, inner: Any) -> None:
        self.guard = guard
        self.inner = inner
        self.failed: Verdict | None = None
        self.counted = False
        self.fed = 0  # characters given to ``judge``

    @property
    def verdict(self) -> Verdict | None:
        if self.failed:
            return self.failed
        v = getattr(self.inner, "verdict", None)
        return v() if callable(v) else v

    async def feed(self, text: str) -> StreamStep:
        if self.failed:
            return StreamStep(release=text)
        return await self._step(lambda: self.inner.feed(text), text)

    def judges(self) -> bool:
        """Whether the inner stream judges the text as written and reports edits (guard.screens.edits)."""
        return hasattr(self.inner, "judge")

    async def judge(self, text: str) -> Judged:
        self.fed += len(text)
        if self.failed:
            return Judged(self.fed)
        return await self._judged(lambda: self.inner.judge(text))

    async def judge_end(self) -> Judged:
        got = Judged(self.fed) if self.failed else await self._judged(self.inner.judge_end)
        if not self.counted and self.verdict is not None:
            self.guard.count(self.verdict)
            self.counted = True
        return got

    async def _judged(self, fn: Callable[[], Awaitable[Judged]]) -> Judged:
        """A judging step under the fail mode: on failure the screen stops the stream (``block``: nothing
        more goes out) or judges nothing from then on (``allow``: all it was given counts as decided)."""
        result = await self.guard.attempt("response", fn)
        if isinstance(result, Judged):
            if result.stop is not None and not self.counted:
                self.guard.count(result.stop)
                self.counted = True
            return result
        self.failed = result
        if result.blocked:
            self.guard.count(result)
            self.counted = True
            return Judged(0, stop=result)
        return Judged(self.fed)

    async def finish(self) -> StreamStep:
        if self.failed:
            step = StreamStep()
        else:
            step = await self._step(self.inner.finish, "")
        if not self.counted and self.verdict is not None:
            self.guard.count(self.verdict)
            self.counted = True
        return step

    async def _step(self, fn: Callable[[], Awaitable[StreamStep]], text: str) -> StreamStep:
        result = await self.guard.attempt("response", fn)
        if isinstance(result, StreamStep):
            if result.stop is not None and not self.counted:
                self.guard.count(result.stop)
                self.counted = True
            return result
        self.failed = result
        if result.blocked:
            self.guard.count(result)
            self.counted = True
            return StreamStep(stop=result)
        pending = getattr(self.inner, "pending", None)  # text the inner screen holds and never released
        return StreamStep(release=pending() if pending else text)
