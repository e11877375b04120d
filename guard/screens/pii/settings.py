"""filters/pii.yaml: named PII profiles (a policy rule picks one by name), custom recognizers, hash key.

Errors name the file, the line and the key path, like the main configuration.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal

import regex as re
from pydantic import AfterValidator, Field, field_validator, model_validator

from guard.config import ConfigError, Strict, load_yaml, validate

Action = Literal["block", "redact", "pseudonymize", "mask", "hash", "allow"]
ACTIONS: tuple[str, ...] = ("block", "redact", "pseudonymize", "mask", "hash", "allow")
_ENTITY = r"^[A-Z][A-Z0-9_]*$"


def _compiles(v: str) -> str:
    """Configured patterns run on RE2 (linear time): refuse what it cannot run, saying why."""
    from guard.screens.linear_re import check

    return check(v)


class EntityRule(Strict):
    threshold: float = Field(0.5, ge=0.0, le=1.0)  # findings scoring below are ignored
    prompt: Action = "redact"  # what happens to it on the way to the model
    response: Action = "redact"  # ... and on the way back to the client
    mask_keep: int = Field(4, ge=0, le=64)  # mask: characters kept at the end


class Allowlist(Strict):
    values: list[str] = []  # exact values never treated as personal data (e.g. the support address)
    regexes: list[Annotated[str, AfterValidator(_compiles)]] = []  # a finding whose whole text matches one is
    #                                                              ignored (RE2 syntax, each checked on its own)


class Ner(Strict):
    """Optional named-entity model, loaded from a local path (never downloaded)."""

    spacy: Path | None = None  # a saved spaCy pipeline (nlp.to_disk)
    transformers: Path | None = None  # a token-classification model folder
    labels: dict[str, str] = {
        "PERSON": "PERSON",
        "PER": "PERSON",
        "LOC": "LOCATION",
        "GPE": "LOCATION",
        "ORG": "ORGANIZATION",
    }  # model label -> entity type
    score: float = Field(0.85, ge=0.0, le=1.0)

    @model_validator(mode="after")
    def _one(self) -> Ner:
        if (self.spacy is None) == (self.transformers is None):
            raise ValueError("set exactly one of spacy or transformers")
        return self


class Profile(Strict):
    entities: dict[str, EntityRule]  # the entity types screened, with their rules
    allowlist: Allowlist = Allowlist()
    on_error: Literal["block", "allow"] = "block"  # when the analyzer fails
    ner: Ner | None = None
    stream_holdback_chars: int = Field(512, ge=64, le=65536)  # longest open value a stream holds (then screened as is)
    max_scan_chars: int = Field(65536, ge=4096)  # longer texts are scanned in overlapping pieces

    @field_validator("entities")
    @classmethod
    def _names(cls, v: dict[str, EntityRule]) -> dict[str, EntityRule]:
        for k in v:
            if not re.match(_ENTITY, k):
                raise ValueError(f"entity type {k!r} must be UPPER_SNAKE_CASE")
        return v


class PatternSpec(Strict):
    regex: str
    score: float = Field(0.5, ge=0.0, le=1.0)
    name: str | None = None

    @field_validator("regex")
    @classmethod
    def _regex(cls, v: str) -> str:
        return _compiles(v)


class RecognizerSpec(Strict):
    name: str
    entity_type: str = Field(pattern=_ENTITY)
    patterns: list[PatternSpec] = Field(min_length=1)
    context: list[str] = []  # words near a match that raise its score (Presidio's context boost)
    validator: Literal["luhn", "iban", "mod11", "verhoeff"] | None = None


class HashKey(Strict):
    env: str | None = None  # environment variable holding the key
    file: Path | None = None  # or a file holding it

    @model_validator(mode="after")
    def _one(self) -> HashKey:
        if (self.env is None) == (self.file is None):
            raise ValueError("set exactly one of env or file")
        return self


class PIIFile(Strict):
    hash_key: HashKey | None = None  # HMAC key for the `hash` action; never logged
    recognizers: list[RecognizerSpec] = []
    profiles: dict[str, Profile] = Field(min_length=1)


def read_pii_file(path: str | os.PathLike[str]) -> tuple[PIIFile, bytes | None]:
    """Parse and check filters/pii.yaml; return the settings and the hash key (when a profile needs it)."""
    path = Path(path)
    data, lines = load_yaml(path)
    if not isinstance(data, dict):
        raise ConfigError(f"{path}:1: the PII settings must be a mapping")
    spec: PIIFile = validate(PIIFile, data, path, lines)
    _check_entities(spec, path, lines)
    if spec.hash_key and spec.hash_key.file and not spec.hash_key.file.is_absolute():
        spec.hash_key.file = path.parent / spec.hash_key.file
    for prof in spec.profiles.values():
        if prof.ner:
            for attr in ("spacy", "transformers"):
                p = getattr(prof.ner, attr)
                if p is not None and not p.is_absolute():
                    setattr(prof.ner, attr, path.parent / p)
    return spec, _hash_key(spec, path, lines)


def _check_entities(spec: PIIFile, path: Path, lines: dict[tuple, int]) -> None:
    from guard.screens.pii.engine import BUILTIN_ENTITIES

    custom = {r.entity_type for r in spec.recognizers}
    for name, prof in spec.profiles.items():
        known = set(BUILTIN_ENTITIES) | custom | (set(prof.ner.labels.values()) if prof.ner else set())
        for etype in prof.entities:
            if etype not in known:
                line = lines.get(("profiles", name, "entities", etype), 1)
                raise ConfigError(
                    f"{path}:{line}: profiles.{name}.entities.{etype}: unknown entity type (known: "
                    f"{', '.join(sorted(known))}; add a recognizer or an ner model for others)"
                )


def _hash_key(spec: PIIFile, path: Path, lines: dict[tuple, int]) -> bytes | None:
    users = [
        (n, e) for n, p in spec.profiles.items() for e, r in p.entities.items() if "hash" in (r.prompt, r.response)
    ]
    if not users:
        return None
    name, etype = users[0]
    where = f"{path}:{lines.get(('profiles', name, 'entities', etype), 1)}"
    if spec.hash_key is None:
        raise ConfigError(f"{where}: profiles.{name}.entities.{etype}: the hash action needs hash_key")
    hk, line = spec.hash_key, lines.get(("hash_key",), 1)
    if hk.env is not None:
        key = os.environ.get(hk.env, "").encode()
        if not key:
            raise ConfigError(f"{path}:{line}: hash_key.env: environment variable {hk.env} is not set")
        return key
    try:
        key = Path(hk.file).read_bytes().strip()  # type: ignore[arg-type]
    except OSError as e:
        raise ConfigError(f"{path}:{line}: hash_key.file: cannot read {hk.file}: {e.strerror}") from None
    if not key:
        raise ConfigError(f"{path}:{line}: hash_key.file: {hk.file} is empty")
    return key


def describe(spec: PIIFile) -> dict[str, Any]:
    """What a person may print: the settings without the key."""
    return spec.model_dump(mode="json", exclude={"hash_key"})
