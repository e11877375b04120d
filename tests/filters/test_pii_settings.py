"""filters/pii.yaml: errors name file, line and key path; custom recognizers; the hash key; NER wiring."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from guard.config import ConfigError
from guard.screens.base import Segment
from guard.screens.pii.profile import load_pii_profiles
from guard.screens.pii.screen import PIIScreen


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "pii.yaml"
    p.write_text(text)
    return p


@pytest.mark.parametrize(
    "text, line, needle",
    [
        (
            "profiles:\n  d:\n    entities:\n      EMAIL_ADDRESS: {prompt: shred}\n",
            4,
            "profiles.d.entities.EMAIL_ADDRESS.prompt",
        ),
        ("profiles:\n  d:\n    entites: {}\n", 3, "profiles.d.entites: unknown key"),
        ("profiles:\n  d:\n    entities:\n      EMAIL_ADDRESS: {threshold: 2}\n", 4, "threshold"),
        (
            "profiles:\n  d:\n    entities:\n      PASSPORT: {}\n",
            4,
            "profiles.d.entities.PASSPORT: unknown entity type",
        ),
        (
            "recognizers:\n  - name: x\n    entity_type: X_ID\n    patterns:\n      - regex: '([a-'\n"
            "profiles:\n  d:\n    entities: {X_ID: {}}\n",
            5,
            "invalid regex",
        ),
        (
            "recognizers:\n  - name: x\n    entity_type: X_ID\n    patterns: [{regex: 'x'}]\n    validator: crc\n"
            "profiles: {d: {entities: {X_ID: {}}}}\n",
            5,
            "recognizers.0.validator",
        ),
        ("profiles:\n  d:\n    entities:\n      EMAIL_ADDRESS: {prompt: hash}\n", 4, "the hash action needs hash_key"),
        (
            "hash_key: {env: GUARD_TEST_UNSET_KEY_VAR}\nprofiles:\n  d:\n    entities:\n"
            "      EMAIL_ADDRESS: {prompt: hash}\n",
            1,
            "GUARD_TEST_UNSET_KEY_VAR is not set",
        ),
        ("profiles:\n  d:\n    entities: {}\n    allowlist: {regexes: ['(']}\n", 4, "allowlist.regexes"),
        ("profiles:\n  d: {entities: {EMAIL_ADDRESS: {}}}\n  d: {entities: {}}\n", 3, "duplicate key"),
    ],
)
def test_settings_errors_name_file_line_and_key(tmp_path: Path, text: str, line: int, needle: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as e:
        load_pii_profiles(path)
    assert f"{path}:{line}" in str(e.value) and needle in str(e.value), str(e.value)


def test_custom_recognizer_from_yaml_with_context_and_checksum(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        r"""
recognizers:
  - name: employee_id
    entity_type: EMPLOYEE_ID
    patterns: [{regex: '\bEMP-\d{6}\b', score: 0.3}]
    context: [employee, badge]
    validator: luhn
  - name: ticket
    entity_type: TICKET_ID
    patterns: [{regex: '\bTCK\d{4}\b', score: 0.3}]
    context: [ticket]
profiles:
  d:
    entities:
      EMPLOYEE_ID: {prompt: pseudonymize}
      TICKET_ID: {prompt: redact}
""",
    )
    prof = load_pii_profiles(path)["d"]
    assert prof.findings("code EMP-123456 fails luhn") == []
    found = prof.findings("code EMP-123455 passes luhn")
    assert [(f.entity_type, f.score) for f in found] == [("EMPLOYEE_ID", 1.0)]
    assert prof.findings("see TCK1234 later") == []  # 0.3 < 0.5 without context
    boosted = prof.findings("my ticket: TCK1234")
    assert [f.entity_type for f in boosted] == ["TICKET_ID"] and boosted[0].score > 0.5
    seg = [Segment("employee EMP-123455, ticket TCK1234", "user", "content", ())]
    asyncio.run(PIIScreen(prof).screen_prompt(seg, {}))
    assert seg[0].text == "employee <EMPLOYEE_ID_1>, ticket <TICKET_ID>"


def test_hash_key_from_file(tmp_path: Path) -> None:
    (tmp_path / "k").write_text("secret-key\n")
    path = write(tmp_path, "hash_key: {file: k}\nprofiles:\n  d:\n    entities:\n      EMAIL_ADDRESS: {prompt: hash}\n")
    prof = load_pii_profiles(path)["d"]
    assert prof.hash_key == b"secret-key" and "secret-key" not in repr(prof)


def test_ner_from_a_local_spacy_pipeline(tmp_path: Path) -> None:
    import spacy

    nlp = spacy.blank("en")
    ruler = nlp.add_pipe("entity_ruler")
    ruler.add_patterns(
        [
            {"label": "PERSON", "pattern": [{"LOWER": "ada"}, {"LOWER": "lovelace"}]},
            {"label": "ORG", "pattern": "Initech"},
            {"label": "GPE", "pattern": "Lisbon"},
        ]
    )
    nlp.to_disk(tmp_path / "ner")
    path = write(
        tmp_path,
        "profiles:\n  d:\n    ner: {spacy: ner}\n    entities:\n"
        "      PERSON: {prompt: pseudonymize}\n      ORGANIZATION: {prompt: redact}\n"
        "      EMAIL_ADDRESS: {}\n",
    )
    prof = load_pii_profiles(path)["d"]
    seg = [Segment("Ada Lovelace of Initech, in Lisbon, ada@lovelace.org", "user", "content", ())]
    v = asyncio.run(PIIScreen(prof).screen_prompt(seg, {}))
    assert seg[0].text == "<PERSON_1> of <ORGANIZATION>, in Lisbon, <EMAIL_ADDRESS>"
    assert v.entities == {"EMAIL_ADDRESS": 1, "ORGANIZATION": 1, "PERSON": 1}


def test_ner_path_that_is_not_a_pipeline_is_a_config_error(tmp_path: Path) -> None:
    path = write(tmp_path, "profiles:\n  d:\n    ner: {spacy: missing}\n    entities: {PERSON: {}}\n")
    with pytest.raises(ConfigError, match="cannot load the spaCy pipeline"):
        load_pii_profiles(path)
