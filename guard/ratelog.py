"""Repeated log lines, throttled: the first of a kind is logged at once, the rest are counted and summed up in
one line per interval ("... (and 1,234 more like it in the last 10.0 s)").

A full disk refuses every request; logging each refusal at ERROR wrote tens of megabytes a minute and could
fill the log volume too. The metrics (guard_fail_closed_total, guard_audit_write_failures_total) stay exact:
only the log lines are thinned.
"""

from __future__ import annotations

import logging
import threading
import time

REPEAT_S = 10.0  # at most one line per kind and interval after the first


class Throttled:
    """``log(key, level, msg, *args)``: ``key`` names the kind of line (the message without what varies)."""

    def __init__(self, logger: logging.Logger, interval_s: float = REPEAT_S) -> None:
        self.logger = logger
        self.interval_s = interval_s
        self._lock = threading.Lock()
        self._state: dict[str, list[float]] = {}  # key -> [time of the last line written, lines held back]

    def log(self, key: str, level: int, msg: str, *args: object) -> bool:
        """Log now (True) or count it for the next summary (False)."""
        now = time.monotonic()
        with self._lock:
            st = self._state.get(key)
            if st is not None and now - st[0] < self.interval_s:
                st[1] += 1
                return False
            held = int(st[1]) if st is not None else 0
            since = now - st[0] if st is not None else 0.0
            self._state[key] = [now, 0]
        if held:
            msg += " (and %d more like it in the last %.1f s)"
            args = (*args, held, since)
        self.logger.log(level, msg, *args)
        return True

    def error(self, key: str, msg: str, *args: object) -> bool:
        return self.log(key, logging.ERROR, msg, *args)

    def reset(self) -> None:
        with self._lock:
            self._state.clear()


__all__ = ["REPEAT_S", "Throttled"]
