"""`guard policy check|test|explain`."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from guard.config import ConfigError
from guard.policy.files import display_path
from guard.policy.loader import Policy, load_policy
from guard.policy.settings import PolicySettings
from guard.policy.testing import explain, run_files

DEFAULT_MODEL = Path("policies/model.conf")
DEFAULT_RULES_GLOB = "policies/*.csv"


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser("policy", help="check, test and explain access policies")
    sub = p.add_subparsers(dest="policy_command", required=True)

    check = sub.add_parser("check", help="validate the model and rules (exit 2 on error)")
    _policy_args(check)
    check.set_defaults(func=cmd_check)

    test = sub.add_parser("test", help="run policy test cases (exit 1 if any fails)")
    test.add_argument("files", nargs="+", type=Path, help="YAML test files")
    _policy_args(test)
    test.set_defaults(func=cmd_test)

    explain = sub.add_parser("explain", help="show the decision for one request, and why")
    explain.add_argument("--sub", required=True, help='principal as JSON: {"cn": "app", "ou": ["apps"]}')
    explain.add_argument("--obj", required=True, help='resource as JSON: {"model": "llama-3-8b"}')
    explain.add_argument("--act", required=True, help="operation: chat | completion | embeddings | models")
    explain.add_argument("--env", default="{}", help='environment as JSON: {"time": "...", "pii": []}')
    explain.add_argument("--stage", choices=["access", "content", "console"], help="decide only this stage")
    _policy_args(explain)
    explain.set_defaults(func=cmd_explain)


def _policy_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", type=Path, help="guard.yaml: use its policy section")
    p.add_argument("--model", type=Path, help=f"casbin model (default {DEFAULT_MODEL})")
    p.add_argument("--rules", type=Path, nargs="+", help=f"rule files (default {DEFAULT_RULES_GLOB})")


def settings_from_args(args: argparse.Namespace) -> PolicySettings:
    if args.config is not None:
        from guard.config import load_config

        settings = load_config(args.config).policy
    else:
        rules = sorted(Path().glob(DEFAULT_RULES_GLOB))
        settings = PolicySettings(model=DEFAULT_MODEL, rules=rules or [Path("policies/policy.csv")])
    if args.model is not None:
        settings.model = args.model
    if args.rules:
        settings.rules = list(args.rules)
    return settings


def _load(args: argparse.Namespace) -> tuple[PolicySettings, Policy]:
    settings = settings_from_args(args)
    return settings, load_policy(settings.model, list(settings.rules))


def cmd_check(args: argparse.Namespace) -> int:
    settings, policy = _load(args)
    if settings.shadow is not None:
        load_policy(settings.shadow.model or settings.model, list(settings.shadow.rules))
    for w in policy.warnings:
        print(f"warning: {w}", file=sys.stderr)
    n = len(policy.engine.rules)
    files = ", ".join(display_path(p) for p in [policy.model_path, *policy.rule_paths])
    print(f"ok: {n} rules ({files}); policy version {policy.version}")
    return 0


def cmd_test(args: argparse.Namespace) -> int:
    _, policy = _load(args)
    outcomes = run_files(policy.engine, list(args.files))
    for o in outcomes:
        print(o.line())
    failed = sum(not o.passed for o in outcomes)
    print(f"{len(outcomes) - failed} passed, {failed} failed (policy version {policy.version[:12]})")
    return 1 if failed else 0


def _json_arg(name: str, text: str) -> Any:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise ConfigError(f"--{name}: invalid JSON: {e.msg} at column {e.colno}") from None
    if not isinstance(value, dict):
        raise ConfigError(f"--{name}: must be a JSON object")
    return value


def cmd_explain(args: argparse.Namespace) -> int:
    _, policy = _load(args)
    sub, obj, env = _json_arg("sub", args.sub), _json_arg("obj", args.obj), _json_arg("env", args.env)
    out = explain(policy, sub, obj, args.act, env, args.stage)
    print(json.dumps(out, indent=2))
    return 0 if out["decision"] == "allow" else 1
