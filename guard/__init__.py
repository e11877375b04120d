"""Guard: a security and compliance reverse proxy for LLM endpoints."""

__version__ = "0.1.0"
