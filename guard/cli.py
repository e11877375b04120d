"""`guard` command line: serve, demo, pki, policy, scan, audit, quota, bench.

Subcommands live beside the code they drive; each module exposes ``register(subparsers)``.
Exit codes: 0 ok, 1 check failed, 2 usage or configuration error.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import NoReturn

_COMMAND_MODULES = (
    "guard.serve_cli",  # serve
    "guard.pki",  # pki
    "guard.demo.cli",  # demo
    "guard.policy.cli",  # policy check|test|explain
    "guard.screens.cli",  # scan
    "guard.audit.cli",  # audit keygen|verify|export|tail
    "guard.quota.cli",  # quota show
)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # usage errors exit 2 (argparse default) with our prefix
        self.print_usage(sys.stderr)
        self.exit(2, f"guard: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    from guard import __version__

    parser = _Parser(prog="guard", description="Security and compliance reverse proxy for LLM endpoints.")
    parser.add_argument("--version", action="version", version=f"guard {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for name in _COMMAND_MODULES:
        try:
            mod = importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name == name:
                continue  # not built yet
            raise
        mod.register(sub)
    return parser


def _multiprocess_metrics(argv: list[str]) -> None:
    """`guard serve` with several workers: Prometheus values must live in shared files, and that is decided
    when prometheus_client is first imported, so it is set up here, before any Guard module loads."""
    import os
    import tempfile

    if not argv or argv[0] != "serve" or "PROMETHEUS_MULTIPROC_DIR" in os.environ:
        return
    workers = 0
    for i, a in enumerate(argv):
        if a == "--workers" and i + 1 < len(argv) and argv[i + 1].isdigit():
            workers = int(argv[i + 1])
        elif a.startswith("--workers=") and a[10:].isdigit():
            workers = int(a[10:])
    if not workers and "--config" in argv and argv.index("--config") + 1 < len(argv):
        try:
            import yaml

            with open(argv[argv.index("--config") + 1], encoding="utf-8") as f:
                data = yaml.safe_load(f)
            workers = int(data.get("workers", 1)) if isinstance(data, dict) else 1
        except (OSError, ValueError, TypeError, yaml.YAMLError):
            return  # the real loader reports the problem
    if workers > 1:
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="guard-metrics-")


def main(argv: list[str] | None = None) -> int:
    _multiprocess_metrics(sys.argv[1:] if argv is None else argv)
    from guard.config import ConfigError

    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except ConfigError as e:
        print(f"guard: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
