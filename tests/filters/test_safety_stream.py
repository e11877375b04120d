"""Streamed answers in windows: only text judged safe is released; an unsafe window stops the stream;
audit_only releases at once; fail modes on streams."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import pytest

from guard.screens.base import Segment, StreamStep
from guard.screens.failmode import FailSettings, GuardedScreen
from guard.screens.safety.llama_guard import Judgement, Turn
from guard.screens.safety.screen import SafetyScreen, cut_point
from guard.screens.safety.settings import SafetyProfile


class FakeJudge:
    """Unsafe when the judged (last) turn contains 'kill'; records what it was asked."""

    def __init__(self, delay: float = 0.0, fail: bool = False) -> None:
        self.seen: list[str] = []
        self.delay = delay
        self.fail = fail

    async def classify(self, turns: Sequence[Turn]) -> Judgement:
        self.seen.append(turns[-1].content)
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.fail:
            raise ConnectionError("down")
        bad = "kill" in turns[-1].content
        return Judgement(unsafe=bad, categories=["S1"] if bad else [], score=0.9 if bad else 0.1)

    async def close(self) -> None:
        pass


def screen(judge: FakeJudge, **response: Any) -> SafetyScreen:
    p = SafetyProfile.model_validate(
        {"backend": {"type": "openai", "url": "http://127.0.0.1:1"}, "response": {"window_chars": 40, **response}}
    )
    return SafetyScreen(p, judge=judge)


PROMPT = [Segment("Tell me a story.", "user", "content", ())]
SAFE = "Once upon a time there was a llama. It lived on a farm. It liked grass and sunshine. The end."


def run_stream(stream: Any, chunks: list[str]) -> tuple[str, StreamStep | None, list[str]]:
    async def go() -> tuple[str, StreamStep | None, list[str]]:
        out, per_feed = "", []
        for c in chunks:
            step = await stream.feed(c)
            out += step.release  # a stopping step may still release text judged safe before the stop
            per_feed.append(step.release)
            if step.stop:
                return out, step, per_feed
        step = await stream.finish()
        out += step.release
        return out, (step if step.stop else None), per_feed

    return asyncio.run(go())


def chunks(text: str, n: int = 7) -> list[str]:
    return [text[i : i + n] for i in range(0, len(text), n)]


def test_safe_stream_is_released_whole_after_judging() -> None:
    j = FakeJudge()
    out, stop, per_feed = run_stream(screen(j).open_stream(PROMPT, {}), chunks(SAFE))
    assert out == SAFE and stop is None
    assert per_feed[0] == ""  # held until its window was judged
    assert len(j.seen) >= 2 and j.seen[-1].endswith("The end.")


def test_unsafe_window_stops_after_only_safe_text_was_released() -> None:
    text = SAFE + " Then the farmer said: go kill the neighbor with an axe. More text follows here."
    j = FakeJudge()
    s = screen(j).open_stream(PROMPT, {})
    out, stop, _ = run_stream(s, chunks(text))
    assert stop is not None and stop.stop is not None
    v = stop.stop
    assert v.blocked and v.code == "unsafe_content" and v.categories == ["S1"]
    assert "kill" not in out and text.startswith(out) and len(out) >= len(SAFE) - 40
    assert s.verdict.blocked  # the aggregated verdict for the audit record


def test_a_stopping_step_releases_the_safe_windows_before_the_unsafe_one() -> None:
    text = SAFE + " Then go kill the neighbour. More text here."
    s = screen(FakeJudge()).open_stream(PROMPT, {})
    step = asyncio.run(s.feed(text))  # everything in one feed: several windows judged in one call
    assert step.stop is not None and step.release and SAFE.startswith(step.release.rstrip())
    assert "kill" not in step.release


def test_windows_cut_at_sentence_ends_and_carry_context() -> None:
    assert cut_point("Hello there my dear. How are you doing today", 30) == 21
    assert cut_point("aaaaaaaaaaaaaaaaaaaa bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb", 30) == 21
    assert cut_point("x" * 50, 30) == 30
    j = FakeJudge()
    run_stream(screen(j).open_stream(PROMPT, {}), chunks(SAFE))
    assert j.seen[1].startswith(j.seen[0])  # later windows are judged with what was said before


def test_audit_only_releases_immediately_and_records() -> None:
    text = "I will kill it. " + SAFE
    j = FakeJudge(delay=0.01)
    s = screen(j, action="audit_only").open_stream(PROMPT, {})
    parts = chunks(text)
    out, stop, per_feed = run_stream(s, parts)
    assert out == text and stop is None and per_feed == parts
    assert s.verdict.action == "audit_only" and s.verdict.categories == ["S1"] and not s.verdict.blocked
    assert s.verdict.score == pytest.approx(0.9)


def test_stream_backend_down_blocks_or_passes_marked() -> None:
    for on_error in ("block", "allow"):
        g = GuardedScreen(screen(FakeJudge(fail=True)), FailSettings(on_error=on_error), metrics=False)
        s = g.open_stream(PROMPT, {})
        out, stop, _ = run_stream(s, chunks(SAFE))
        if on_error == "block":
            assert stop is not None and stop.stop.status == "error" and stop.stop.blocked and out == ""
        else:
            assert stop is None and out == SAFE
            assert s.verdict.status == "error" and s.verdict.action == "allow"


def test_stream_timeout_releases_nothing_unjudged() -> None:
    g = GuardedScreen(screen(FakeJudge(delay=0.5)), FailSettings(timeout_ms=20), metrics=False)
    out, stop, _ = run_stream(g.open_stream(PROMPT, {}), chunks(SAFE))
    assert out == "" and stop is not None and stop.stop.status == "timeout"


def test_disabled_response_side_passes_through() -> None:
    s = screen(FakeJudge(), enabled=False).open_stream(PROMPT, {})
    out, _stop, per_feed = run_stream(s, chunks(SAFE))
    assert out == SAFE and per_feed[0] == SAFE[:7] and s.verdict.status == "skipped"


def test_hold_is_the_default_stream_mode() -> None:
    assert screen(FakeJudge()).profile.response.stream_mode == "hold"


def test_monitor_releases_at_once_and_cuts_on_an_unsafe_verdict() -> None:
    text = SAFE + " Then the farmer said: go kill the neighbor with an axe. " + SAFE + SAFE
    j = FakeJudge(delay=0.001)
    s = screen(j, stream_mode="monitor").open_stream(PROMPT, {})
    parts = chunks(text)

    async def go() -> tuple[list[str], StreamStep | None]:
        per_feed: list[str] = []
        for c in parts:
            step = await s.feed(c)
            if step.stop:
                return per_feed, step
            per_feed.append(step.release)
            await asyncio.sleep(0.005)  # the upstream's pace: verdicts land between chunks
        step = await s.finish()
        return per_feed, step if step.stop else None

    per_feed, stop = asyncio.run(go())
    assert per_feed == parts[: len(per_feed)]  # every chunk out as it came, nothing held
    assert stop is not None and stop.stop is not None and stop.stop.blocked and stop.stop.code == "unsafe_content"
    assert len(per_feed) < len(parts)  # cut before the end of the answer
    assert stop.stop.sent_before_stop == len("".join(per_feed)) > len(SAFE)
    assert stop.stop.to_audit()["sent_before_stop"] == stop.stop.sent_before_stop


def test_monitor_cuts_at_finish_when_the_last_window_is_unsafe() -> None:
    text = SAFE + " kill."
    s = screen(FakeJudge(), stream_mode="monitor").open_stream(PROMPT, {})
    out, stop, _ = run_stream(s, chunks(text))
    assert out == text and stop is not None and stop.stop.blocked and stop.stop.sent_before_stop == len(text)


def test_monitor_backend_down_follows_the_fail_mode() -> None:
    for on_error in ("block", "allow"):
        g = GuardedScreen(
            screen(FakeJudge(fail=True), stream_mode="monitor"), FailSettings(on_error=on_error), metrics=False
        )
        s = g.open_stream(PROMPT, {})
        out, stop, _ = run_stream(s, chunks(SAFE + SAFE))
        if on_error == "block":
            assert stop is not None and stop.stop.status == "error" and stop.stop.blocked
        else:
            assert stop is None and out == SAFE + SAFE  # nothing sent twice, nothing lost
            assert s.verdict.status == "error"


def test_stream_mode_is_checked() -> None:
    with pytest.raises(Exception, match="stream_mode"):
        SafetyProfile.model_validate(
            {"backend": {"type": "openai", "url": "http://127.0.0.1:1"}, "response": {"stream_mode": "later"}}
        )
