"""The request path as an ordered list of stages (docs/architecture.md draws the same list).

Each stage is a small class with a ``name`` and a ``run(flow)`` (async, or plain when it never awaits) that
reads and fills in the typed ``Flow`` (guard.stages.base); ``guard.pipeline.Pipeline`` runs them in order and
times each ``timed`` one in one place. A stage ends the exchange early by raising (a GuardError is answered in
the client API's own error shape and recorded).
"""

from __future__ import annotations

from guard.stages.answer import Answer, Completed
from guard.stages.base import Flow, Services, Stage
from guard.stages.decide import Access, Content, PromptScreens, Quota
from guard.stages.forward import AuditStarted, Forward
from guard.stages.models import ListModels
from guard.stages.request import Identify, Parse, Route

# identity, parse, route, policy, screens_prompt, content, quota, audit, upstream_first_byte, answer, completed
STAGES: tuple[type[Stage], ...] = (
    Identify,
    Parse,
    Route,
    Access,
    PromptScreens,
    Content,
    Quota,
    AuditStarted,
    Forward,
    Answer,
    Completed,
)
# GET /v1/models, GET /api/tags: who may list, then the listing
LISTING: tuple[type[Stage], ...] = (Identify, Access, ListModels)
# Every duration the request path records (Exchange.stage_ms, guard_stage_duration_seconds{stage}, trace
# spans): the timed stages, and the parts of ``answer`` and ``completed`` timed inside them.
TIMINGS: tuple[str, ...] = (
    *(s.name for s in STAGES if s.timed),
    "screens_response",  # Answer: the response screens judged a whole answer
    "upstream_total",  # Completed: from sending upstream until the answer was relayed
)

__all__ = ["LISTING", "STAGES", "TIMINGS", "Flow", "Services", "Stage"]
