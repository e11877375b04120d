"""`make bench`: the core proxy benchmark, side by side in ONE run, then the feature benchmarks.

Core scenario (issue: core proxy): at 1, 16 and 64 connections, POST /v1/chat/completions (non-streamed):
  direct        the fast upstream itself (nginx returning a fixed completion; else the built-in model server)
  nginx         nginx proxy_pass to it (if nginx is installed)
  baseline      a minimal Starlette + aiohttp proxy (tests/bench/baseline_proxy.py)
  guard-http    Guard, plain HTTP, identity from a trusted XFCC header, shipped policy, audit journal with
                durability batch (guard-http-fsync: the default fsync)
  guard-mtls    Guard over mTLS (wrk cannot present client certificates, so a local nginx originates TLS with
                the client certificate: this row pays an extra nginx hop; `nginx-hop` shows that hop's cost)
  litellm       LiteLLM's proxy, 1 worker (if `make bench-peers` installed it)
Then streaming time to first chunk (direct vs Guard over mTLS, httpx with a client certificate), and Guard's
RSS after 10k and after 100k requests. Then (BENCH_ONLY=paired) the headline ratios again in alternating
rounds (baseline, Guard mTLS, Guard HTTP at 16 connections; median of each round's ratio), and
(BENCH_ONLY=latency) the added p50 at 1 connection with a client that presents its certificate to Guard
itself, so the mTLS row pays no nginx hop (tests/bench/paced_client.py for every row).
Alternating rounds also measure the audit trail's cost (auditcost), metrics' and tracing's (metrics) and two
workers against one (workers).
Environment: BENCH_QUICK=1 for a short run.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from tests.bench.common import (
    CHAT_BODY,
    FIXED_COMPLETION,
    NGINX,
    PY,
    ROOT,
    XFCC,
    free_port,
    have,
    model_server_cmd,
    nginx_conf,
    paced,
    process,
    rss_mb,
    table,
    workers_cpu,
    wrk,
    wrk_script,
)

QUICK = os.environ.get("BENCH_QUICK") == "1"
SECONDS = 3 if QUICK else 8
CONNS = [1, 16, 64]


ALLOW_ALL = "p, access, allow, *, -, True\np, content, allow, *, -, True\n"


def guard_config(
    d: Path,
    upstream: str,
    tls: bool,
    port: int,
    admin: int,
    *,
    durability: str = "batch",
    policy: str = "shipped",
    filters: str = "none",
    workers: int = 1,
    metrics: bool = True,
    sealer: str = "auto",
    otlp_endpoint: str | None = None,
    trace_sample_ratio: float = 1.0,
    start_record: str = "overlap",
) -> Path:
    """Guard for the core benchmark: shipped policy, audit journal (durability ``batch`` unless asked), no
    screening profile (screens have their own benchmarks) unless ``filters="shipped"``."""
    from guard.demo.stack import make_pki

    pki = d / "pki"
    if not (pki / "ca.pem").exists():
        make_pki(pki)
    rules = ROOT / "policies/policy.csv"
    if policy == "allow-all":
        rules = d / "allow-all.csv"
        rules.write_text(ALLOW_ALL)
    (d / "no-filters").mkdir(exist_ok=True)
    cfg: dict[str, Any] = {
        "listen": {"host": "127.0.0.1", "port": port},
        "tls": {
            "cert": str(pki / "server.pem"),
            "key": str(pki / "server-key.pem"),
            "client_ca": str(pki / "ca.pem"),
            "enabled": tls,
            "trusted_proxies": [] if tls else ["127.0.0.1/32"],
        },
        "admin": {"host": "127.0.0.1", "port": admin},
        "upstreams": {"local": {"url": upstream, "api": "openai", "timeout_s": 30}},
        "routes": [{"model": "*", "upstream": "local"}],
        "policy": {"model": str(ROOT / "policies/model.conf"), "rules": [str(rules)], "watch": False},
        "filters": {"dir": str(ROOT / "filters" if filters == "shipped" else d / "no-filters")},
        "audit": {
            "dir": str(d / f"audit-{port}"),
            "durability": durability,
            "sealer": sealer,
            "start_record": start_record,
        },
        "workers": workers,
        "telemetry": {
            "metrics": metrics,
            **({"otlp_endpoint": otlp_endpoint, "trace_sample_ratio": trace_sample_ratio} if otlp_endpoint else {}),
        },
    }
    path = d / f"guard-{port}.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def _upstream(d: Path, es: Any) -> tuple[str, str]:
    """(url for proxies, label): nginx with a fixed completion, else the built-in model server, started in
    the ExitStack ``es``."""
    port = free_port()
    if have("nginx"):
        conf = nginx_conf(
            d / "ng-up",
            f"""  server {{ listen 127.0.0.1:{port};
    location / {{ default_type application/json; return 200 '{FIXED_COMPLETION}'; }} }}""",
        )
        es.enter_context(process([NGINX, "-c", str(conf)], port))
        return f"http://127.0.0.1:{port}", "nginx fixed completion"
    es.enter_context(
        process(
            model_server_cmd(port),
            port,
        )
    )
    return f"http://127.0.0.1:{port}", "built-in model server"


# Guard variants measured in the core scenario: (name, tls, guard_config keyword arguments).
GUARDS = [
    ("guard-http", False, {}),
    ("guard-http-nopolicy", False, {"policy": "allow-all"}),
    ("guard-http-nometrics", False, {"metrics": False}),
    ("guard-http-fsync", False, {"durability": "fsync"}),
    ("guard-http-w2", False, {"workers": 2}),
    # audit.sealer is "auto" above (a sealer process with 2 CPUs per worker, else a thread); both kinds, forced:
    ("guard-http-process", False, {"sealer": "process"}),
    ("guard-http-thread", False, {"sealer": "thread"}),  # audit sealed in the worker (no sealer process)
    ("guard-http-w2-process", False, {"workers": 2, "sealer": "process"}),
    ("guard-http-w2-thread", False, {"workers": 2, "sealer": "thread"}),
    ("guard-mtls", True, {}),
]


def in_turn(items: Any, k: int) -> list[Any]:
    """Round ``k``'s order: as given in even rounds, reversed in odd ones, so that no variant always runs
    first (after a restart) or last (on a box warmed by the others)."""
    items = list(items)
    return items if k % 2 == 0 else items[::-1]


def by_round(xs: list[float], base: list[float], f: Callable[[float, float], float] = lambda a, b: a / b) -> float:
    """The median over rounds of ``f(x, base)`` taken within each round: the box drifts during a run, and the
    runs of one round sit next to each other in time, so comparing within a round cancels most of that."""
    return statistics.median(f(a, b) for a, b in zip(xs, base, strict=False))


def alternate(d: Path, up: str, variants: Any, rounds: int, measure: Callable[..., None], pid: bool = False) -> None:
    """Guard started once per variant (name, guard_config keyword arguments) and round, in turn (in_turn);
    ``measure(name, url, headers, wrk script)`` after a one-second warm-up (with ``pid``, also Guard's pid)."""
    for k in range(rounds):
        for name, kw in in_turn(variants, k):
            with _guard(d, up, False, kw) as (url, headers, p):
                (d / f"alt-{name}").mkdir(exist_ok=True)
                script = wrk_script(d / f"alt-{name}", CHAT_BODY, headers)
                url += "/v1/chat/completions"
                wrk(url, script, 4, 1)
                measure(name, url, headers, script, *((p.pid,) if pid else ()))


def metrics_cost(d: Path, rounds: int = 3 if QUICK else 5) -> dict[str, Any]:
    """Metrics' and tracing's share of throughput, measured by alternating Guard without request-path
    metrics, with them (the default: no spans, since no OTLP endpoint is set) and with them plus OpenTelemetry
    spans exported to a local OTLP/HTTP endpoint (nginx answering 200), for every exchange and for 1% of them
    (telemetry.trace_sample_ratio), at 16 connections, ``rounds`` times each in turn; costs are the median
    of each round's own ratio to the run without metrics (one pass each is within the box's noise). The same
    for two workers at 64 connections, whose metrics go through prometheus_client's shared files. Beside
    throughput, the CPU that Guard's worker processes spent per request in the same runs (sealer processes
    left out): saturated, the worker's core is what limits one worker, and CPU per request moves less
    with the box than requests per second do."""
    from contextlib import ExitStack

    seen: dict[str, list[float]] = {}
    cpu: dict[str, list[float]] = {}

    def measure(name: str, url: str, _h: dict[str, str], script: Path, pid: int) -> None:
        conns = 64 if name.startswith("w2-") else 16
        c0 = workers_cpu(pid)
        r = wrk(url, script, conns, SECONDS, threads=2)
        us = (workers_cpu(pid) - c0) / max(1, r["requests"]) * 1e6
        seen.setdefault(name, []).append(r["rps"])
        cpu.setdefault(name, []).append(us)
        print(f"  {name:13s} c={conns} {r['rps']:>9,.0f} req/s {us:6.1f} us CPU/request", file=sys.stderr)

    with ExitStack() as es:
        up, _ = _upstream(d, es)
        alternate(
            d,
            up,
            (
                ("metrics", {}),
                ("no-metrics", {"metrics": False}),
                ("tracing", {"otlp_endpoint": up + "/v1/traces"}),
                ("tracing-1pct", {"otlp_endpoint": up + "/v1/traces", "trace_sample_ratio": 0.01}),
                ("w2-metrics", {"workers": 2}),
                ("w2-no-metrics", {"workers": 2, "metrics": False}),
            ),
            rounds,
            measure,
            pid=True,
        )
    on, off, traced, sampled = (
        statistics.median(seen[n]) for n in ("metrics", "no-metrics", "tracing", "tracing-1pct")
    )

    def cost(name: str, base: str = "no-metrics") -> float:
        return round((1 - by_round(seen[name], seen[base])) * 100, 1)

    return {
        "rps": seen,
        "median_metrics": on,
        "median_no_metrics": off,
        "median_tracing": traced,
        "median_tracing_1pct": sampled,
        "metrics_cost_pct_c16": cost("metrics"),
        "metrics_and_tracing_every_exchange_cost_pct_c16": cost("tracing"),
        "metrics_and_tracing_1pct_cost_pct_c16": cost("tracing-1pct"),
        "metrics_cost_pct_two_workers_c64": cost("w2-metrics", "w2-no-metrics"),
        "cpu_us_per_request": cpu,
        "metrics_cpu_cost_pct_c16": round((1 - by_round(cpu["no-metrics"], cpu["metrics"])) * 100, 1),
        "metrics_cpu_cost_pct_two_workers_c64": round((1 - by_round(cpu["w2-no-metrics"], cpu["w2-metrics"])) * 100, 1),
        "metrics_cost_pct_c16_of_medians": round((1 - on / off) * 100, 1),
    }


def workers_scaling(d: Path, rounds: int = 3 if QUICK else 5) -> dict[str, Any]:
    """Two workers against one at 64 connections over HTTP, in alternating rounds: with the default
    ``audit.sealer: auto`` (on 2 CPUs one worker gets a sealer process, two workers get sealer threads) and
    with sealer threads forced for both (one process per worker, the comparison of one core against two).
    Ratios are the median of each round's own ratio."""
    from contextlib import ExitStack

    seen: dict[str, list[float]] = {}

    def measure(name: str, url: str, _h: dict[str, str], script: Path) -> None:
        r = wrk(url, script, 64, SECONDS, threads=2)
        seen.setdefault(name, []).append(r["rps"])
        print(f"  {name:9s} c=64 {r['rps']:>9,.0f} req/s", file=sys.stderr)

    with ExitStack() as es:
        up, _ = _upstream(d, es)
        alternate(
            d,
            up,
            (
                ("w1", {}),
                ("w2", {"workers": 2}),
                ("w1-thread", {"sealer": "thread"}),
                ("w2-thread", {"workers": 2, "sealer": "thread"}),
            ),
            rounds,
            measure,
        )
    return {
        "rps": seen,
        "workers2_vs_1_rps_c64": round(by_round(seen["w2"], seen["w1"]), 3),
        "workers2_vs_1_rps_c64_sealer_thread": round(by_round(seen["w2-thread"], seen["w1-thread"]), 3),
        "one_worker_thread_vs_auto": round(by_round(seen["w1-thread"], seen["w1"]), 3),
    }


def paired(d: Path, rounds: int = 3 if QUICK else 5) -> dict[str, Any]:
    """The core targets' ratios measured in pairs: the baseline, Guard over mTLS and Guard over HTTP run side
    by side (all started once), and each round measures the three in turn at 16 connections; a ratio is the
    median of the rounds' own ratios. The single pass of the core table measures rows minutes apart, and the
    box drifts by as much as the effects measured; rounds next to each other in time cancel most of that."""
    from contextlib import ExitStack

    seen: dict[str, list[float]] = {"baseline": [], "guard-mtls": [], "guard-http": []}
    with ExitStack() as es:
        up, _ = _upstream(d, es)
        bport = free_port()
        targets = {
            "baseline": es.enter_context(
                _plain([PY, "-m", "tests.bench.baseline_proxy", up, str(bport)], bport, f"http://127.0.0.1:{bport}")
            ),
            "guard-mtls": es.enter_context(_guard(d, up, True, {})),
            "guard-http": es.enter_context(_guard(d, up, False, {})),
        }
        scripts = {}
        for name, (url, headers, _p) in targets.items():
            (d / f"pair-{name}").mkdir(exist_ok=True)
            scripts[name] = wrk_script(d / f"pair-{name}", CHAT_BODY, headers)
            wrk(url + "/v1/chat/completions", scripts[name], 4, 1)
        for k in range(rounds):
            for name, (url, _h, _p) in in_turn(list(targets.items()), k):
                r = wrk(url + "/v1/chat/completions", scripts[name], 16, SECONDS, threads=2)
                seen[name].append(r["rps"])
                print(f"  paired {name:11s} c=16 {r['rps']:>9,.0f} req/s", file=sys.stderr)

    def ratio(name: str) -> float:
        return round(by_round(seen[name], seen["baseline"]), 3)

    return {
        "rps": seen,
        "rounds": rounds,
        "guard-mtls_vs_baseline_rps_c16": ratio("guard-mtls"),
        "guard-http_vs_baseline_rps_c16": ratio("guard-http"),
    }


def latency(d: Path, rounds: int = 3 if QUICK else 5, rate: float = 0.0) -> dict[str, Any]:
    """The 1-connection latency target measured without the nginx hop: one keep-alive connection sending its
    next request as soon as the answer is in, as wrk does (``rate`` > 0: one every 1/``rate`` s instead, which
    adds the box's wake-up latency at every process on the path; tests/bench/paced_client.py, the same client
    for every row), to the upstream directly, the baseline, Guard over HTTP and Guard over mTLS, the client
    presenting its certificate to Guard itself (and, for comparison, through the hop the core table uses). Added p50:
    the median over rounds of
    each round's own difference to ``direct``; the rows of a round run one after another."""
    from contextlib import ExitStack

    pki = d / "pki"
    seen: dict[str, list[float]] = {}
    p99: dict[str, list[float]] = {}
    with ExitStack() as es:
        up, _ = _upstream(d, es)
        bport = free_port()
        targets = {  # the first Guard started makes the PKI (guard_config)
            "direct": (up, {}, None),
            "baseline": es.enter_context(
                _plain([PY, "-m", "tests.bench.baseline_proxy", up, str(bport)], bport, f"http://127.0.0.1:{bport}")
            ),
            "guard-http": es.enter_context(_guard(d, up, False, {})),
            "guard-mtls": es.enter_context(_guard(d, up, True, {}, hop=False)),
            "guard-mtls-via-hop": es.enter_context(_guard(d, up, True, {})),
        }
        tls = (pki / "app.pem", pki / "app-key.pem", pki / "ca.pem")
        for url, headers, _p in targets.values():  # warm-up: connections, TLS sessions, policy caches
            paced(url + "/v1/chat/completions", CHAT_BODY, headers, 1, rate, 1, tls)
        for k in range(rounds):
            for name, (url, headers, _p) in in_turn(list(targets.items()), k):
                r = paced(url + "/v1/chat/completions", CHAT_BODY, headers, 1, rate, SECONDS, tls)
                assert r["non_2xx"] == 0, (name, r)
                seen.setdefault(name, []).append(r["p50_ms"])
                p99.setdefault(name, []).append(r["p99_ms"])
                print(
                    f"  latency {name:18s} c=1 p50 {r['p50_ms']:.3f} ms p99 {r['p99_ms']:.3f} ms "
                    f"({r['requests']} requests)",
                    file=sys.stderr,
                )
    added = {
        f"{name}_added_p50_ms_c1": round(by_round(seen[name], seen["direct"], lambda a, b: a - b), 3)
        for name in seen
        if name != "direct"
    }
    return {"rate_per_s": rate, "rounds": rounds, "p50_ms": seen, "p99_ms": p99, **added, "target_added_p50_ms": 0.5}


AUDIT_VARIANTS = (
    ("unaudited", {"unaudited": True}),
    ("fsync", {"durability": "fsync"}),
    ("batch", {"durability": "batch"}),
)


def audit_cost(d: Path, rounds: int = 3 if QUICK else 5, rate: int = 800) -> dict[str, Any]:
    """What the audit trail adds to a request, over plain HTTP at 16 connections: Guard with no audit at all
    (tests/bench/guard_noaudit.py), with its journal at ``durability: fsync`` (the default) and at ``batch``,
    in alternating rounds. Paced (tests/bench/paced_client.py, ``rate`` requests/s in all, well below what
    each variant sustains): the added p50 latency, median of each round's difference; saturated (wrk): the throughput
    cost."""
    from contextlib import ExitStack

    lat: dict[str, list[float]] = {}
    rps: dict[str, list[float]] = {}

    def measure(name: str, url: str, headers: dict[str, str], script: Path) -> None:
        lap = paced(url, CHAT_BODY, headers, 16, rate / 16, SECONDS)
        full = wrk(url, script, 16, SECONDS, threads=2)
        lat.setdefault(name, []).append(lap["p50_ms"])
        rps.setdefault(name, []).append(full["rps"])
        print(
            f"  audit {name:9s} paced {lap['rps']:>6,.0f} req/s p50 {lap['p50_ms']:.3f} ms "
            f"p99 {lap['p99_ms']:.3f} ms non2xx {lap['non_2xx']}; saturated c=16 {full['rps']:>7,.0f} "
            f"req/s p50 {full['p50_ms']:.3f} ms",
            file=sys.stderr,
        )

    with ExitStack() as es:
        up, _ = _upstream(d, es)
        alternate(d, up, AUDIT_VARIANTS, rounds, measure)

    def added(name: str) -> float:
        return round(by_round(lat[name], lat["unaudited"], lambda a, b: a - b), 3)

    def cost(name: str) -> float:
        return round((1 - by_round(rps[name], rps["unaudited"])) * 100, 1)

    return {
        "paced_rate": rate,
        "paced_p50_ms": lat,
        "saturated_rps": rps,
        "fsync_added_p50_ms_c16_paced": added("fsync"),
        "batch_added_p50_ms_c16_paced": added("batch"),
        "fsync_throughput_cost_pct_c16": cost("fsync"),
        "batch_throughput_cost_pct_c16": cost("batch"),
    }


@contextmanager
def _guard(
    d: Path, up: str, tls: bool, kw: dict[str, Any], hop: bool = True
) -> Iterator[tuple[str, dict[str, str], Any]]:
    """A Guard process; over mTLS it is reached through a local nginx that presents the client certificate
    (wrk cannot), so that row pays one extra hop, shown by the ``nginx-hop`` row; with ``hop=False`` its
    own https URL (for paced_client, which presents the certificate itself)."""
    gport, admin = free_port(), free_port()
    kw = dict(kw)
    unaudited = kw.pop("unaudited", False)  # tests/bench/guard_noaudit.py: the same Guard recording nothing
    cfg = guard_config(d, up, tls, gport, admin, **kw)
    cmd = (
        [PY, "-m", "tests.bench.guard_noaudit", str(cfg)]
        if unaudited
        else [str(Path(PY).parent / "guard"), "serve", "--config", str(cfg)]
    )
    with process(cmd, gport, log=d / f"guard-{gport}.log") as p:
        if not tls:
            yield f"http://127.0.0.1:{gport}", {"x-forwarded-client-cert": XFCC}, p
            return
        if not hop:
            yield f"https://127.0.0.1:{gport}", {}, p
            return
        hop, pki = free_port(), d / "pki"
        conf = nginx_conf(
            d / f"ng-tls-{hop}",
            f"""  upstream g {{ server 127.0.0.1:{gport}; keepalive 128; }}
  server {{ listen 127.0.0.1:{hop}; location / {{ proxy_pass https://g; proxy_http_version 1.1;
    proxy_set_header Connection ""; proxy_ssl_certificate {pki}/app.pem; proxy_ssl_certificate_key {pki}/app-key.pem;
    proxy_ssl_trusted_certificate {pki}/ca.pem; proxy_ssl_verify on; proxy_ssl_name localhost;
    proxy_ssl_session_reuse on; }} }}""",
        )
        with process([NGINX, "-c", str(conf)], hop):
            yield f"http://127.0.0.1:{hop}", {}, p


@contextmanager
def _plain(
    cmd: list[str] | None,
    port: int,
    url: str,
    log: Path | None = None,
    env: dict[str, str] | None = None,
    wait: float = 30,
) -> Iterator[tuple[str, dict, Any]]:
    if cmd is None:
        yield url, {}, None
        return
    with process(cmd, port, log=log, env=env, wait=wait) as p:
        yield url, {}, p


def _targets(d: Path, up: str) -> Iterator[tuple[str, Any]]:
    """(name, context manager yielding (url, headers, process)), started one at a time."""
    yield "direct", _plain(None, 0, up)
    if have("nginx"):
        port = free_port()
        conf = nginx_conf(
            d / "ng-proxy",
            f"""  upstream up {{ server {up[7:]}; keepalive 128; }}
  server {{ listen 127.0.0.1:{port}; location / {{ proxy_pass http://up; proxy_http_version 1.1;
    proxy_set_header Connection ""; }} }}""",
        )
        yield "nginx", _plain([NGINX, "-c", str(conf)], port, f"http://127.0.0.1:{port}")
    bport = free_port()
    yield (
        "baseline",
        _plain([PY, "-m", "tests.bench.baseline_proxy", up, str(bport)], bport, f"http://127.0.0.1:{bport}"),
    )
    if have("nginx"):
        hop = free_port()
        conf = nginx_conf(
            d / "ng-hop",
            f"""  upstream b {{ server 127.0.0.1:{bport}; keepalive 128; }}
  server {{ listen 127.0.0.1:{hop}; location / {{ proxy_pass http://b; proxy_http_version 1.1;
    proxy_set_header Connection ""; }} }}""",
        )

        @contextmanager
        def hop_cm() -> Iterator[tuple[str, dict, Any]]:
            with (
                process([PY, "-m", "tests.bench.baseline_proxy", up, str(bport)], bport),
                process([NGINX, "-c", str(conf)], hop),
            ):
                yield f"http://127.0.0.1:{hop}", {}, None

        yield "nginx-hop", hop_cm()
    for name, tls, kw in GUARDS:
        if tls and not have("nginx"):
            continue
        yield name, _guard(d, up, tls, kw)
    litellm = ROOT / ".bench-peers/litellm/bin/litellm"
    if litellm.exists():
        lport = free_port()
        lc = d / "litellm.yaml"
        lc.write_text(
            yaml.safe_dump(
                {
                    "model_list": [
                        {
                            "model_name": "bench-model",
                            "litellm_params": {"model": "openai/bench-model", "api_base": up + "/v1", "api_key": "x"},
                        }
                    ]
                }
            )
        )
        yield (
            "litellm",
            _plain(
                [str(litellm), "--config", str(lc), "--port", str(lport), "--num_workers", "1"],
                lport,
                f"http://127.0.0.1:{lport}",
                log=d / "litellm.log",
                env={
                    "LITELLM_LOCAL_MODEL_COST_MAP": "True",  # no fetch of the cost map
                    "LITELLM_DANGEROUSLY_PERMIT_WEAK_OR_UNSET_MASTER_KEY": "true",
                },  # loopback
                wait=180,
            ),
        )
    else:
        print("notice: LiteLLM not installed (make bench-peers); its row is skipped", file=sys.stderr)


def core(d: Path) -> dict[str, Any]:
    from contextlib import ExitStack

    rows: list[dict[str, Any]] = []
    result: dict[str, Any] = {"seconds_per_point": SECONDS}
    with ExitStack() as es:
        up, label = _upstream(d, es)
        result["upstream"] = label
        only = [t for t in os.environ.get("BENCH_TARGETS", "").split(",") if t]
        for name, cm in _targets(d, up):
            if only and name not in only:
                continue
            (d / name).mkdir(parents=True, exist_ok=True)
            try:
                entered = cm.__enter__()
            except TimeoutError as e:
                print(f"notice: {name} did not start ({e}); its row is skipped", file=sys.stderr)
                continue
            with contextlib.ExitStack() as started:
                started.push(cm.__exit__)
                url, headers, proc = entered
                script = wrk_script(d / name, CHAT_BODY, headers)
                wrk(url + "/v1/chat/completions", script, 4, 1)  # warm-up
                for c in CONNS:
                    r = wrk(url + "/v1/chat/completions", script, c, SECONDS, threads=1 if c == 1 else 2)
                    rows.append({"target": name, "conns": c, **r})
                    print(
                        f"  {name:20s} c={c:<3d} {r['rps']:>9,.0f} req/s  p50 {r['p50_ms']:.3f} ms  p99 "
                        f"{r['p99_ms']:.3f} ms  non2xx {r['non_2xx']}",
                        file=sys.stderr,
                    )
                if name == "guard-http":
                    result["rss"] = rss(proc.pid, (url, headers), d)
        result["rows"] = rows
        result["ratios"] = _ratios(rows)
        result["ttfb"] = ttfb(d, es)
    return result


def _get(rows: list[dict], target: str, conns: int, key: str) -> float:
    for r in rows:
        if r["target"] == target and r["conns"] == conns:
            return r[key]
    return float("nan")


def _ratios(rows: list[dict]) -> dict[str, float]:
    out = {}
    base = _get(rows, "baseline", 16, "rps")
    for t in ("guard-http", "guard-mtls", "guard-http-fsync", "nginx", "litellm"):
        out[f"{t}_vs_baseline_rps_c16"] = round(_get(rows, t, 16, "rps") / base, 3) if base else float("nan")
    hop = _get(rows, "nginx-hop", 16, "rps")
    out["guard-mtls_vs_nginx-hop_rps_c16"] = (
        round(_get(rows, "guard-mtls", 16, "rps") / hop, 3) if hop else float("nan")
    )
    nop = _get(rows, "guard-http-nopolicy", 16, "rps")
    out["policy_cost_pct_c16"] = (
        round((1 - _get(rows, "guard-http", 16, "rps") / nop) * 100, 1) if nop else float("nan")
    )
    nom = _get(rows, "guard-http-nometrics", 16, "rps")
    out["metrics_cost_pct_c16"] = (
        round((1 - _get(rows, "guard-http", 16, "rps") / nom) * 100, 1) if nom else float("nan")
    )
    one = _get(rows, "guard-http", 64, "rps")
    out["workers2_vs_1_rps_c64"] = round(_get(rows, "guard-http-w2", 64, "rps") / one, 3) if one else float("nan")
    for kind in ("process", "thread"):  # the same sealer kind forced for one worker and for two
        one_k = _get(rows, f"guard-http-{kind}", 64, "rps")
        out[f"workers2_vs_1_rps_c64_sealer_{kind}"] = (
            round(_get(rows, f"guard-http-w2-{kind}", 64, "rps") / one_k, 3) if one_k else float("nan")
        )
    lit = _get(rows, "litellm", 16, "rps")
    out["guard-mtls_vs_litellm_rps_c16"] = (
        round(_get(rows, "guard-mtls", 16, "rps") / lit, 1) if lit == lit and lit else float("nan")
    )
    d50 = _get(rows, "direct", 1, "p50_ms")
    for t in ("baseline", "guard-http", "guard-mtls", "nginx-hop"):
        out[f"{t}_added_p50_ms_c1"] = round(_get(rows, t, 1, "p50_ms") - d50, 3)
    return out


def ttfb(d: Path, es: Any, n: int = 60 if QUICK else 200) -> dict[str, float]:
    """Streaming time to first chunk: the built-in model server direct vs through Guard over mTLS."""
    import httpx

    mport = free_port()
    es.enter_context(
        process(
            model_server_cmd(mport),
            mport,
        )
    )
    up = f"http://127.0.0.1:{mport}"
    gport, admin = free_port(), free_port()
    cfg = guard_config(d, up, True, gport, admin)
    es.enter_context(process([str(Path(PY).parent / "guard"), "serve", "--config", str(cfg)], gport))
    pki = d / "pki"
    body = {"model": "bench-model", "stream": True, "messages": [{"role": "user", "content": "[[reply: a b c d e f]]"}]}

    def first_chunk(client: httpx.Client, url: str) -> float:
        t = time.perf_counter()
        dt = None
        with client.stream("POST", url, json=body) as r:
            for _ in r.iter_raw():
                if dt is None:
                    dt = time.perf_counter() - t
        return (dt or 0.0) * 1000

    out = {}
    import ssl

    ctx = ssl.create_default_context(cafile=str(pki / "ca.pem"))
    ctx.load_cert_chain(str(pki / "app.pem"), str(pki / "app-key.pem"))
    for name, client, url in (
        ("direct", httpx.Client(), up),
        ("guard-mtls", httpx.Client(verify=ctx), f"https://localhost:{gport}"),
    ):
        with client:
            for _ in range(10):
                first_chunk(client, url + "/v1/chat/completions")
            xs = [first_chunk(client, url + "/v1/chat/completions") for _ in range(n)]
        out[f"{name}_p50_ms"] = round(statistics.median(xs), 3)
    out["added_p50_ms"] = round(out["guard-mtls_p50_ms"] - out["direct_p50_ms"], 3)
    return out


def rss(pid: int, target: tuple[str, dict[str, str]], d: Path) -> dict[str, float]:
    """RSS after ~10k requests and after ~100k (wrk, 16 connections)."""
    url, headers = target
    script = wrk_script(d / "guard-http", CHAT_BODY, headers)
    total = 0
    marks = {}
    for goal in (2_000, 20_000) if QUICK else (10_000, 100_000):
        while total < goal:
            r = wrk(url + "/v1/chat/completions", script, 16, 3, threads=2)
            total += r["requests"]
        marks[f"rss_mb_after_{goal}"] = rss_mb(pid)
        marks[f"requests_at_{goal}"] = total
    a, b = list(v for k, v in marks.items() if k.startswith("rss"))
    marks["growth_pct"] = round((b - a) / a * 100, 1) if a else float("nan")
    return marks


PROMPT_1KB = ("Please summarise the following customer note for the support queue. " * 15)[:1000]
SCREEN_VARIANTS = [  # (name, filter files to keep, safety response check on)
    ("no-screens", (), False),
    ("pii", ("pii.yaml",), False),
    ("denylist", ("denylist.yaml",), False),
    ("safety-prompt", ("safety.yaml",), False),
    ("all-shipped", ("pii.yaml", "denylist.yaml", "safety.yaml"), True),
]


def _filters(d: Path, keep: tuple[str, ...], judge: str, response: bool) -> Path:
    out = d / ("filters-" + "-".join(k.split(".")[0] for k in keep) + ("-resp" if response else ""))
    out.mkdir(parents=True, exist_ok=True)
    for f in keep:
        text = (ROOT / "filters" / f).read_text()
        if f == "safety.yaml":
            text = text.replace("http://127.0.0.1:8000", judge)
            data = yaml.safe_load(text)
            for prof in data["profiles"].values():
                prof.setdefault("response", {})["enabled"] = response
            text = yaml.safe_dump(data, sort_keys=False)
        (out / f).write_text(text)
    return out


def screens(d: Path) -> dict[str, Any]:
    """Added latency of the screens through the proxy: a 1 KB prompt, Llama Guard answered by a stand-in
    with a fixed 5 ms think time; each row is Guard with only those filters (policy and audit as in core)."""
    from contextlib import ExitStack

    rows: list[dict[str, Any]] = []
    with ExitStack() as es:
        up, _ = _upstream(d, es)
        jport = free_port()
        es.enter_context(
            process(
                model_server_cmd(jport),
                jport,
                env={"GUARD_DEMO_JUDGE_DELAY_MS": "5"},
            )
        )
        judge = f"http://127.0.0.1:{jport}"
        body = json.dumps({"model": "bench-model", "messages": [{"role": "user", "content": PROMPT_1KB}]})
        for name, keep, response in SCREEN_VARIANTS:
            gport, admin = free_port(), free_port()
            cfg = guard_config(d, up, False, gport, admin)
            data = yaml.safe_load(cfg.read_text())
            data["filters"]["dir"] = str(_filters(d, keep, judge, response))
            cfg.write_text(yaml.safe_dump(data, sort_keys=False))
            with process(
                [str(Path(PY).parent / "guard"), "serve", "--config", str(cfg)], gport, log=d / f"guard-{gport}.log"
            ):
                (d / f"s-{name}").mkdir(exist_ok=True)
                script = wrk_script(d / f"s-{name}", body, {"x-forwarded-client-cert": XFCC})
                url = f"http://127.0.0.1:{gport}/v1/chat/completions"
                wrk(url, script, 4, 1)
                for c in (1, 16):
                    r = wrk(url, script, c, SECONDS, threads=1 if c == 1 else 2)
                    rows.append({"variant": name, "conns": c, **r})
                    print(
                        f"  screens {name:14s} c={c:<3d} {r['rps']:>8,.0f} req/s  p50 {r['p50_ms']:.3f} ms  "
                        f"p99 {r['p99_ms']:.3f} ms  non2xx {r['non_2xx']}",
                        file=sys.stderr,
                    )
    base = {r["conns"]: r["p50_ms"] for r in rows if r["variant"] == "no-screens"}
    added = {
        f"{r['variant']}_added_p50_ms_c{r['conns']}": round(r["p50_ms"] - base[r["conns"]], 3)
        for r in rows
        if r["variant"] != "no-screens"
    }
    return {"rows": rows, "added": added, "judge_think_ms": 5, "prompt_chars": len(PROMPT_1KB)}


def _summary(*skip: str) -> Callable[[dict[str, Any]], str]:
    return lambda r: json.dumps({k: v for k, v in r.items() if k not in skip}, indent=2)


COLUMNS = ["rps", "p50_ms", "p99_ms", "non_2xx"]
SCENARIOS: list[tuple[str, str, Callable[[Path], dict[str, Any]], Callable[[dict[str, Any]], str]]] = [
    # BENCH_ONLY key, what it is, how to run it, what to print
    (
        "core",
        "core proxy benchmark",
        core,
        lambda r: (
            table(r["rows"], ["target", "conns", *COLUMNS])
            + "\n"
            + json.dumps({k: r[k] for k in ("ratios", "ttfb", "rss") if k in r}, indent=2)
        ),
    ),
    ("paired", "paired ratios (alternating rounds)", paired, _summary("rps")),
    ("latency", "added latency at 1 connection, no hop (alternating rounds)", latency, _summary("p50_ms", "p99_ms")),
    (
        "auditcost",
        "audit cost through the proxy (alternating runs)",
        audit_cost,
        _summary("paced_p50_ms", "saturated_rps"),
    ),
    ("metrics", "metrics cost (alternating runs)", metrics_cost, _summary("rps", "cpu_us_per_request")),
    ("workers", "two workers against one (alternating runs)", workers_scaling, _summary()),
    (
        "streamlag",
        "stream lag through the response screens (alternating rounds)",
        lambda d: importlib.import_module("tests.bench.bench_stream_lag").run(quick=QUICK),
        _summary(),
    ),
    (
        "screens",
        "screens through the proxy",
        screens,
        lambda r: table(r["rows"], ["variant", "conns", *COLUMNS]) + "\n" + json.dumps(r["added"], indent=2),
    ),
]
FEATURES = [
    "tests.bench.bench_policy",
    "tests.bench.bench_audit",
    "tests.bench.bench_merkle",
    "tests.bench.bench_pii",
    "tests.bench.bench_safety",
    "tests.bench.bench_canonical",
    "tests.bench.bench_hostile",
    "tests.bench.bench_sealer_restart",
    "tests.bench.bench_durability",
    "tests.bench.bench_sink_duplicates",
    "tests.bench.bench_quota",
    "tests.bench.bench_wire",
    "tests.bench.bench_pipeline_cpu",
    "tests.bench.bench_pipeline_ab",  # skipped unless BASE_TREE names the tree to compare with
    "tests.bench.bench_jsontext",
]  # BENCH_ONLY: after the last "_"


def main() -> int:
    out_dir = ROOT / "bench-results"
    out_dir.mkdir(exist_ok=True)
    results: dict[str, Any] = {"quick": QUICK, "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    only = {k.strip() for k in os.environ.get("BENCH_ONLY", "").split(",") if k.strip()}  # scenario keys
    if only:  # the document keeps the other scenarios' sections from their own runs
        results["only"] = sorted(only)
    with tempfile.TemporaryDirectory() as tmp:
        for key, what, run, show in SCENARIOS:
            if not only or key in only:
                print(f"{what} ...", file=sys.stderr)
                results[key] = run(Path(tmp))
                print(show(results[key]))
    for name in FEATURES:
        short = name.rsplit("_", 1)[-1]
        if only and short not in only:
            continue
        try:
            mod = importlib.import_module(name)
        except ModuleNotFoundError:
            continue
        print(f"{short} benchmark ...", file=sys.stderr)
        results[short] = mod.run(quick=QUICK)
    path = out_dir / "bench.json"
    path.write_text(json.dumps(results, indent=2, default=str))
    print(f"results: {path}")
    from tests.bench.report import write

    what = {key: what for key, what, _run, _show in SCENARIOS}
    what |= {
        "policy": "policy decisions",
        "audit": "audit journal",
        "pii": "PII screen",
        "safety": "safety screen",
        "quota": "quota overhead",
        "cpu": "CPU per request in-process",
        "ab": "CPU per request against BASE_TREE (alternating batches)",
    }
    print(f"table: {write(json.loads(json.dumps(results, default=str)), what)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
