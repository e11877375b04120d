"""Shutdown with clients that keep idle keep-alive connections in their pools: Guard stops within about a
second instead of waiting out ``shutdown_deadline_s`` for TLS closes nobody answers, and a stream in flight
at that moment still ends whole."""

from __future__ import annotations

import threading
import time

from guard.server import IDLE_CLOSE_S


def test_idle_pooled_connections_do_not_hold_up_shutdown_and_a_running_stream_ends_whole(guard_factory, tmp_path):
    (tmp_path / "nofilters").mkdir()
    g = guard_factory(filters={"dir": str(tmp_path / "nofilters")}, shutdown_deadline_s=30)
    assert g.config.shutdown_deadline_s >= 10, "the default deadline: what an idle client used to cost"
    idle = [g.client(), g.openai()]  # each keeps its connection open in its pool after answering
    r = idle[0].post("/v1/chat/completions", json={"model": "m", "messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 200
    idle[1].chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}])
    got: dict = {}
    started = threading.Event()

    def stream() -> None:
        words = " ".join(f"w{i}" for i in range(30))
        with (
            g.client() as c,
            c.stream(
                "POST",
                "/v1/chat/completions",
                json={
                    "model": "m",
                    "stream": True,
                    "messages": [{"role": "user", "content": f"[[reply: {words}]] [[delay_ms=60]]"}],
                },
            ) as s,
        ):
            body = b""
            for part in s.iter_bytes():
                body += part
                started.set()
            got["body"] = body

    t = threading.Thread(target=stream)
    t.start()
    assert started.wait(5)
    t0 = time.monotonic()
    g.stop()
    took = time.monotonic() - t0
    t.join(10)
    assert not g.thread.thread.is_alive(), "the server thread is still running: shutdown waited on idle clients"
    assert took < IDLE_CLOSE_S + 4, f"shutdown took {took:.1f} s"
    assert got["body"].endswith(b"data: [DONE]\n\n") and b"w29" in got["body"], "the stream in flight ended whole"
    for c in idle:
        c.close()
