"""Guard's one configuration schema, loaded from YAML with errors that name the key path and line."""

from __future__ import annotations

import fnmatch
import ipaddress
import os
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from guard.audit.settings import AuditSettings
from guard.console.settings import ConsoleSettings
from guard.policy.settings import PolicySettings
from guard.quota.settings import QuotaSettings

_FIELD = re.compile(r"[A-Za-z0-9_$-]+(\.[A-Za-z0-9_$-]+)*")


class ConfigError(Exception):
    """A configuration problem a person can fix: names the file, the line and the key path."""

    exit_code = 2


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=False)


class Listen(Strict):
    host: str = "127.0.0.1"
    port: int = Field(8443, ge=0, le=65535)


class TLS(Strict):
    cert: Path
    key: Path
    client_ca: Path
    crl: Path | None = None
    min_version: Literal["1.2", "1.3"] = "1.2"
    trusted_proxies: list[str] = []
    # An XFCC header with several elements (one per proxy hop): refused (403 bad_client_identity) unless
    # ``last``: the element the nearest trusted proxy appended (Envoy's order) names the client.
    xfcc_multi: Literal["refuse", "last"] = "refuse"
    enabled: bool = True  # false only for benchmarks and tests on loopback; clients are then anonymous

    @field_validator("trusted_proxies")
    @classmethod
    def _cidrs(cls, v: list[str]) -> list[str]:
        for c in v:
            ipaddress.ip_network(c, strict=False)
        return v

    def networks(self) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
        return [ipaddress.ip_network(c, strict=False) for c in self.trusted_proxies]


class Admin(Strict):
    host: str = "127.0.0.1"
    port: int = Field(9090, ge=0, le=65535)
    enabled: bool = True
    # Name of an environment variable holding a token that POST /admin/reload must present
    # (Authorization: Bearer <token>). Unset: reload is open to whoever reaches the admin port.
    reload_token_env: str | None = None

    def reload_token(self) -> str | None:
        """The reload token, or None when none is configured. A configured variable that is unset or empty
        is a configuration error: Guard refuses to start rather than leave reload open."""
        if not self.reload_token_env:
            return None
        token = os.environ.get(self.reload_token_env, "")
        if not token:
            raise ConfigError(f"admin.reload_token_env: environment variable {self.reload_token_env} is not set")
        return token


class Upstream(Strict):
    url: str
    api: Literal["openai", "azure-openai", "ollama", "anthropic"] = "openai"
    api_key_env: str | None = None
    api_version: str | None = None  # azure-openai: api-version; anthropic: anthropic-version (2023-06-01)
    external: bool = False  # the model runs outside our network (policy attribute obj.external)
    timeout_s: float = Field(60.0, gt=0)
    connect_timeout_s: float = Field(5.0, gt=0)
    first_byte_timeout_s: float | None = Field(None, gt=0)  # default: timeout_s
    idle_timeout_s: float | None = Field(None, gt=0)  # between stream chunks; default: timeout_s
    max_connections: int = Field(256, ge=1)
    max_response_bytes: int | None = Field(None, ge=1024)  # a whole response body; default limits.max_response_bytes
    # Client headers forwarded to this upstream besides ``accept`` (names, any case). Credentials and headers
    # Guard sets itself are refused here: Guard sends the upstream's own key (api_key_env).
    forward_headers: list[str] = []
    # Headers Guard itself sends to this upstream (e.g. OpenAI-Organization for Guard's key); never keys:
    # those come from api_key_env only.
    headers: dict[str, str] = {}

    @field_validator("headers")
    @classmethod
    def _own_headers(cls, v: dict[str, str]) -> dict[str, str]:
        from guard.headers import refuse_reason

        for name, value in v.items():
            why = refuse_reason(name)
            if why:
                raise ValueError(f"{name!r} cannot be set here: {why}")
            if not value.isprintable() or not value.isascii():
                raise ValueError(f"{name!r}: the value must be printable ASCII")
        return {k.lower(): val for k, val in v.items()}

    @field_validator("forward_headers")
    @classmethod
    def _forwardable(cls, v: list[str]) -> list[str]:
        from guard.headers import refuse_reason

        out = []
        for name in v:
            why = refuse_reason(name)
            if why:
                raise ValueError(f"{name!r} cannot be forwarded: {why}")
            out.append(name.lower())
        return out

    # Request fields beyond the API reference this upstream may receive (dotted, array levels left out:
    # "messages.cache_control"); forwarded as parsed, never screened. Unknown fields are refused otherwise.
    extra_fields: list[str] = []
    # Inputs that reach the model but cannot be screened as text, allowed for this upstream (marked in the
    # audit record's screens as "unscreened" and counted); refused otherwise (guard.apis.fields).
    allow_unscreened: list[Literal["image", "audio", "file", "token_ids", "context"]] = []
    # Responses API context kept by the upstream (previous_response_id, conversation, background, store: true):
    # forwarded only when true; that context is not in the request Guard screens and audits (docs/wire-apis.md).
    stateful: bool = False
    # api openai: whether the upstream serves /v1/responses itself ("native") or Responses requests are
    # translated to Chat Completions ("translate"; always so for azure-openai).
    responses: Literal["native", "translate"] = "native"

    @field_validator("extra_fields")
    @classmethod
    def _fields(cls, v: list[str]) -> list[str]:
        for name in v:
            if not _FIELD.fullmatch(name):
                raise ValueError(f"{name!r} is not a field name (letters, digits, _ - $, dotted for nested fields)")
        return v

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        if not (v.startswith("http://") or v.startswith("https://")):
            raise ValueError("must start with http:// or https://")
        return v.rstrip("/")


class Route(Strict):
    model: str  # glob on the requested model
    upstream: str
    fallbacks: list[str] = []
    upstream_model: str | None = None  # rename the model for the upstream (e.g. an Azure deployment)


class Limits(Strict):
    max_body_bytes: int = Field(1_048_576, ge=1)
    max_json_depth: int = Field(64, ge=2)
    # An upstream's whole (not streamed) response body, and any one event of a screened stream: 502
    # upstream_response_too_large past it. upstreams.<name>.max_response_bytes overrides it per upstream.
    max_response_bytes: int = Field(16 * 1024 * 1024, ge=1024)
    # Longest one request's screening may take (prompt screens; a whole answer's screens) before the request
    # is refused, 503 screen_budget_exceeded: large texts are screened off the event loop and stop here.
    screen_budget_ms: float = Field(2000.0, gt=0)
    # Worker processes (per serving process, started on the first large text) for large PII scans: they hold
    # neither this process's GIL nor its CPU priority; each can take a whole core (threads share one, under
    # the GIL), so more than 1 suits only hosts with cores to spare. 0: large texts are scanned in threads.
    screen_processes: int = Field(1, ge=0, le=16)
    # CPU priority of those screening processes and of the large-body reader, below the serving process's so
    # that its event loop (every other client's requests) gets a core before hostile work does: "idle" (Linux
    # SCHED_IDLE: they run on CPU time nothing else wants) or 0-19 nice steps. The screening budget stays wall
    # time: where other work saturates the cores, large prompts reach screen_budget_ms sooner (503, fail closed).
    screen_priority: int | str = "idle"
    # While a request with a large body (over 64 KiB) is in flight, the cyclic garbage collector's automatic
    # passes wait (they would walk that body's objects holding the GIL, pausing every client): at most this
    # many seconds, then one full collection. 0: never wait (guard/gc_tuning.py).
    gc_defer_s: float = Field(30.0, ge=0, le=3600)

    @field_validator("screen_priority", mode="before")
    @classmethod
    def _priority(cls, v: Any) -> int | str:
        if v == "idle" or (isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 19):
            return v
        raise ValueError("must be idle or a number of nice steps from 0 to 19")


class Filters(Strict):
    dir: Path = Path("filters")


class Telemetry(Strict):
    metrics: bool = True
    otlp_endpoint: str | None = None  # OTLP/HTTP traces endpoint; off when unset
    service_name: str = "guard"
    # Share of exchanges traced (head sampling; a caller's sampled flag is followed). Spans cost the worker
    # CPU: tracing every exchange cut throughput by 60-64% in the benchmark, 1% by about 5% (README).
    trace_sample_ratio: float = Field(1.0, ge=0.0, le=1.0)
    # Model names that get their own ``model`` label though a wildcard route serves them; every other
    # name a wildcard route (or no route) matched is counted as ``other``, so clients cannot grow the series.
    model_labels: list[str] = []


class Config(Strict):
    listen: Listen = Listen()
    tls: TLS
    admin: Admin = Admin()
    upstreams: dict[str, Upstream]
    routes: list[Route]
    limits: Limits = Limits()
    policy: PolicySettings = PolicySettings()
    filters: Filters = Filters()
    audit: AuditSettings = AuditSettings()
    console: ConsoleSettings = ConsoleSettings()
    telemetry: Telemetry = Telemetry()
    quotas: QuotaSettings | None = None  # per-principal rate limits and token budgets (docs/quotas.md)
    workers: int = Field(1, ge=1, le=64)
    shutdown_deadline_s: float = Field(30.0, ge=0)
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    access_log: bool = False  # one JSON line per exchange (guard/accesslog.py): ids, status, latency; no text
    access_log_file: Path | None = None  # where access_log writes; unset: stderr

    source: Path | None = Field(None, exclude=True)

    def model_post_init(self, _: Any) -> None:
        for i, r in enumerate(self.routes):
            for name in [r.upstream, *r.fallbacks]:
                if name not in self.upstreams:
                    raise ValueError(f"routes[{i}] names unknown upstream {name!r}")
        self.check_quotas()
        if self.console.enabled and not self.admin.enabled:
            raise ValueError("console.enabled needs admin.enabled: the console is served on the admin listener only")

    def check_quotas(self) -> None:
        """Nothing to refuse any more: with ``workers > 1`` the memory backend's counters live in one keeper
        process that every worker asks (guard.quota.local)."""

    def route(self, model: str) -> Route | None:
        for r in self.routes:
            if fnmatch.fnmatchcase(model, r.model):
                return r
        return None

    def resolve(self, base: Path) -> Config:
        """Make relative file paths relative to the config file's folder."""

        def fix(p: Path | None) -> Path | None:
            return None if p is None or p.is_absolute() else (base / p)

        for sect, keys in (("tls", ("cert", "key", "client_ca", "crl")), ("filters", ("dir",))):
            obj = getattr(self, sect)
            for k in keys:
                v = getattr(obj, k)
                if v is not None and not Path(v).is_absolute():
                    setattr(obj, k, fix(Path(v)))
        if self.access_log_file is not None and not self.access_log_file.is_absolute():
            self.access_log_file = base / self.access_log_file
        self.policy.resolve(base)
        self.audit.resolve(base)
        self.console.resolve(base)
        return self


# --- YAML with line numbers -----------------------------------------------------------------------------


class _LineLoader(yaml.SafeLoader):
    pass


def _construct_mapping(loader: _LineLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    mapping = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=deep)
        try:
            hash(key)
        except TypeError:
            raise yaml.constructor.ConstructorError(
                None, None, "a mapping key must be a scalar", key_node.start_mark
            ) from None
        if key in mapping:
            raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
        mapping[key] = loader.construct_object(value_node, deep=deep)
    return mapping


_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _lines(node: yaml.Node, path: tuple = (), out: dict | None = None, seen: set | None = None) -> dict[tuple, int]:
    out = {} if out is None else out
    seen = set() if seen is None else seen
    out.setdefault(path, node.start_mark.line + 1)  # a key's own line wins over its value's
    if id(node) in seen:  # an alias: walk each node once (nested aliases would otherwise blow up exponentially)
        return out
    seen.add(id(node))
    if isinstance(node, yaml.MappingNode):
        for k, v in node.value:
            key = k.value
            out[(*path, key)] = k.start_mark.line + 1
            _lines(v, (*path, key), out, seen)
    elif isinstance(node, yaml.SequenceNode):
        for i, v in enumerate(node.value):
            _lines(v, (*path, i), out, seen)
    return out


def load_yaml(path: Path) -> tuple[Any, dict[tuple, int]]:
    """Parse a YAML file; return the data and a map from key path to line number."""
    try:
        raw = Path(path).read_bytes()
    except OSError as e:
        raise ConfigError(f"{path}: cannot read: {e.strerror}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        raise ConfigError(f"{path}:{line}: not UTF-8 text") from None
    try:
        node = yaml.compose(text, Loader=_LineLoader)
        data = yaml.load(text, Loader=_LineLoader)
        return data, (_lines(node) if node is not None else {})
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
        pos = getattr(e, "position", None)  # ReaderError (a character YAML does not allow) has no mark
        line = mark.line + 1 if mark else text.count("\n", 0, pos) + 1 if isinstance(pos, int) else 1
        what = str(getattr(e, "problem", None) or e).splitlines()[0]  # ReaderError adds 'in "<unicode string>"'
        raise ConfigError(f"{path}:{line}: invalid YAML: {what}") from None
    except RecursionError:
        raise ConfigError(f"{path}:1: invalid YAML: nested too deeply") from None


def format_validation_error(path: Path, err: ValidationError, lines: dict[tuple, int]) -> str:
    msgs = []
    for e in err.errors():
        loc = tuple(x for x in e["loc"] if not (isinstance(x, str) and x.startswith("function-")))
        found: tuple[int | str, ...] = ()
        line = lines.get(found)
        for x in loc:  # follow the keys that exist in the file (skips union tags pydantic adds to the path)
            if (*found, x) in lines:
                found += (x,)
                line = lines[found]
        key = ".".join(str(x) for x in loc) or "(top level)"
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = "unknown key"
        elif msg.startswith("Value error, "):
            msg = msg[len("Value error, ") :]
        msgs.append(f"{path}:{line or 1}: {key}: {msg}")
    return "\n".join(msgs)


def validate(model: type[BaseModel], data: Any, path: Path, lines: dict[tuple, int]) -> Any:
    """Validate ``data`` against ``model``; raise ConfigError naming file, line and key path."""
    try:
        return model.model_validate(data if data is not None else {})
    except ValidationError as e:
        raise ConfigError(format_validation_error(path, e, lines)) from None


def load_config(path: str | os.PathLike[str]) -> Config:
    path = Path(path)
    data, lines = load_yaml(path)
    if not isinstance(data, dict):
        raise ConfigError(f"{path}:1: the configuration must be a mapping")
    cfg = validate(Config, data, path, lines)
    cfg.source = path
    return cfg.resolve(path.parent)
