"""Faults injected into a running Guard must not lose a record: a full disk under concurrent load in
``durability: batch`` (and ``fsync``), a sealer process killed with -9 and then a normal shutdown, invalid
chunked bodies (one request, one record, under the id the client was given), and a full disk must not
flood the log.

The full disk is real: the audit directory is on a small tmpfs mounted for the test (needs root and the
right to mount, as in CI's container; the tests are skipped where mounting is refused) and filled with a
filler file until writes fail with ENOSPC, then freed again.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import signal
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from guard.audit.seal import keygen
from guard.demo.stack import free_port, guard_config, write_config
from tests.audit.proxy_helpers import GUARD, by_request, chat, journal_events, verify
from tests.hardening.conftest import tls_socket

ROUTES = [{"model": "gpt-*", "upstream": "local"}]


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A 4 MiB tmpfs for the audit directory (skipped where the test may not mount one)."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    p = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m,mode=0700", "tmpfs", str(mnt)], capture_output=True, text=True
    )
    if p.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {p.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def fill(path: Path) -> None:
    """Write ``path`` until the file system is full (ENOSPC), the last partial pages included."""
    with open(path, "ab", buffering=0) as f:
        for size in (1 << 16, 4096, 512, 1):
            try:
                while True:
                    f.write(b"\0" * size)
            except OSError as e:
                assert e.errno == errno.ENOSPC, e


def _keys(tmp_path: Path) -> tuple[Path, Path]:
    priv, pub, _ = keygen(tmp_path / "audit-keys")
    return priv, pub


# --- 1. a full disk under concurrent load ---------------------------------------------------------------------


@pytest.mark.parametrize("sealer", ["thread", "process"])
@pytest.mark.parametrize("durability", ["batch", "fsync"])
def test_a_full_disk_under_load_never_answers_a_request_without_its_record(
    guard_factory: Callable[..., Any], tmp_path: Path, small_fs: Path, durability: str, sealer: str
) -> None:
    """30 clients send chat requests while the disk fills up twice and is freed again. Every 200 a client
    got has its exchange.started and its exchange.completed in the journal (completions of exchanges
    answered while the disk was full are kept and written when it has room again), every other answer is
    503 audit_unavailable, and `guard audit verify` finds the journal intact."""
    priv, pub = _keys(tmp_path)
    root = small_fs / "audit"
    g = guard_factory(
        routes=ROUTES,
        audit={
            "dir": str(root),
            "signing_key": str(priv),
            "checkpoint_events": 50,
            "durability": durability,
            "sealer": sealer,
            "batch_window_ms": 20,
        },
    )
    stop = threading.Event()
    results: list[tuple[int, str, str]] = []
    errors: list[str] = []

    def client(n: int) -> None:
        with g.client("app") as c:
            i = 0
            while not stop.is_set():
                i += 1
                try:
                    r = chat(c, f"client {n} request {i} " + "x" * 300)
                except httpx.HTTPError as e:
                    errors.append(repr(e))
                    continue
                code = r.json().get("error", {}).get("code", "") if r.status_code != 200 else ""
                results.append((r.status_code, r.headers.get("x-guard-request-id", ""), code))

    threads = [threading.Thread(target=client, args=(n,)) for n in range(30)]
    for t in threads:
        t.start()
    filler = small_fs / "filler"
    try:
        for _ in range(2):
            time.sleep(1.0)
            fill(filler)
            time.sleep(1.5)
            filler.unlink()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # answers flow again after the disk has room
            time.sleep(0.5)
            if sum(1 for s, *_ in results[-30:] if s == 200) >= 20:
                break
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    g.stop()

    assert not errors, errors[:5]
    statuses = {s for s, *_ in results}
    assert statuses <= {200, 503}, statuses
    refused = [r for r in results if r[0] == 503]
    answered = [rid for s, rid, _ in results if s == 200]
    assert refused and answered, (len(refused), len(answered))  # the disk did fill, and answers came back
    assert {code for *_, code in refused} == {"audit_unavailable"}
    assert all(rid for *_, rid, _ in results)
    recs = by_request(journal_events(root))
    no_start = [rid for rid in answered if "exchange.started" not in recs.get(rid, {})]
    assert not no_start, f"{len(no_start)} of {len(answered)} answers have no exchange.started: {no_start[:5]}"
    no_end = [rid for rid in answered if "exchange.completed" not in recs.get(rid, {})]
    assert not no_end, f"{len(no_end)} of {len(answered)} answers have no exchange.completed: {no_end[:5]}"
    rc, doc = verify(root, pub)
    assert rc == 0 and doc["ok"], doc
    assert [c["closed"] for c in doc["chains"]] == [True], doc
    assert not list(root.rglob(".*tmp")) and not list(root.rglob(".probe*"))  # no temporary files left


# --- 2. a restarted sealer still seals the end ----------------------------------------------------------------


def _children(pid: int) -> list[int]:
    out: list[int] = []
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:  # it exited meanwhile
        return out
    for task in tasks:
        with contextlib.suppress(OSError):
            out += [int(c) for c in (task / "children").read_text().split()]
    return out


def _holds_chain(pid: int) -> bool:
    """The sealer writing the chain (it holds the chain's LOCK file open), not the one in standby."""
    try:
        return any(os.readlink(fd).endswith("/LOCK") for fd in Path(f"/proc/{pid}/fd").iterdir())
    except OSError:
        return False


def _sealers(pid: int) -> list[int]:
    """Sealer processes anywhere under ``pid`` (a worker's child, or the master's grandchild)."""
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        for c in _children(p):
            todo.append(c)
            try:
                if b"guard.audit.sealer" in Path(f"/proc/{c}/cmdline").read_bytes() and _holds_chain(c):
                    found.append(c)
            except OSError:
                pass
    return found


def _serve(tmp_path: Path, pki_dir: Path, url: str, audit: dict[str, Any]) -> tuple[subprocess.Popen[bytes], str, str]:
    port, admin_port = free_port(), free_port()
    filters = tmp_path / "filters"
    filters.mkdir()
    cfg = guard_config(
        pki_dir, url, port, admin_port, routes=ROUTES, shutdown_deadline_s=2, audit=audit, filters={"dir": str(filters)}
    )
    cfg_path = write_config(tmp_path / "guard.yaml", cfg)
    with open(tmp_path / "guard.log", "ab") as log:
        proc = subprocess.Popen([GUARD, "serve", "--config", str(cfg_path)], stdout=log, stderr=subprocess.STDOUT)
    admin = f"http://127.0.0.1:{admin_port}"
    deadline = time.monotonic() + 30
    while True:
        assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / "guard.log").read_text()[-3000:]
        try:
            if httpx.get(admin + "/readyz", timeout=1).status_code == 200:
                return proc, f"https://localhost:{port}", admin
        except httpx.HTTPError:
            pass
        time.sleep(0.1)


@pytest.mark.parametrize("durability", ["fsync", "batch"])
def test_after_a_sealer_is_killed_and_restarted_shutdown_still_seals_the_end(
    pki_dir: Path, model_server: Any, tmp_path: Path, durability: str
) -> None:
    """kill -9 of the sealer; a new one starts by itself (no request needed); SIGTERM to `guard serve`
    writes the final checkpoint and a final head record; cutting the journal's last events afterwards is
    reported as `truncated` by `guard audit verify`."""
    priv, pub = _keys(tmp_path)
    root = tmp_path / "audit"
    proc, url, admin = _serve(
        tmp_path,
        pki_dir,
        model_server[1],
        {
            "dir": str(root),
            "signing_key": str(priv),
            "checkpoint_events": 20,
            "sealer": "process",
            "durability": durability,
        },
    )
    ctx = ssl.create_default_context(cafile=str(pki_dir / "ca.pem"))
    ctx.load_cert_chain(str(pki_dir / "app.pem"), str(pki_dir / "app-key.pem"))
    try:
        with httpx.Client(base_url=url, verify=ctx, timeout=10) as c:
            for i in range(30):
                assert chat(c, f"before {i}").status_code == 200
            for _ in range(2):  # twice: each new sealer is as good as the first
                (old,) = _sealers(proc.pid)
                os.kill(old, signal.SIGKILL)
                deadline = time.monotonic() + 10
                while not [p for p in _sealers(proc.pid) if p != old]:  # restarted without any request
                    assert time.monotonic() < deadline, "no new sealer"
                    time.sleep(0.05)
                deadline = time.monotonic() + 10
                while httpx.get(admin + "/readyz", timeout=5).status_code != 200:
                    assert time.monotonic() < deadline
                    time.sleep(0.05)
                for i in range(30):
                    assert chat(c, f"after {i}").status_code == 200
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)

    (chain,) = (root / "chains").iterdir()
    from guard.audit import note as N
    from guard.audit.logtree import LATEST

    head = N.parse_checkpoint(N.parse((chain / LATEST).read_text()).text)  # the latest signed checkpoint
    events = journal_events(root)
    assert head.size == events[-1]["seq"], (head, events[-1])
    assert events[-1]["type"] == "audit.checkpoint" and events[-1]["checkpoint"]["final"] is True
    rc, doc = verify(root, pub)
    assert rc == 0 and doc["chains"][0]["closed"], doc
    last = max(chain.glob("*.jsonl"))  # cut the last 10 events (the final checkpoint among them)
    lines = last.read_bytes().split(b"\n")[:-1]
    assert len(lines) > 10
    last.write_bytes(b"".join(line + b"\n" for line in lines[:-10]))
    rc, doc = verify(root, pub)
    assert rc == 1 and doc["chains"][0]["broken"]["reason"] == "truncated", doc


# --- 5. one request, one record -------------------------------------------------------------------------------

HEAD = (
    b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
    b"transfer-encoding: chunked\r\n\r\n"
)
BODY = b'{"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}'
MALFORMED = {
    "bad chunk size": b"zz\r\n" + BODY + b"\r\n0\r\n\r\n",
    "chunk without CRLF": b"%x\r\n" % len(BODY) + BODY + b"0\r\n\r\n",
    "chunk shorter than its size": b"%x\r\n" % (len(BODY) + 3) + BODY + b"\r\n0\r\n\r\n",
    "chunk longer than its size": b"%x\r\n" % (len(BODY) - 3) + BODY + b"\r\n0\r\n\r\n",
    "bad trailer": b"%x\r\n" % len(BODY) + BODY + b"\r\n0\r\nno colon in this trailer\r\n\r\n",
    "huge chunk size": b"ffffffffffffffffffffffff\r\n" + BODY + b"\r\n0\r\n\r\n",
    "negative chunk size": b"-5\r\n" + BODY + b"\r\n0\r\n\r\n",
    "chunk extension with a NUL": b"%x;a\x00b\r\n" % len(BODY) + BODY + b"\r\n0\r\n\r\n",
    "chunk extension 100 KB long": b"%x;" % len(BODY) + b"e" * 100_000 + b"\r\n" + BODY + b"\r\n0\r\n\r\n",
    "bare LF line ends": b"%x\n" % len(BODY) + BODY + b"\n0\n\n",
    "second body chunk broken": b"%x\r\n" % 10 + BODY[:10] + b"\r\nqq\r\n" + BODY[10:] + b"\r\n0\r\n\r\n",
    "chunk size with spaces inside": b"%x 0\r\n" % len(BODY) + BODY + b"\r\n0\r\n\r\n",
}


def _exchange(g: Any, ctx: ssl.SSLContext, data: bytes, split: bool) -> bytes:
    with tls_socket(g.url, ctx, timeout=10) as s:
        if split:  # headers first, so the app is reading the body when the framing breaks
            s.sendall(HEAD)
            time.sleep(0.05)
            s.sendall(data)
        else:
            s.sendall(HEAD + data)
        raw = b""
        try:
            while chunk := s.recv(65536):
                raw += chunk
        except (TimeoutError, ssl.SSLError, ConnectionError):
            pass
    return raw


@pytest.mark.parametrize("http", ["httptools", "h11"])
def test_each_malformed_chunked_body_gets_one_record_under_the_id_the_client_was_given(
    guard_factory: Callable[..., Any], tmp_path: Path, http: str
) -> None:
    priv, _ = _keys(tmp_path)
    root = tmp_path / "audit"
    g = guard_factory(routes=ROUTES, audit={"dir": str(root), "signing_key": str(priv)}, http=http)
    ctx = g.ssl_context("app")
    given: dict[str, str] = {}
    cases = [
        (name, data, split)
        for name, data in MALFORMED.items()
        # h11 waits for the rest of a chunk line ended by a bare LF (the body timeout closes it)
        if not (http == "h11" and name == "bare LF line ends")
        for split in (False, True)
    ]
    with ThreadPoolExecutor(8) as pool:  # several wait for the body timeout: run them side by side
        answers = list(pool.map(lambda case: _exchange(g, ctx, case[1], case[2]), cases))
    for (name, _, split), raw in zip(cases, answers, strict=True):
        heads = [part for part in raw.split(b"HTTP/1.1 ")[1:]]
        assert heads, f"{name}: no answer"
        for h in heads:
            status = int(h[:3])
            rid = [
                ln.split(b":", 1)[1].strip().decode()
                for ln in h.split(b"\r\n")
                if ln.lower().startswith(b"x-guard-request-id:")
            ]
            assert rid, f"{name}: answer without x-guard-request-id: {h[:300]!r}"
            assert status in (200, 400, 413), (name, h[:300])
            given[rid[0]] = f"{name} ({'split' if split else 'whole'}) -> {status}"
    g.stop()

    recs: dict[str, list[str]] = {}
    for e in journal_events(root):
        if e.get("request_id"):
            recs.setdefault(e["request_id"], []).append(e["type"])
    phantom = {rid: types for rid, types in recs.items() if rid not in given}
    assert not phantom, f"records under ids no client was given: {phantom}"
    for rid, what in given.items():
        assert recs.get(rid) in (["exchange.denied"], ["exchange.started", "exchange.completed"]), (what, recs.get(rid))
    assert any(t == ["exchange.denied"] for t in recs.values())


# --- 6. failing loudly without flooding -----------------------------------------------------------------------


def test_a_full_disk_logs_repeated_errors_once_per_interval_and_counts_every_refusal(
    guard_factory: Callable[..., Any], tmp_path: Path, small_fs: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="guard")
    priv, _ = _keys(tmp_path)
    root = small_fs / "audit"
    g = guard_factory(routes=ROUTES, audit={"dir": str(root), "signing_key": str(priv), "sealer": "thread"})
    from tests.hardening.conftest import metric

    with g.client("app") as c:
        assert chat(c, "before").status_code == 200
        before = metric(g.admin_url, "guard_fail_closed_total", component="audit")
        fill(small_fs / "filler")
        codes = [chat(c, f"while full {i}").status_code for i in range(60)]
        assert codes.count(503) >= 55, codes
        after = metric(g.admin_url, "guard_fail_closed_total", component="audit")
        assert after - before >= codes.count(503)  # the metric counts every refusal (log lines are thinned)
        (chain,) = (root / "chains").iterdir()
        head = chain / "checkpoint"  # the latest signed checkpoint (guard.audit.logtree)
        old_head = head.read_bytes()
    g.stop()  # shutdown while full: no final checkpoint fits, and no head record either
    errors = [r for r in caplog.records if r.name.startswith("guard") and r.levelno >= logging.ERROR]
    assert len(errors) <= 8, [r.getMessage() for r in errors]  # not one or two per refused request
    assert any("refusing" in r.getMessage() for r in errors)
    assert not list(chain.glob(".*")), list(chain.glob(".*"))  # no temporary head or probe file left behind
    from guard.audit import note as N

    def size(b: bytes) -> int:
        return N.parse_checkpoint(N.parse(b).text).size

    assert head.read_bytes() == old_head or size(head.read_bytes()) >= size(old_head)


def test_a_head_record_that_cannot_be_written_leaves_no_temporary_file(tmp_path: Path, small_fs: Path) -> None:
    from guard.audit.journal import Journal
    from guard.audit.settings import AuditSettings

    priv, _ = _keys(tmp_path)
    j = Journal(AuditSettings(dir=str(small_fs / "audit"), signing_key=str(priv)), "w1")
    try:
        fill(small_fs / "filler")
        with pytest.raises(OSError) as e:
            from guard.audit import note as N

            signed = N.Checkpoint(j.origin, j.tree.size, j.tree.root()).sign([j._note_signer])
            j._store_note(j.seq, signed, [])  # the checkpoint log and the latest checkpoint file
        assert e.value.errno == errno.ENOSPC
        assert not [p.name for p in j.dir.iterdir() if p.name.startswith(".")]
    finally:
        (small_fs / "filler").unlink()
        j.close()
