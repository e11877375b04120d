"""Denylist screen: secrets (key formats, entropy) and phrase lists, every pattern on RE2."""

from guard.screens.denylist.screen import DenylistScreen
from guard.screens.denylist.settings import load_denylist

__all__ = ["DenylistScreen", "load_denylist"]
