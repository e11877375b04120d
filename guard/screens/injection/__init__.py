"""Prompt-injection screen: phrase and structure heuristics over prompt parts of lower trust."""

from guard.screens.injection.screen import InjectionScreen, InjectionSettings

__all__ = ["InjectionScreen", "InjectionSettings"]
