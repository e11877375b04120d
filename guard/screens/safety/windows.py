"""Long prompts judged in windows that fit the judge's context; answers judged with a bounded prompt.

Llama Guard judges the last turn of a conversation, and its context is bounded (the local backend's
``max_input_tokens``, whatever length a model server was started with). Sending a whole 1 MB prompt would
fail at the judge, and would cost Guard the time to neutralise, escape and encode all of it. So a prompt
whose text is longer than ``prompt.window_chars`` (filters/safety.yaml) is judged in several calls:

* the judged turn (the last one) is cut into windows of at most ``window_chars`` characters, at a sentence
  end or white space in the second half of the window where there is one; each window repeats the last
  ``overlap_chars`` of the one before, so a phrase or marker cut by a boundary is whole in the next window;
* every call carries the same context: the earlier turns, trimmed to their last ``context_chars``
  characters (Llama Guard reads them as context only, never as the judged turn);
* each call's text is neutralised (:func:`~guard.screens.safety.text.neutralise_framing`) after cutting:
  a window's first line counts as a line start, so a cut never turns mid-line text into a forged turn,
  verdict or template marker; a marker split by the cut is incomplete in one window and whole, and
  neutralised, in the next.

A prompt that needs more than ``max_windows`` windows is, by default (``too_long: refuse``), refused without
any judge call: HTTP 400 ``prompt_too_long`` in the client API's error shape, with an audit record. With
``too_long: allow`` the first ``max_windows`` windows are judged, the rest passes unjudged, and the verdict's
status is ``partial`` (audit record and ``guard_screen_results_total``).

Answers (whole or streamed windows) are judged with the prompt's last ``window_chars`` characters as context.

Everything here is linear in the text and stops after ``max_windows`` windows, however long the prompt;
the safety screen runs it in a worker thread when the prompt is large (guard.screens.budget).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from guard.screens.base import Segment
from guard.screens.safety.llama_guard import Turn, raw_conversation
from guard.screens.safety.settings import PromptSide
from guard.screens.safety.text import neutralise_framing

_SENTENCE_END = re.compile(r"(?<=[.!?;:])[\"')\]]*\s+|\n+")
_SPACE = re.compile(r"\s+")


@dataclass
class Plan:
    """The judge calls for one prompt: neutralised conversations, and whether the prompt needed more."""

    calls: list[list[Turn]] = field(default_factory=list)
    too_long: bool = False
    windows: int = 0  # windows judged (0: the prompt fitted one call whole)


def neutralised(turns: Sequence[Turn]) -> list[Turn]:
    return [Turn(t.role, neutralise_framing(t.content)) for t in turns]


def trim(turns: Sequence[Turn], chars: int) -> list[Turn]:
    """The last ``chars`` characters of the turns, turn structure kept; starts with a User turn."""
    out: list[Turn] = []
    left = chars
    for t in reversed(turns):
        if left <= 0:
            break
        text = t.content if len(t.content) <= left else t.content[len(t.content) - left :]
        out.append(Turn(t.role, text))
        left -= len(text)
    out.reverse()
    if out and out[0].role != "User":
        out.insert(0, Turn("User", ""))
    return out


def _cut(text: str, lo: int, hi: int) -> int:
    """Where a window from ``lo`` ends (at most ``hi``): the last sentence end in its second half, else the
    last white space there, else ``hi``."""
    mid = lo + (hi - lo) // 2
    for pattern in (_SENTENCE_END, _SPACE):
        end = -1
        for m in pattern.finditer(text, mid, hi):
            end = m.end()
        if end > mid:
            return min(end, hi)
    return hi


def spans(text: str, window: int, overlap: int, limit: int) -> tuple[list[tuple[int, int]], bool]:
    """At most ``limit`` windows ``(start, end)`` over ``text``, each repeating ``overlap`` characters of the
    one before; True when the text needs more. Each window adds at least ``window // 2 - overlap``
    characters, so the work is bounded by ``limit`` windows whatever the length."""
    n, out, start = len(text), [], 0
    while True:
        lo = max(0, start - overlap)
        if n - lo <= window:
            out.append((lo, n))
            return out, False
        if len(out) == limit:
            return out, True
        end = _cut(text, lo, lo + window)
        out.append((lo, end))
        start = end


def certainly_too_long(n: int, window: int, limit: int) -> bool:
    """Whether a text of ``n`` characters needs more than ``limit`` windows, without cutting them: a window
    ends at most ``window`` characters after the previous one's end, so ``limit`` windows end within
    ``limit * window`` characters and the rest, over ``window`` long, needs another."""
    return n > (limit + 1) * window


def plan(segments: Sequence[Segment], side: PromptSide) -> Plan:
    """The judge calls for a prompt (see the module doc). With ``too_long: refuse`` an over-long prompt's
    plan has no calls: nothing is neutralised or sent."""
    turns = raw_conversation(segments)
    if sum(len(t.content) for t in turns) <= side.window_chars:
        return Plan([neutralised(turns)])
    last = turns[-1]
    if side.too_long == "refuse" and certainly_too_long(len(last.content), side.window_chars, side.max_windows):
        return Plan([], True, 0)  # a hostile megabyte is refused without cutting windows that nobody would judge
    cuts, too_long = spans(last.content, side.window_chars, side.overlap_chars, side.max_windows)
    if too_long and side.too_long == "refuse":
        return Plan([], True, 0)
    context = neutralised(trim(turns[:-1], side.context_chars))
    calls = [context + neutralised([Turn(last.role, last.content[a:b])]) for a, b in cuts]
    return Plan(calls, too_long, len(cuts))


def answer_context(prompt: Sequence[Segment], chars: int) -> Sequence[Segment]:
    """The prompt an answer is judged with: its segments' last ``chars`` characters (roles kept, so a
    trailing assistant prefill still joins the answer's turn); the prompt itself when it is that short."""
    total = 0
    for s in prompt:  # stops at the first ``chars`` characters (a megabyte of messages: on the event loop)
        total += len(s.text)
        if total > chars:
            break
    else:
        return prompt
    out: list[Segment] = []
    left = chars
    for s in reversed(prompt):
        if left <= 0:
            break
        text = s.text if len(s.text) <= left else s.text[len(s.text) - left :]
        out.append(Segment(text, s.role, s.kind, s.path))
        left -= len(text)
    out.reverse()
    return out
