from __future__ import annotations


def test_chat_through_guard_with_openai_sdk(guard):
    c = guard.openai()
    r = c.chat.completions.create(model="llama-3-8b", messages=[{"role": "user", "content": "hi [[reply: pong]]"}])
    assert r.choices[0].message.content == "pong"
