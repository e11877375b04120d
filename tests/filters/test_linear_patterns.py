"""Every configured pattern runs on RE2 (linear time); what RE2 cannot run is refused at load, by file and line.

Engine choice and refusal only: how long hostile texts take is measured in tests/bench/bench_hostile.py.
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import re2

from guard.config import ConfigError
from guard.screens import linear_re
from guard.screens.base import Segment
from guard.screens.denylist.screen import DenylistScreen
from guard.screens.denylist.settings import DenylistProfile, load_denylist
from guard.screens.pii.settings import read_pii_file

ROOT = Path(__file__).resolve().parents[2]
RE2_TYPE = type(re2.compile("a"))


def test_every_shipped_denylist_pattern_compiles_under_re2() -> None:
    settings = load_denylist(ROOT / "filters")
    for name in settings.profiles:
        screen = DenylistScreen.from_settings(settings, name)
        assert screen.rules
        for c in screen.rules:
            assert isinstance(c.rx, RE2_TYPE), c.rule.name
            for extra in (c.start, c.end):
                assert extra is None or isinstance(extra, RE2_TYPE), c.rule.name


def test_every_shipped_pii_pattern_compiles_under_re2() -> None:
    spec, _ = read_pii_file(ROOT / "filters" / "pii.yaml")
    pats = [p.regex for r in spec.recognizers for p in r.patterns]
    pats += [x for prof in spec.profiles.values() for x in prof.allowlist.regexes]
    assert pats
    for p in pats:
        assert linear_re.why_refused(p) is None, p


def test_custom_recognizers_and_allowlists_run_on_re2() -> None:
    from guard.screens.pii.profile import load_pii_profiles

    profiles = load_pii_profiles(ROOT / "filters" / "pii.yaml")
    strict, default = profiles["strict"], profiles["default"]
    recs = [r for r in strict.analyzer.engine.registry.recognizers if type(r).__name__ == "ConfiguredRecognizer"]
    assert recs and all(isinstance(rx, RE2_TYPE) for r in recs for _, rx in r._linear)
    assert default._allow_res and all(isinstance(rx, RE2_TYPE) for rx in default._allow_res)
    found = strict.findings("employee badge EMP-123455 and EMP-1234")  # luhn-valid custom id, found on RE2
    assert [f.entity_type for f in found] == ["EMPLOYEE_ID"], found


@pytest.mark.parametrize(
    "pattern, why",
    [
        (r"secret(?=[0-9]{4})", "lookaround"),
        (r"(?<![A-Z])AKIA[A-Z0-9]{16}", "lookaround"),
        (r"(?<=key=)[a-f0-9]{32}", "lookaround"),
        (r"(['\"])[a-z]{8}\1", "backreferences"),
        (r"(?P<q>x)y(?P=q)", "backreferences"),
        (r"(?>a+)b", "atomic"),
        (r"a++b", "possessive"),
        (r"token\Z", r"\\Z"),
    ],
)
def test_user_denylist_pattern_re2_cannot_run_is_refused_with_file_line_key(
    tmp_path: Path, pattern: str, why: str
) -> None:
    f = tmp_path / "denylist.yaml"
    f.write_text(
        "profiles:\n  default:\n    rules:\n      - name: ok\n        pattern: 'fine[0-9]+'\n"
        f"      - name: bad\n        pattern: {json.dumps(pattern)}\n"
    )
    with pytest.raises(ConfigError) as e:
        load_denylist(f)
    msg = str(e.value)
    assert f"{f}:7: profiles.default.rules.1.pattern:" in msg, msg
    assert re.search(why, msg), msg


def test_stream_markers_are_checked_too(tmp_path: Path) -> None:
    f = tmp_path / "denylist.yaml"
    f.write_text(
        "profiles:\n  default:\n    rules:\n      - name: blk\n        pattern: 'BEGIN[\\s\\S]*?END'\n"
        "        stream_start: 'BEGIN(?! PUBLIC)'\n        stream_end: 'END'\n"
    )
    with pytest.raises(ConfigError, match=r"denylist.yaml:6: profiles.default.rules.0.stream_start: lookaround"):
        load_denylist(f)


def test_pii_custom_recognizer_with_lookbehind_is_refused(tmp_path: Path) -> None:
    f = tmp_path / "pii.yaml"
    f.write_text(
        "recognizers:\n  - name: x\n    entity_type: X_ID\n    patterns:\n"
        "      - regex: '(?<!\\d)X-\\d{6}'\nprofiles:\n  d:\n    entities: {X_ID: {}}\n"
        "    allowlist:\n      regexes: ['(a)\\1']\n"
    )
    with pytest.raises(ConfigError) as e:
        read_pii_file(f)
    msg = str(e.value)
    assert f"{f}:5: recognizers.0.patterns.0.regex: lookaround" in msg, msg
    assert f"{f}:10: profiles.d.allowlist.regexes.0: backreferences" in msg, msg


def test_filters_check_names_each_bad_pattern_and_exits_1(tmp_path: Path) -> None:
    (tmp_path / "denylist.yaml").write_text(
        "profiles:\n  default:\n    rules:\n      - name: bad\n        pattern: 'x(?=y)'\n"
    )
    cmd = [sys.executable, "-m", "guard.cli", "filters", "check", "--filters"]
    r = subprocess.run([*cmd, str(tmp_path)], capture_output=True, text=True, timeout=60, check=False)
    assert r.returncode == 1, r.stdout + r.stderr
    assert f"{tmp_path / 'denylist.yaml'}:5: profiles.default.rules.0.pattern: lookaround" in r.stdout
    ok = subprocess.run([*cmd, str(ROOT / "filters")], capture_output=True, text=True, timeout=60, check=False)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "denylist.yaml: ok" in ok.stdout and "pii.yaml: ok" in ok.stdout


def _screen(rules: list[dict]) -> DenylistScreen:
    return DenylistScreen(DenylistProfile.model_validate({"rules": rules}))


def test_hit_group_marks_what_is_redacted_and_context_stays() -> None:
    s = _screen([{"name": "k", "pattern": r"key=(?P<hit>[a-f0-9]{8})(?:[^a-f0-9]|$)", "prompt": "redact"}])
    assert s.scan("x key=deadbeef, y", "prompt").text == "x key=[REDACTED:k], y"
    assert s.scan("x key=deadbeef", "prompt").text == "x key=[REDACTED:k]"
    assert s.scan("x key=deadbeef0", "prompt").hits == {}  # longer than 8: the context requirement holds


def test_shipped_lookahead_rewrites_keep_their_meaning() -> None:
    s = DenylistScreen.from_settings(load_denylist(ROOT / "filters"))
    key = "AIza" + "B" * 35
    assert s.scan(f"use {key}.", "response").text == "use [REDACTED:google_api_key]."
    assert s.scan(f"use {key}B", "response").hits == {}  # 36 characters: not a Google key
    secret = "aws_secret_access_key = " + "A" * 40
    assert s.scan(secret + "\n", "response").text == "[REDACTED:aws_secret_access_key]\n"


@pytest.mark.parametrize("space", [" ", "\u00a0", "\u2003", "\t\n", "\u3000", "\u2028"])
def test_phrases_match_across_any_unicode_white_space(space: str) -> None:
    s = _screen([{"name": "jb", "kind": "phrase", "phrases": ["ignore all previous instructions"]}])
    text = space.join(["Please", "IGNORE", "all", "previous", "instructions", "now"])
    assert s.scan(text, "prompt").block, repr(space)


def test_unterminated_blocks_still_count_once_per_text() -> None:
    s = DenylistScreen.from_settings(load_denylist(ROOT / "filters"))
    text = "-----BEGIN PRIVATE KEY-----\nabc\n-----END PRIVATE KEY-----\n" * 50 + "-----BEGIN PRIVATE KEY-----\n" * 50
    scan = s.scan(text, "response")
    assert scan.hits == {"private_key_block": 51}
    assert scan.text.count("[REDACTED:private_key_block]") == 51


def test_large_texts_are_screened_off_the_event_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    """Above budget.INLINE_CHARS the denylist scan runs in a worker thread, not on the loop's thread."""
    import threading

    from guard.screens import budget
    from guard.screens.denylist import screen as denylist

    s = DenylistScreen.from_settings(load_denylist(ROOT / "filters"))
    seen: list[str] = []
    real = denylist.DenylistScreen._scan_all

    def spy(self: DenylistScreen, segments: list[Segment], direction: str) -> object:
        seen.append(threading.current_thread().name)
        return real(self, segments, direction)

    monkeypatch.setattr(denylist.DenylistScreen, "_scan_all", spy)

    async def both() -> str:
        await s.screen_prompt([Segment("small", "user", "content", ())], {})
        await s.screen_prompt([Segment("x" * (budget.INLINE_CHARS + 1), "user", "content", ())], {})
        return threading.current_thread().name

    loop_thread = asyncio.run(both())
    assert seen[0] == loop_thread and seen[1] != loop_thread, seen
