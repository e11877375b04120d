"""`guard quota show [--principal X] [--json]`: current use per principal and tier.

With a Redis backend the counters are read from Redis itself (every replica's use); with the memory backend
they live in the running process, so the admin endpoint (GET /admin/quotas) is asked.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import urllib.parse
import urllib.request
from typing import Any

from guard.config import ConfigError, load_config


def _from_admin(cfg: Any, principal: str | None) -> dict[str, Any]:
    q = f"?{urllib.parse.urlencode({'principal': principal})}" if principal else ""
    req = urllib.request.Request(f"http://{cfg.admin.host}:{cfg.admin.port}/admin/quotas{q}")
    token = cfg.admin.reload_token()
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=10) as r:  # the configured admin address
            out: dict[str, Any] = json.loads(r.read())
            return out
    except OSError as e:
        raise ConfigError(
            f"the memory backend's counters live in the running Guard; its admin endpoint "
            f"{cfg.admin.host}:{cfg.admin.port} did not answer: {e}"
        ) from None


async def _from_redis(settings: Any, principal: str | None) -> dict[str, Any]:
    from guard.quota.core import Quotas
    from guard.quota.redis_backend import BackendDown

    q = Quotas(settings)
    try:
        return {"enabled": True, **await q.usage(principal)}
    except BackendDown as e:
        raise ConfigError(f"quotas.backend {settings.redacted_backend()}: {e}") from None
    finally:
        await q.close()


def render(data: dict[str, Any]) -> str:
    lines = [f"backend: {data.get('backend', '-')}  on_error: {data.get('on_error', '-')}"]
    rows = [
        (who, tier, counter, c)
        for who, tiers in sorted(data.get("principals", {}).items())
        for tier, counters in sorted(tiers.items())
        for counter, c in sorted(counters.items())
    ]
    if not rows:
        lines.append("no counters in use")
    for who, tier, counter, c in rows:
        reset = f"  full again in {c['reset_s']:g} s" if "reset_s" in c else ""
        lines.append(f"{who}  tier={tier}  {counter}: {c['used']}/{c['limit']} used, {c['remaining']} left{reset}")
    return "\n".join(lines)


def cmd_show(args: argparse.Namespace) -> int:
    cfg = load_config(args.config)
    if cfg.quotas is None:
        print("quotas are not configured", file=sys.stderr)
        return 1
    if cfg.quotas.backend == "memory":
        data = _from_admin(cfg, args.principal)
    else:
        data = asyncio.run(_from_redis(cfg.quotas, args.principal))
    print(json.dumps(data, indent=2) if args.json else render(data))
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("quota", help="show quota use")
    qs = p.add_subparsers(dest="quota_command", required=True)
    s = qs.add_parser("show", help="current use per principal and tier")
    s.add_argument("--config", default="guard.yaml", help="guard.yaml (default: ./guard.yaml)")
    s.add_argument("--principal", help="only this principal (SPIFFE ID, else certificate subject)")
    s.add_argument("--json", action="store_true", help="JSON as GET /admin/quotas answers")
    s.set_defaults(func=cmd_show)
