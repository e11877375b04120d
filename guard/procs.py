"""Helpers for the processes the supervisor forks (workers, the quota keeper): nothing of Guard imported."""

from __future__ import annotations

import os
import signal


def die_with_parent(master: int) -> None:
    """A forked child must not outlive a supervisor killed with -9: it would keep the port and its chain's lock."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG (Linux)
    except (OSError, AttributeError):
        pass
    if os.getppid() != master:  # the supervisor died before prctl took effect
        os._exit(1)
