"""Stream lag: how late screened text reaches the client compared with the same stream unscreened.

A stand-in upstream (a subprocess) streams ordinary prose as OpenAI chat chunks of ``CHUNK`` characters every
``INTERVAL_MS`` (4 characters every 10 ms, about 100 tokens/s) and reports when it wrote each chunk. Guard's
pipeline runs in this process (no TLS, the shipped policy, the audit journal), driven through ASGI; the
client side notes when each character becomes visible. Variants, in alternating rounds (medians kept):
  none      no response screens (filters folder without screens)
  default   the shipped denylist and PII screens (the default profile without Llama Guard)
  hold      default plus Llama Guard, stream_mode hold (stand-in judge answering after JUDGE_MS)
  monitor   default plus Llama Guard, stream_mode monitor
Reported per variant: time to first visible text (from the request, and from when the upstream wrote it),
the median and p90 per-character lag (visible minus written upstream), and Guard's CPU per streamed KB (this
process: pipeline, relay, screens). BENCH_STREAM_VARIANTS=none,default picks variants.
Run: python -m tests.bench.bench_stream_lag [--quick]     (or BENCH_ONLY=streamlag python -m tests.bench.run)
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from tests.bench.common import PY, ROOT, XFCC, free_port, wait_port

CHUNK, INTERVAL_MS, JUDGE_MS = 4, 10, 20
PROSE = (
    "The river runs slowly past the old mill, and the morning light settles on the water like a thin "
    "sheet of gold. Nobody in the village remembers when the wheel last turned, but the children still "
    "tell stories about the miller who sang to his flour. Along the bank the reeds bend in the wind, and "
    "a heron waits without moving, patient as a stone. Further down, where the current quickens, a "
    "wooden bridge carries travellers toward the market town, its planks worn smooth by carts and boots. "
)
VARIANTS = tuple(os.environ.get("BENCH_STREAM_VARIANTS", "none,default,hold,monitor").split(","))


# --- the stand-in upstream (run as a subprocess) ----------------------------------------------------------


def serve_upstream(port: int, text: str) -> None:
    from aiohttp import web

    def sse(obj: dict[str, Any]) -> bytes:
        return b"data: " + json.dumps(obj).encode() + b"\n\n"

    def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> dict[str, Any]:
        return {
            "id": "lag",
            "object": "chat.completion.chunk",
            "created": 1,
            "model": "m",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            **extra,
        }

    async def handle(request: web.Request) -> web.StreamResponse:
        await request.read()
        resp = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await resp.prepare(request)
        await resp.write(sse(chunk({"role": "assistant", "content": ""})))
        times: list[float] = []
        due = time.monotonic()
        for i in range(0, len(text), CHUNK):
            due += INTERVAL_MS / 1000
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            times.append(time.time())
            await resp.write(sse(chunk({"content": text[i : i + CHUNK]})))
        await resp.write(sse(chunk({}, "stop", x_written=times)))
        await resp.write(b"data: [DONE]\n\n")
        return resp

    app = web.Application()
    app.router.add_post("/v1/chat/completions", handle)
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None)


# --- Guard in this process ----------------------------------------------------------------------------------


def filters_for(d: Path, variant: str, judge_url: str) -> Path:
    f = d / f"filters-{variant}"
    f.mkdir()
    if variant == "none":
        return f
    shutil.copy(ROOT / "filters" / "pii.yaml", f)
    shutil.copy(ROOT / "filters" / "denylist.yaml", f)
    if variant in ("hold", "monitor"):
        import yaml

        prof = {
            "backend": {"type": "openai", "url": judge_url, "model": "llama-guard-3"},
            "response": {"stream_mode": variant},
            "prompt": {"enabled": False},
        }
        (f / "safety.yaml").write_text(yaml.safe_dump({"profiles": {"default": prof}}))
    return f


class Client:
    """ASGI send: notes when each content character becomes visible."""

    def __init__(self) -> None:
        self.buf = b""
        self.seen: list[float] = []  # arrival time of each visible character
        self.written: list[float] = []

    async def send(self, msg: dict[str, Any]) -> None:
        if msg["type"] != "http.response.body":
            return
        now = time.time()
        self.buf += msg.get("body", b"")
        *events, self.buf = self.buf.split(b"\n\n")
        for ev in events:
            if not ev.startswith(b"data: {"):
                continue
            obj = json.loads(ev[6:])
            if "x_written" in obj:
                self.written = obj["x_written"]
            for ch in obj.get("choices", []):
                self.seen += [now] * len((ch.get("delta") or {}).get("content") or "")


async def _one(pipe: Any, text_len: int) -> dict[str, float]:
    body = json.dumps(
        {"model": "m", "stream": True, "messages": [{"role": "user", "content": "Tell me about the river."}]}
    ).encode()
    scope = {
        "type": "http",
        "method": "POST",
        "path": "/v1/chat/completions",
        "client": ("127.0.0.1", 5555),
        "headers": [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"x-forwarded-client-cert", XFCC.encode()),
        ],
    }
    sent = False

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.sleep(3600)
        return {"type": "http.disconnect"}

    c = Client()
    t0, cpu0 = time.time(), time.process_time()
    await pipe(scope, receive, c.send)
    cpu = time.process_time() - cpu0
    assert len(c.seen) == text_len, (len(c.seen), text_len)
    per_char = [c.written[i // CHUNK] for i in range(text_len)]
    lags = sorted((s - w) * 1000 for s, w in zip(c.seen, per_char, strict=False))
    return {
        "first_visible_ms": (c.seen[0] - t0) * 1000,
        "first_written_ms": (c.written[0] - t0) * 1000,
        "first_delay_ms": (c.seen[0] - c.written[0]) * 1000,
        "median_lag_ms": statistics.median(lags),
        "p90_lag_ms": lags[int(len(lags) * 0.9)],
        "cpu_ms_per_kb": cpu * 1000 / (text_len / 1024),
    }


async def _measure(cfgs: dict[str, Path], rounds: int, text_len: int) -> dict[str, list[dict[str, float]]]:
    from guard.config import load_config
    from guard.pipeline import Pipeline
    from guard.runtime import Runtime

    pipes, rts = {}, []
    for v, path in cfgs.items():
        rt = Runtime(load_config(path))
        rt.load()
        rts.append(rt)
        pipes[v] = Pipeline(rt.services())
        await _one(pipes[v], text_len)  # warm-up: screens loaded, engines built
    out: dict[str, list[dict[str, float]]] = {v: [] for v in cfgs}
    for r in range(rounds):
        order = list(cfgs) if r % 2 == 0 else list(reversed(cfgs))
        for v in order:
            res = await _one(pipes[v], text_len)
            out[v].append(res)
            print(
                f"  {v:8s} first {res['first_visible_ms']:7.1f} ms  median lag {res['median_lag_ms']:7.1f} ms  "
                f"cpu {res['cpu_ms_per_kb']:6.2f} ms/KB",
                file=sys.stderr,
            )
    for rt in rts:
        await rt.services().upstreams.close()
        await rt.stop("benchmark done")
    return out


def run(quick: bool = False) -> dict[str, Any]:
    import uvloop

    from tests.bench.run import guard_config

    text = PROSE * (1 if quick else 2)
    rounds = 2 if quick else 4
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        up_port, judge_port = free_port(), free_port()
        procs = [
            subprocess.Popen(
                [PY, "-m", "tests.bench.bench_stream_lag", "--upstream", str(up_port), str(len(text))], cwd=ROOT
            ),
            subprocess.Popen(
                [PY, "-m", "guard.demo.llama_guard_standin", "--port", str(judge_port), "--delay-ms", str(JUDGE_MS)],
                cwd=ROOT,
            ),
        ]
        try:
            wait_port(up_port)
            wait_port(judge_port)
            cfgs = {}
            for v in VARIANTS:
                cfg = guard_config(d, f"http://127.0.0.1:{up_port}", False, free_port(), free_port())
                raw = cfg.read_text().replace(
                    str(d / "no-filters"), str(filters_for(d, v, f"http://127.0.0.1:{judge_port}"))
                )
                cfg.write_text(raw)
                cfgs[v] = cfg
            seen = uvloop.run(_measure(cfgs, rounds, len(text)))
        finally:
            for p in procs:
                p.terminate()
                p.wait(10)
    res: dict[str, Any] = {
        "chunk_chars": CHUNK,
        "interval_ms": INTERVAL_MS,
        "judge_ms": JUDGE_MS,
        "text_chars": len(text),
        "rounds": rounds,
    }
    for v, xs in seen.items():
        res[v] = {k: round(statistics.median(x[k] for x in xs), 2) for k in xs[0]}
    base = res["none"]
    for v in [v for v in VARIANTS if v != "none"]:
        res[v]["added_first_visible_ms"] = round(res[v]["first_visible_ms"] - base["first_visible_ms"], 2)
        res[v]["added_first_delay_ms"] = round(res[v]["first_delay_ms"] - base["first_delay_ms"], 2)
        res[v]["added_median_lag_ms"] = round(res[v]["median_lag_ms"] - base["median_lag_ms"], 2)
        res[v]["cpu_ratio"] = round(res[v]["cpu_ms_per_kb"] / base["cpu_ms_per_kb"], 2)
    res["goal_ms"] = INTERVAL_MS + 5  # one upstream chunk plus 5 ms
    return res


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--upstream":
        serve_upstream(int(sys.argv[2]), (PROSE * 2)[: int(sys.argv[3])])
    else:
        print(json.dumps(run(quick="--quick" in sys.argv), indent=2))
