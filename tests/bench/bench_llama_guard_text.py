"""What keeping Llama Guard's judged text inert costs, as ratios measured in one run.

* framing: the framing pass over a 1 KB and a 16 KB prompt (ordinary English text), against encoding the
  judge's JSON request body for the same conversation (which a remote backend does anyway), and a worst-case
  100 KB text of blank lines;
* local tokens: the local backend's ids (template rendered with placeholders, text pieces tokenised with
  special-token parsing off, checked) against tokenising the whole rendering at once, for a batch of 16
  conversations, with a byte-level BPE tokenizer trained here that carries Llama 3's 256 special tokens
  (no real tokenizer is downloaded).

Run: ``python -m tests.bench.bench_llama_guard_text``.
"""

from __future__ import annotations

import json
import random
import statistics
import time
from collections.abc import Callable
from typing import Any

from guard.screens.base import Segment
from guard.screens.safety import llama_guard
from guard.screens.safety.llama_guard import build_prompt, chat_messages, conversation, model_text

WORDS = [
    "the",
    "a",
    "llama",
    "alpaca",
    "farmer",
    "carries",
    "loads",
    "over",
    "mountains",
    "gently",
    "and",
    "hums",
    "when",
    "it",
    "is",
    "curious",
    "about",
    "strangers",
    "who",
    "visit",
    "the",
    "valley",
    "in",
    "spring",
]


def text_of(chars: int, seed: int = 0) -> str:
    rnd = random.Random(seed)
    out, n = [], 0
    while n < chars:
        line = " ".join(rnd.choice(WORDS) for _ in range(rnd.randint(6, 16))) + "."
        out.append(line)
        n += len(line) + 1
    return "\n".join(out)[:chars]


def best(fn: Callable[[], Any], reps: int) -> float:
    """Median seconds of ``fn`` over ``reps`` runs."""
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def framing() -> dict[str, Any]:
    from guard.screens.safety.text import _neutralise

    out: dict[str, Any] = {}
    real = llama_guard.neutralise_framing
    for label, size in (("1KB", 1024), ("16KB", 16384)):
        segs = [[Segment(text_of(size, seed), "user", "content", ())] for seed in range(50)]
        try:
            llama_guard.neutralise_framing = _neutralise  # type: ignore[assignment]  # the pass itself, uncached
            on = best(lambda segs=segs: [conversation(s) for s in segs], 7) / len(segs)
            llama_guard.neutralise_framing = lambda t: t  # type: ignore[assignment]
            off = best(lambda segs=segs: [conversation(s) for s in segs], 7) / len(segs)
        finally:
            llama_guard.neutralise_framing = real
        body = best(
            lambda segs=segs: [json.dumps({"model": "m", "messages": chat_messages(conversation(s))}) for s in segs], 7
        ) / len(segs)  # what a remote backend does with every conversation anyway
        out[label] = {
            "pass_us": round((on - off) * 1e6, 1),
            "json_body_us": round(body * 1e6, 1),
            "pass_vs_json_body": round((on - off) / body, 2),
        }
    worst = "\n" * 100_000
    out["100KB_blank_lines_ms"] = round(best(lambda: _neutralise(worst), 5) * 1e3, 2)
    return out


def tokenizer() -> Any:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    special = [
        "<|begin_of_text|>",
        "<|end_of_text|>",
        "<|start_header_id|>",
        "<|end_header_id|>",
        "<|eot_id|>",
        "<|eom_id|>",
        "<|python_tag|>",
    ] + [f"<|reserved_special_token_{i}|>" for i in range(249)]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    corpus = [
        model_text(build_prompt(conversation([Segment(text_of(2000, s), "user", "content", ())]))) for s in range(20)
    ]
    tok.train_from_iterator(
        corpus,
        trainers.BpeTrainer(
            vocab_size=2000, special_tokens=special, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
        ),
    )
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|begin_of_text|>", eos_token="<|eot_id|>")


def local_tokens() -> dict[str, Any]:
    from guard.screens.safety.tokens import encode, pieces, special_ids

    tok = tokenizer()
    specials = special_ids(tok)

    def render(turns: Any) -> str:
        return model_text(build_prompt(turns))

    out: dict[str, Any] = {}
    for label, size in (("1KB", 1024), ("8KB", 8192)):
        convs = [
            conversation(
                [
                    Segment(text_of(size, s), "user", "content", ()),
                    Segment(text_of(200, s + 99), "assistant", "content", ()),
                ]
            )
            for s in range(16)
        ]
        whole = best(lambda convs=convs: tok([render(t) for t in convs], add_special_tokens=False)["input_ids"], 15)
        guarded = best(lambda convs=convs: encode(tok, [pieces(render, t, specials) for t in convs], specials), 15)
        same = (
            encode(tok, [pieces(render, t, specials) for t in convs], specials)
            == tok([render(t) for t in convs], add_special_tokens=False)["input_ids"]
        )
        out[label] = {
            "whole_ms": round(whole * 1e3, 3),
            "guarded_ms": round(guarded * 1e3, 3),
            "ratio": round(guarded / whole, 2),
            "same_ids": same,
        }
    return out


def main() -> None:
    print(json.dumps({"framing": framing(), "local_tokens_batch16": local_tokens()}, indent=2))


if __name__ == "__main__":
    main()
