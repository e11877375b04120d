"""`guard serve --config FILE [--workers N]`."""

from __future__ import annotations

import argparse
import logging

from guard.config import load_config


def _serve(args: argparse.Namespace) -> int:
    from guard.config import ConfigError
    from guard.serve import run_single, run_workers

    cfg = load_config(args.config)
    if args.workers:
        cfg.workers = args.workers
        try:
            cfg.check_quotas()
        except ValueError as e:
            raise ConfigError(f"{args.config}: {e}") from None
    cfg.admin.reload_token()  # fail before forking or binding when the reload token is missing
    logging.basicConfig(level=cfg.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return run_workers(cfg, cfg.workers) if cfg.workers > 1 else run_single(cfg)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("serve", help="run the proxy")
    p.add_argument("--config", required=True, help="guard.yaml")
    p.add_argument("--workers", type=int, default=0, help="worker processes (default: config 'workers')")
    p.set_defaults(func=_serve)
