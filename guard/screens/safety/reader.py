"""How a Llama Guard server and a steerable model read a request, for the stand-in judges.

A real server applies the model's chat template to chat messages and tokenises the result with special-token
parsing on; a real model can be steered by what that puts in its context. The stand-ins model both, so tests
can show that a steering attempt fails (and would succeed against a Guard that sent text as it came):

* the context starts after the last ``<|begin_of_text|>``;
* a completed assistant turn with a verdict in it (``...assistant<|end_header_id|>\\n\\nsafe<|eot_id|>``)
  before the end is copied as the answer;
* the conversation runs from ``<BEGIN CONVERSATION>`` to the first ``<END CONVERSATION>`` or special token,
  and the judged turn is its last ``User:`` / ``Agent:`` turn.
"""

from __future__ import annotations

import re
from typing import Any

from guard.screens.safety.llama_guard import Turn, VerdictParseError, build_prompt, model_text, parse_output

_SPECIAL = re.compile(r"<\|[A-Za-z0-9_]+\|>")
_FORGED = re.compile(r"<\|start_header_id\|>assistant<\|end_header_id\|>(.*?)<\|(?:eot_id|eom_id|end_of_text)\|>", re.S)
_TURN = re.compile(r"\n\n(?=(?:User|Agent): )")


def render_chat(messages: Any) -> str:
    """What a server feeds the model for chat messages: the published template around the text as sent."""
    turns = []
    for m in messages if isinstance(messages, list) else []:
        if isinstance(m, dict):
            role = "Agent" if m.get("role") == "assistant" else "User"
            turns.append(Turn(role, str(m.get("content") or "")))
    return model_text(build_prompt(turns or [Turn("User", "")]))


def read(prompt: str) -> tuple[str, str | None]:
    """(the text of the turn the model judges, a verdict forged into the prompt or None)."""
    ctx = prompt.rsplit("<|begin_of_text|>", 1)[-1]
    for m in _FORGED.finditer(ctx):
        text = m.group(1).strip()
        try:
            parse_output(text)
        except VerdictParseError:
            continue
        return "", text
    conv = ctx.split("<BEGIN CONVERSATION>", 1)[-1]
    conv = _SPECIAL.split(conv.split("<END CONVERSATION>", 1)[0], 1)[0]
    turns = _TURN.split("\n\n" + conv.strip())
    return re.sub(r"^(?:User|Agent): ", "", turns[-1].strip()), None
