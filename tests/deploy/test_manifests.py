"""deploy/ refers only to things Guard really has.

Every YAML file parses; every guard.yaml (deploy/guard.yaml and those embedded in ConfigMaps) validates against
guard.config.Config; every port, probe path, CLI argument, mounted file, environment variable and metric that
the Kubernetes manifests, the Dockerfile, the systemd unit, the Prometheus job and the Grafana dashboard use is
one Guard serves, parses or reads (checked against guard.config, guard.app.admin_app's routes,
guard.cli.build_parser() and guard.telemetry.REGISTRY). Static checks only: nothing is built or started.
"""

from __future__ import annotations

import importlib.util
import json
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from guard.config import Config, ConfigError, load_config

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
DOCKERFILE = DEPLOY / "Dockerfile"
UNIT = DEPLOY / "systemd" / "guard.service"
DASHBOARD = DEPLOY / "grafana" / "guard-dashboard.json"
SCRAPE = DEPLOY / "prometheus" / "scrape.yaml"
SCALING = ROOT / "docs" / "scaling.md"
ANY_ADDR = {"0.0.0.0", "::"}
TARGET_LABELS = {"job", "instance", "namespace", "pod", "service", "container", "endpoint", "le"}


# --- what Guard really has ------------------------------------------------------------------------------


def admin_routes() -> dict[str, set[str]]:
    from guard.app import admin_app

    app = admin_app(runtime=None)  # the routes are fixed; the runtime is only used when a request arrives
    return {r.path: set(r.methods or ()) for r in app.routes}


ADMIN = admin_routes()


def parse_cli(argv: list[str]) -> Any:
    from guard.cli import build_parser

    try:
        return build_parser().parse_args(argv)
    except SystemExit as e:  # argparse exits 2 on a usage error
        raise AssertionError(f"guard CLI rejects {argv}") from e


def metric_catalogue() -> tuple[set[str], dict[str, set[str]]]:
    """Sample names /metrics can expose, and each one's label names."""
    import prometheus_client as pc

    from guard import telemetry

    labels = {
        o._name: set(o._labelnames) for o in vars(telemetry).values() if isinstance(o, pc.metrics.MetricWrapperBase)
    }
    labels.update(
        {
            o.name: set(o.labelnames)
            for o in vars(telemetry).values()  # guard's own fast histograms
            if isinstance(o, telemetry._FastHistogram)
        }
    )
    labels.update(
        {
            o.name.removesuffix("_total"): set(o.labelnames)
            for o in vars(telemetry).values()
            if isinstance(o, telemetry._FastCounter)
        }
    )  # and fast counters (family name without _total)
    suffixes = {
        "counter": ("_total", "_created"),
        "histogram": ("_bucket", "_sum", "_count", "_created"),
        "gauge": ("",),
        "summary": ("", "_sum", "_count", "_created"),
    }
    names: set[str] = set()
    by_sample: dict[str, set[str]] = {}
    for fam in telemetry.REGISTRY.collect():  # counters are registered without their _total suffix
        for suf in suffixes.get(fam.type, ("",)):
            names.add(fam.name + suf)
            by_sample[fam.name + suf] = labels.get(fam.name, set()) | ({"le"} if suf == "_bucket" else set())
    return names, by_sample


METRICS, METRIC_LABELS = metric_catalogue()
METRIC_RE = re.compile(r"\bguard_[a-z][a-z0-9_]*\b")


def env_vars_named(cfg: Config, filters: dict[str, str]) -> set[str]:
    """Environment variables guard.yaml and the filters files name (keys, tokens, secrets)."""
    names = {u.api_key_env for u in cfg.upstreams.values() if u.api_key_env}
    names |= {s.token_env for s in cfg.audit.sinks if s.token_env}
    names |= {s.secret_env for s in cfg.audit.sinks if s.secret_env}
    if cfg.audit.hash_key_env:
        names.add(cfg.audit.hash_key_env)
    if "pii.yaml" in filters:
        hk = (yaml.safe_load(filters["pii.yaml"]) or {}).get("hash_key") or {}
        if hk.get("env"):
            names.add(hk["env"])
    if "safety.yaml" in filters:
        for prof in ((yaml.safe_load(filters["safety.yaml"]) or {}).get("profiles") or {}).values():
            if (prof.get("backend") or {}).get("api_key_env"):
                names.add(prof["backend"]["api_key_env"])
    return names


# --- reading deploy/ ------------------------------------------------------------------------------------


def yaml_files() -> list[Path]:
    return sorted(p for p in DEPLOY.rglob("*") if p.suffix in (".yaml", ".yml") and p.is_file())


def load_docs(path: Path) -> list[Any]:
    return [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d is not None]


def k8s_objects() -> list[tuple[Path, dict]]:
    out = []
    for p in sorted(K8S.rglob("*.yaml")):
        for d in load_docs(p):
            if isinstance(d, dict) and "kind" in d and d["kind"] != "Kustomization":
                out.append((p, d))
    return out


OBJECTS = k8s_objects()


def objects(kind: str) -> list[tuple[Path, dict]]:
    return [(p, o) for p, o in OBJECTS if o["kind"] == kind]


def configmap(name: str) -> dict[str, str]:
    found = [o for _, o in objects("ConfigMap") if o["metadata"]["name"] == name]
    assert found, f"ConfigMap {name} is referenced but not defined in deploy/k8s"
    datas = {json.dumps(o.get("data"), sort_keys=True) for o in found}
    assert len(datas) == 1, f"ConfigMap {name} is defined twice with different data"
    return found[0].get("data") or {}


def dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    out: list[tuple[str, str]] = []
    buf = ""
    for line in DOCKERFILE.read_text().splitlines():
        s = line.strip()
        if not buf and (not s or s.startswith("#")):
            continue
        if s.startswith("#"):
            continue
        if s.endswith("\\"):
            buf += s[:-1] + " "
            continue
        buf += s
        word, _, rest = buf.partition(" ")
        out.append((word.upper(), rest.strip()))
        buf = ""
    return out


def docker_stages() -> list[list[tuple[str, str]]]:
    stages: list[list[tuple[str, str]]] = []
    for ins in dockerfile():
        if ins[0] == "FROM":
            stages.append([])
        if stages:
            stages[-1].append(ins)
    return stages


def docker_json(value: str) -> list[str]:
    v = json.loads(value)
    assert isinstance(v, list), f"use the exec (JSON) form: {value}"
    return v


def entrypoint() -> list[str]:
    return docker_json([a for i, a in dockerfile() if i == "ENTRYPOINT"][-1])


def unit() -> dict[str, dict[str, list[str]]]:
    sections: dict[str, dict[str, list[str]]] = {}
    cur: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        s = line.strip()
        if not s or s[0] in "#;":
            continue
        if s.startswith("[") and s.endswith("]"):
            cur = sections.setdefault(s[1:-1], {})
            continue
        k, _, v = s.partition("=")
        cur.setdefault(k.strip(), []).append(v.strip())
    return sections


def reference_config() -> Config:
    """deploy/guard.yaml: what the image, the systemd unit and the scrape job are described against."""
    return load_config(DEPLOY / "guard.yaml")


def seconds(v: str) -> float:
    m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*(ms|s|min|m)?", v)
    assert m, f"cannot read a duration from {v!r}"
    return float(m[1]) * {"ms": 0.001, "s": 1, "min": 60, "m": 60, None: 1}[m[2]]


# --- a pod as Guard sees it -----------------------------------------------------------------------------


@dataclass
class Mounted:
    files: dict[str, tuple[str, str, str]] = field(default_factory=dict)  # path -> (kind, object, key)
    writable: list[str] = field(default_factory=list)  # mount points Guard may write under
    readonly_dirs: list[str] = field(default_factory=list)


def mounts(pod: dict, container: dict, claim_templates: list[str]) -> Mounted:
    vols = {v["name"]: v for v in pod.get("volumes", [])}
    m = Mounted()
    for vm in container.get("volumeMounts", []):
        base = vm["mountPath"].rstrip("/")
        name = vm["name"]
        assert "subPath" not in vm, f"{base}: a subPath mount never sees ConfigMap or Secret updates (reloads)"
        if name in claim_templates and name not in vols:
            assert not vm.get("readOnly"), name
            m.writable.append(base)
            continue
        v = vols[name]
        if "emptyDir" in v or "persistentVolumeClaim" in v:
            (m.readonly_dirs if vm.get("readOnly") else m.writable).append(base)
            continue
        sources = v["projected"]["sources"] if "projected" in v else [v]
        for src in sources:
            kind = "configMap" if "configMap" in src else "secret" if "secret" in src else None
            if kind is None:
                continue
            ref = src[kind]
            obj = ref.get("name") or ref.get("secretName")
            items = ref.get("items")
            if items is None:  # every key lands under the mount point
                assert kind == "configMap", f"list the items of Secret {obj} so the paths are explicit"
                items = [{"key": k, "path": k} for k in configmap(obj)]
            for it in items:
                path = str(PurePosixPath(base) / it["path"])
                assert path not in m.files, f"{path} is mounted twice"
                m.files[path] = (kind, obj, it["key"])
    return m


def under(path: str, dirs: list[str]) -> bool:
    return any(PurePosixPath(path).is_relative_to(d) for d in dirs)


@dataclass
class GuardPod:
    where: str
    workload: dict
    pod: dict
    labels: dict
    container: dict
    config: Config
    config_path: str
    filters: dict[str, str]
    policies: dict[str, str]
    mounted: Mounted


def port_number(container: dict, port: Any) -> int:
    if isinstance(port, int):
        return port
    named = {p["name"]: p["containerPort"] for p in container.get("ports", []) if "name" in p}
    assert port in named, f"port {port!r} is not a named port of container {container['name']}"
    return named[port]


def guard_pods() -> list[GuardPod]:
    out = []
    for path, o in OBJECTS:
        if o["kind"] not in ("Deployment", "StatefulSet", "DaemonSet"):
            continue
        pod = o["spec"]["template"]["spec"]
        claims = [c["metadata"]["name"] for c in o["spec"].get("volumeClaimTemplates", [])]
        for c in pod["containers"]:
            if "guard" not in c["image"].rsplit("/", 1)[-1] or c.get("command"):
                continue  # not the Guard server (helpers run the image with their own command)
            argv = entrypoint() + list(c.get("args", []))
            assert argv[0] == "guard", argv
            args = parse_cli(argv[1:])
            assert args.command == "serve"
            m = mounts(pod, c, claims)
            where = f"{path.relative_to(ROOT)}: {o['kind']} {o['metadata']['name']}, container {c['name']}"
            assert args.config in m.files, f"{where}: --config {args.config} is not mounted"
            kind, cm, key = m.files[args.config]
            assert kind == "configMap", where
            text = configmap(cm)[key]
            cfg = Config.model_validate(yaml.safe_load(text)).resolve(Path(PurePosixPath(args.config).parent))
            if args.workers:
                cfg.workers = args.workers

            filter_dir = PurePosixPath(cfg.filters.dir)
            filter_files = {
                PurePosixPath(p).name: configmap(name)[key]
                for p, (k, name, key) in m.files.items()
                if PurePosixPath(p).parent == filter_dir and k == "configMap"
            }

            pol = {}
            for p in [cfg.policy.model, *cfg.policy.rules, *cfg.policy.tests]:
                if str(p) in m.files and m.files[str(p)][0] == "configMap":
                    _k, name, key = m.files[str(p)]
                    pol[str(p)] = configmap(name)[key]
            out.append(
                GuardPod(
                    where,
                    o,
                    pod,
                    o["spec"]["template"]["metadata"].get("labels", {}),
                    c,
                    cfg,
                    args.config,
                    filter_files,
                    pol,
                    m,
                )
            )
    return out


try:  # a broken manifest fails test_guard_pods_load, not the collection of the whole module
    PODS, PODS_ERROR = guard_pods(), None
except Exception as e:
    PODS, PODS_ERROR = [], e


def selects(selector: dict, labels: dict) -> bool:
    ml = selector.get("matchLabels", selector if "matchExpressions" not in selector else {})
    return bool(ml) and all(labels.get(k) == v for k, v in ml.items())


# --- YAML and the config schema ---------------------------------------------------------------------------


def test_guard_pods_load() -> None:
    if PODS_ERROR is not None:
        raise AssertionError(f"reading the Guard pods in deploy/k8s: {PODS_ERROR}") from PODS_ERROR
    assert len(PODS) >= 3


@pytest.mark.parametrize("path", yaml_files(), ids=lambda p: str(p.relative_to(DEPLOY)))
def test_every_yaml_parses(path: Path) -> None:
    docs = load_docs(path)
    assert docs, f"{path} holds no document"
    if path.is_relative_to(K8S):
        for d in docs:
            assert isinstance(d, dict) and d.get("apiVersion") and d.get("kind"), f"{path}: not a manifest: {d!r}"


def test_reference_config_validates() -> None:
    cfg = reference_config()
    assert cfg.audit.dir == Path("/var/lib/guard/audit")


def test_every_embedded_guard_yaml_validates() -> None:
    embedded = [(p, o) for p, o in objects("ConfigMap") if "guard.yaml" in (o.get("data") or {})]
    assert len(embedded) >= 2  # the gateway's and the sidecar's
    for p, o in embedded:
        data = yaml.safe_load(o["data"]["guard.yaml"])
        try:
            Config.model_validate(data)
        except Exception as e:
            raise AssertionError(f"{p}: ConfigMap {o['metadata']['name']}: guard.yaml: {e}") from None


def test_every_guard_configmap_is_used_by_a_pod() -> None:
    used = {cm for g in PODS for kind, cm, _ in g.mounted.files.values() if kind == "configMap"}
    defined = {o["metadata"]["name"] for _, o in objects("ConfigMap")}
    assert defined <= used, f"ConfigMaps no pod mounts: {defined - used}"


def test_there_are_guard_pods_of_each_kind() -> None:
    kinds = {(g.workload["kind"], g.workload["metadata"]["name"]) for g in PODS}
    assert ("Deployment", "guard") in kinds and ("StatefulSet", "guard") in kinds
    assert any(len(g.pod["containers"]) > 1 and any("vllm" in c["image"] for c in g.pod["containers"]) for g in PODS)


def test_kustomizations_list_every_manifest() -> None:
    for k in K8S.rglob("kustomization.yaml"):
        doc = load_docs(k)[0]
        listed = set()
        for r in doc.get("resources", []):
            target = (k.parent / r).resolve()
            assert target.exists(), f"{k}: {r} does not exist"
            if target.is_dir():
                assert (target / "kustomization.yaml").exists(), f"{k}: {r} is no kustomization"
            listed.add(target)
        for p in k.parent.glob("*.yaml"):
            assert p == k or p.resolve() in listed, f"{k} does not list {p.name}"
        for patch in doc.get("patches", []):
            t = patch["target"]
            assert any(o["kind"] == t["kind"] and o["metadata"]["name"] == t["name"] for _, o in OBJECTS), t


def test_statefulset_variant_keeps_the_deployment_pod() -> None:
    dep = next(o for _, o in objects("Deployment") if o["metadata"]["name"] == "guard")
    ss = next(o for _, o in objects("StatefulSet") if o["metadata"]["name"] == "guard")
    a, b = json.loads(json.dumps(dep["spec"]["template"])), json.loads(json.dumps(ss["spec"]["template"]))
    a["spec"]["volumes"] = [v for v in a["spec"]["volumes"] if v["name"] != "audit"]
    assert a == b, "regenerate deploy/k8s/gateway-statefulset/statefulset.yaml from the Deployment"
    assert [c["metadata"]["name"] for c in ss["spec"]["volumeClaimTemplates"]] == ["audit"]
    svc = {o["metadata"]["name"]: o for _, o in objects("Service")}
    assert svc[ss["spec"]["serviceName"]]["spec"].get("clusterIP") == "None"


# --- pods: files, ports, probes, signals, privileges ------------------------------------------------------


@pytest.mark.parametrize("g", PODS, ids=lambda g: g.where.split(": ", 1)[1])
class TestGuardPod:
    def test_config_files_are_mounted(self, g: GuardPod) -> None:
        c, files = g.config, g.mounted.files
        needed = [
            c.tls.cert,
            c.tls.key,
            c.tls.client_ca,
            c.tls.crl,
            c.policy.model,
            *c.policy.rules,
            *c.policy.tests,
            c.audit.signing_key,
            c.audit.hash_key_file,
        ]
        if c.policy.shadow:
            needed += [c.policy.shadow.model, *c.policy.shadow.rules]
        for p in needed:
            if p is not None:
                assert str(p) in files, f"{g.where}: {p} (named by guard.yaml) is not mounted"
        for name in ("pii.yaml", "safety.yaml", "denylist.yaml"):
            assert name in g.filters, f"{g.where}: {c.filters.dir}/{name} is not mounted"
        for kind, obj, key in files.values():
            if kind == "configMap":
                assert key in configmap(obj), f"{g.where}: ConfigMap {obj} has no key {key}"
        for tls_file in (c.tls.cert, c.tls.key):
            assert files[str(tls_file)][0] == "secret", f"{g.where}: {tls_file} must come from a Secret"
        if c.audit.signing_key:
            assert files[str(c.audit.signing_key)][0] == "secret"

    def test_audit_dir_is_writable_and_the_rest_read_only(self, g: GuardPod) -> None:
        sc = g.container.get("securityContext", {})
        assert sc.get("readOnlyRootFilesystem") is True, g.where
        assert under(str(g.config.audit.dir), g.mounted.writable), (
            f"{g.where}: audit.dir {g.config.audit.dir} is not on a writable volume"
        )
        assert "/tmp" in g.mounted.writable, f"{g.where}: /tmp must be writable (tempfiles, worker metrics)"
        etc = [vm for vm in g.container["volumeMounts"] if vm["mountPath"] == str(PurePosixPath(g.config_path).parent)]
        assert etc and all(vm.get("readOnly") for vm in etc), g.where

    def test_ports_are_guards(self, g: GuardPod) -> None:
        c = g.config
        ports = {p["containerPort"] for p in g.container["ports"]}
        assert ports == {c.listen.port, c.admin.port}, g.where
        assert port_number(g.container, "https") == c.listen.port
        assert port_number(g.container, "admin") == c.admin.port
        assert c.listen.host in ANY_ADDR and c.admin.host in ANY_ADDR, (
            f"{g.where}: listeners must bind the pod IP (Services, kubelet probes, Prometheus)"
        )
        assert c.tls.enabled and c.admin.enabled

    def test_probes_hit_admin_routes(self, g: GuardPod) -> None:
        seen = {}
        for kind in ("startupProbe", "livenessProbe", "readinessProbe"):
            probe = g.container.get(kind)
            assert probe and "httpGet" in probe, f"{g.where}: {kind}"
            hg = probe["httpGet"]
            assert port_number(g.container, hg["port"]) == g.config.admin.port, f"{g.where}: {kind} port"
            assert "GET" in ADMIN.get(hg["path"], set()), f"{g.where}: {kind} {hg['path']} is not an admin GET route"
            assert hg.get("scheme", "HTTP") == "HTTP"
            seen[kind] = hg["path"]
        assert seen["livenessProbe"] == "/healthz" and seen["readinessProbe"] == "/readyz"

    def test_shutdown_fits_the_grace_period(self, g: GuardPod) -> None:
        grace = g.pod.get("terminationGracePeriodSeconds", 30)
        cmd = g.container.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command", [])
        pre = float(cmd[1]) if cmd[:1] == ["sleep"] else 0.0
        assert grace > g.config.shutdown_deadline_s + pre, (
            f"{g.where}: terminationGracePeriodSeconds {grace} <= preStop {pre} + shutdown_deadline_s"
        )
        for other in g.pod["containers"]:  # a model server in the pod must outlive Guard's drain
            if other is not g.container and "vllm" in other["image"]:
                oc = other.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command", [])
                assert oc[:1] == ["sleep"] and float(oc[1]) >= g.config.shutdown_deadline_s + pre
                assert grace > float(oc[1])

    def test_least_privilege(self, g: GuardPod) -> None:
        psc = g.pod.get("securityContext", {})
        assert g.pod.get("automountServiceAccountToken") is False, g.where
        for c in g.pod["containers"]:
            if "guard" not in c["image"].rsplit("/", 1)[-1]:
                continue
            sc = c.get("securityContext", {})
            assert sc.get("runAsNonRoot", psc.get("runAsNonRoot")) is True, f"{g.where}: {c['name']}"
            assert sc.get("runAsUser", psc.get("runAsUser", 1)) != 0
            assert sc.get("allowPrivilegeEscalation") is False, c["name"]
            assert sc.get("readOnlyRootFilesystem") is True, c["name"]
            assert sc.get("capabilities", {}).get("drop") == ["ALL"], c["name"]
            assert not sc.get("capabilities", {}).get("add"), c["name"]

    def test_secrets_come_from_the_environment(self, g: GuardPod) -> None:
        env = {e["name"]: e for e in g.container.get("env", [])}
        for name in env_vars_named(g.config, g.filters):
            assert name in env, f"{g.where}: guard.yaml or filters/ name ${name}, the container does not set it"
            assert "secretKeyRef" in env[name].get("valueFrom", {}), f"{g.where}: {name} must come from a Secret"
        assert not any("value" in e and re.search(r"KEY|TOKEN|SECRET", e["name"]) for e in env.values())

    def test_helpers_call_admin_routes(self, g: GuardPod) -> None:
        for c in g.pod["containers"]:
            text = "\n".join(c.get("command", []) + c.get("args", []))
            for url in re.findall(r"https?://127\.0\.0\.1:\d+/[\w/.-]*", text):
                u = urlsplit(url)
                if c is g.container or "vllm" in c["image"]:
                    continue
                assert u.port == g.config.admin.port, f"{g.where}: {c['name']} calls {url}"
                method = "POST" if 'method="POST"' in text else "GET"
                assert method in ADMIN.get(u.path, set()), f"{g.where}: {c['name']}: {method} {u.path}"
            if c is not g.container and c.get("command") and "guard" in c["image"].rsplit("/", 1)[-1]:
                root = re.search(r'"(/[^"]+)/\.\.data"', text)
                assert root and root[1] == str(PurePosixPath(g.config_path).parent), c["name"]

    def test_upstreams_and_screens_are_reachable_addresses(self, g: GuardPod) -> None:
        sidecars = [c for c in g.pod["containers"] if "vllm" in c["image"]]
        for name, up in g.config.upstreams.items():
            host = urlsplit(up.url).hostname or ""
            if host in ("127.0.0.1", "localhost", "::1"):
                assert sidecars, f"{g.where}: upstream {name} is loopback but no model server shares the pod"
        for c in sidecars:  # the model server listens on loopback only: Guard is the pod's one way in
            args = c.get("args", []) + c.get("command", [])
            assert args[args.index("--host") + 1] == "127.0.0.1", c["name"]
            assert not c.get("ports"), f"{c['name']} must not declare ports"
            port = int(args[args.index("--port") + 1])
            assert any(urlsplit(u.url).port == port for u in g.config.upstreams.values())
        for prof in ((yaml.safe_load(g.filters["safety.yaml"]) or {}).get("profiles") or {}).values():
            url = (prof.get("backend") or {}).get("url")
            if url:  # the pod's loopback :8000 is the chat model (or nothing), not Llama Guard
                assert urlsplit(url).hostname not in ("127.0.0.1", "localhost"), f"{g.where}: safety {url}"


# --- policies and filters shipped in ConfigMaps -------------------------------------------------------------


def _materialise(tmp: Path, g: GuardPod) -> Config:
    """Write the pod's mounted ConfigMap files under tmp and point the config at them."""
    for p, (kind, name, key) in g.mounted.files.items():
        if kind == "configMap":
            f = tmp / p.lstrip("/")
            f.parent.mkdir(parents=True, exist_ok=True)
            f.write_text(configmap(name)[key])
    cfg = g.config.model_copy(deep=True)
    re_root = lambda p: tmp / str(p).lstrip("/")  # noqa: E731
    cfg.policy.model = re_root(cfg.policy.model)
    cfg.policy.rules = [re_root(p) for p in cfg.policy.rules]
    cfg.policy.tests = [re_root(p) for p in cfg.policy.tests]
    cfg.filters.dir = re_root(cfg.filters.dir)
    return cfg


def test_policies_load_and_pass_their_tests(tmp_path: Path) -> None:
    from guard.policy.holder import load_active

    g = PODS[0]
    cfg = _materialise(tmp_path, g)
    load_active(cfg.policy)  # ConfigError on a bad model, rule or failing policy test


def test_filters_validate(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from guard.config import load_yaml, validate
    from guard.screens.denylist.settings import load_denylist
    from guard.screens.pii.settings import PIIFile, _hash_key
    from guard.screens.safety.settings import load_safety

    g = PODS[0]
    cfg = _materialise(tmp_path, g)
    for name in env_vars_named(g.config, g.filters):
        monkeypatch.setenv(name, "test-value-0123456789abcdef")
    try:
        pii = cfg.filters.dir / "pii.yaml"  # the schema; entity names are checked by tests/filters (Presidio
        data, lines = load_yaml(pii)  # takes seconds to import)
        _hash_key(validate(PIIFile, data, pii, lines), pii, lines)
        load_safety(cfg.filters.dir / "safety.yaml")
        load_denylist(cfg.filters.dir / "denylist.yaml")
    except ConfigError as e:
        raise AssertionError(
            f"deploy/k8s/common/filters.yaml (regenerate: python deploy/k8s/make_configmaps.py): {e}"
        ) from None


def test_every_pod_mounts_the_same_policies() -> None:
    assert len({json.dumps(g.policies, sort_keys=True) for g in PODS if g.policies}) == 1


# --- Services, monitoring, network, disruption, autoscaling ---------------------------------------------------


def test_services_target_guard_ports() -> None:
    for p, svc in objects("Service"):
        pods = [g for g in PODS if selects(svc["spec"]["selector"], g.labels)]
        assert pods, f"{p}: Service {svc['metadata']['name']} selects no Guard pod"
        for g in pods:
            for port in svc["spec"]["ports"]:
                n = port_number(g.container, port.get("targetPort", port["port"]))
                assert n in (g.config.listen.port, g.config.admin.port), f"{p}: {port}"
                if port["name"] == "admin":
                    assert n == g.config.admin.port
                else:
                    assert n == g.config.listen.port, f"{p}: only the mTLS port is for clients"
                    assert svc["spec"].get("type", "ClusterIP") in ("ClusterIP", "LoadBalancer", "NodePort")


def test_servicemonitor_scrapes_admin_metrics() -> None:
    ((_p, sm),) = objects("ServiceMonitor")
    services = [s for _, s in objects("Service") if selects(sm["spec"]["selector"], s["metadata"].get("labels", {}))]
    assert services, "the ServiceMonitor selects no Service"
    for ep in sm["spec"]["endpoints"]:
        assert ep.get("path", "/metrics") in ADMIN and "GET" in ADMIN[ep.get("path", "/metrics")]
        assert ep.get("scheme", "http") == "http"
        for s in services:
            port = next(pt for pt in s["spec"]["ports"] if pt.get("name") == ep["port"])
            for g in PODS:
                if selects(s["spec"]["selector"], g.labels):
                    assert port_number(g.container, port["targetPort"]) == g.config.admin.port
        for m in METRIC_RE.findall(json.dumps(ep)):
            assert m in METRICS, m


def test_network_policies() -> None:
    pols = {o["metadata"]["name"]: o for _, o in objects("NetworkPolicy")}
    for g in PODS:
        mine = [o for o in pols.values() if selects(o["spec"]["podSelector"], g.labels)]
        assert mine, f"{g.where}: no NetworkPolicy covers this pod"
        for o in mine:
            for rule in o["spec"].get("ingress", []):
                for pt in rule.get("ports", []):
                    assert pt["port"] in (g.config.listen.port, g.config.admin.port)
                if any(pt["port"] == g.config.admin.port for pt in rule.get("ports", [])):
                    assert rule.get("from"), f"{o['metadata']['name']}: the admin port must not be open to all"
    models = pols["model-servers-only-from-guard"]["spec"]
    (rule,) = models["ingress"]
    allowed = [f["podSelector"] for f in rule["from"]]
    assert all(any(selects(s, g.labels) for s in allowed) for g in PODS), "a Guard pod may not reach the models"
    assert not any(selects(models["podSelector"], g.labels) for g in PODS)
    gw = next(g for g in PODS if g.workload["kind"] == "Deployment" and g.workload["metadata"]["name"] == "guard")
    ports = {urlsplit(u.url).port for u in gw.config.upstreams.values() if not u.external}
    assert ports <= {pt["port"] for pt in rule["ports"]}


def test_pdb_and_hpa_target_the_gateway() -> None:
    ((_, pdb),) = objects("PodDisruptionBudget")
    assert any(selects(pdb["spec"]["selector"], g.labels) for g in PODS)
    ((_, hpa),) = objects("HorizontalPodAutoscaler")
    ref = hpa["spec"]["scaleTargetRef"]
    target = [o for _, o in OBJECTS if o["kind"] == ref["kind"] and o["metadata"]["name"] == ref["name"]]
    assert target, ref
    g = next(g for g in PODS if g.workload is target[0])
    assert g.config.workers == 1, "scale Guard pods with replicas; one audit chain per pod"
    assert g.container["resources"]["requests"]["cpu"], "a CPU HPA needs requests.cpu"
    assert hpa["spec"]["minReplicas"] >= 2 and pdb["spec"].get("maxUnavailable") == 1
    for m in METRIC_RE.findall((K8S / "gateway" / "hpa.yaml").read_text()):
        assert m in METRICS, m


# --- Dockerfile -------------------------------------------------------------------------------------------


def test_dockerfile_multi_stage_slim_non_root() -> None:
    stages = docker_stages()
    assert len(stages) >= 2, "build the wheel in a builder stage"
    args = {}
    for ins, rest in dockerfile():
        if ins == "ARG" and "=" in rest:
            k, _, v = rest.partition("=")
            args[k] = v.strip('"')
    final = stages[-1]
    base = re.sub(r"\$\{(\w+)\}", lambda m: args[m[1]], final[0][1]).split()[0]
    assert base == "python:3.11-slim"
    users = [rest for ins, rest in final if ins == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0"), "run as a non-root user"
    for ins, rest in final:
        assert not (ins == "RUN" and re.search(r"apt-get|apk |pip |gcc|build-essential|make\b", rest)), rest
        if ins == "COPY":
            assert "--from=" in rest, f"the final stage copies only built artefacts: {rest}"
    build = "\n".join(rest for ins, rest in stages[0])
    assert "pip wheel" in build and "/wheels" in build


def test_dockerfile_copies_what_exists_and_ignores_the_rest() -> None:
    for ins, rest in docker_stages()[0]:
        if ins == "COPY" and "--from=" not in rest:
            for src in rest.split()[:-1]:
                assert (ROOT / src).exists(), src
    ignore = (DEPLOY / "Dockerfile.dockerignore").read_text().splitlines()
    assert "*" in ignore and "!guard/" in ignore and "!pyproject.toml" in ignore


def test_dockerfile_entrypoint_ports_volume_healthcheck() -> None:
    ins = dockerfile()
    ep = entrypoint()
    assert ep[0] == "guard"
    args = parse_cli(ep[1:])
    assert args.command == "serve" and args.config == "/etc/guard/guard.yaml"
    ref = reference_config()
    exposed = {int(p.split("/")[0]) for i, r in ins if i == "EXPOSE" for p in r.split()}
    assert (
        exposed
        == {ref.listen.port, ref.admin.port}
        == {Config.model_fields["listen"].default.port, Config.model_fields["admin"].default.port}
    )
    volumes = [v for i, r in ins if i == "VOLUME" for v in docker_json(r)]
    assert under(str(ref.audit.dir), volumes), "the journal must live on the volume"
    (hc,) = [r for i, r in ins if i == "HEALTHCHECK"]
    url = urlsplit(re.search(r"http://[^'\"]+", hc)[0])
    assert url.port == ref.admin.port and "GET" in ADMIN[url.path] and url.path == "/healthz"
    assert "curl" not in hc and "wget" not in hc
    assert [r for i, r in ins if i == "STOPSIGNAL"] == ["SIGTERM"]
    env = " ".join(r for i, r in ins if i == "ENV")
    assert "PYTHONDONTWRITEBYTECODE=1" in env, "a read-only root filesystem cannot take .pyc files"
    for g in PODS:  # the uid the image runs as is the uid the pods ask for
        uid = [r for i, r in docker_stages()[-1] if i == "USER"][-1].split(":")[0]
        sc = {**g.pod.get("securityContext", {}), **g.container.get("securityContext", {})}
        assert str(sc["runAsUser"]) == uid


# --- systemd ----------------------------------------------------------------------------------------------


def test_systemd_unit() -> None:
    u = unit()
    s = {k: v[-1] for k, v in u["Service"].items()}
    argv = shlex.split(s["ExecStart"])
    assert Path(argv[0]).name == "guard"
    args = parse_cli(argv[1:])
    assert args.command == "serve" and args.config == "/etc/guard/guard.yaml"
    ref = reference_config()
    assert shlex.split(s["ExecReload"])[-2:] == ["-HUP", "$MAINPID"]
    assert s["KillSignal"] == "SIGTERM"
    assert seconds(s["TimeoutStopSec"]) > ref.shutdown_deadline_s
    assert s["RestartPreventExitStatus"] == str(ConfigError.exit_code)
    assert s["ProtectSystem"] == "strict" and s["NoNewPrivileges"] == "yes" and s["PrivateTmp"] == "yes"
    assert u["Service"]["CapabilityBoundingSet"] == [""] and s.get("AmbientCapabilities", "") == ""
    assert s.get("DynamicUser") == "yes" or s.get("User") not in (None, "", "root", "0")
    rw = " ".join(u["Service"]["ReadWritePaths"]).split()
    assert "/var/lib/guard" in rw and under(str(ref.audit.dir), rw)
    assert s.get("StateDirectory") == "guard"
    for opt in (
        "ProtectHome",
        "PrivateDevices",
        "ProtectKernelTunables",
        "ProtectKernelModules",
        "ProtectControlGroups",
        "RestrictNamespaces",
        "RestrictSUIDSGID",
        "LockPersonality",
    ):
        assert s.get(opt) == "yes", opt
    assert ref.listen.port > 1024 and ref.admin.port > 1024, "no capabilities: unprivileged ports only"


# --- Prometheus and Grafana ----------------------------------------------------------------------------------


def test_prometheus_scrape_job() -> None:
    (doc,) = load_docs(SCRAPE)
    (job,) = doc["scrape_configs"]
    assert job["metrics_path"] in ADMIN and "GET" in ADMIN[job["metrics_path"]]
    assert job.get("scheme", "http") == "http"
    ref = reference_config()
    for sc in job["static_configs"]:
        for t in sc["targets"]:
            assert int(t.rsplit(":", 1)[1]) == ref.admin.port


def dashboard_queries() -> list[tuple[str, str]]:
    d = json.loads(DASHBOARD.read_text())
    out = [(f"variable {v['name']}", v["definition"]) for v in d["templating"]["list"] if v.get("definition")]
    for p in d["panels"]:
        for t in p.get("targets", []):
            out.append((f"{p['title']}: {t['refId']}", t["expr"]))
    return out


def test_dashboard_is_generated_from_its_source() -> None:
    spec = importlib.util.spec_from_file_location("make_dashboard", DEPLOY / "grafana" / "make_dashboard.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert json.loads(DASHBOARD.read_text()) == mod.build(), "run deploy/grafana/make_dashboard.py"


def check_promql(where: str, expr: str) -> set[str]:
    """Every metric in ``expr`` is exposed by Guard, and every label it matches or groups by exists on one of
    them (or is a label Prometheus adds). Returns the metric families used."""
    names = METRIC_RE.findall(expr)
    assert names, f"{where}: no Guard metric in {expr}"
    unknown = [n for n in names if n not in METRICS]
    assert not unknown, f"{where}: {unknown} are not exposed by guard.telemetry (have: {sorted(METRICS)})"
    known = set().union(*(METRIC_LABELS[n] for n in names)) | TARGET_LABELS
    labels = set(re.findall(r"(\w+)\s*(?:=~|!~|!=|=)\s*\"", expr))
    for group in re.findall(r"\b(?:by|without)\s*\(([^)]*)\)", expr):
        labels |= {x.strip() for x in group.split(",") if x.strip()}
    assert labels <= known, f"{where}: labels {labels - known} do not exist on {names}"
    return {re.sub(r"_(total|bucket|sum|count|created)$", "", n) for n in names}


def test_dashboard_metrics_and_labels_exist() -> None:
    d = json.loads(DASHBOARD.read_text())
    ids = [p["id"] for p in d["panels"]]
    assert len(ids) == len(set(ids))
    used = set()
    for where, expr in dashboard_queries():
        used |= check_promql(where, expr)
    for p in d["panels"]:
        for t in p.get("targets", []):
            legend = set(re.findall(r"\{\{\s*(\w+)\s*\}\}", t.get("legendFormat", "")))
            names = METRIC_RE.findall(t["expr"])
            assert legend <= set().union(*(METRIC_LABELS[n] for n in names)) | TARGET_LABELS, p["title"]
    wanted = {
        "guard_requests",
        "guard_stage_duration_seconds",
        "guard_screen_results",
        "guard_upstream_errors",
        "guard_tls_handshake_failures",
        "guard_active_streams",
        "guard_audit_fsync_duration_seconds",
        "guard_audit_sink_lag_events",
        "guard_policy_reloads",
        "guard_shadow_disagreements",
        "guard_tokens",
    }
    assert wanted <= used, f"the dashboard misses {wanted - used}"


def test_metric_names_anywhere_in_deploy_and_docs_exist() -> None:
    from guard import telemetry

    families = {f.name for f in telemetry.REGISTRY.collect()}  # prose may name a histogram by its family
    texts = [
        p
        for p in DEPLOY.rglob("*")
        if p.is_file()
        and p.suffix in (".yaml", ".json", ".service", ".md", ".py")
        and not p.is_relative_to(K8S / "common")
    ]
    texts += [SCALING] if SCALING.exists() else []
    for p in texts:
        for m in METRIC_RE.findall(p.read_text()):
            assert m in METRICS or m in families, f"{p.relative_to(ROOT)}: {m} is not a Guard metric"


def test_documented_cli_parses() -> None:
    if not SCALING.exists():
        pytest.skip("docs/scaling.md not written yet")
    for line in SCALING.read_text().splitlines():
        m = re.match(r"\s*(?:\$ )?guard ((?:serve|audit) .+?)(?:\s+#.*)?$", line)
        if m:
            lex = shlex.shlex(m[1].replace("\\", ""), posix=True, punctuation_chars=True)
            lex.whitespace_split = True
            argv = []
            for tok in lex:  # stop at a redirection, pipe or list operator
                if tok and set(tok) <= set("<>|&;"):
                    break
                argv.append(tok)
            parse_cli(argv)


def test_documented_secrets_match_the_manifests() -> None:
    """deploy/README.md's `kubectl create secret` lines create every Secret key the pods read."""
    text = (DEPLOY / "README.md").read_text().replace("\\\n", " ")
    documented: set[tuple[str, str]] = set()
    for kind, name, rest in re.findall(r"kubectl create secret (tls|generic) ([\w.-]+)([^\n]*)", text):
        if kind == "tls":
            documented |= {(name, "tls.crt"), (name, "tls.key")}
        documented |= {(name, k) for k in re.findall(r"--from-(?:file|literal)=([\w.-]+)=", rest)}
    used: set[tuple[str, str]] = set()
    for g in PODS:
        used |= {(obj, key) for kind, obj, key in g.mounted.files.values() if kind == "secret"}
        for c in g.pod["containers"]:
            for e in c.get("env", []):
                ref = e.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    used.add((ref["name"], ref["key"]))
    assert used and used <= documented, f"not in deploy/README.md: {sorted(used - documented)}"


def test_alert_rules_use_guard_metrics_and_labels() -> None:
    ((p, rule),) = objects("PrometheusRule")
    for group in rule["spec"]["groups"]:
        for r in group["rules"]:
            check_promql(f"{p.name}: {r['alert']}", r["expr"])
            by = set(re.findall(r"\b(?:by|without)\s*\(([^)]*)\)", r["expr"])[0].replace(" ", "").split(","))
            for text in r.get("annotations", {}).values():  # annotations may only use labels the result keeps
                assert set(re.findall(r"\$labels\.(\w+)", text)) <= by, f"{r['alert']}: {text}"


# --- the real tools, where this machine has them --------------------------------------------------------------


@pytest.mark.skipif(not shutil.which("kubectl"), reason="kubectl not installed")
@pytest.mark.parametrize("variant", ["gateway", "gateway-statefulset", "sidecar"])
def test_kustomize_renders(variant: str) -> None:
    out = subprocess.run(["kubectl", "kustomize", str(K8S / variant)], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    docs = [d for d in yaml.safe_load_all(out.stdout) if d]
    kinds = {(d["kind"], d["metadata"]["name"]) for d in docs}
    assert len(kinds) == len(docs), "an object is rendered twice"
    if variant == "gateway-statefulset":
        assert ("StatefulSet", "guard") in kinds and ("Deployment", "guard") not in kinds
        (hpa,) = [d for d in docs if d["kind"] == "HorizontalPodAutoscaler"]
        assert hpa["spec"]["scaleTargetRef"]["kind"] == "StatefulSet"


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="systemd-analyze not installed")
def test_systemd_analyze_verify(tmp_path: Path) -> None:
    guard_bin = shutil.which("guard") or str(Path(sys.executable).with_name("guard"))
    text = UNIT.read_text().replace("/opt/guard/bin/guard", guard_bin)  # verify wants the binary to exist
    (tmp_path / "guard.service").write_text(text)
    out = subprocess.run(
        ["systemd-analyze", "verify", str(tmp_path / "guard.service")], capture_output=True, text=True, timeout=30
    )
    problems = [ln for ln in out.stderr.splitlines() if "guard.service" in ln]
    assert out.returncode == 0 and not problems, out.stderr
