"""The response head is held for the rest of the loop iteration and leaves with the body in one write."""

from __future__ import annotations

import asyncio

from guard.server import _Coalescing


class _Recorder:
    """Stands in for the connection's transport: records each write (the end-to-end tests use real sockets)."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def get_extra_info(self, name: str) -> str:
        return f"info:{name}"


HEAD = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n"


def test_head_and_body_sent_back_to_back_leave_in_one_write() -> None:
    async def main() -> list[bytes]:
        t = _Recorder()
        c = _Coalescing(t, asyncio.get_running_loop())  # type: ignore[arg-type]
        c.write(HEAD)
        c.write(b"ok")
        await asyncio.sleep(0)
        return t.writes

    assert asyncio.run(main()) == [HEAD + b"ok"]


def test_a_head_without_a_body_yet_is_sent_at_the_end_of_the_iteration() -> None:
    async def main() -> tuple[list[bytes], list[bytes]]:
        t = _Recorder()
        c = _Coalescing(t, asyncio.get_running_loop())  # type: ignore[arg-type]
        c.write(HEAD.replace(b"content-length: 2", b"transfer-encoding: chunked"))
        before = list(t.writes)
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        c.write(b"5\r\nhello\r\n")
        return before, t.writes

    before, after = asyncio.run(main())
    assert before == [] and len(after) == 2 and after[1] == b"5\r\nhello\r\n"


def test_close_flushes_what_is_held_and_other_calls_reach_the_transport() -> None:
    async def main() -> _Recorder:
        t = _Recorder()
        c = _Coalescing(t, asyncio.get_running_loop())  # type: ignore[arg-type]
        assert c.get_extra_info("peername") == "info:peername"
        c.write(HEAD)
        c.close()
        await asyncio.sleep(0)
        return t

    t = asyncio.run(main())
    assert t.writes == [HEAD] and t.closed
