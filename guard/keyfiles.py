"""Private keys and other secrets on disk: created readable by the owner only, from the first byte.

The file is written under a temporary name opened with ``O_CREAT | O_EXCL`` and mode 0600 (the umask can
only take bits away), synced, then given its name in one step: ``os.link`` when an existing file must win
(workers starting together race to create the same key), ``os.replace`` when a new key replaces an old one.
No other process ever sees the key under a wider mode, or half written.
"""

from __future__ import annotations

import os
from pathlib import Path

MODE = 0o600


def write_private(path: Path | str, data: bytes, *, replace: bool = False) -> Path:
    """Create ``path`` (0600) holding ``data`` atomically. ``replace=False``: FileExistsError when it exists."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{os.urandom(4).hex()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), MODE)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if replace:
            os.replace(tmp, path)
        else:
            os.link(tmp, path)  # fails if the file exists: the first writer wins, whole
    finally:
        if tmp.exists():
            os.unlink(tmp)
    return path
