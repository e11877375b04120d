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


def helper_init(parent: int, priority: int | str) -> None:
    """Initializer of a screening or body-reader process: exit with the serving process ``parent``, and run at
    a lower CPU priority than it (``limits.screen_priority``) so that its event loop gets a core first.

    ``"idle"``: the SCHED_IDLE policy (Linux), where a task of normal priority that wakes up takes the core at
    once and a core running only such tasks counts as free. Nice steps alone do little against the model
    servers, clients and other services a request also waits on: with autogroups (or one cgroup per service)
    nice only ranks the tasks inside their own group, and a waking task can wait out the niced one's slice.
    Where SCHED_IDLE is missing, the lowest nice priority instead. An integer: that many nice steps."""
    exit_with_parent(parent)
    if priority == "idle":
        try:
            os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
            return
        except (AttributeError, OSError):
            priority = 19
    if isinstance(priority, int) and priority > 0:
        with contextlib.suppress(OSError):
            os.nice(priority)
