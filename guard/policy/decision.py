"""Decision: what the policy said about one request at one stage, and which rule said it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class Decision:
    stage: str  # access | content
    effect: str  # allow | deny
    rule: str  # deciding rule "policies/policy.csv:4"; "" when no rule matched (default deny)
    policy_version: str  # SHA-256 hex over the model and rule files
    matched: tuple[str, ...] = ()  # every rule (file:line) whose condition held, in file order
    profile: str = "default"  # screening profile selected by the rules
    error: str = ""  # a rule failed at run time (the request was denied: fail closed)
    shadow: dict[str, Any] | None = field(default=None, compare=False)  # the shadow policy's decision
    # when it disagreed
    _audit: dict[str, Any] | None = field(default=None, init=False, compare=False, repr=False)
    quota_tier: str = "default"  # quota tier selected by a ``quota`` rule (guard.quota)

    @property
    def allowed(self) -> bool:
        return self.effect == "allow"

    def to_audit(self) -> dict[str, Any]:
        """The decision as audit and explain output show it: a fresh dict the caller may change."""
        out: dict[str, Any] = {
            "stage": self.stage,
            "effect": self.effect,
            "rule": self.rule,
            "policy_version": self.policy_version,
            "matched": list(self.matched),
            "profile": self.profile,
            "error": self.error,
        }
        if self.quota_tier != "default":
            out["quota_tier"] = self.quota_tier
        if self.shadow is not None:
            out["shadow"] = self.shadow
        return out

    def audit_summary(self) -> dict[str, Any]:
        """``to_audit()`` built once and shared: the engine caches decisions, so most requests get one it made
        before, and every audit event of them carries this dict (nothing may mutate it, as with the
        Principal's summary; guard.audit.event.decision_summary)."""
        out = self._audit
        if out is None:
            out = self.to_audit()
            object.__setattr__(self, "_audit", out)
        return out
