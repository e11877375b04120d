"""Coverage-guided fuzzing with atheris (libFuzzer) of the same parsers test_fuzz_parsers.py and
test_fuzz_proxy.py cover with hypothesis, where byte-level mutation finds what generated structure misses.

Run a target by hand for longer (it seeds from ``corpus/``; a crasher is written to the working directory as
``crash-<sha1>``: copy it into the matching ``corpus/`` folder so the hypothesis suites replay it)::

    .venv/bin/python tests/hardening/test_fuzz_atheris.py relay-sse -max_total_time=600

Targets: relay-sse, relay-ndjson, request-openai, request-ollama, xfcc, config, scan-jsonl. Under pytest each
target runs for ``GUARD_ATHERIS_SECONDS`` (default 2) in its own process; skipped when atheris is not
installed (it is not a dependency: ``pip install atheris``).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
SEEDS = {
    "relay-sse": ["sse-chat", "sse-completion"],
    "relay-ndjson": ["ndjson-chat", "ndjson-completion"],
    "request-openai": ["request-app"],
    "request-ollama": ["request-app"],
    "xfcc": ["xfcc"],
    "config": ["config"],
    "scan-jsonl": ["scan-jsonl"],
}
DEFAULT_TARGETS = ["relay-sse", "request-openai"]  # the rest by hand (see above)


def _target(name: str):
    import asyncio
    import io
    import json
    import tempfile

    if name.startswith("relay-"):
        from guard.relay import Relay, UpstreamStreamError
        from tests.hardening.test_fuzz_parsers import HoldBack

        api = "openai" if name == "relay-sse" else "ollama"
        loop = asyncio.new_event_loop()

        def one(data: bytes) -> None:
            op = "completion" if data[:1] == b"c" else "chat"
            relay = Relay(api, op, "m", lambda kind: [HoldBack(3, "x")])

            async def go() -> None:
                for i in range(0, len(data), 17):
                    _, stop = await relay.feed(data[i : i + 17])
                    if stop:
                        relay.stop_bytes()
                        return
                await relay.finish()

            with contextlib.suppress(UpstreamStreamError):
                loop.run_until_complete(go())

        return one
    if name.startswith("request-"):
        from guard.apis import ollama, openai
        from guard.audit.recorder import prompt_text
        from guard.errors import GuardError

        mod = openai if name == "request-openai" else ollama

        def one(data: bytes) -> None:
            try:
                body = json.loads(data)
            except (ValueError, RecursionError):
                return
            if not isinstance(body, dict):
                return
            prompt_text(body)  # the audit capture reads refused bodies too
            for op in ("chat", "completion", "embeddings"):
                try:
                    mod.validate(op, body)
                except GuardError:
                    continue
                mod.prompt_segments(op, body)
                mod.response_segments(op, body)
                mod.usage(body)
                mod.finish_reasons(body)
                list(mod.chunk_channels(op, body))

        return one
    if name == "xfcc":
        from guard.identity import XFCCError, _parse_xfcc

        def one(data: bytes) -> None:
            with contextlib.suppress(XFCCError):
                _parse_xfcc(data.decode("latin-1"))

        return one
    if name == "config":
        from guard.config import ConfigError, load_config

        tmp = Path(tempfile.mkdtemp()) / "guard.yaml"

        def one(data: bytes) -> None:
            tmp.write_bytes(data)
            try:
                load_config(tmp)
            except ConfigError as e:
                assert all(line.startswith(f"{tmp}:") for line in str(e).split("\n")), str(e)

        return one
    if name == "scan-jsonl":
        from guard.screens.cli import scan_jsonl
        from guard.screens.pii.profile import load_pii_profiles

        profile = load_pii_profiles(ROOT / "filters" / "pii.yaml")["default"]

        def one(data: bytes) -> None:
            out = io.TextIOWrapper(io.BytesIO(), encoding="utf-8")
            assert scan_jsonl(profile, io.BytesIO(data[:2000]), out) in (0, 2)

        return one
    raise SystemExit(f"unknown target {name!r}; one of {', '.join(SEEDS)}")


def main(argv: list[str]) -> None:
    import atheris

    name, rest = argv[1], argv[2:]
    sys.path.insert(0, str(ROOT))
    with atheris.instrument_imports(include=["guard"]):
        one = _target(name)
    import tempfile

    seeds = [str(HERE / "corpus" / d) for d in SEEDS[name] if (HERE / "corpus" / d).is_dir()]
    if not any(a.startswith("-max_len=") for a in rest):
        rest.append("-max_len=4096")
    # libFuzzer writes what it learns into the FIRST corpus folder: a scratch one, never corpus/ itself
    work = os.environ.get("GUARD_ATHERIS_WORK") or tempfile.mkdtemp(prefix="guard-atheris-")
    atheris.Setup([argv[0], *rest, work, *seeds], one)
    atheris.Fuzz()


@pytest.mark.parametrize("target", DEFAULT_TARGETS)
def test_atheris(target: str, tmp_path: Path) -> None:
    pytest.importorskip("atheris")
    (tmp_path / "work").mkdir()
    seconds = int(os.environ.get("GUARD_ATHERIS_SECONDS", "2"))
    r = subprocess.run(
        [
            sys.executable,
            __file__,
            target,
            f"-max_total_time={seconds}",
            "-rss_limit_mb=2048",
            f"-artifact_prefix={tmp_path}/",
            "-timeout=20",
        ],
        capture_output=True,
        text=True,
        timeout=seconds + 90,
        cwd=ROOT,
        env={**os.environ, "GUARD_ATHERIS_WORK": str(tmp_path / "work")},
    )
    crashes = sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(("crash-", "timeout-", "oom-")))
    assert not list((HERE / "corpus").rglob("[0-9a-f]" * 40)), "libFuzzer wrote into corpus/"
    assert r.returncode == 0 and not crashes, f"{crashes}\n{r.stderr[-4000:]}"
    assert "Done" in r.stderr or "DONE" in r.stderr, r.stderr[-2000:]


if __name__ == "__main__":
    main(sys.argv)
