from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

import pytest

from guard.audit import layout
from guard.audit.seal import canonical, check_signature, load_public_keys
from guard.cli import main


def _manifest_ok(m: dict, export_file: Path, keys: dict) -> bool:
    body = {k: v for k, v in m.items() if k not in ("hash", "sig")}
    h = hashlib.sha256(canonical(body)).hexdigest()
    return (
        h == m["hash"]
        and check_signature(keys[m["key_id"]], h, m["sig"])
        and hashlib.sha256(export_file.read_bytes()).hexdigest() == m["export_sha256"]
    )


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "ocsf", "cef"])
def test_export_writes_the_range_and_a_signed_manifest(journal_dir: Path, tmp_path: Path, fmt: str) -> None:
    out = tmp_path / f"export.{fmt}"
    rc = main(
        [
            "audit",
            "export",
            str(journal_dir),
            "--since",
            "2000-01-01",
            "--until",
            "2100-01-01",
            "--format",
            fmt,
            "-o",
            str(out),
        ]
    )
    assert rc == 0
    m = json.loads(Path(f"{out}.manifest.json").read_text())
    assert _manifest_ok(m, out, load_public_keys([journal_dir / "keys"]))
    total = sum(1 for _ in layout.iter_events(journal_dir))
    assert m["counts"]["exported"] == total and m["chains"]["w1"]["first"]["seq"] == 1
    last = max(e["seq"] for _, _, e in layout.iter_events(journal_dir))
    assert m["chains"]["w1"]["last"]["seq"] == last
    lines = out.read_text().splitlines()
    assert len(lines) == total + (1 if fmt == "csv" else 0)
    if fmt == "csv":
        assert next(csv.reader([lines[0]]))[:3] == ["time", "id", "type"]
    if fmt == "ocsf":
        assert all(json.loads(line)["class_uid"] == 6003 for line in lines)


def test_export_filters_and_records_the_range_boundaries(journal_dir: Path, tmp_path: Path) -> None:
    evs = [e for _, _, e in layout.iter_events(journal_dir)]
    since, until = evs[10]["time"], evs[30]["time"]
    out = tmp_path / "x.jsonl"
    rc = main(
        [
            "audit",
            "export",
            str(journal_dir),
            "--since",
            since,
            "--until",
            until,
            "--principal",
            "app-a",
            "--model",
            "gpt-*",
            "--decision",
            "allow",
            "-o",
            str(out),
        ]
    )
    assert rc == 0
    got = [json.loads(line) for line in out.read_text().splitlines()]
    assert got and all(since <= e["time"] < until and e["type"].startswith("exchange.") for e in got)
    m = json.loads(Path(f"{out}.manifest.json").read_text())
    c = m["chains"]["w1"]
    assert c["before_range"]["seq"] == evs[9]["seq"] and c["first"]["hash"] == evs[10]["hash"]
    assert c["events_in_range"] == 20 and c["exported"] == len(got)
    assert m["filters"] == {"principal": "app-a", "model": "gpt-*", "decision": "allow"}
    out2 = tmp_path / "none.jsonl"
    assert (
        main(
            [
                "audit",
                "export",
                str(journal_dir),
                "--since",
                since,
                "--until",
                until,
                "--decision",
                "deny",
                "-o",
                str(out2),
            ]
        )
        == 0
    )
    assert out2.read_text() == ""


def test_export_usage_errors_exit_2(journal_dir: Path, tmp_path: Path) -> None:
    assert main(["audit", "export", str(journal_dir), "--since", "yesterday", "--until", "2100-01-01"]) == 2
    assert (
        main(
            [
                "audit",
                "export",
                str(tmp_path),
                "--since",
                "2000-01-01",
                "--until",
                "2100-01-01",
                "--signing-key",
                str(journal_dir / "keys" / "signing-key.pem"),
            ]
        )
        == 2
    )
    with pytest.raises(SystemExit) as e:
        main(["audit", "export", str(journal_dir), "--since", "2000-01-01", "--until", "2100-01-01", "--format", "xml"])
    assert e.value.code == 2


def test_tail_once_prints_the_last_events(journal_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["audit", "tail", str(journal_dir), "--once", "-n", "3"]) == 0
    lines = capsys.readouterr().out.splitlines()
    evs = sorted((e for _, _, e in layout.iter_events(journal_dir)), key=lambda e: e["time"])
    assert [json.loads(line)["id"] for line in lines] == [e["id"] for e in evs[-3:]]


def test_tail_follows_new_events(journal_dir: Path, tmp_path: Path) -> None:
    import subprocess
    import sys
    import time

    from guard.audit.journal import Journal

    from .conftest import make_settings, sample

    p = subprocess.Popen(
        [sys.executable, "-m", "guard.cli", "audit", "tail", str(journal_dir), "-n", "0", "--interval", "0.05"],
        stdout=subprocess.PIPE,
        cwd=Path(__file__).resolve().parents[2],
    )
    try:
        time.sleep(1.0)
        j = Journal(make_settings(journal_dir), "w1")
        e = j.append_sync(sample(500))
        j.close()
        assert p.stdout
        seen = [json.loads(p.stdout.readline()) for _ in range(2)]
        assert e["id"] in {x["id"] for x in seen}
    finally:
        p.kill()
        p.wait()


def test_keygen_writes_a_private_key_0600_and_a_public_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["audit", "keygen", "--out", str(tmp_path / "k")]) == 0
    doc = json.loads(capsys.readouterr().out)
    priv, pub = Path(doc["signing_key"]), Path(doc["public_key"])
    assert priv.stat().st_mode & 0o777 == 0o600 and "PRIVATE" in priv.read_text()
    assert "PUBLIC KEY" in pub.read_text() and list(load_public_keys([tmp_path / "k"])) == [doc["key_id"]]


def test_verify_checks_an_export_against_its_manifest_and_the_journal(
    journal_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from guard.audit.export import check_manifest

    evs = [e for _, _, e in layout.iter_events(journal_dir)]
    since, until = evs[5]["time"], evs[25]["time"]
    out = tmp_path / "range.csv"
    assert (
        main(
            ["audit", "export", str(journal_dir), "--since", since, "--until", until, "--format", "csv", "-o", str(out)]
        )
        == 0
    )
    manifest = Path(f"{out}.manifest.json")
    keys = load_public_keys([journal_dir / "keys"])
    assert check_manifest(manifest, keys, journal_dir) == []
    assert main(["audit", "verify", str(journal_dir), "--trust-local-keys", "--manifest", str(manifest)]) == 0
    assert "export complete and unaltered" in capsys.readouterr().out
    lines = out.read_text().splitlines(keepends=True)
    out.write_text("".join(lines[:-1]))  # a row dropped from the export
    problems = check_manifest(manifest, keys, journal_dir)
    assert any("not the one the manifest describes" in p for p in problems)
    assert main(["audit", "verify", str(journal_dir), "--trust-local-keys", "--manifest", str(manifest)]) == 1
    m = json.loads(manifest.read_text())
    m["counts"]["exported"] -= 1  # the manifest edited to match
    manifest.write_text(json.dumps(m))
    assert check_manifest(manifest, keys, journal_dir) == ["manifest signature does not verify"]
