"""`guard audit prune`: retention that keeps the journal provable.

Old whole segments go, a record signed with the journal key says what went, and `guard audit verify`
resumes each chain from it; removing anything any other way (or dropping, editing, replaying or forging
the record) is still reported as tampering. Prune refuses a journal that does not verify and events a
sink has not delivered. The writer resumes a pruned chain as usual. Driven through the CLI.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from guard.audit import layout
from guard.audit.journal import Journal
from guard.audit.seal import keygen
from guard.cli import main
from tests.audit.conftest import fill, make_settings

CHAIN = "w1"


def _cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, Any, str]:
    rc = main(["audit", *argv])
    out, err = capsys.readouterr()
    try:
        doc = json.loads(out)
    except ValueError:
        doc = out
    return rc, doc, err


def _verify(capsys: pytest.CaptureFixture[str], root: Path, *keys: Path) -> tuple[int, dict[str, Any]]:
    args = [a for k in (keys or (root / "keys",)) for a in ("--public-key", str(k))]
    rc, doc, _ = _cli(capsys, "verify", str(root), "--json", *args)
    return rc, doc


def _first_time(seg: Path) -> str:
    return json.loads(next(layout.iter_lines(seg))[2])["time"]


def _segs(root: Path) -> list[Path]:
    return layout.segments(root, CHAIN)


def test_prune_removes_old_segments_and_the_chain_still_verifies(
    journal_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = journal_dir
    segs = _segs(root)
    assert len(segs) >= 4
    before = _first_time(segs[2])  # every event of segments 0 and 1 is older
    gone = sum(1 for s in segs[:2] for _ in layout.iter_lines(s))
    rc, doc, _ = _cli(capsys, "prune", str(root), "--before", before, "--dry-run")
    assert rc == 0 and doc["chains"][0]["removed"] == [s.name for s in segs[:2]] and all(s.exists() for s in segs)
    rc, doc, _ = _cli(capsys, "prune", str(root), "--before", before)
    assert rc == 0 and doc["chains"][0]["through_seq"] == gone, doc
    assert not segs[0].exists() and not segs[1].exists() and segs[2].exists()
    rc, rep = _verify(capsys, root)
    c = rep["chains"][0]
    assert rc == 0 and rep["ok"] and c["status"] == "intact", rep
    assert c["first_seq"] == gone + 1 and c["pruned"]["events"] == gone and c["pruned"]["through_seq"] == gone
    # the human report says so too
    main(["audit", "verify", str(root), "--public-key", str(root / "keys")])
    assert f"pruned: {gone} events through seq {gone}" in capsys.readouterr().out

    # a second prune adds to the first: the record counts every removed event
    before2 = _first_time(segs[3])
    gone2 = gone + sum(1 for _ in layout.iter_lines(segs[2]))
    rc, doc, _ = _cli(capsys, "prune", str(root), "--before", before2)
    assert rc == 0 and doc["chains"][0]["events_pruned_total"] == gone2
    rc, rep = _verify(capsys, root)
    assert rc == 0 and rep["chains"][0]["pruned"]["events"] == gone2 and rep["chains"][0]["first_seq"] == gone2 + 1
    rec = json.loads((layout.chains_dir(root) / CHAIN / "PRUNED.json").read_text())
    assert [s["name"] for s in rec["segments"]] == [s.name for s in segs[:3]]
    assert all(len(s["sha256"]) == 64 and s["bytes"] > 0 for s in rec["segments"])


def test_a_prune_interrupted_before_removing_its_files_still_verifies_and_is_finished_next_time(
    journal_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = journal_dir
    segs = _segs(root)
    kept = tmp_path / "copy"
    kept.mkdir()
    for s in segs[:2]:
        shutil.copy2(s, kept / s.name)
    assert _cli(capsys, "prune", str(root), "--before", _first_time(segs[2]))[0] == 0
    for s in segs[:2]:  # as if the process died after writing PRUNED.json, before the unlinks
        shutil.copy2(kept / s.name, s)
    rc, rep = _verify(capsys, root)
    assert rc == 0 and rep["ok"] and rep["chains"][0]["first_seq"] == rep["chains"][0]["pruned"]["through_seq"] + 1
    rc, doc, _ = _cli(capsys, "prune", str(root), "--before", _first_time(segs[2]))
    assert rc == 0 and doc["chains"] == [] and not segs[0].exists() and not segs[1].exists()
    assert _verify(capsys, root)[0] == 0


def test_the_writer_resumes_a_pruned_chain(journal_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = journal_dir
    segs = _segs(root)
    assert _cli(capsys, "prune", str(root), "--before", _first_time(segs[-1]))[0] == 0
    j = Journal(make_settings(root, segment_max_bytes=8192), CHAIN)
    fill(j, 25, start=100)
    j.close()
    rc, rep = _verify(capsys, root)
    assert rc == 0 and rep["ok"] and rep["chains"][0]["closed"], rep


def _tamper_cases(root: Path, tmp_path: Path) -> dict[str, Any]:
    d = layout.chains_dir(root) / CHAIN
    other_priv, _other_pub, _ = keygen(tmp_path / "other")

    def drop_record() -> None:
        (d / "PRUNED.json").unlink()

    def edit_record() -> None:
        rec = json.loads((d / "PRUNED.json").read_text())
        rec["events"] += 1
        (d / "PRUNED.json").write_text(json.dumps(rec))

    def remove_next_segment() -> None:
        _segs(root)[0].unlink()

    def forge_record() -> None:  # a record made with a key the auditor does not trust
        from guard.audit.seal import Signer

        rec = json.loads((d / "PRUNED.json").read_text())
        body = {k: v for k, v in rec.items() if k not in ("chain", "seq", "prev", "key_id", "hash", "sig")}
        line = Signer.from_file(other_priv).seal_line(body, CHAIN, rec["seq"], rec["prev"])[0]
        (d / "PRUNED.json").write_bytes(line)

    return {
        "drop_record": (drop_record, "seq_gap"),
        "edit_record": (edit_record, "hash_mismatch"),
        "remove_next_segment": (remove_next_segment, "seq_gap"),
        "forge_record": (forge_record, "unknown_key"),
    }


@pytest.mark.parametrize(
    "case", ["drop_record", "edit_record", "remove_next_segment", "forge_record", "replay_older_record"]
)
def test_removing_anything_else_is_still_tampering(
    journal_dir: Path, tmp_path: Path, case: str, capsys: pytest.CaptureFixture[str]
) -> None:
    root = journal_dir
    segs = _segs(root)
    d = layout.chains_dir(root) / CHAIN
    assert _cli(capsys, "prune", str(root), "--before", _first_time(segs[1]))[0] == 0
    if case == "replay_older_record":  # an earlier genuine record, with later segments removed by hand
        old = (d / "PRUNED.json").read_bytes()
        assert _cli(capsys, "prune", str(root), "--before", _first_time(segs[3]))[0] == 0
        (d / "PRUNED.json").write_bytes(old)
        reason = "seq_gap"
    else:
        fn, reason = _tamper_cases(root, tmp_path)[case]
        fn()
    rc, rep = _verify(capsys, root)
    assert rc == 1 and not rep["ok"], rep
    assert rep["chains"][0]["broken"]["reason"] == reason, rep["chains"][0]["broken"]


def test_prune_refuses_a_journal_that_does_not_verify(journal_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = journal_dir
    segs = _segs(root)
    lines = segs[0].read_bytes().split(b"\n")
    lines[3] = lines[3].replace(b'"req-', b'"REQ-')
    segs[0].write_bytes(b"\n".join(lines))
    rc, _, err = _cli(capsys, "prune", str(root), "--before", _first_time(segs[-1]))
    assert rc == 1 and "does not verify" in err and "hash_mismatch" in err
    assert all(s.exists() for s in segs) and not (layout.chains_dir(root) / CHAIN / "PRUNED.json").exists()


def test_prune_keeps_what_a_sink_has_not_delivered(journal_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = journal_dir
    segs = _segs(root)
    before = _first_time(segs[2])
    through = sum(1 for s in segs[:2] for _ in layout.iter_lines(s))
    cursors = root / "cursors"
    cursors.mkdir()
    (cursors / "splunk.json").write_text(
        json.dumps({"sink": "splunk", "chains": {CHAIN: {"segment": segs[1].name, "offset": 0, "seq": through - 1}}})
    )
    rc, _, err = _cli(capsys, "prune", str(root), "--before", before)
    assert rc == 1 and "splunk (at seq" in err and all(s.exists() for s in segs)
    (cursors / "splunk.json").write_text(
        json.dumps({"sink": "splunk", "chains": {CHAIN: {"segment": segs[2].name, "offset": 0, "seq": through}}})
    )
    assert _cli(capsys, "prune", str(root), "--before", before)[0] == 0 and not segs[1].exists()


def test_prune_usage_errors_exit_2(journal_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _cli(capsys, "prune", str(journal_dir), "--before", "last tuesday")[0] == 2
    assert _cli(capsys, "prune", str(tmp_path / "nothing"), "--before", "2026-01-01")[0] == 2
    shutil.move(journal_dir / "keys" / "signing-key.pem", tmp_path / "k.pem")
    rc, _, err = _cli(capsys, "prune", str(journal_dir), "--before", "2026-01-01")
    assert rc == 2 and "--signing-key" in err
