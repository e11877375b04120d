"""Prompt injection screen (optional): a transformers text-classification model from a local path (for
example Llama Prompt Guard 2), applied to user and tool text in overlapping windows of up to 512 tokens.

The score is the largest probability, over windows, of the labels that mean injection or jailbreak.
Wrap it in failmode.GuardedScreen like every screen.
"""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from guard.screens.base import Segment, Verdict
from guard.screens.failmode import FailSettings
from guard.screens.json_text import readable

POSITIVE = ["INJECTION", "JAILBREAK", "MALICIOUS", "LABEL_1"]


class InjectionSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    enabled: bool = True
    model_path: Path  # a local folder with the classifier and its tokenizer
    device: str = "auto"
    threshold: float = Field(0.5, gt=0, le=1)
    window_tokens: int = Field(512, ge=16, le=8192)
    stride_tokens: int = Field(64, ge=0)  # overlap between windows, so a phrase on a border is seen whole
    batch_size: int = Field(16, ge=1)
    roles: list[str] = ["user", "tool"]  # which segments are screened (tool results: indirect injection)
    positive_labels: list[str] = POSITIVE
    action: Literal["block", "audit_only"] = "block"
    fail: FailSettings = FailSettings()


class InjectionScreen:
    name = "prompt_injection"
    reads_only = True  # scores the prompt, never rewrites a segment (guard.stages.decide: no copy for it)

    def __init__(self, cfg: InjectionSettings, tokenizer: Any = None, model: Any = None) -> None:
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        self.cfg = cfg
        dev = ("cuda" if torch.cuda.is_available() else "cpu") if cfg.device == "auto" else cfg.device
        self.tokenizer = tokenizer or AutoTokenizer.from_pretrained(str(cfg.model_path), local_files_only=True)
        self.model = (
            (model or AutoModelForSequenceClassification.from_pretrained(str(cfg.model_path), local_files_only=True))
            .to(dev)
            .eval()
        )
        labels = {int(i): str(n).upper() for i, n in self.model.config.id2label.items()}
        wanted = {p.upper() for p in cfg.positive_labels}
        self.positive = [i for i, n in labels.items() if n in wanted]
        if not self.positive:
            raise ValueError(f"no label of the model means injection (labels: {sorted(labels.values())})")
        self.lock = threading.Lock()

    async def screen_prompt(self, segments: list[Segment], ctx: dict[str, Any]) -> Verdict:
        texts = [readable(s.kind, s.text) for s in segments if s.role in self.cfg.roles and s.text.strip()]
        if not self.cfg.enabled or not texts:
            return Verdict(screen=self.name, direction="prompt", status="skipped")
        t0 = time.perf_counter()
        score = await asyncio.to_thread(self.score, texts)
        v = Verdict(screen=self.name, direction="prompt", score=score, latency_ms=(time.perf_counter() - t0) * 1000)
        if score >= self.cfg.threshold:
            v.categories = ["prompt_injection"]
            if self.cfg.action == "block":
                v.action, v.blocked, v.code = "block", True, "prompt_injection"
                v.message = "Blocked by the prompt injection screen."
            else:
                v.action = "audit_only"
        return v

    def windows(self, texts: list[str]) -> dict[str, Any]:
        """Tokenize into overlapping windows of at most ``window_tokens`` (special tokens included). Special-token
        parsing is off: ``[SEP]`` or ``<|eot_id|>`` in the text are characters, never the model's own markers."""
        return self.tokenizer(
            texts,
            truncation=True,
            max_length=self.cfg.window_tokens,
            split_special_tokens=True,
            stride=min(self.cfg.stride_tokens, self.cfg.window_tokens // 2),
            return_overflowing_tokens=True,
            padding=True,
            return_tensors="pt",
        )

    def score(self, texts: list[str]) -> float:
        import torch

        enc = self.windows(texts)
        keys = [k for k in ("input_ids", "attention_mask", "token_type_ids") if k in enc]
        best = 0.0
        with self.lock, torch.inference_mode():
            n = enc["input_ids"].shape[0]
            for i in range(0, n, self.cfg.batch_size):
                batch = {k: enc[k][i : i + self.cfg.batch_size].to(self.model.device) for k in keys}
                probs = self.model(**batch).logits.float().softmax(-1)
                best = max(best, float(probs[:, self.positive].sum(-1).max()))
        return best
