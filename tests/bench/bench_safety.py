"""Safety screening benchmarks on this machine (CPU, loopback).

(a) The safety screen against a remote Llama Guard stand-in that answers in a fixed 5 ms (a separate
    process, OpenAI protocol with logprobs), 16 concurrent calls: the screen's own added p50 over the 5 ms,
    next to a bare aiohttp POST to the same server (what any client pays).
(b) Stream hold-back: a 2,000-character answer fed in 20-character chunks with 400-character windows:
    how long text waits between arriving and being released.
(c) The denylist screen with the shipped defaults on a 772-character prompt.
The GPU benchmark of the local backend is tests/bench/bench_safety_gpu.py.
Run: ``python -m tests.bench.bench_safety [--quick]``.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
import time
from typing import Any

from tests.bench.common import PY, ROOT, free_port, process

DELAY_MS = 5.0
CONCURRENCY = 16


def _p(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


async def _load(fn: Any, total: int) -> list[float]:
    """``total`` calls of ``fn`` with CONCURRENCY in flight; per-call latency in ms."""
    lat: list[float] = []
    it = iter(range(total))

    async def worker() -> None:
        for _ in it:
            t0 = time.perf_counter()
            await fn()
            lat.append((time.perf_counter() - t0) * 1000)

    await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    return lat


async def _remote(url: str, total: int) -> dict[str, Any]:
    import aiohttp

    from guard.screens.base import Segment
    from guard.screens.failmode import GuardedScreen
    from guard.screens.safety.screen import SafetyScreen
    from guard.screens.safety.settings import SafetyProfile

    prof = SafetyProfile.model_validate({"backend": {"type": "openai", "url": url}})
    screen = GuardedScreen(SafetyScreen(prof), prof.fail, metrics=False)
    prompt = [Segment("How do I adopt a llama? " * 20, "user", "content", ())]
    body = {
        "model": "lg",
        "messages": [{"role": "user", "content": prompt[0].text}],
        "logprobs": True,
        "top_logprobs": 5,
        "temperature": 0,
        "max_tokens": 20,
    }
    async with aiohttp.ClientSession() as raw:

        async def bare() -> None:
            async with raw.post(f"{url}/v1/chat/completions", json=body) as r:
                await r.json()

        async def screened() -> None:
            v = await screen.screen_prompt(prompt, {})
            assert v.status == "ok", v

        await _load(bare, 200)
        await _load(screened, 200)  # warm both
        bare_lat = await _load(bare, total)
        lat = await _load(screened, total)
    await screen.close()
    return {
        "stand_in_delay_ms": DELAY_MS,
        "concurrency": CONCURRENCY,
        "calls": total,
        "screen_p50_ms": statistics.median(lat),
        "screen_p99_ms": _p(lat, 0.99),
        "screen_added_p50_ms": statistics.median(lat) - DELAY_MS,
        "bare_post_p50_ms": statistics.median(bare_lat),
        "screen_over_bare_post_p50_ms": statistics.median(lat) - statistics.median(bare_lat),
    }


async def _holdback(url: str, answers: int) -> dict[str, Any]:
    from guard.screens.base import Segment
    from guard.screens.safety.screen import SafetyScreen
    from guard.screens.safety.settings import SafetyProfile

    prof = SafetyProfile.model_validate({"backend": {"type": "openai", "url": url}, "response": {"window_chars": 400}})
    screen = SafetyScreen(prof)
    prompt = [Segment("Tell me about llamas.", "user", "content", ())]
    text = ("Llamas are social animals that live in herds. They are used as pack animals. " * 30)[:2000]
    waits: list[float] = []
    for _ in range(answers):
        s = screen.open_stream(prompt, {})
        arrived: list[float] = []
        for i in range(0, len(text), 20):
            arrived.append(time.perf_counter())
            step = await s.feed(text[i : i + 20])
            now = time.perf_counter()
            released = len(step.release)
            while released > 0 and arrived:  # each released 20-char chunk waited since it arrived
                waits.append((now - arrived.pop(0)) * 1000)
                released -= 20
        step = await s.finish()
        now = time.perf_counter()
        waits.extend((now - t) * 1000 for t in arrived)
    await screen.close()
    return {
        "window_chars": 400,
        "chunk_chars": 20,
        "answer_chars": 2000,
        "holdback_p50_ms": statistics.median(waits),
        "holdback_p99_ms": _p(waits, 0.99),
    }


def _denylist(n: int) -> dict[str, Any]:
    from guard.screens.denylist.screen import DenylistScreen
    from guard.screens.denylist.settings import load_denylist

    s = DenylistScreen.from_settings(load_denylist(ROOT / "filters"))
    text = (
        "Hello, my name is Ana and I need help with the invoice 4471 sent on 2024-03-02; please check the "
        "totals, the shipping address and the VAT line, then draft a polite reply. "
    ) * 5
    text = text[:772]
    s.scan(text, "prompt")
    t0 = time.perf_counter()
    for _ in range(n):
        s.scan(text, "prompt")
    dt = (time.perf_counter() - t0) / n
    return {
        "prompt_chars": len(text),
        "rules": len(s.rules),
        "us_per_prompt": dt * 1e6,
        "mb_per_s": len(text) / dt / 1e6,
    }


def run(quick: bool = False) -> dict:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = [PY, "-m", "guard.demo.llama_guard_standin", "--port", str(port), "--delay-ms", str(DELAY_MS)]
    with process(cmd, port):
        remote = asyncio.run(_remote(url, 400 if quick else 2000))
        hold = asyncio.run(_holdback(url, 3 if quick else 10))
    return {"remote_llama_guard": remote, "stream_holdback": hold, "denylist": _denylist(300 if quick else 3000)}


if __name__ == "__main__":
    print(json.dumps(run("--quick" in sys.argv), indent=2))
