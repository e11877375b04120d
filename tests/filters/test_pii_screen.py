"""The PII screen at the library level: every action, both directions, tool-call JSON, allowlists."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from guard.screens.base import Segment
from guard.screens.pii.profile import PIIProfile, load_pii_profiles
from guard.screens.pii.screen import PIIScreen
from guard.screens.pii.transform import CTX_KEY

SETTINGS = """
hash_key: {env: GUARD_TEST_PII_KEY}
profiles:
  t:
    entities:
      EMAIL_ADDRESS: {prompt: pseudonymize, response: redact}
      PHONE_NUMBER: {prompt: pseudonymize, response: redact}
      CREDIT_CARD: {prompt: mask, response: mask, mask_keep: 4}
      IBAN_CODE: {prompt: hash, response: hash}
      US_SSN: {prompt: block, response: block}
      IP_ADDRESS: {prompt: allow, response: redact}
    allowlist:
      values: [support@example.com]
      regexes: ['4111[ -]?1111[ -]?1111[ -]?1111']
  failing:
    on_error: block
    entities: {EMAIL_ADDRESS: {}}
  lenient:
    on_error: allow
    entities: {EMAIL_ADDRESS: {}}
"""
EMAIL, PHONE, CARD = "jane.roe@corpmail.com", "+44 20 7946 0958", "5500 0000 0000 0004"
IBAN, SSN = "DE89 3704 0044 0532 0130 00", "536-90-4399"


def run(coro: Any) -> Any:
    return asyncio.run(coro)


@pytest.fixture(scope="module")
def profiles(tmp_path_factory: pytest.TempPathFactory) -> dict[str, PIIProfile]:
    import os

    os.environ["GUARD_TEST_PII_KEY"] = "k3y-for-tests"
    path = tmp_path_factory.mktemp("pii") / "pii.yaml"
    path.write_text(SETTINGS)
    return load_pii_profiles(path)


@pytest.fixture
def screen(profiles: dict[str, PIIProfile]) -> PIIScreen:
    return PIIScreen(profiles["t"])


def seg(text: str, kind: str = "content", role: str = "user") -> Segment:
    return Segment(text=text, role=role, kind=kind, path=("messages", 0, "content"))


def test_pseudonymize_gives_the_same_placeholder_to_the_same_value_and_restores_it(screen: PIIScreen) -> None:
    ctx: dict[str, Any] = {}
    prompt = [seg(f"Mail {EMAIL} or {EMAIL.upper()}; again {EMAIL}. Phone {PHONE}."), seg(f"cc {EMAIL}", "system")]
    v = run(screen.screen_prompt(prompt, ctx))
    assert prompt[0].text == (
        "Mail <EMAIL_ADDRESS_1> or <EMAIL_ADDRESS_2>; again <EMAIL_ADDRESS_1>. Phone <PHONE_NUMBER_1>."
    )
    assert prompt[1].text == "cc <EMAIL_ADDRESS_1>"
    assert v.entities == {"EMAIL_ADDRESS": 4, "PHONE_NUMBER": 1} and v.modified and not v.blocked
    assert v.action == "pseudonymize"
    answer = [seg("Wrote to <EMAIL_ADDRESS_1> and <PHONE_NUMBER_1>, not <EMAIL_ADDRESS_9>.", role="assistant")]
    rv = run(screen.screen_response(answer, prompt, ctx))
    assert answer[0].text == f"Wrote to {EMAIL} and {PHONE}, not <EMAIL_ADDRESS_9>."
    assert rv.entities == {}  # the user's own values are not screened again


def test_response_redacts_new_personal_data_but_not_restored_values(screen: PIIScreen) -> None:
    ctx: dict[str, Any] = {}
    run(screen.screen_prompt([seg(f"me: {EMAIL}")], ctx))
    answer = [seg("Yours is <EMAIL_ADDRESS_1>; the admin is root@corpmail.com at 10.0.0.7", role="assistant")]
    v = run(screen.screen_response(answer, [], ctx))
    assert answer[0].text == f"Yours is {EMAIL}; the admin is <EMAIL_ADDRESS> at <IP_ADDRESS>"
    assert v.entities == {"EMAIL_ADDRESS": 1, "IP_ADDRESS": 1} and v.action == "redact"


def test_block_names_types_never_values_and_leaves_text_alone(screen: PIIScreen) -> None:
    text = f"my SSN is {SSN} and mail {EMAIL}"
    segments = [seg(text)]
    v = run(screen.screen_prompt(segments, {}))
    assert v.blocked and v.code == "pii_blocked" and v.action == "block" and v.screen == "pii"
    assert "US_SSN" in v.message and SSN not in v.message and EMAIL not in v.message
    assert segments[0].text == text
    audit = json.dumps(v.to_audit())
    assert SSN not in audit and EMAIL not in audit and v.entities == {"EMAIL_ADDRESS": 1, "US_SSN": 1}


def test_mask_keeps_last_characters_and_separators(screen: PIIScreen) -> None:
    segments = [seg(f"card {CARD} please")]
    v = run(screen.screen_prompt(segments, {}))
    assert segments[0].text == "card **** **** **** 0004 please" and v.action == "mask"


def test_hash_is_keyed_and_stable_across_requests(screen: PIIScreen, profiles: dict[str, PIIProfile]) -> None:
    a, b = [seg(f"IBAN {IBAN}")], [seg(f"send to {IBAN} now")]
    run(screen.screen_prompt(a, {}))
    run(screen.screen_prompt(b, {}))
    token = a[0].text.split(" ", 1)[1]
    assert token.startswith("<IBAN_CODE:") and len(token) == len("<IBAN_CODE:>") + 16
    assert b[0].text == f"send to {token} now" and IBAN not in a[0].text
    other = PIIProfile("x", profiles["t"].settings, profiles["t"].analyzer, b"another key")
    c = [seg(f"IBAN {IBAN}")]
    run(PIIScreen(other).screen_prompt(c, {}))
    assert c[0].text != a[0].text


def test_allow_records_only_and_allowlist_ignores(screen: PIIScreen) -> None:
    segments = [seg("ip 192.168.10.20, write support@example.com, test card 4111 1111 1111 1111")]
    before = segments[0].text
    v = run(screen.screen_prompt(segments, {}))
    assert segments[0].text == before and not v.modified
    assert v.entities == {"IP_ADDRESS": 1} and v.action == "allow"


def test_tool_call_arguments_stay_valid_json(screen: PIIScreen) -> None:
    ctx: dict[str, Any] = {}
    args = json.dumps({"to": EMAIL, "body": f'Say "hi" to {PHONE}\\n', "n": 3, "cc": [EMAIL]})
    segments = [seg(args, "tool_arguments", "assistant"), seg(json.dumps({"ok": EMAIL}), "tool_result", "tool")]
    run(screen.screen_prompt(segments, ctx))
    parsed = json.loads(segments[0].text)
    assert parsed == {
        "to": "<EMAIL_ADDRESS_1>",
        "body": 'Say "hi" to <PHONE_NUMBER_1>\\n',
        "n": 3,
        "cc": ["<EMAIL_ADDRESS_1>"],
    }
    assert json.loads(segments[1].text) == {"ok": "<EMAIL_ADDRESS_1>"}
    weird = 'a"b\\c@corpmail.com'  # restored into JSON, the quote and backslash must be escaped
    ctx[CTX_KEY].placeholder("EMAIL_ADDRESS", weird)
    answer = [
        seg('{"to": "<EMAIL_ADDRESS_1>", "cc": "<EMAIL_ADDRESS_2>"}', "tool_arguments", "assistant"),
        seg('{"to": "<EMAIL_ADDRESS_2>", ', "tool_arguments", "assistant"),
    ]  # not JSON (cut off)
    run(screen.screen_response(answer, [], ctx))
    assert json.loads(answer[0].text) == {"to": EMAIL, "cc": weird}
    assert json.loads(answer[1].text + '"x": 1}')["to"] == weird


def test_analyzer_failure_blocks_or_passes_per_on_error(
    profiles: dict[str, PIIProfile], monkeypatch: pytest.MonkeyPatch
) -> None:
    def boom(*a: Any, **k: Any) -> Any:
        raise RuntimeError(f"failed on {EMAIL}")

    for name in ("failing", "lenient"):
        monkeypatch.setattr(profiles[name].analyzer, "analyze", boom)
    segments = [seg(f"mail {EMAIL}")]
    v = run(PIIScreen(profiles["failing"]).screen_prompt(segments, {}))
    assert v.status == "error" and v.blocked and v.code == "screen_error" and EMAIL not in v.message
    v = run(PIIScreen(profiles["lenient"]).screen_prompt(segments, {}))
    assert v.status == "error" and not v.blocked and segments[0].text == f"mail {EMAIL}"


def test_pseudonym_map_lives_in_ctx_only_and_hides_values(screen: PIIScreen) -> None:
    ctx: dict[str, Any] = {}
    run(screen.screen_prompt([seg(f"x {EMAIL}")], ctx))
    assert EMAIL not in repr(ctx)
    fresh: dict[str, Any] = {}
    answer = [seg("<EMAIL_ADDRESS_1>", role="assistant")]
    run(screen.screen_response(answer, [], fresh))
    assert answer[0].text == "<EMAIL_ADDRESS_1>"  # another request's map is never used


def test_shipped_profiles_load(tmp_path: Path) -> None:
    profiles = load_pii_profiles(Path(__file__).parents[2] / "filters" / "pii.yaml")
    assert {"default", "strict"} <= set(profiles)
    assert profiles["default"].findings("write to a.b@corpmail.com")[0].entity_type == "EMAIL_ADDRESS"
