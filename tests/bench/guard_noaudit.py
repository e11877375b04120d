"""Guard with no audit at all, for the benchmark only: what the audit trail costs is Guard with its journal
minus this. The same server, pipeline, policy and screens as `guard serve`, with a recorder that records
nothing in place of the journal (a configuration cannot do this: Guard refuses to run unaudited).

Run: python -m tests.bench.guard_noaudit CONFIG
"""

from __future__ import annotations

import sys
from typing import Any


class NullRecorder:
    async def started(self, ex: Any) -> None:
        pass

    async def finished(self, ex: Any, kind: str, outcome: dict[str, Any], wait: bool = True) -> None:
        pass


def main(path: str) -> int:
    from guard.config import load_config
    from guard.serve import run_single

    return run_single(load_config(path), recorder=NullRecorder())


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
