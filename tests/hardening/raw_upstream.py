"""A model server written byte by byte, for attacks from the upstream side: each request is answered by
the handler registered for its model name, with whatever bytes it writes (keep-alive, several requests per
connection). Records every request's headers and counts connections."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
from collections.abc import Callable, Iterator
from typing import Any

from guard.demo.stack import free_port

Handler = Callable[[socket.socket, dict[str, Any]], None]


def chat_body(text: str, model: str = "m") -> bytes:
    return json.dumps(
        {
            "id": "chatcmpl-1",
            "object": "chat.completion",
            "created": 0,
            "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
        }
    ).encode()


def response(body: bytes, status: str = "200 OK", ctype: bytes = b"application/json", extra: bytes = b"") -> bytes:
    return (
        b"HTTP/1.1 %s\r\ncontent-type: %s\r\ncontent-length: %d\r\n%s\r\n" % (status.encode(), ctype, len(body), extra)
    ) + body


class RawUpstream:
    def __init__(self, handlers: dict[str, Handler]) -> None:
        self.handlers = handlers
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.sock = socket.create_server(("127.0.0.1", self.port))
        self.sock.settimeout(0.2)
        self.stop = threading.Event()
        self.conns: list[socket.socket] = []
        self.requests: list[dict[str, Any]] = []  # {"line", "headers": [(name, value)], "body": dict, "conn": n}
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def connections(self) -> int:
        return len(self.conns)

    def _accept(self) -> None:
        while not self.stop.is_set():
            try:
                c, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.conns.append(c)
            threading.Thread(target=self._serve, args=(c, len(self.conns)), daemon=True).start()

    def _serve(self, c: socket.socket, n: int) -> None:
        buf = b""
        try:
            while not self.stop.is_set():
                while b"\r\n\r\n" not in buf:
                    d = c.recv(65536)
                    if not d:
                        return
                    buf += d
                head, _, buf = buf.partition(b"\r\n\r\n")
                lines = head.split(b"\r\n")[1:]
                headers = [
                    (k.strip().decode("latin-1"), v.strip().decode("latin-1"))
                    for k, _, v in (ln.partition(b":") for ln in lines)
                ]
                length = int(next((v for k, v in headers if k.lower() == "content-length"), "0"))
                while len(buf) < length:
                    d = c.recv(65536)
                    if not d:
                        return
                    buf += d
                body, buf = json.loads(buf[:length]), buf[length:]
                req = {"line": head.split(b"\r\n")[0].decode("latin-1"), "headers": headers, "body": body, "conn": n}
                self.requests.append(req)
                self.handlers[body["model"]](c, req)
        except OSError:
            return
        finally:
            c.close()

    def close(self) -> None:
        self.stop.set()
        self.sock.close()
        for c in self.conns:
            with contextlib.suppress(OSError):
                c.close()


def chat_tool_answer(arguments: str, name: str = "f") -> bytes:
    """A whole Chat Completions answer calling tool ``name`` with ``arguments`` (JSON text)."""
    call = {"id": "t1", "type": "function", "function": {"name": name, "arguments": arguments}}
    msg = {"role": "assistant", "content": None, "tool_calls": [call]}
    return json.dumps(
        {
            "id": "c1",
            "object": "chat.completion",
            "created": 0,
            "model": "m",
            "choices": [{"index": 0, "message": msg, "finish_reason": "tool_calls"}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
        }
    ).encode()


def sse_delta(delta: dict[str, Any], finish: str | None = None) -> bytes:
    """One Chat Completions stream event."""
    c = {
        "id": "c1",
        "object": "chat.completion.chunk",
        "created": 0,
        "model": "m",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    return b"data: " + json.dumps(c).encode() + b"\n\n"


def chat_tool_stream(pieces: list[str], name: str = "f") -> bytes:
    """A Chat Completions stream calling tool ``name``, its arguments sent in ``pieces``."""
    first = {"index": 0, "id": "t1", "type": "function", "function": {"name": name, "arguments": ""}}
    out = sse_delta({"role": "assistant", "content": None, "tool_calls": [first]})
    for p in pieces:
        out += sse_delta({"tool_calls": [{"index": 0, "function": {"arguments": p}}]})
    return out + sse_delta({}, "tool_calls") + b"data: [DONE]\n\n"


def fixed(body: bytes, ctype: bytes = b"application/json") -> Any:
    """A RawUpstream handler answering every request with ``body``."""

    def h(c: socket.socket, req: dict[str, Any]) -> None:
        c.sendall(response(body, ctype=ctype))

    return h


def responses_answer(status: str, output: list[Any], model: str = "r-m") -> dict[str, Any]:
    """A Responses API response object (``status``, ``output`` items), as a native upstream writes it."""
    return {
        "id": "resp_1",
        "object": "response",
        "created_at": 0,
        "model": model,
        "status": status,
        "output": output,
        "parallel_tool_calls": True,
        "tool_choice": "auto",
        "tools": [],
    }


def responses_events(*events: dict[str, Any]) -> bytes:
    """Responses SSE events, each named by its type and numbered in order."""
    return b"".join(
        b"event: %s\ndata: %s\n\n" % (e["type"].encode(), json.dumps({**e, "sequence_number": i}).encode())
        for i, e in enumerate(events)
    )


@contextlib.contextmanager
def guard_before(
    handlers: dict[str, Handler], pki_dir: Any, judge_url: str, tmp: Any, routes: list[tuple[str, dict[str, Any]]]
) -> Iterator[Any]:
    """A Guard whose upstreams are one RawUpstream: ``routes`` maps model name patterns (in order) to the
    upstream settings beside its URL (``api``, ``responses``...). The Guard's ``extra["raw"]`` is the upstream."""
    from tests.conftest import start_guard

    raw = RawUpstream(handlers)
    upstreams = {f"raw{i}": {"url": raw.url, "timeout_s": 5, **opts} for i, (_, opts) in enumerate(routes)}
    g = start_guard(
        pki_dir,
        raw.url,
        tmp,
        judge_url=judge_url,
        upstreams=upstreams,
        routes=[{"model": model, "upstream": f"raw{i}"} for i, (model, _) in enumerate(routes)],
    )
    g.extra["raw"] = raw
    try:
        yield g
    finally:
        g.stop()
        raw.close()
