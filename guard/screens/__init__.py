"""Screens: what Guard runs over prompts and answers.

One package per screen, each with a small public surface (its ``__init__``): ``pii`` (Presidio-based
detection, redaction and pseudonyms), ``safety`` (Llama Guard: remote and local judges), ``denylist``
(secrets and phrases on RE2), ``injection`` (prompt-injection heuristics). Shared machinery beside them:
``base`` (Segment, Verdict, ScreenSet), ``profiles`` (named screen sets from filters/*.yaml), ``failmode``,
``budget`` (work off the event loop), ``linear_re`` (RE2 for every configured pattern),
``stream_partial`` (hold back only what could still become a match) and ``cli`` (``guard filters``).
A screen imports only from this package and from guard.errors/guard.compat, never the pipeline.
"""
