"""Texts sent to a screening process packed (guard/screens/packed.py) arrive as they were sent."""

from __future__ import annotations

import pickle

from hypothesis import given
from hypothesis import strategies as st

from guard.screens.packed import Packed, pack, unpack


@given(st.lists(st.text()))
def test_unpack_gives_back_the_texts_pack_was_given(texts: list[str]) -> None:
    p = pack(texts)
    assert isinstance(p, Packed)
    assert unpack(pickle.loads(pickle.dumps(p, protocol=pickle.HIGHEST_PROTOCOL))) == texts


def test_astral_characters_empty_texts_and_nul_come_back_as_they_went() -> None:
    texts = ["", "a\U0001f600b", "", "\x00", "tail"]
    assert unpack(pack(texts)) == texts


def test_many_small_texts_pickle_as_one_string_not_a_list_of_them() -> None:
    texts = [f"Plain words in a short message, number {i}." for i in range(12_800)]
    joined = "".join(texts).encode()
    assert joined in pickle.dumps(pack(texts), protocol=pickle.HIGHEST_PROTOCOL)  # one string, one call
    assert joined not in pickle.dumps(texts, protocol=pickle.HIGHEST_PROTOCOL)  # (a list: one opcode per text)
