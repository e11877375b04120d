"""Content capture (``audit.capture``): how prompts and answers enter the journal — none, hash (keyed
HMAC-SHA256 with the journal's HMAC key), redacted or full text."""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any

CAPTURE_LEVELS = ("none", "hash", "redacted", "full")


class ContentCapture:
    """How prompts and answers enter the journal: none, hash (keyed HMAC-SHA256), redacted or full text.

    With ``hash`` an auditor holding the key can prove that a given text was (or was not) exchanged, while
    the journal alone reveals nothing. The key never enters the journal; ``key_id`` names it.
    """

    def __init__(self, level: str = "hash", key: bytes | None = None) -> None:
        if level not in CAPTURE_LEVELS:
            raise ValueError(f"capture must be one of {CAPTURE_LEVELS}")
        if level == "hash" and not key:
            raise ValueError("capture=hash needs an HMAC key")
        self.level = level
        self._key = key or b""
        self._mac = _hmac_sha256(self._key)
        self.key_id = hashlib.sha256(b"guard-content-hmac:" + self._key).hexdigest()[:16] if key else ""

    def __repr__(self) -> str:
        return f"ContentCapture(level={self.level!r}, key_id={self.key_id!r})"

    @classmethod
    def from_settings(cls, settings: Any) -> ContentCapture:
        if settings.capture != "hash":
            return cls(settings.capture)
        return cls("hash", _hmac_key(settings))

    def record(
        self, prompt: str | None = None, answer: str | None = None, memo: dict[str, Any] | None = None
    ) -> dict[str, Any] | None:
        """The ``content`` member: for ``redacted`` pass the texts as screens rewrote them. ``memo`` is the
        exchange's private state (``Exchange.context``): the prompt's HMAC is kept there, since an exchange's
        ``exchange.started`` and ``exchange.completed`` records hash the same prompt."""
        if self.level == "none" or (prompt is None and answer is None):
            return None
        out: dict[str, Any] = {"capture": self.level}
        if self.level == "hash":
            out["key_id"] = self.key_id
            if prompt is not None:
                out["prompt_hmac"] = self._prompt_hmac(prompt, memo)
            if answer is not None:
                out["answer_hmac"] = self._mac(_utf8(answer))
            return out
        if prompt is not None:
            out["prompt"] = prompt
        if answer is not None:
            out["answer"] = answer
        return out

    def _prompt_hmac(self, prompt: str, memo: dict[str, Any] | None) -> str:
        kept = memo.get(_MEMO) if memo is not None else None
        if kept is not None and kept[0] == prompt:  # the text hashed before (the recorder passes the same str)
            return kept[1]
        # surrogatepass: a client's JSON may carry a lone surrogate ("\ud800"); hash it, never fail
        digest = self._mac(_utf8(prompt))
        if memo is not None:
            memo[_MEMO] = (prompt, digest)
        return digest


_MEMO = "guard.audit.prompt_hmac"  # Exchange.context key: (prompt, its HMAC)


def _hmac_sha256(key: bytes) -> Callable[[bytes], str]:
    """HMAC-SHA256 under ``key`` (RFC 2104, the standard library's ``hmac``) as hex. The keyed object is made
    once and copied per text, so the key is not set up again on every call."""
    keyed = hmac.new(key, digestmod=hashlib.sha256)

    def mac(msg: bytes) -> str:
        h = keyed.copy()
        h.update(msg)
        return h.hexdigest()

    return mac


def _utf8(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")


def _hmac_key(settings: Any) -> bytes:
    if settings.hash_key_env:
        v = os.environ.get(settings.hash_key_env, "")
        if not v:
            raise ValueError(f"audit.hash_key_env: environment variable {settings.hash_key_env} is empty")
        return v.encode()
    path = Path(settings.hash_key_file) if settings.hash_key_file else Path(settings.dir) / "keys" / "content-hmac.key"
    if not path.exists():
        from guard.audit.seal import _write_private

        path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileExistsError):
            _write_private(path, secrets.token_bytes(32))  # atomic: workers starting together race for it
    return path.read_bytes()
