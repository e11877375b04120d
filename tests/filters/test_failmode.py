"""Fail modes for any screen: block by default, allow marked, timeouts, the circuit breaker, metrics."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from guard.config import ConfigError, load_yaml, validate
from guard.screens.base import Segment, Verdict
from guard.screens.failmode import BreakerSettings, CircuitBreaker, FailSettings, GuardedScreen
from guard.telemetry import SCREEN_RESULTS


class Flaky:
    """A screen that fails, hangs or answers, as told."""

    name = "pii"

    def __init__(self) -> None:
        self.mode = "ok"
        self.calls = 0

    async def screen_prompt(self, segments: list[Segment], ctx: dict[str, Any]) -> Verdict:
        self.calls += 1
        if self.mode == "fail":
            raise RuntimeError("analyzer crashed")
        if self.mode == "hang":
            await asyncio.sleep(5)
        if self.mode == "error-verdict":
            return Verdict(screen=self.name, direction="prompt", status="error", blocked=True)
        return Verdict(screen=self.name, direction="prompt")


def call(g: GuardedScreen) -> Verdict:
    return asyncio.run(g.screen_prompt([Segment("x", "user", "content", ())], {}))


def test_errors_block_by_default_and_never_read_as_ok() -> None:
    f = Flaky()
    f.mode = "fail"
    v = call(GuardedScreen(f, metrics=False))
    assert (v.status, v.action, v.blocked, v.code) == ("error", "block", True, "screen_error")
    assert "crashed" not in v.message  # internals stay in the log


def test_on_error_allow_passes_visibly() -> None:
    f = Flaky()
    f.mode = "fail"
    v = call(GuardedScreen(f, FailSettings(on_error="allow"), metrics=False))
    assert (v.status, v.action, v.blocked) == ("error", "allow", False) and "unscreened" in v.message


def test_timeout() -> None:
    f = Flaky()
    f.mode = "hang"
    v = call(GuardedScreen(f, FailSettings(timeout_ms=20), metrics=False))
    assert v.status == "timeout" and v.blocked and v.latency_ms < 1000


def test_breaker_cycle_with_a_fake_clock() -> None:
    now = [100.0]
    b = CircuitBreaker(BreakerSettings(failures=3, reset_s=5), clock=lambda: now[0])
    for _ in range(2):
        b.failure()
    assert b.state == "closed" and b.allow()
    b.failure()
    assert b.state == "open" and not b.allow()
    now[0] += 5
    assert b.state == "half_open" and b.allow() and not b.allow()  # one trial at a time
    b.failure()
    assert b.state == "open"  # the trial failed: open again for reset_s
    now[0] += 5
    assert b.allow()
    b.success()
    assert b.state == "closed" and b.failures == 0


def test_open_breaker_answers_at_once_without_calling() -> None:
    now = [0.0]
    f = Flaky()
    f.mode = "error-verdict"  # a screen's own error verdict counts as a failure too
    g = GuardedScreen(
        f, FailSettings(breaker=BreakerSettings(failures=2, reset_s=1)), metrics=False, clock=lambda: now[0]
    )
    call(g), call(g)
    assert g.breaker_state == "open"
    v = call(g)
    assert f.calls == 2 and v.status == "error" and v.blocked
    now[0] = 2
    f.mode = "ok"
    assert call(g).status == "ok" and g.breaker_state == "closed"


def test_verdicts_are_counted_once_in_metrics() -> None:
    def value(status: str, action: str) -> float:
        return SCREEN_RESULTS.labels("pii", "prompt", status, action)._value.get()

    before_ok, before_err = value("ok", "allow"), value("error", "block")
    f = Flaky()
    g = GuardedScreen(f, FailSettings(breaker=None))
    call(g)
    f.mode = "fail"
    call(g)
    assert value("ok", "allow") == before_ok + 1 and value("error", "block") == before_err + 1


def test_settings_errors_name_the_line(tmp_path: Any) -> None:
    f = tmp_path / "x.yaml"
    f.write_text("on_error: maybe\ntimeout_ms: 10\n")
    data, lines = load_yaml(f)
    with pytest.raises(ConfigError, match=r"x.yaml:1: on_error"):
        validate(FailSettings, data, f, lines)
