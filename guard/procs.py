"""Helpers for Guard's child processes (forked workers, the quota keeper, the screening and body-reader
processes): nothing of Guard imported."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time


def die_with_parent(master: int) -> None:
    """A forked child must not outlive a supervisor killed with -9: it would keep the port and its chain's lock."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG (Linux)
    except (OSError, AttributeError):
        pass
    if os.getppid() != master:  # the supervisor died before prctl took effect
        os._exit(1)


def exit_with_parent(parent: int, interval: float = 0.5) -> None:
    """End this process within ``interval`` seconds of ``parent`` dying (it is then re-parented), portably.

    For the spawned helper processes of a serving process (concurrent.futures pools): they hold both ends of
    their job queue's pipe, so a serving process killed with -9 leaves them waiting forever (hundreds of MB
    each). PR_SET_PDEATHSIG is no fit there: it fires when the *thread* that started the child ends."""
    if os.getppid() != parent:  # gone before this process got here
        os._exit(1)

    def watch() -> None:
        while True:
            time.sleep(interval)
            if os.getppid() != parent:
                os._exit(1)

    threading.Thread(target=watch, name="guard-parent-watch", daemon=True).start()


def helper_init(parent: int, nice: int) -> None:
    """Initializer of a screening or body-reader process: exit with the serving process ``parent`` and run
    ``nice`` steps below its CPU priority, so that its event loop gets a core first (``limits.screen_nice``)."""
    exit_with_parent(parent)
    if nice > 0:
        with contextlib.suppress(OSError):
            os.nice(nice)
