"""A request body on its way in: read strictly, then admitted against what its upstreams allow.

``parse``: the body as one object every JSON parser downstream reads alike (guard.apis.strictjson), or 400
naming the JSON path. ``admit``: fields beyond the API reference (guard.apis.fields) and inputs that cannot
be screened as text are refused unless every upstream the request may go to allows them
(``upstreams.<name>.extra_fields`` / ``allow_unscreened``); allowed unscreened inputs are marked for the
audit record and counted. The body the upstream then receives is serialised from the judged object
(guard.stages.forward, strictjson.dumps).
"""

from __future__ import annotations

from typing import Any

from guard import telemetry
from guard.apis import bodies, fields, strictjson
from guard.errors import GuardError, bad_request
from guard.exchange import Exchange
from guard.screens.base import Verdict


def parse(raw: bytes) -> dict[str, Any]:
    """The body, read strictly (guard.apis.strictjson): refused with 400 naming the JSON path otherwise."""
    try:
        body = strictjson.loads(raw)
    except strictjson.StrictJSONError as e:
        raise refused(e) from None
    return as_object(body)


async def parse_large(raw: bytes, depth: int = 0) -> dict[str, Any]:
    """``parse`` for a large body: read strictly off the serving process's GIL (guard.apis.bodies); with
    ``depth``, nesting deeper than that is refused there too."""
    try:
        body = await bodies.loads(raw, depth)
    except strictjson.StrictJSONError as e:
        raise refused(e) from None
    return as_object(body)


def refused(e: strictjson.StrictJSONError) -> GuardError:
    return bad_request(f"request body refused: {e.message} at {e.path}", e.code, param=e.path)


def as_object(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise bad_request("request body must be a JSON object", "invalid_json")
    return body


def admit(ex: Exchange, api: Any, unknown: list[tuple[str, str]], ups: list[Any]) -> None:
    """Fields beyond the API reference and inputs that cannot be screened: refused unless every upstream the
    request may go to (its route's upstream and fallbacks) allows them; allowed ones are marked for the audit
    record (a ``unscreened`` screen entry) and counted."""
    if unknown:
        fields.refuse_unknown(unknown, set.intersection(*(set(u.extra_fields) for u in ups)))
    found = api.unscreened(ex.operation, ex.body)
    if not found:
        return
    allowed = set.intersection(*(set(u.allow_unscreened) for u in ups))
    for kind, path in found:
        if kind not in allowed:
            raise GuardError(
                400,
                f"{path} cannot be screened ({kind}) and is not allowed for this model",
                "guard_policy_violation",
                "unscreenable_input",
                outcome="blocked",
                param=path,
            )
    counts: dict[str, int] = {}
    for kind, _ in found:
        counts[kind] = counts.get(kind, 0) + 1
        telemetry.UNSCREENED.labels(ex.api, kind).inc()
    ex.verdicts.append(
        Verdict(
            screen="unscreened",
            direction="prompt",
            status="skipped",
            action="allow",
            entities=counts,
            categories=sorted(counts),
        )
    )
