"""An upstream's error answer (any status but 200) on its way back to the client: size-capped and read by the
response screens like an answer, since a model server's error message can quote the prompt, a key or
personal data (``invalid value 'sk-...' for ...``)."""

from __future__ import annotations

import json
from typing import Any

from guard.apis.wire import module
from guard.screens.base import ResponseScreen, Segment, Verdict
from guard.screens.edits import screen_answer

ERROR_BODY_CAP = 65536  # bytes of an upstream error body relayed to the client; a longer one is replaced


def _leaves(obj: Any, path: tuple[Any, ...], out: list[Segment]) -> None:
    if isinstance(obj, str):
        out.append(Segment(obj, "assistant", "content", path))
    elif isinstance(obj, dict):
        for k, v in obj.items():
            _leaves(v, (*path, k), out)
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            _leaves(v, (*path, i), out)


def _set(body: Any, path: tuple[Any, ...], value: str) -> Any:
    if not path:
        return value
    target = body
    for p in path[:-1]:
        target = target[p]
    target[path[-1]] = value
    return body


def _replacement(api: str, message: str, code: str) -> bytes:
    return module(api).upstream_error_body(message, code)


async def screen_error_body(
    api: str, data: bytes, screens: list[ResponseScreen], prompt: list[Segment], ctx: dict[str, Any]
) -> tuple[bytes, list[Verdict], str]:
    """(body to relay, the screens' verdicts, what was done: "" | "too_large" | "blocked" | "redacted").
    Every string in a JSON body is screened (or the whole text when it is not JSON); a blocked one withholds
    the whole body, a rewritten one is written back."""
    if len(data) > ERROR_BODY_CAP:
        return (
            _replacement(
                api,
                f"the model server's error response ({len(data)} bytes) is longer than "
                f"{ERROR_BODY_CAP} bytes and was withheld",
                "upstream_error_too_large",
            ),
            [],
            "too_large",
        )
    if not screens:
        return data, [], ""
    try:
        body: Any = json.loads(data)
        is_json = True
    except (ValueError, RecursionError):
        body, is_json = data.decode("utf-8", "replace"), False
    segs: list[Segment] = []
    _leaves(body, (), segs)
    if not segs:
        return data, [], ""
    before = [s.text for s in segs]
    verdicts = await screen_answer(screens, segs, prompt, ctx)
    if any(v.blocked for v in verdicts):
        return (
            _replacement(
                api, "the model server's error message was withheld by the response screens", "upstream_error_withheld"
            ),
            verdicts,
            "blocked",
        )
    changed = False
    for seg, old in zip(segs, before, strict=False):
        if seg.text != old:
            changed = True
            body = _set(body, seg.path, seg.text)
    if not changed:  # a JSON body goes out as judged: a key given twice is read as its first value by some clients
        return (json.dumps(body).encode() if is_json else data), verdicts, ""
    return (json.dumps(body).encode() if is_json else str(body).encode()), verdicts, "redacted"
