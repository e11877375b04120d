"""The Llama Guard HTTP client and the judge server's keep-alive: the client retires idle connections before
the server would (``backend.keepalive_s``, below uvicorn's 5 s), so no request meets a connection the server
is closing; and a kept-alive connection the server closes under a request anyway is tried once more on a new
connection. Against a real uvicorn judge with a 1 s keep-alive, and a loopback HTTP/1.1 judge that closes a
reused connection as the request arrives (uvicorn cannot be made to lose that race on cue)."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import uvicorn

from guard.http1 import KEEPALIVE_S as UPSTREAM_KEEPALIVE_S
from guard.screens.base import Segment
from guard.screens.failmode import ScreenError
from guard.screens.safety.screen import SafetyScreen
from guard.screens.safety.settings import KEEPALIVE_S, SafetyProfile

SAFE = json.dumps(
    {
        "id": "j",
        "object": "chat.completion",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "safe"}, "finish_reason": "stop"}],
    }
).encode()


def _prompt(text: str = "How do I adopt a llama?") -> list[Segment]:
    return [Segment(text, "user", "content", ("messages", 0, "content"))]


def _screen(url: str, **backend: Any) -> SafetyScreen:
    return SafetyScreen(
        SafetyProfile.model_validate({"backend": {"type": "openai", "url": url, "top_logprobs": 0, **backend}})
    )


class _Judge:
    """ASGI judge: every chat completion answered ``safe``; the client port of each request kept."""

    def __init__(self) -> None:
        self.ports: list[int] = []

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        assert scope["type"] == "http"
        self.ports.append(scope["client"][1])
        while (await receive()).get("more_body"):
            pass
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": SAFE})


@pytest.fixture
def uvicorn_judge() -> Iterator[tuple[str, _Judge]]:
    judge = _Judge()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(
        uvicorn.Config(judge, timeout_keep_alive=1, log_level="warning", lifespan="off", access_log=False)
    )
    t = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    t.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.01)
    assert server.started
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}", judge
    finally:
        server.should_exit = True
        t.join(10)
        sock.close()


def test_the_default_idle_time_is_below_uvicorns_keep_alive_like_the_upstream_pool() -> None:
    assert KEEPALIVE_S == UPSTREAM_KEEPALIVE_S < 5.0  # uvicorn's default timeout_keep_alive (vLLM's server)
    assert SafetyProfile.model_validate({"backend": {"type": "ollama"}}).backend.keepalive_s == KEEPALIVE_S  # type: ignore[union-attr]
    with pytest.raises(ValueError, match="keepalive_s"):
        SafetyProfile.model_validate({"backend": {"type": "openai", "url": "http://x", "keepalive_s": 0}})


@pytest.mark.parametrize(("keepalive_s", "connections"), [(0.4, 2), (30.0, 1)])
def test_idle_connections_are_retired_before_the_servers_keep_alive(
    uvicorn_judge: tuple[str, _Judge], keepalive_s: float, connections: int
) -> None:
    """Two judgements 0.7 s apart against a server that closes idle connections at 1 s: with an idle time
    below the server's the second goes out on a new connection (the client closed the first itself); with
    a longer one (the setting not applied) it reuses the first, the connection the server is about to close."""
    url, judge = uvicorn_judge

    async def go() -> list[Any]:
        screen = _screen(url, keepalive_s=keepalive_s)
        try:
            first = await screen.screen_prompt(_prompt(), {})
            await asyncio.sleep(0.7)
            return [first, await screen.screen_prompt(_prompt(), {})]
        finally:
            await screen.close()

    verdicts = asyncio.run(go())
    assert [v.status for v in verdicts] == ["ok", "ok"] and not any(v.blocked for v in verdicts)
    assert len(judge.ports) == 2 and len(set(judge.ports)) == connections


def test_judgements_across_the_servers_idle_close_all_succeed(uvicorn_judge: tuple[str, _Judge]) -> None:
    """Judgements spaced around the server's 1 s idle close, with the default idle time (4 s, longer than
    this server's): none fails; the connection closed while idle is never used for a request, or the request
    is tried again."""
    url, judge = uvicorn_judge

    async def go() -> list[Any]:
        screen = _screen(url)
        out = []
        try:
            for gap in (0.0, 0.9, 1.0, 1.05, 1.1, 0.95, 1.2):
                await asyncio.sleep(gap)
                out.append(await screen.screen_prompt(_prompt(), {}))
        finally:
            await screen.close()
        return out

    verdicts = asyncio.run(go())
    assert [v.status for v in verdicts] == ["ok"] * 7
    assert len(judge.ports) >= 7


class _ClosingJudge:
    """HTTP/1.1 on loopback: answers the first request of each connection and keeps it open; a later request on
    the same connection is read and the connection closed unanswered (the server's idle close racing the
    request). With ``every``, every request is closed unanswered."""

    def __init__(self, every: bool = False) -> None:
        self.every = every
        self.connections = 0
        self.requests = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        served = 0
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(
                    (
                        int(ln.split(b":", 1)[1])
                        for ln in head.split(b"\r\n")
                        if ln.lower().startswith(b"content-length:")
                    ),
                    0,
                )
                await reader.readexactly(length)
                self.requests += 1
                if self.every or served:
                    writer.transport.abort()  # reset, as a server tearing down an idle connection
                    return
                served += 1
                writer.write(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(SAFE)
                    + SAFE
                )
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()


@pytest.mark.parametrize("every", [False, True])
def test_a_reused_connection_closed_under_the_request_is_tried_once_more(every: bool) -> None:
    judge = _ClosingJudge(every)

    async def go() -> list[Any]:
        server = await asyncio.start_server(judge.handle, "127.0.0.1", 0)
        url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
        screen = _screen(url)
        out: list[Any] = []
        try:
            for _ in range(2):
                try:
                    out.append(await screen.screen_prompt(_prompt(), {}))
                except ScreenError as e:
                    out.append(e)
            return out
        finally:
            await screen.close()
            server.close()
            await server.wait_closed()

    first, second = asyncio.run(go())
    if not every:
        assert first.status == "ok" and second.status == "ok"  # the second on a new connection
        assert (judge.connections, judge.requests) == (2, 3)
    else:  # a fresh connection closed under the request is not a kept-alive race: no second try
        assert isinstance(first, ScreenError) and isinstance(second, ScreenError)
        assert "ServerDisconnected" in str(first)
        assert (judge.connections, judge.requests) == (2, 2)
