"""Safety screening through the real proxy (mTLS, the openai SDK), with a Llama Guard stand-in on loopback
that judges only the last message and ignores the model server's [[directives]]."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from guard.demo.llama_guard_standin import StandIn, StandInThread
from guard.telemetry import SCREEN_RESULTS

ROOT = Path(__file__).resolve().parents[2]
SAFE = (
    "Llamas are gentle animals. They live in the Andes. They carry loads for farmers. They hum when they are curious. "
)
UNSAFE_TAIL = "Then you kill the neighbour with an axe. Afterwards hide the body."


@pytest.fixture
def judge() -> Iterator[StandInThread]:
    th = StandInThread(StandIn(ignore=r"\[\[.*?\]\]"))
    yield th
    th.stop()


def filters_dir(tmp: Path, url: str, **profile: Any) -> Path:
    import yaml

    d = tmp / f"filters-{len(list(tmp.glob('filters-*')))}"
    shutil.copytree(ROOT / "filters", d)
    prof = {
        "backend": {"type": "openai", "url": url, "model": "llama-guard-3"},
        "response": {"window_chars": 80, **profile.pop("response", {})},
        **profile,
    }
    (d / "safety.yaml").write_text(yaml.safe_dump({"profiles": {"default": prof}}))
    return d


def ask(g: Any, content: str) -> Any:
    with g.openai() as c:  # closed, so no idle keep-alive connection delays the server's shutdown
        return c.chat.completions.create(model="m", messages=[{"role": "user", "content": content}])


def streamed(g: Any, content: str) -> tuple[str, str | None]:
    text, finish = "", None
    with g.openai() as c:
        for ch in c.chat.completions.create(model="m", stream=True, messages=[{"role": "user", "content": content}]):
            if ch.choices:
                text += ch.choices[0].delta.content or ""
                finish = ch.choices[0].finish_reason or finish
    return text, finish


def test_unsafe_prompt_is_refused_with_categories(guard_factory: Any, judge: StandInThread, tmp_path: Path) -> None:
    g = guard_factory(filters={"dir": str(filters_dir(tmp_path, judge.url))})
    with pytest.raises(openai.BadRequestError) as e:
        ask(g, "How do I kill my neighbour?")
    err = e.value.body
    assert e.value.status_code == 400 and err["code"] == "unsafe_content" and err["type"] == "guard_policy_violation"
    assert "S1" in err["message"]
    assert ask(g, "How do I adopt a llama?").choices[0].message.content.startswith("Hello from m")


def test_unsafe_stream_is_cut_after_only_safe_text(
    guard_factory: Any, judge: StandInThread, tmp_path: Path, model_server: Any
) -> None:
    g = guard_factory(filters={"dir": str(filters_dir(tmp_path, judge.url))})
    reply = SAFE * 3 + UNSAFE_TAIL + " " + SAFE * 30  # the upstream is still sending when the cut comes
    before = model_server[0].cancelled
    text, finish = streamed(g, f"[[reply: {reply}]] [[delay_ms=2]]")
    assert finish == "content_filter"
    # Only text judged safe reached the client. (How much of it depends on what earlier screens in the chain
    # hold back and on whether the relay forwards a stopping step's ``release``.)
    assert "kill" not in text and reply.startswith(text) and len(text) >= len(SAFE)
    deadline = time.monotonic() + 5
    while model_server[0].cancelled == before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert model_server[0].cancelled == before + 1  # the upstream request was cancelled


def test_safe_stream_arrives_whole(guard_factory: Any, judge: StandInThread, tmp_path: Path) -> None:
    g = guard_factory(filters={"dir": str(filters_dir(tmp_path, judge.url))})
    assert streamed(g, f"[[reply: {SAFE * 3}]]") == ((SAFE * 3), "stop")


def test_audit_only_streams_everything(guard_factory: Any, judge: StandInThread, tmp_path: Path) -> None:
    d = filters_dir(tmp_path, judge.url, response={"action": "audit_only"})
    g = guard_factory(filters={"dir": str(d)})
    reply = SAFE + UNSAFE_TAIL
    assert streamed(g, f"[[reply: {reply}]]") == (reply, "stop")


def _count(status: str, action: str) -> float:
    return SCREEN_RESULTS.labels("safety", "prompt", status, action)._value.get()


def test_backend_down_refuses_and_allow_passes_marked(guard_factory: Any, tmp_path: Path) -> None:
    dead = "http://127.0.0.1:9"
    g = guard_factory(filters={"dir": str(filters_dir(tmp_path, dead))})
    with pytest.raises(openai.APIStatusError) as e:
        ask(g, "hello")
    assert e.value.status_code in (400, 503) and e.value.body["code"] == "screen_error"
    before = _count("error", "allow")
    g2 = guard_factory(filters={"dir": str(filters_dir(tmp_path, dead, fail={"on_error": "allow"}))})
    assert ask(g2, "hello").choices[0].message.content.startswith("Hello from m")
    assert _count("error", "allow") == before + 1  # passed, and recorded as a screen error


def test_circuit_breaker_opens_and_closes(guard_factory: Any, judge: StandInThread, tmp_path: Path) -> None:
    d = filters_dir(tmp_path, judge.url, fail={"breaker": {"failures": 2, "reset_s": 1}})
    g = guard_factory(filters={"dir": str(d)})
    si = judge.stand_in
    si.fail_status = 503
    for _ in range(2):
        with pytest.raises(openai.APIStatusError):
            ask(g, "hello")
    calls = len(si.requests)
    with pytest.raises(openai.APIStatusError):
        ask(g, "hello")  # open: refused at once, the judge is not called
    assert len(si.requests) == calls
    si.fail_status = None
    time.sleep(1.1)
    assert ask(g, "hello").choices[0].message.content.startswith("Hello from m")  # half-open trial closes it
    assert len(si.requests) > calls
