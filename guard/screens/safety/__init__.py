"""Safety screen: Llama Guard verdicts from a remote server (OpenAI/Ollama API) or a local model."""

from guard.screens.safety.screen import SafetyScreen
from guard.screens.safety.settings import SafetyProfile, SafetySettings, load_safety

__all__ = ["SafetyProfile", "SafetyScreen", "SafetySettings", "load_safety"]
