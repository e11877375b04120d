"""Quotas and token budgets per principal (docs/quotas.md): ``Quotas.admit`` / ``settle`` / ``release``."""

from guard.quota.core import Quotas, Refusal, Ticket

__all__ = ["Quotas", "Refusal", "Ticket"]
