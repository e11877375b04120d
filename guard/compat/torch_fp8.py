"""The two private torch names the local Llama Guard runner (guard.screens.safety.fast) uses.

- ``torch._scaled_mm``: the FP8 matrix multiply with per-row scales (what the public
  ``torch.nn.functional.scaled_mm`` of newer releases wraps, with another calling convention).
- ``torch._dynamo.config``'s recompile limits: one compiled graph per (batch, length) bucket needs more
  than the default.

torch is pinned exactly in pyproject.toml (extra ``local``); tests/core/test_compat_contracts.py checks both
names on the installed torch.
"""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["raise_recompile_limits", "scaled_mm_rowwise"]

_LIMITS = ("cache_size_limit", "recompile_limit", "accumulated_cache_size_limit")


def scaled_mm_rowwise(
    a: torch.Tensor, b: torch.Tensor, scale_a: torch.Tensor, scale_b: torch.Tensor, out_dtype: torch.dtype
) -> torch.Tensor:
    """``(a * scale_a) @ (b * scale_b)`` for FP8 ``a`` (rows, k) and ``b`` (k, n), ``scale_a`` (rows, 1) and
    ``scale_b`` (1, n) float32."""
    return torch._scaled_mm(a, b, scale_a=scale_a, scale_b=scale_b, out_dtype=out_dtype)


def raise_recompile_limits(at_least: int) -> None:
    """Allow at least ``at_least`` compiled graphs per function (the limits this torch has)."""
    cfg: Any = torch._dynamo.config
    for knob in _LIMITS:
        if hasattr(cfg, knob):
            setattr(cfg, knob, max(at_least, getattr(cfg, knob)))
