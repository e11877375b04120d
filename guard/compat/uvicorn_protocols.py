"""uvicorn's HTTP protocol classes and server hooks that Guard builds on.

uvicorn documents ``Config(http=<protocol class>)`` and ``Server.serve(sockets=...)``, ``started`` and
``should_exit``, but not the protocol classes' connection state, which guard.server's subclasses read and
extend. What they rely on, checked by tests/core/test_compat_contracts.py on the installed uvicorn (pinned in
pyproject.toml):

- ``HttpToolsProtocol``: attributes ``app``, ``client``, ``loop``, ``transport``, ``scope``, ``headers``
  (list of (bytes, bytes)), ``url`` (bytes), ``cycle`` (with ``response_complete`` and a writable
  ``transport``), ``pipeline`` (a deque of requests waiting behind the current one); httptools callbacks
  ``on_message_begin``, ``on_headers_complete``, ``on_message_complete``; an exception raised in
  ``on_headers_complete`` ends in ``send_400_response(msg)``.
- ``H11Protocol``: the ``app`` attribute, set after ``connection_made``, is what the connection's requests
  are served by; ``conn`` is the h11 ``Connection``, and ``handle_events()`` runs whenever buffered bytes may
  hold a new request head (after ``data_received`` and after each response), before h11 parses it
  (guard.request_framing; tests/hardening/test_http_smuggling.py fails if that changes).
- ``HttpToolsProtocol.parser.get_http_version()`` in ``on_headers_complete``.
- ``Server.capture_signals()``: the context manager ``serve`` runs inside to install its signal handlers;
  QuietServer makes it a no-op, since Guard's supervisor owns the signals of a loop serving two servers.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

__all__ = ["H11Protocol", "HttpToolsProtocol", "QuietServer", "bound_port"]


class QuietServer(uvicorn.Server):
    """uvicorn server whose signals Guard handles itself (two servers share one loop)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def bound_port(server: uvicorn.Server) -> int | None:
    """The port the server's first listening socket is bound to, once it has started."""
    for srv in getattr(server, "servers", None) or []:
        for sock in srv.sockets:
            return int(sock.getsockname()[1])
    return None
