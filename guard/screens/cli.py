"""`guard scan`: try the PII settings on a text, or feed a measurement tool JSON Lines.
`guard filters check [--filters DIR]`: load every screening file; name each unusable key or pattern.

    guard scan [--profile NAME] [--direction prompt|response] [--filters DIR] [TEXT | -]
    guard scan --jsonl [--profile NAME] [--filters DIR]  < in.jsonl > out.jsonl

JSON Lines contract: each input line is ``{"text": "..."}``; for each, in order, one output line
``{"findings": [{"entity_type", "start", "end", "score"}], "redacted": "..."}``. Offsets count Unicode
code points of ``text``; ``redacted`` replaces every finding with ``<ENTITY_TYPE>`` whatever the
profile's action. An input line that is not UTF-8, not JSON, not an object or has no string ``text``
gets ``{"error": "line N: ...", "line": N}`` in its place, the rest go on, and the exit status is 2.
Exit status otherwise: 0; for a single text, 1 when the profile would block it.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import IO, Any

from guard.config import ConfigError

_HELP = "find personal data in a text with a PII profile (or JSON Lines with --jsonl)"


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "scan",
        help=_HELP,
        description=_HELP + ".",
        epilog=__doc__.split("\n\n", 2)[2],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("text", nargs="?", default=None, help="the text; '-' or nothing reads standard input")
    p.add_argument("--profile", default="default", help="profile in pii.yaml (default: default)")
    p.add_argument(
        "--direction", choices=("prompt", "response"), default="prompt", help="which actions to apply (default: prompt)"
    )
    p.add_argument("--filters", type=Path, default=Path("filters"), help="folder holding pii.yaml")
    p.add_argument("--jsonl", action="store_true", help='read JSON Lines {"text": ...}, write findings')
    p.set_defaults(func=run)
    f = subparsers.add_parser(
        "filters",
        help="check the screening files (filters/*.yaml)",
        description="Check the screening files: every key and every pattern. Patterns run on "
        "RE2 (linear time); one RE2 cannot run is named with file, line, key "
        "and why. Exit status 0 when all are usable, 1 otherwise.",
    )
    fsub = f.add_subparsers(dest="filters_command", required=True)
    c = fsub.add_parser("check", help="load every file in the filters folder and report each problem")
    c.add_argument("--filters", type=Path, default=Path("filters"), help="folder holding the *.yaml files")
    c.set_defaults(func=check)


def _profile(args: argparse.Namespace) -> Any:
    from guard.screens.pii.profile import load_pii_profiles

    profiles = load_pii_profiles(args.filters / "pii.yaml")
    if args.profile not in profiles:
        raise ConfigError(
            f"{args.filters / 'pii.yaml'}: no profile {args.profile!r} (have: {', '.join(sorted(profiles))})"
        )
    return profiles[args.profile]


def run(args: argparse.Namespace) -> int:
    if args.jsonl and args.text not in (None, "-"):
        print("guard: error: --jsonl reads standard input; give no TEXT", file=sys.stderr)
        return 2
    profile = _profile(args)
    if args.jsonl:
        return scan_jsonl(profile, sys.stdin.buffer, sys.stdout)
    if args.text is not None and args.text != "-":
        text = args.text
    else:
        try:
            text = sys.stdin.buffer.read().decode("utf-8")
        except UnicodeDecodeError as e:
            print(f"guard: error: standard input is not UTF-8 text (byte {e.start})", file=sys.stderr)
            return 2
    return _scan_one(profile, text, args.direction, sys.stdout)


def _scan_one(profile: Any, text: str, direction: str, out: IO[str]) -> int:
    from guard.screens.pii.screen import PIIScreen

    findings = profile.findings(text)
    transformed, verdict = PIIScreen(profile).scan_text(text, direction)
    out.write(f"profile {profile.name}, {direction}: {len(findings)} finding(s)\n")
    for f in findings:
        action = profile.action(f.entity_type, direction)
        out.write(
            f"  {f.entity_type:<16} {f.start:>6}-{f.end:<6} {f.score:.2f}  {action:<12} {text[f.start : f.end]!r}\n"
        )
    state = "BLOCKED: " + verdict.message if verdict.blocked else f"action {verdict.action}"
    out.write(f"{state}\n---\n{transformed}\n")
    return 1 if verdict.blocked else 0


def scan_jsonl(profile: Any, source: IO[bytes], out: IO[str]) -> int:
    from guard.screens.pii.transform import redact_all

    status = 0
    for n, raw in enumerate(source, 1):
        try:
            text = _jsonl_text(raw, n)
        except ValueError as e:
            status = 2
            out.write(json.dumps({"error": str(e), "line": n}) + "\n")
            out.flush()
            continue
        found = profile.findings(text)
        out.write(
            json.dumps(
                {"findings": [f.to_json() for f in found], "redacted": redact_all(text, found)}, ensure_ascii=False
            )
            + "\n"
        )
        out.flush()
    return status


def _jsonl_text(raw: bytes, n: int) -> str:
    try:
        line = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"line {n}: not UTF-8") from None
    try:
        obj = json.loads(line)
    except (ValueError, RecursionError):
        raise ValueError(f"line {n}: not JSON") from None
    if not isinstance(obj, dict) or not isinstance(obj.get("text"), str):
        raise ValueError(f'line {n}: expected an object with a string "text"')
    try:  # JSON may escape a lone surrogate ("\ud800"): not Unicode text, and the output could not be written
        obj["text"].encode("utf-8")
    except UnicodeEncodeError as e:
        raise ValueError(f'line {n}: "text" holds a lone surrogate at code point {e.start}') from None
    return obj["text"]


def check(args: argparse.Namespace, out: IO[str] | None = None) -> int:
    """``guard filters check``: each file's problems (file:line: key: why), or one ok line per file."""
    from guard.screens.denylist.settings import load_denylist
    from guard.screens.pii.settings import read_pii_file
    from guard.screens.safety.settings import load_safety

    out = out or sys.stdout
    loaders = {"denylist.yaml": load_denylist, "pii.yaml": read_pii_file, "safety.yaml": load_safety}
    d: Path = args.filters
    if not d.is_dir():
        raise ConfigError(f"{d}: filters directory not found")
    status = 0
    for name, load in loaders.items():
        path = d / name
        if not path.exists():
            continue
        try:
            load(path)
        except ConfigError as e:
            status = 1
            out.write(f"{e}\n")
            continue
        out.write(f"{path}: ok\n")
    return status
