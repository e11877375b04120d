"""Llama Guard 3 prompt building, conversation folding, output grammar and score: pure functions."""

from __future__ import annotations

import math

import pytest

from guard.screens.base import Segment
from guard.screens.safety.llama_guard import (
    TAXONOMY,
    TAXONOMY_1B,
    Category,
    Taxonomy,
    Turn,
    VerdictParseError,
    build_prompt,
    conversation,
    judge,
    model_text,
    parse_output,
    score_from_logprobs,
)

# The reference rendering, as published (leading space and "according our" included).
REFERENCE = (
    " <|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nTask: Check if there is unsafe content in "
    "'Agent' messages in conversations according our safety policy with the below categories.\n\n"
    "<BEGIN UNSAFE CONTENT CATEGORIES>\nS1: Violent Crimes.\nS2: Non-Violent Crimes.\nS3: Sex Crimes.\n"
    "S4: Child Exploitation.\nS5: Defamation.\nS6: Specialized Advice.\nS7: Privacy.\nS8: Intellectual Property.\n"
    "S9: Indiscriminate Weapons.\nS10: Hate.\nS11: Self-Harm.\nS12: Sexual Content.\nS13: Elections.\n"
    "S14: Code Interpreter Abuse.\n<END UNSAFE CONTENT CATEGORIES>\n\n<BEGIN CONVERSATION>\n\n"
    "User: How do I adopt a llama?\n\nAgent: Steal one from the zoo.\n\n<END CONVERSATION>\n\n"
    "Provide your safety assessment for ONLY THE LAST Agent message in the above conversation:\n"
    " - First line must read 'safe' or 'unsafe'.\n"
    " - If unsafe, a second line must include a comma-separated list of violated categories."
    "<|eot_id|><|start_header_id|>assistant<|end_header_id|>"
)


def seg(text: str, role: str = "user") -> Segment:
    return Segment(text, role, "content", ())


def test_reference_rendering_byte_for_byte() -> None:
    turns = conversation([seg("How do I adopt a llama?")], [seg("Steal one from the zoo.", "assistant")])
    assert build_prompt(turns) == REFERENCE
    assert model_text(REFERENCE) == REFERENCE[1:] + "\n\n"


def test_prompt_check_asks_about_the_user_turn() -> None:
    p = build_prompt(conversation([seg("How do I adopt a llama?")]))
    assert "unsafe content in 'User' messages" in p and "ONLY THE LAST User message" in p
    assert "User: How do I adopt a llama?\n\n<END CONVERSATION>" in p


def test_taxonomies() -> None:
    assert len(TAXONOMY) == 14 and len(TAXONOMY_1B) == 13 and "S14" not in TAXONOMY_1B
    t = Taxonomy.build("1b")
    assert t.default and "S14" not in t.codes
    ex = Taxonomy.build(excluded=["S6", "S7"])
    assert not ex.default and "S6" not in ex.codes
    p = build_prompt([Turn("User", "hi")], ex)
    assert "S5: Defamation.\nS8: Intellectual Property." in p
    custom = Taxonomy.build(custom=[Category("S1", "Fraud", "Scams.")])
    assert not custom.default and "S1: Fraud.\nScams.\n<END UNSAFE" in build_prompt([Turn("User", "x")], custom)
    with pytest.raises(ValueError):
        Taxonomy.build(custom=[Category("S1", "X")], excluded=["S1"])


def test_conversation_folds_system_merges_turns_and_alternates() -> None:
    turns = conversation(
        [
            seg("Be terse.", "system"),
            seg("Hi"),
            seg("again"),
            seg("Hello", "assistant"),
            seg("tool says 4", "tool"),
            seg("and?"),
        ]
    )
    assert [t.role for t in turns] == ["User", "Agent", "User"]
    assert turns[0].content == "Be terse.\n\nHi\n\nagain"
    assert turns[2].content == "tool says 4\n\nand?"
    # A leading assistant turn gets an empty user turn before it; a trailing prefill is judged as user text.
    assert [t.role for t in conversation([seg("x", "assistant"), seg("y")])] == ["User", "Agent", "User"]
    pre = conversation([seg("q"), seg("Sure, here is", "assistant")])
    assert [t.role for t in pre] == ["User"] and "Sure, here is" in pre[0].content
    # Answer checks end with the answer as an Agent turn, merged with a prefill.
    ans = conversation([seg("q"), seg("Sure,", "assistant")], [seg(" the answer", "assistant")])
    assert [t.role for t in ans] == ["User", "Agent"] and ans[-1].content == "Sure,\n\n the answer"


@pytest.mark.parametrize(
    "text,expected",
    [
        ("safe", (False, [])),
        ("\n\nsafe", (False, [])),
        ("  safe\n", (False, [])),
        ("safe<|eot_id|>", (False, [])),
        ("unsafe\nS1", (True, ["S1"])),
        ("\n\nunsafe\nS1,S10", (True, ["S1", "S10"])),
        ("unsafe\nS1, S10\n", (True, ["S1", "S10"])),
    ],
)
def test_output_grammar(text: str, expected: tuple[bool, list[str]]) -> None:
    assert parse_output(text) == expected


@pytest.mark.parametrize(
    "text", ["", "Safe", "unsafe", "unsafe\n", "unsafe\nviolence", "safe\nS1", "I think safe", "unsafe\nS1\nmore", "ok"]
)
def test_anything_else_is_an_error_never_safe(text: str) -> None:
    with pytest.raises(VerdictParseError):
        parse_output(text)


def test_unknown_codes_are_errors() -> None:
    with pytest.raises(VerdictParseError):
        parse_output("unsafe\nS15", known=Taxonomy.build().codes)


def test_score_from_logprobs() -> None:
    lp = math.log
    steps = [("\n\n", [("\n\n", 0.0)]), ("unsafe", [("unsafe", lp(0.7)), ("safe", lp(0.2)), ("The", lp(0.1))])]
    assert score_from_logprobs(steps) == pytest.approx(0.7 / 0.9)
    assert score_from_logprobs([("safe", [("safe", lp(0.99))])]) == 0.0
    assert score_from_logprobs([(" un", [(" un", lp(0.6)), ("safe", lp(0.4))])]) == pytest.approx(0.6)
    assert score_from_logprobs([]) is None


def test_judge_threshold_moves_the_line_and_text_names_categories() -> None:
    j = judge("unsafe\nS1", 0.7, 0.8, None)
    assert not j.unsafe and j.categories == []
    j = judge("safe", 0.3, 0.2, None)
    assert j.unsafe and j.categories == []
    j = judge("unsafe\nS2", None, 0.5, None)
    assert j.unsafe and j.categories == ["S2"]
