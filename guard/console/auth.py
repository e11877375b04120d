"""Who may use the console: the configured token (login form or Authorization: Bearer) or a client
certificate whose principal the policy grants ``audit_read`` at stage ``console``.

The login form sets a session cookie: ``<expiry>.<nonce>.<HMAC>``, keyed by a key derived from the token
(so every worker accepts it, and changing the token ends every session); HttpOnly, SameSite=Strict,
Path=/console/, Secure when the admin listener speaks TLS. The token never appears in a URL.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import time
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request

COOKIE = "guard_console"
ACTION = "audit_read"
STAGE = "console"
CONSOLE_OBJECT = {"model": "guard-console"}


@dataclass(frozen=True)
class Identity:
    who: str  # certificate subject, or "token"
    auth: str  # token | certificate
    fingerprint: str = ""


class Refused(Exception):
    """403: a client certificate the policy does not grant audit_read."""

    def __init__(self, who: str, reason: str) -> None:
        super().__init__(reason)
        self.who, self.reason = who, reason


class Auth:
    def __init__(self, token: str | None, policy: Any, ttl_s: int, secure: bool) -> None:
        self.token = token
        self.policy = policy
        self.ttl_s = ttl_s
        self.secure = secure
        self._key = hmac.new(token.encode(), b"guard-console-session-v1", hashlib.sha256).digest() if token else None

    # --- token and session ---------------------------------------------------------------------------

    def token_ok(self, given: str) -> bool:
        return self.token is not None and hmac.compare_digest(given.encode("utf-8", "replace"), self.token.encode())

    def new_session(self) -> str:
        assert self._key is not None
        exp = int(time.time()) + self.ttl_s
        nonce = os.urandom(12).hex()
        mac = hmac.new(self._key, f"{exp}.{nonce}".encode(), hashlib.sha256).hexdigest()
        return f"{exp}.{nonce}.{mac}"

    def session_ok(self, value: str) -> bool:
        if self._key is None or value.count(".") != 2:
            return False
        exp, nonce, mac = value.split(".")
        want = hmac.new(self._key, f"{exp}.{nonce}".encode(), hashlib.sha256).hexdigest()
        return hmac.compare_digest(mac.encode(), want.encode()) and exp.isdigit() and int(exp) > time.time()

    def cookie_header(self, value: str, max_age: int | None = None) -> str:
        age = self.ttl_s if max_age is None else max_age
        return f"{COOKIE}={value}; Path=/console/; Max-Age={age}; HttpOnly; SameSite=Strict" + (
            "; Secure" if self.secure else ""
        )

    # --- who is asking -------------------------------------------------------------------------------

    def identify(self, request: Request) -> Identity | None:
        """The caller, None when unauthenticated; raises Refused for a certificate without the grant
        (unless the token is also presented)."""
        authz = request.headers.get("authorization", "")
        if authz.startswith("Bearer ") and self.token_ok(authz[7:]):
            return Identity("token", "token")
        cookie = request.cookies.get(COOKIE, "")
        if cookie and self.session_ok(cookie):
            return Identity("token", "token")
        principal = ((request.scope.get("extensions") or {}).get("tls") or {}).get("guard.principal")
        if principal is not None:
            return self._by_certificate(principal)
        return None

    def _by_certificate(self, principal: Any) -> Identity:
        from guard.policy.attributes import access_env, make_env

        who = principal.subject or principal.cn or principal.fingerprint
        engine = getattr(getattr(self.policy, "active", None), "engine", None)
        if engine is None:
            raise Refused(who, "no policy engine to ask")
        d = engine.decide(
            STAGE, principal.attrs(), {**_default_obj(), **CONSOLE_OBJECT}, ACTION, access_env(make_env())
        )
        if not d.allowed:
            raise Refused(
                who,
                f"the policy does not grant {ACTION} to this certificate "
                f"(stage {STAGE}, rule {d.rule or 'none: no allow rule matched'})",
            )
        return Identity(who, "certificate", principal.fingerprint)


def _default_obj() -> dict[str, Any]:
    from guard.policy.attributes import resource

    return resource()
