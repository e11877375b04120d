"""The wire between a worker and its sealer process (guard.audit.sealer).

Wire format over a socketpair. Worker -> sealer: ``!IcQ`` header (payload length, op, event number) then the
payload: op ``E`` an event as marshal data (plain dicts, lists, strings and numbers: cheaper to write and
read than pickle or JSON; the socketpair is private to a worker and the sealer it started, so nothing else
can send one) or an exchange's facts as a marshal tuple (the sealer assembles the event with
guard.audit.event.from_facts, so the worker's loop does not), ``L`` the same for an event nothing waits for (its answer
is out: durability ``batch`` while healthy, and
completions; written with the next group commit, within ``batch_window_ms``; no acknowledgement of its own;
kept for the recovery write when the disk is full), ``C`` close. Sealer -> worker: ``!I`` length then a
JSON message: ``ready`` (chain state) or ``error`` at start, acknowledgements ``{"ok": [[first, last], ...], ...}`` or
``{"fail": [[first, last], ...], "error": ...}`` per written batch (``healthy``: whether the sealer's journal
takes events again; a failed write or recovery attempt sends ``fail`` even with no range), ``closed`` at the end.
"""

from __future__ import annotations

import json
import socket
import struct
from typing import Any

HDR = struct.Struct("!IcQ")
LEN = struct.Struct("!I")
_EVENT, _LAZY, _CLOSE = b"E", b"L", b"C"
_GO = b"G"  # worker -> a sealer waiting in standby: take the chain now
_LOCK_WAIT_S = 10.0  # a new sealer waits this long for the chain lock of a sealer still flushing
_CHECKPOINT_NOW = {"guard.audit.checkpoint_now": True}  # a frame no event can be (events have "type")


def _ranges(ids: list[int]) -> list[list[int]]:
    out: list[list[int]] = []
    for i in ids:
        if out and out[-1][1] + 1 == i:
            out[-1][1] = i
        else:
            out.append([i, i])
    return out


def _recv_exact(sock: socket.socket, n: int) -> bytes | None:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(min(n - len(buf), 1 << 20))
        if not chunk:
            return None
        buf += chunk
    return bytes(buf)


def _read_message(sock: socket.socket) -> dict[str, Any] | None:
    head = _recv_exact(sock, LEN.size)
    if head is None:
        return None
    body = _recv_exact(sock, LEN.unpack(head)[0])
    return None if body is None else json.loads(body)
