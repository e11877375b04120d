"""Retention tiers through the real proxy and the real CLI: captured texts are encrypted per day in the
journal, `guard audit export` opens them, `guard audit prune` past ``content_days`` (the clock moved with
``--now``) destroys the day's key so they read ``shredded`` while `guard audit verify` still passes, and
metadata stays until ``metadata_days``. Also: export finds the signing key where guard.yaml says it is,
writes ECS, and reports progress as JSON lines when stderr is not a terminal."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from guard.audit.content_keys import ContentKeyError, ContentKeys, period_of, reveal
from guard.audit.seal import keygen
from tests.audit.proxy_helpers import GUARD, by_request, chat, verify

SECRET = "the launch code is tangerine-4417"


def _cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([GUARD, "audit", *args], capture_output=True, text=True, timeout=120, cwd=cwd)


def _export(root: Path, out: Path, *extra: str, cwd: Path | None = None) -> list[dict[str, Any]]:
    p = _cli("export", str(root), "--since", "2000-01-01", "--until", "2100-01-01", "-o", str(out), *extra, cwd=cwd)
    assert p.returncode == 0, p.stderr
    return [json.loads(x) for x in out.read_text().splitlines()] if out.suffix == ".jsonl" else []


def _later(days: int) -> str:
    return (datetime.now(UTC) + timedelta(days=days)).strftime("%Y-%m-%dT%H:%M:%SZ")


@pytest.fixture
def captured(guard_factory: Callable[..., Any], tmp_path: Path) -> tuple[Any, Path, Path, str]:
    """A Guard with capture: full and its signing key outside the journal; one answered chat."""
    priv, pub, _ = keygen(tmp_path / "audit-keys")
    g = guard_factory(
        audit={
            "dir": str(tmp_path / "audit"),
            "signing_key": str(priv),
            "capture": "full",
            "checkpoint_events": 5,
            "retention": {"metadata_days": 183, "content_days": 30},
        }
    )
    with g.client("app") as c:
        r = chat(c, f"remember: {SECRET}")
    assert r.status_code == 200, r.text
    g.stop()
    return g, Path(g.config.audit.dir), pub, r.headers["x-guard-request-id"]


def test_captured_texts_are_sealed_exported_in_clear_and_shredded_after_content_days(
    captured: tuple[Any, Path, Path, str], tmp_path: Path
) -> None:
    g, root, pub, rid = captured
    raw = b"".join(p.read_bytes() for p in (root / "chains").rglob("*.jsonl"))
    assert SECRET.encode() not in raw and b'"sealed"' in raw  # never in clear in the journal
    key_dir = root / "keys" / "content"
    today = period_of(time.time_ns())
    key = key_dir / f"{today}.key"
    assert key.exists() and stat.S_IMODE(key.stat().st_mode) == 0o600

    # export (the config names the signing key, kept outside the journal) opens the texts
    cfg = str(g.config.source)
    rows = by_request(_export(root, tmp_path / "before.jsonl", "--config", cfg))
    st = rows[rid]["exchange.started"]["content"]
    assert SECRET in st["prompt"] and st["period"] == today and "shredded" not in st
    assert SECRET in rows[rid]["exchange.completed"]["content"]["prompt"]

    # 20 days on: nothing is due yet
    p = _cli("prune", str(root), "--config", cfg, "--now", _later(20))
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["content"]["periods_shredded"] == [] and key.exists()

    # 40 days on (> content_days 30, < metadata_days 183): the day's key is destroyed, metadata stays
    p = _cli("prune", str(root), "--config", cfg, "--now", _later(40))
    assert p.returncode == 0, p.stderr
    rep = json.loads(p.stdout)
    assert rep["content"]["periods_shredded"] == [today] and rep["chains"] == []
    assert not key.exists() and (key_dir / "SHREDDED").read_text().strip() == today
    rows = by_request(_export(root, tmp_path / "after.jsonl", "--config", cfg))
    for kind in ("exchange.started", "exchange.completed"):
        e = rows[rid][kind]
        assert e["content"]["shredded"] is True and "prompt" not in e["content"] and "answer" not in e["content"]
        assert e["principal"]["cn"] and e["model"] == "gpt-4o" and "decisions" in e  # the metadata is all there
    assert SECRET not in (tmp_path / "after.jsonl").read_text()

    # the journal is byte for byte what it was: every hash, link, checkpoint and signature still verifies
    assert b"".join(p.read_bytes() for p in (root / "chains").rglob("*.jsonl")) == raw
    rc, doc = verify(root, pub)
    assert rc == 0 and doc["ok"], doc

    # a clock set back cannot revive the shredded day for new records
    with pytest.raises(ContentKeyError, match="shredded"):
        ContentKeys(key_dir, clock=time.time_ns).seal({"prompt": "x"}, "r")


def test_an_export_with_opened_texts_is_checked_against_the_keys_and_stops_matching_once_shredded(
    captured: tuple[Any, Path, Path, str], tmp_path: Path
) -> None:
    g, root, pub, _ = captured
    out = tmp_path / "e.jsonl"
    _export(root, out, "--config", str(g.config.source))
    man = f"{out}.manifest.json"
    p = _cli("verify", str(root), "--public-key", str(pub), "--manifest", man, "--json", "--jobs", "1")
    assert p.returncode == 0, p.stdout + p.stderr
    assert _cli("prune", str(root), "--config", str(g.config.source), "--now", _later(40)).returncode == 0
    p = _cli("verify", str(root), "--public-key", str(pub), "--manifest", man, "--json", "--jobs", "1")
    assert p.returncode == 1 and json.loads(p.stdout)["manifest"]["problems"], p.stdout


def test_sealed_content_is_bound_to_its_record(tmp_path: Path) -> None:
    """A ciphertext moved to another request's record, or altered, does not open (AES-GCM with the period
    and the request id as associated data); a missing key reads as shredded."""
    keys = ContentKeys(tmp_path / "k", clock=lambda: 1_700_000_000 * 10**9)
    sealed = keys.seal({"prompt": "p", "answer": "a"}, "req-1")
    ev = {"request_id": "req-1", "content": {"capture": "full", "sealed": sealed}}
    assert reveal(ev, keys)["content"] == {"capture": "full", "period": "2023-11-14", "prompt": "p", "answer": "a"}
    moved = reveal({**ev, "request_id": "req-2"}, keys)["content"]
    assert "prompt" not in moved and "does not open" in moved["unreadable"]
    flipped = dict(sealed, ct=sealed["ct"][:-4] + ("AAAA" if sealed["ct"][-4:] != "AAAA" else "BBBB"))
    assert "unreadable" in reveal({**ev, "content": {"capture": "full", "sealed": flipped}}, keys)["content"]
    for bad in ("../x", ".hidden"):
        assert (
            "unreadable"
            in reveal({**ev, "content": {"capture": "full", "sealed": {**sealed, "period": bad}}}, keys)["content"]
        )
    assert keys.shred_before("2023-11-15") == ["2023-11-14"]
    assert reveal(ev, keys)["content"]["shredded"] is True


def test_export_finds_the_signing_key_from_the_config_and_writes_ecs_with_json_progress(
    captured: tuple[Any, Path, Path, str], tmp_path: Path
) -> None:
    g, root, pub, rid = captured
    # the key is outside the journal: without the config export cannot sign, and says where it looked
    p = _cli("export", str(root), "--since", "2000-01-01", "--until", "2100-01-01", "-o", str(tmp_path / "x.jsonl"))
    assert p.returncode == 2 and "no signing key found" in p.stderr and "--config" in p.stderr
    # ./guard.yaml whose audit.dir is this journal is found on its own
    p = _cli(
        "export", str(root), "--since", "2000-01-01", "--until", "2100-01-01", "--format", "ecs", "-o",
        str(tmp_path / "x.ecs.json"), cwd=Path(g.config.source).parent,
    )  # fmt: skip
    assert p.returncode == 0, p.stderr
    docs = [json.loads(x) for x in (tmp_path / "x.ecs.json").read_text().splitlines()]
    assert docs and all(d["ecs"]["version"] and "@timestamp" in d for d in docs)
    assert any(rid in json.dumps(d) for d in docs)
    lines = [json.loads(x) for x in p.stderr.splitlines() if x.startswith("{")]
    prog = [x for x in lines if x.get("progress") == "export"]
    assert prog and prog[-1]["done"] is True and prog[-1]["percent"] == 100.0 and prog[-1]["events"] == len(docs)
    assert lines[-1]["exported"] == len(docs) and os.path.exists(lines[-1]["manifest"])
    # verify reports progress the same way
    p = _cli("verify", str(root), "--public-key", str(pub), "--jobs", "1")
    prog = [json.loads(x) for x in p.stderr.splitlines() if x.startswith("{")]
    assert p.returncode == 0 and prog[-1]["progress"] == "verify" and prog[-1]["done"] is True


def test_progress_line_on_a_terminal_and_json_lines_elsewhere() -> None:
    import io

    from guard.audit.progress import Progress

    tty = io.StringIO()
    p = Progress("verify", 1000, stream=tty, tty=True)
    p.t0 -= 10  # ten seconds in
    p(500)
    p.finish(1000)
    out = tty.getvalue()
    assert "\rverify: 50.0% (500 of ~1,000 events), about 10 s left" in out and "verify: 100.0% (1,000" in out
    pipe = io.StringIO()
    p = Progress("export", 1000, stream=pipe, tty=False, every_s=3600)
    for n in range(0, 1001, 10):  # at most one line per 5 percent when a second has not passed
        p(n)
    p.finish(1000)
    docs = [json.loads(x) for x in pipe.getvalue().splitlines()]
    assert 15 <= len(docs) <= 22 and docs[-1]["done"] is True and docs[-1]["percent"] == 100.0
    assert all(d["progress"] == "export" and d["percent"] <= 100 for d in docs)


def test_an_unusable_content_key_folder_stops_guard_at_start_not_at_each_request(tmp_path: Path) -> None:
    from guard.config import ConfigError, load_config
    from guard.demo.stack import free_port, guard_config, make_pki, write_config
    from guard.runtime import Runtime

    pki = tmp_path / "pki"
    make_pki(pki)
    (tmp_path / "not-a-dir").write_text("x")
    audit = {"dir": str(tmp_path / "audit"), "capture": "full", "retention": {"key_dir": str(tmp_path / "not-a-dir/k")}}
    cfg = guard_config(pki, "http://127.0.0.1:9", free_port(), free_port(), audit=audit, filters={"dir": str(pki)})
    rt = Runtime(load_config(write_config(tmp_path / "guard.yaml", cfg)))
    with pytest.raises(ConfigError, match=r"audit.retention.key_dir: cannot create content key .*not-a-dir/k"):
        rt.load()
    if rt.journal is not None:
        rt.journal.close()


def test_tail_marks_captured_texts_and_opens_them_only_with_the_content_keys(
    captured: tuple[Any, Path, Path, str],
) -> None:
    _, root, _, rid = captured
    sealed = [
        e["content"]["sealed"]
        for chain in (root / "chains").iterdir()
        for seg in chain.glob("*.jsonl")
        for e in map(json.loads, seg.read_text().splitlines())
        if e.get("request_id") == rid and isinstance(e.get("content"), dict) and "sealed" in e["content"]
    ]
    assert len(sealed) == 2  # exchange.started and exchange.completed
    for fmt in ("json", "ocsf", "cef"):
        p = _cli("tail", str(root), "--once", "-n", "50", "--format", fmt)
        assert p.returncode == 0, p.stderr
        assert SECRET not in p.stdout and all(s["ct"] not in p.stdout and s["nonce"] not in p.stdout for s in sealed)
    shown = [json.loads(x) for x in _cli("tail", str(root), "--once", "-n", "50").stdout.splitlines()]
    mine = [e for e in shown if e.get("request_id") == rid and "content" in e]
    assert [e["content"]["sealed"] for e in mine] == ["<encrypted>", "<encrypted>"]

    p = _cli("tail", str(root), "--once", "-n", "50", "--content-keys", str(root / "keys" / "content"))
    assert p.returncode == 0, p.stderr
    opened = [json.loads(x) for x in p.stdout.splitlines()]
    mine = [e for e in opened if e.get("request_id") == rid and "content" in e]
    assert len(mine) == 2 and all(SECRET in e["content"]["prompt"] and "sealed" not in e["content"] for e in mine)
    assert all(s["ct"] not in p.stdout for s in sealed)

    p = _cli("tail", str(root), "--once", "--content-keys", str(root / "no-such-folder"))
    assert p.returncode == 2 and "content key folder" in p.stderr
