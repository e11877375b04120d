"""Client-facing errors in the OpenAI error shape: {"error": {"message", "type", "code"}}."""

from __future__ import annotations

import json


class GuardError(Exception):
    """Stops the exchange with an HTTP status and an OpenAI-style error body."""

    headers: tuple[tuple[bytes, bytes], ...] = ()  # extra response headers (429: Retry-After, x-ratelimit-*)

    def __init__(
        self,
        status: int,
        message: str,
        type_: str = "invalid_request_error",
        code: str | None = None,
        outcome: str = "error",
        param: str | None = None,
    ) -> None:
        super().__init__(message)
        self.param = param  # the request field at fault (a JSON path), when there is one
        self.status = status
        self.message = message
        self.type = type_
        self.code = code
        self.outcome = outcome  # audit outcome label: error | denied | blocked | fail_closed

    def body(self) -> bytes:
        return error_body(self.message, self.type, self.code, self.param)


def error_body(message: str, type_: str, code: str | None, param: str | None = None) -> bytes:
    return json.dumps({"error": {"message": message, "type": type_, "param": param, "code": code}}).encode()


def bad_request(message: str, code: str = "invalid_request", param: str | None = None) -> GuardError:
    return GuardError(400, message, "invalid_request_error", code, param=param)


def policy_violation(message: str, code: str) -> GuardError:
    return GuardError(400, message, "guard_policy_violation", code, outcome="blocked")


def forbidden(message: str, code: str = "access_denied") -> GuardError:
    return GuardError(403, message, "permission_denied", code, outcome="denied")


def unavailable(message: str, code: str) -> GuardError:
    return GuardError(503, message, "service_unavailable", code, outcome="fail_closed")
