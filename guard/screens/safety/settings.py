"""Schema of filters/safety.yaml: named Llama Guard profiles (backend, threshold, categories, streams, fail mode)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from guard.config import ConfigError, load_yaml, validate
from guard.screens.failmode import FailSettings
from guard.screens.injection.screen import InjectionSettings
from guard.screens.safety.llama_guard import Category, Taxonomy


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


KEEPALIVE_S = 4.0  # default idle time of a judge connection: below uvicorn's 5 s, as guard.http1's upstream pool


def _http_url(v: str) -> str:
    if not (v.startswith("http://") or v.startswith("https://")):
        raise ValueError("must start with http:// or https://")
    return v.rstrip("/")


class OpenAIBackend(_Strict):
    """Any OpenAI-compatible server hosting Llama Guard (vLLM, llama.cpp server, TGI)."""

    type: Literal["openai"]
    url: str  # base URL; /v1/chat/completions and /v1/completions are appended
    model: str = "meta-llama/Llama-Guard-3-8B"
    api_key_env: str | None = None  # name of the environment variable holding the server's key
    max_tokens: int = Field(20, ge=2, le=256)
    top_logprobs: int = Field(5, ge=0, le=20)
    raw_prompt: bool = False  # always use /v1/completions with the raw prompt (forced by custom categories)
    # idle connections are closed after this many seconds, before the server closes them (uvicorn, under vLLM,
    # closes at 5 s): keep it below the server's keep-alive, or a request may meet a connection being closed
    keepalive_s: float = Field(KEEPALIVE_S, gt=0, le=300)

    _url = field_validator("url")(classmethod(lambda cls, v: _http_url(v)))


class OllamaBackend(_Strict):
    """Ollama's /api/chat (or /api/generate with raw: true for custom categories)."""

    type: Literal["ollama"]
    url: str = "http://127.0.0.1:11434"
    model: str = "llama-guard3:8b"
    max_tokens: int = Field(20, ge=2, le=256)
    top_logprobs: int = Field(5, ge=0, le=20)
    keepalive_s: float = Field(KEEPALIVE_S, gt=0, le=300)  # as for openai: below the server's keep-alive

    _url = field_validator("url")(classmethod(lambda cls, v: _http_url(v)))


class LocalBackend(_Strict):
    """transformers in-process (the ``guard[local]`` extra)."""

    type: Literal["local"]
    model_path: Path  # a local directory with config, weights and tokenizer (nothing is downloaded)
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = "auto"  # auto: bf16 on CUDA, fp32 on CPU
    max_batch: int = Field(16, ge=1, le=256)
    max_wait_ms: float = Field(2.0, ge=0, le=1000)  # how long a batch waits to fill
    max_input_tokens: int = Field(8192, ge=64)  # longer conversations are a screen error (fail mode)
    max_new_tokens: int = Field(12, ge=2, le=64)  # for the category line, only when unsafe
    cuda_graphs: bool = True  # replay captured graphs for bucketed shapes on CUDA
    compile: bool | None = None  # torch.compile the layers; None: on CUDA only
    fp8: bool = False  # FP8 matmuls on Hopper GPUs (faster, slightly different scores: validate first)
    warmup_lengths: list[int] = []  # token-length buckets to compile/capture at start (e.g. [512, 1024])


Backend = Annotated[OpenAIBackend | OllamaBackend | LocalBackend, Field(discriminator="type")]


class CategorySpec(_Strict):
    code: str = Field(pattern=r"^S\d{1,3}$")
    name: str = Field(min_length=1)
    description: str = ""


class PromptSide(_Strict):
    enabled: bool = True
    action: Literal["block", "audit_only"] = "block"
    # Long prompts are judged in windows that fit the judge's context (guard/screens/safety/windows.py):
    window_chars: int = Field(12000, ge=256)  # the judged text of one judge call (the last turn's part)
    overlap_chars: int = Field(256, ge=0)  # each window repeats this much of the one before it
    context_chars: int = Field(2000, ge=0)  # earlier turns sent along as context (their last characters)
    max_windows: int = Field(32, ge=1, le=1024)  # judge calls one prompt may take
    too_long: Literal["refuse", "allow"] = "refuse"  # more windows needed: refuse (400 prompt_too_long), or
    #   judge the first max_windows and pass the rest unjudged (verdict status "partial", counted)

    @model_validator(mode="after")
    def _overlap(self) -> PromptSide:
        if self.overlap_chars * 4 > self.window_chars:
            raise ValueError("overlap_chars must be at most a quarter of window_chars")
        return self


class ResponseSide(_Strict):
    enabled: bool = True
    action: Literal["block", "audit_only"] = "block"
    window_chars: int = Field(400, ge=16)  # stream window; cut at a sentence end where possible
    context_chars: int = Field(6000, ge=0)  # how much earlier answer text each window is judged with
    stream_mode: Literal["hold", "monitor"] = "hold"  # hold: release a window once judged safe; monitor:
    #   release at once, judge behind, cut the stream (content_filter) on an unsafe verdict


class SafetyProfile(_Strict):
    backend: Backend
    model_size: Literal["8b", "1b"] = "8b"  # the 1B model has S1-S13
    threshold: float = Field(0.5, gt=0, le=1)
    categories: list[CategorySpec] | None = None  # a custom taxonomy replaces the model's own
    excluded_categories: list[str] = []
    prompt: PromptSide = PromptSide()
    response: ResponseSide = ResponseSide()
    fail: FailSettings = FailSettings()

    @model_validator(mode="after")
    def _taxonomy(self) -> SafetyProfile:
        self.taxonomy()  # raises when every category is excluded
        codes = [c.code for c in self.categories or []]
        if len(codes) != len(set(codes)):
            raise ValueError("duplicate category code")
        return self

    def taxonomy(self) -> Taxonomy:
        custom = [Category(c.code, c.name, c.description) for c in self.categories] if self.categories else None
        return Taxonomy.build(self.model_size, custom, self.excluded_categories)


class SafetySettings(_Strict):
    default: str = "default"
    profiles: dict[str, SafetyProfile]
    injection: InjectionSettings | None = None  # the optional prompt injection classifier

    @model_validator(mode="after")
    def _default_exists(self) -> SafetySettings:
        if self.default not in self.profiles:
            raise ValueError(f"default names unknown profile {self.default!r}")
        return self

    def profile(self, name: str | None = None) -> SafetyProfile:
        return self.profiles[name or self.default]


def load_safety(path: str | Path) -> SafetySettings:
    """Load filters/safety.yaml (or a folder holding it); errors name file:line: key."""
    p = Path(path)
    if p.is_dir():
        p = p / "safety.yaml"
    data, lines = load_yaml(p)
    if not isinstance(data, dict):
        raise ConfigError(f"{p}:1: the safety settings must be a mapping")
    settings: SafetySettings = validate(SafetySettings, data, p, lines)
    if settings.injection and not settings.injection.model_path.is_absolute():
        settings.injection.model_path = p.parent / settings.injection.model_path
    for prof in settings.profiles.values():
        b = prof.backend
        if isinstance(b, LocalBackend) and not b.model_path.is_absolute():
            b.model_path = p.parent / b.model_path
    return settings
