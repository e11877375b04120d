"""Evidence packs: `guard audit pack` writes one zip that `guard audit verify PACK.zip` checks without the
journal; any edit, removal or re-signing inside the pack is found."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest

from guard.audit import layout
from guard.audit.seal import keygen
from guard.cli import main


def _pack(journal_dir: Path, out: Path, *extra: str) -> None:
    assert (
        main(
            [
                "audit",
                "pack",
                str(journal_dir),
                "--since",
                "2000-01-01",
                "--until",
                "2100-01-01",
                "-o",
                str(out),
                *extra,
            ]
        )
        == 0
    )


def _rewrite(src: Path, dst: Path, name: str, fn: object) -> None:
    with zipfile.ZipFile(src) as z, zipfile.ZipFile(dst, "w") as out:
        for n in z.namelist():
            b = z.read(n)
            out.writestr(n, fn(b) if n == name else b)  # type: ignore[operator]


def test_pack_holds_every_format_a_summary_and_verifies(
    journal_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "p.zip"
    _pack(journal_dir, out, "--format", "csv", "--format", "ocsf", "--format", "cef", "--format", "ecs")
    with zipfile.ZipFile(out) as z:
        names = set(z.namelist())
        summary = z.read("SUMMARY.txt").decode()
        s = json.loads(z.read("summary.json"))
    for f in ("events.jsonl", "events.csv", "events.ocsf.jsonl", "events.cef", "events.ecs.jsonl"):
        assert f in names and f"{f}.manifest.json" in names
    total = sum(1 for _ in layout.iter_events(journal_dir))
    assert s["counts"]["events"] == total and s["journal_verification"]["ok"] is True
    assert "Journal verified: INTACT" in summary and s["keys"][0]["sha256"] in summary
    capsys.readouterr()
    assert main(["audit", "verify", str(out), "--public-key", str(journal_dir / "keys")]) == 0
    assert "INTACT" in capsys.readouterr().out


def test_pack_filters_select_what_the_console_search_selects(journal_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "f.zip"
    _pack(journal_dir, out, "--group", "team-x", "--finding", "EMAIL_ADDRESS", "--upstream", "local")
    with zipfile.ZipFile(out) as z:
        got = [json.loads(x) for x in z.read("events.jsonl").splitlines()]
        m = json.loads(z.read("events.jsonl.manifest.json"))
    assert len(got) == 44 and all(e["type"] == "exchange.started" for e in got)
    assert m["filters"]["group"] == "team-x" and m["filters"]["finding"] == "EMAIL_ADDRESS"
    out2 = tmp_path / "none.zip"
    _pack(journal_dir, out2, "--group", "nobody")
    with zipfile.ZipFile(out2) as z:
        assert z.read("events.jsonl") == b""
    # the journal-side completeness check reads the new filters back from the manifest
    with zipfile.ZipFile(out) as z:
        z.extractall(tmp_path / "x")
    assert (
        main(
            [
                "audit",
                "verify",
                str(journal_dir),
                "--public-key",
                str(journal_dir / "keys"),
                "--manifest",
                str(tmp_path / "x" / "events.jsonl.manifest.json"),
            ]
        )
        == 0
    )


@pytest.mark.parametrize("attack", ["edit_event", "drop_event", "edit_manifest", "swap_file", "drop_manifest"])
def test_an_altered_pack_does_not_verify(
    journal_dir: Path, tmp_path: Path, attack: str, capsys: pytest.CaptureFixture[str]
) -> None:
    out, bad = tmp_path / "p.zip", tmp_path / "bad.zip"
    _pack(journal_dir, out, "--format", "csv")
    if attack == "edit_event":
        _rewrite(out, bad, "events.jsonl", lambda b: b.replace(b'"gpt-4o"', b'"gpt-4x"', 1))
    elif attack == "drop_event":
        _rewrite(out, bad, "events.jsonl", lambda b: b"\n".join(b.split(b"\n")[:5] + b.split(b"\n")[6:]))
    elif attack == "edit_manifest":

        def fewer(b: bytes) -> bytes:
            m = json.loads(b)
            m["counts"]["exported"] -= 1  # claims one event fewer: the signature no longer holds
            return json.dumps(m).encode()

        _rewrite(out, bad, "events.jsonl.manifest.json", fewer)
    elif attack == "swap_file":
        _rewrite(out, bad, "events.csv", lambda b: b + b"extra,row\n")
    else:
        with zipfile.ZipFile(out) as z, zipfile.ZipFile(bad, "w") as o:
            for n in z.namelist():
                if n != "events.jsonl.manifest.json":
                    o.writestr(n, z.read(n))
    capsys.readouterr()
    assert main(["audit", "verify", str(bad), "--public-key", str(journal_dir / "keys")]) == 1
    assert "INTACT" not in capsys.readouterr().out


def test_a_pack_checked_with_another_key_fails_and_pack_keys_need_the_flag(journal_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "p.zip"
    _pack(journal_dir, out)
    _, other_pub, _ = keygen(tmp_path / "other")
    assert main(["audit", "verify", str(out), "--public-key", str(other_pub)]) == 1
    assert main(["audit", "verify", str(out)]) == 2  # no key given: the pack's own keys prove nothing
    assert main(["audit", "verify", str(out), "--trust-local-keys"]) == 0
