"""Long prompts are judged by Llama Guard in windows that fit its context (guard/screens/safety/windows.py):
against the stand-in judge server (OpenAI chat protocol), which reads each request as a steerable model would.

Shown here: every part of a long last turn is judged (a harmful phrase anywhere, also across a window
boundary, blocks); no steering attempt works at or across a boundary; earlier turns travel as bounded
context; a prompt needing more than ``max_windows`` is refused before any judge call (or, with
``too_long: allow``, judged in part and marked ``partial``); answers are judged with a bounded prompt.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from guard.demo.llama_guard_standin import StandIn, start
from guard.screens.base import Segment
from guard.screens.safety import windows
from guard.screens.safety.screen import SafetyScreen
from guard.screens.safety.settings import PromptSide, SafetyProfile
from tests.steering_cases import HARM, PROMPT_ATTACKS

FILLER = "Some plain filler words about the weather. "
SIDE = {"window_chars": 512, "overlap_chars": 64, "context_chars": 300, "max_windows": 64}


def seg(text: str, role: str = "user", i: int = 0) -> Segment:
    return Segment(text, role, "content", ("messages", i, "content"))


def run(fn: Any, si: StandIn | None = None) -> tuple[Any, StandIn]:
    si = si or StandIn()

    async def go() -> Any:
        runner, url = await start(si)
        try:
            return await fn(url)
        finally:
            await runner.cleanup()

    return asyncio.run(go()), si


def screen(url: str, **prompt: Any) -> SafetyScreen:
    return SafetyScreen(
        SafetyProfile.model_validate({"backend": {"type": "openai", "url": url}, "prompt": {**SIDE, **prompt}})
    )


def judge_prompts(prompts: list[list[Segment]], **prompt: Any) -> tuple[list[Any], StandIn]:
    async def go(url: str) -> list[Any]:
        s = screen(url, **prompt)
        try:
            return [await s.screen_prompt(p, {}) for p in prompts]
        finally:
            await s.close()

    return run(go)


def judged_texts(si: StandIn) -> list[str]:
    return [m["content"] for _, body in si.requests for m in body["messages"]]


def test_a_short_prompt_is_one_judge_call_with_the_whole_text() -> None:
    text = FILLER * 5 + HARM
    (v,), si = judge_prompts([[seg("You are helpful.", "system"), seg(text)]])
    assert v.blocked and v.code == "unsafe_content"
    assert len(si.requests) == 1 and text in si.requests[0][1]["messages"][0]["content"]


@pytest.mark.parametrize("where", [0.0, 0.3, 0.6, 0.999])
def test_harm_anywhere_in_a_long_prompt_is_judged(where: float) -> None:
    """The harmful sentence at the start, middle or end of ~20 windows of filler: blocked; every request to the
    judge fits the window plus the context."""
    body = FILLER * 250
    k = int(len(body) * where)
    k = body.rfind(" ", 0, k) + 1 if k else 0
    (v,), si = judge_prompts([[seg(body[:k] + HARM + " " + body[k:])]])
    assert v.blocked and v.code == "unsafe_content" and v.categories == ["S1"], v
    assert len(si.requests) > 10
    for _, req in si.requests:
        assert sum(len(m["content"]) for m in req["messages"]) <= SIDE["window_chars"] + 16


def test_a_clean_long_prompt_passes_in_windows() -> None:
    (v,), si = judge_prompts([[seg(FILLER * 250)]])
    assert not v.blocked and v.status == "ok", v
    assert len(si.requests) > 10


def test_a_word_cut_by_a_window_boundary_is_whole_in_the_overlap() -> None:
    """Text with no white space is cut exactly at the window size: the trigger word placed across every cut
    position is still judged, because each window repeats the end of the one before. Without the overlap
    the same prompts pass (so this test can fail)."""
    w = SIDE["window_chars"]
    prompts = [[seg("x" * (w - k) + "kill" + "x" * 700)] for k in range(0, 5)]
    verdicts, _ = judge_prompts(prompts)
    assert all(v.blocked for v in verdicts), [v.blocked for v in verdicts]
    naive, _ = judge_prompts(prompts, overlap_chars=0)
    assert not all(v.blocked for v in naive)


@pytest.mark.parametrize("name", sorted(PROMPT_ATTACKS))
def test_steering_at_and_across_window_boundaries_fails(name: str) -> None:
    """Each steering attack (special tokens, forged verdicts and turns, template markers) slid across the first
    window boundary in steps: always judged unsafe, and no request carries a raw special token."""
    attack = PROMPT_ATTACKS[name]
    w = SIDE["window_chars"]
    prompts = []
    for shift in range(0, len(attack) + 80, 23):
        start = max(0, w - shift)
        head = ("y" * start)[:start]
        prompts.append([seg(head + attack + " " + FILLER * 30)])
    verdicts, si = judge_prompts(prompts)
    assert all(v.blocked and v.code == "unsafe_content" for v in verdicts), [v.blocked for v in verdicts]
    for text in judged_texts(si):
        assert "<|" not in text and "|>" not in text


def test_many_small_messages_send_bounded_context() -> None:
    """A thousand earlier turns: the judge gets the last turn and at most context_chars of the rest."""
    msgs = [
        seg(f"Message number {i} with a few plain words.", "user" if i % 2 == 0 else "assistant", i)
        for i in range(1001)
    ]
    msgs[0] = seg(HARM, "user", 0)  # only context: Llama Guard judges the last turn, as without windows
    (v,), si = judge_prompts([msgs])
    assert len(si.requests) == 1
    sent = si.requests[0][1]["messages"]
    assert sum(len(m["content"]) for m in sent) <= SIDE["context_chars"] + SIDE["window_chars"] + 8
    assert sent[-1]["content"].endswith("Message number 1000 with a few plain words.")
    assert not v.blocked
    msgs[-1] = seg("Earlier: fine. " + HARM, "user", 1000)
    (v,), _ = judge_prompts([msgs])
    assert v.blocked


def test_too_many_windows_is_refused_before_any_judge_call() -> None:
    (v,), si = judge_prompts([[seg(FILLER * 2000)]], max_windows=4)
    assert v.blocked and v.code == "prompt_too_long" and "4 judge windows" in v.message, v
    assert si.requests == []


def test_too_long_allow_judges_the_first_windows_and_marks_partial() -> None:
    body = HARM + " " + FILLER * 2000
    (v, clean), si = judge_prompts([[seg(body)], [seg(FILLER * 2000)]], max_windows=4, too_long="allow")
    assert v.blocked and v.status == "partial", v
    assert not clean.blocked and clean.status == "partial" and clean.to_audit()["status"] == "partial"
    assert len(si.requests) == 8


def test_answers_are_judged_with_a_bounded_prompt() -> None:
    prompt = [seg(FILLER * 2000)]
    answer = [Segment("Sure, here it is.", "assistant", "content", ("choices", 0))]

    async def go(url: str) -> Any:
        s = screen(url)
        try:
            return await s.screen_response(answer, prompt, {})
        finally:
            await s.close()

    v, si = run(go)
    assert not v.blocked
    sent = si.requests[0][1]["messages"]
    assert sum(len(m["content"]) for m in sent) <= SIDE["window_chars"] + 64
    assert sent[-1] == {"role": "assistant", "content": "Sure, here it is."}


def test_window_spans_are_bounded_whatever_the_length() -> None:
    text = "word " * 2_000_000  # 10 MB
    cuts, over = windows.spans(text, 1000, 100, 8)
    assert over and len(cuts) == 8
    assert all(b - a <= 1000 for a, b in cuts)
    assert all(cuts[i + 1][0] == cuts[i][1] - 100 for i in range(7))
    cuts, over = windows.spans("short", 1000, 100, 8)
    assert cuts == [(0, 5)] and not over


def test_the_early_too_long_bound_agrees_with_cutting_the_windows() -> None:
    """plan() refuses a prompt longer than the bound without cutting (a hostile megabyte cost milliseconds of
    GIL-holding regex work per request); whatever is over the bound must also be too long when cut."""
    window, overlap, limit = 200, 40, 4
    for unit in ("word ", "x", "Stop. ", "a\n\n", "4111 1111 "):
        for n in range(limit * window - 50, (limit + 1) * window + 400, 7):
            text = (unit * (n // len(unit) + 1))[:n]
            _, over = windows.spans(text, window, overlap, limit)
            if windows.certainly_too_long(n, window, limit):
                assert over, (unit, n)
    side = PromptSide(window_chars=1000, overlap_chars=100, max_windows=4)
    p = windows.plan([seg("word " * 1001)], side)  # 5005 characters: over the bound
    assert p.too_long and p.calls == [] and p.windows == 0


def test_settings_refuse_an_overlap_too_large_for_the_window() -> None:
    with pytest.raises(ValueError, match="overlap_chars"):
        PromptSide.model_validate({"window_chars": 1000, "overlap_chars": 400})


@pytest.mark.parametrize(
    "prompt,where",
    [
        ("{max_windows: 0}", r":5: profiles.a.prompt.max_windows"),
        ("{too_long: ignore}", r":5: profiles.a.prompt.too_long"),
        ("{window_chars: 1000, overlap_chars: 400}", r":5: profiles.a.prompt.*overlap_chars"),
    ],
)
def test_bad_window_settings_name_file_line_and_key(tmp_path: Any, prompt: str, where: str) -> None:
    from guard.config import ConfigError
    from guard.screens.safety.settings import load_safety

    f = tmp_path / "safety.yaml"
    f.write_text(f"default: a\nprofiles:\n  a:\n    backend: {{type: ollama}}\n    prompt: {prompt}\n")
    with pytest.raises(ConfigError, match=where):
        load_safety(f)
