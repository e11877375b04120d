"""Llama Guard in-process with transformers (the ``guard[local]`` extra), CPU or CUDA.

First-token scoring: one forward pass reads P(unsafe) against P(safe) for the first verdict token (see
llama_guard_fast); only when the score reaches the threshold is the category line generated, with the
verdict forced to ``unsafe\\n``. Concurrent requests are micro-batched onto one worker thread.

Special tokens come only from the template: the turns' text is tokenised with special-token parsing off and
checked (:mod:`guard.screens.safety.tokens`), so ``<|eot_id|>`` typed by a user is judged as text.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from guard.screens.failmode import ScreenError
from guard.screens.safety.batch import MicroBatcher
from guard.screens.safety.llama_guard import Judgement, Taxonomy, Turn, build_prompt, chat_messages, judge, model_text
from guard.screens.safety.settings import LocalBackend
from guard.screens.safety.tokens import Piece, encode, pieces, special_ids


def load_model(path: Path, device: str = "auto", dtype: str = "auto") -> tuple[Any, Any]:
    """Tokenizer and model from a local folder (never the network)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    dev = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
    dt = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}.get(
        dtype, torch.bfloat16 if dev.startswith("cuda") else torch.float32
    )
    tok = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(str(path), dtype=dt, local_files_only=True)
    return tok, model.to(dev).eval()  # type: ignore[arg-type]  # transformers types .to() for model arguments only


def verdict_token_ids(tokenizer: Any) -> tuple[int, int]:
    """The first token of ``safe`` and of ``unsafe``: the one position first-token scoring reads."""
    safe = tokenizer.encode("safe", add_special_tokens=False)
    unsafe = tokenizer.encode("unsafe", add_special_tokens=False)
    if not safe or not unsafe or safe[0] == unsafe[0]:
        raise ValueError("the tokenizer does not tell 'safe' from 'unsafe' by the first token")
    return safe[0], unsafe[0]


class LocalJudge:
    """Loads the model on its worker thread at the first request (or ``await load()``), so building the
    screen never blocks the event loop; requests that arrive while it loads wait, under the fail mode's
    timeout like any slow backend."""

    def __init__(
        self, cfg: LocalBackend, taxonomy: Taxonomy, threshold: float, tokenizer: Any = None, model: Any = None
    ) -> None:
        self.cfg, self.taxonomy, self.threshold = cfg, taxonomy, threshold
        self.tokenizer, self.model = tokenizer, model
        self.fast: Any = None
        self.batcher = MicroBatcher(self._run, cfg.max_batch, cfg.max_wait_ms, name="guard-llama-guard")
        if tokenizer is not None and model is not None:
            self._setup()

    async def load(self) -> None:
        """Load (and on CUDA compile and capture) now, off the event loop."""
        await self.batcher.submit(("load", None))

    def _setup(self) -> None:
        from guard.screens.safety.fast import FastLlama

        cfg = self.cfg
        if self.tokenizer is None or self.model is None:
            self.tokenizer, self.model = load_model(cfg.model_path, cfg.device, cfg.dtype)
        tok, model = self.tokenizer, self.model
        self.verdict_ids = verdict_token_ids(tok)
        self.forced = tok.encode("unsafe\n", add_special_tokens=False)
        self.pad_id = tok.pad_token_id if tok.pad_token_id is not None else 0
        self.specials = special_ids(tok)
        on_cuda = model.device.type == "cuda"
        self.fast = FastLlama(
            model,
            cuda_graphs=cfg.cuda_graphs,
            fp8=cfg.fp8 and on_cuda,
            compile_layers=on_cuda if cfg.compile is None else cfg.compile,
            batch_buckets=_powers_of_two(cfg.max_batch),
        )
        if cfg.warmup_lengths and on_cuda:
            self.fast.warmup(cfg.warmup_lengths, cfg.max_batch, self.verdict_ids)

    def render(self, turns: Sequence[Turn]) -> str:
        """The model's own chat template when it has one and the taxonomy is the default; else the published
        template (custom or excluded categories)."""
        if self.taxonomy.default and getattr(self.tokenizer, "chat_template", None):
            return self.tokenizer.apply_chat_template(chat_messages(turns), tokenize=False)
        return model_text(build_prompt(turns, self.taxonomy))

    async def classify(self, turns: Sequence[Turn]) -> Judgement:
        score = _unwrap(await self.batcher.submit(("score", list(turns))))
        if score < self.threshold:
            return Judgement(unsafe=False, score=score, raw="safe")
        raw = _unwrap(await self.batcher.submit(("categories", list(turns))))
        return judge(raw, score, self.threshold, self.taxonomy.codes)

    async def close(self) -> None:
        await asyncio.to_thread(self.batcher.close)

    # --- on the worker thread ---

    def _run(self, jobs: list[tuple[str, Any]]) -> list[Any]:
        if self.fast is None:
            self._setup()  # a failure here fails the whole batch: every caller gets the error
        out: list[Any] = [None] * len(jobs)
        scoring = [i for i, (kind, _) in enumerate(jobs) if kind == "score"]
        if scoring:
            for i, r in zip(scoring, self._scores([jobs[i][1] for i in scoring]), strict=False):
                out[i] = r
        for i, (kind, turns) in enumerate(jobs):
            if kind == "categories":
                out[i] = self._categories(turns)
        return out

    def encode(self, convs: list[Sequence[Turn]]) -> list[list[int] | ScreenError]:
        """Token ids per conversation; special ids only where the template put them (else a ScreenError)."""
        parts: list[list[Piece] | ScreenError] = []
        for turns in convs:
            try:
                parts.append(pieces(self.render, turns, self.specials))
            except ScreenError as e:
                parts.append(e)
        ok = [p for p in parts if not isinstance(p, ScreenError)]
        ids = iter(encode(self.tokenizer, ok, self.specials))
        limit = self.cfg.max_input_tokens
        out: list[list[int] | ScreenError] = []
        for p in parts:
            s = p if isinstance(p, ScreenError) else next(ids)
            if not isinstance(s, ScreenError) and len(s) > limit:
                s = ScreenError(f"conversation of {len(s)} tokens exceeds {limit}")
            out.append(s)
        return out

    def _scores(self, convs: list[Sequence[Turn]]) -> list[float | ScreenError]:
        enc = self.encode(convs)
        seqs = [s for s in enc if not isinstance(s, ScreenError)]
        scores = iter(self._score_ids(seqs) if seqs else [])
        return [s if isinstance(s, ScreenError) else next(scores) for s in enc]

    def _score_ids(self, seqs: list[list[int]]) -> list[float]:
        lp = self.fast.logprobs(seqs, self.verdict_ids, self.pad_id).tolist()
        res = []
        for lp_safe, lp_unsafe in lp:
            m = max(lp_safe, lp_unsafe)
            ps, pu = math.exp(lp_safe - m), math.exp(lp_unsafe - m)
            res.append(pu / (ps + pu))
        return res

    def _categories(self, turns: Sequence[Turn]) -> str | ScreenError:
        import torch

        enc = self.encode([turns])[0]
        if isinstance(enc, ScreenError):
            return enc
        ids = torch.tensor([enc + self.forced], device=self.model.device)
        eos = [
            t
            for t in (self.tokenizer.convert_tokens_to_ids("<|eot_id|>"), self.tokenizer.eos_token_id)
            if isinstance(t, int) and t >= 0
        ]
        with torch.inference_mode():
            gen = self.model.generate(
                ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=self.cfg.max_new_tokens,
                do_sample=False,
                eos_token_id=eos or None,
                pad_token_id=self.pad_id,
            )
        tail = self.tokenizer.decode(gen[0, ids.shape[1] :], skip_special_tokens=True)
        return "unsafe\n" + tail.strip()


def _unwrap(r: Any) -> Any:
    if isinstance(r, Exception):
        raise r
    return r


def _powers_of_two(limit: int) -> tuple[int, ...]:
    out, b = [], 1
    while b < limit:
        out.append(b)
        b *= 2
    return (*out, limit)
