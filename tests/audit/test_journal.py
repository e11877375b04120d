from __future__ import annotations

import asyncio
import itertools
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from guard.audit import layout
from guard.audit.journal import Journal, JournalError
from guard.audit.seal import GENESIS, event_hash, load_public_keys
from guard.audit.verify import verify_dir

from .conftest import fill, make_settings, sample


def _verify(root: Path):
    return verify_dir(root, load_public_keys([root / "keys"]), jobs=1)


def test_append_seals_chains_and_is_durable_when_it_returns(tmp_path: Path) -> None:
    j = Journal(make_settings(tmp_path), "w1")

    async def go() -> list[dict]:
        return list(await asyncio.gather(*(j.append(sample(i)) for i in range(25))))

    out = asyncio.run(go())
    seg = layout.segments(tmp_path, "w1")[0]
    on_disk = [json.loads(x) for x in seg.read_bytes().splitlines()]
    assert len(on_disk) >= 25  # events plus count checkpoints, all written before append returned
    assert {e["id"] for e in out} <= {e["id"] for e in on_disk}
    assert on_disk[0]["seq"] == 1 and on_disk[0]["prev"] == GENESIS
    for a, b in itertools.pairwise(on_disk):
        assert b["seq"] == a["seq"] + 1 and b["prev"] == a["hash"]
    assert all(event_hash(e) == e["hash"] for e in on_disk)
    j.close()
    assert _verify(tmp_path).ok


def test_count_and_interval_checkpoints_and_final_checkpoint_on_close(tmp_path: Path) -> None:
    j = Journal(make_settings(tmp_path, checkpoint_events=5, checkpoint_seconds=0.2), "w1")
    fill(j, 12)
    time.sleep(0.5)
    j.close()
    evs = [e for _, _, e in layout.iter_events(tmp_path)]
    cps = [e["checkpoint"] for e in evs if e["type"] == "audit.checkpoint"]
    assert [c["reason"] for c in cps] == ["count", "count", "interval", "close"]
    assert cps[-1]["final"] is True and cps[-1]["seq"] == evs[-2]["seq"]
    rep = _verify(tmp_path)
    assert rep.ok and rep.chains[0].closed and rep.chains[0].checkpoints == 4


def test_segments_rotate_by_size_and_the_chain_spans_them(tmp_path: Path) -> None:
    j = Journal(make_settings(tmp_path, segment_max_bytes=4096), "w1")
    fill(j, 40)
    j.close()
    assert len(layout.segments(tmp_path, "w1")) > 3
    assert _verify(tmp_path).ok


def test_a_second_process_cannot_write_the_same_chain(tmp_path: Path) -> None:
    j = Journal(make_settings(tmp_path), "w1")
    with pytest.raises(JournalError, match="another process"):
        Journal(make_settings(tmp_path), "w1")
    other = Journal(make_settings(tmp_path), "w2")  # a second chain in the same dir is fine
    fill(other, 3)
    other.close()
    j.close()
    assert {c.chain for c in _verify(tmp_path).chains} == {"w1", "w2"}


def test_restart_with_the_same_writer_id_continues_the_chain_in_a_new_segment(tmp_path: Path) -> None:
    j = Journal(make_settings(tmp_path), "w1")
    last = fill(j, 3)[-1]
    j.close()
    j2 = Journal(make_settings(tmp_path), "w1")
    nxt = j2.append_sync(sample(99))
    j2.close()
    assert nxt["seq"] == last["seq"] + 2  # after the final checkpoint
    assert len(layout.segments(tmp_path, "w1")) == 2
    assert _verify(tmp_path).ok


_CRASHER = """
import sys
from pathlib import Path
from guard.audit.journal import Journal
from guard.audit.settings import AuditSettings
from tests.audit.conftest import sample
j = Journal(AuditSettings(dir=Path(sys.argv[1]), checkpoint_events=7), "w1")
i = 0
while True:
    j.append_sync(sample(i))
    i += 1
    if i == 20:
        print("ready", flush=True)
"""


def test_kill_9_then_torn_line_is_reported_as_torn_and_restart_acknowledges_it(tmp_path: Path) -> None:
    root = tmp_path / "a"
    proc = subprocess.Popen(
        [sys.executable, "-c", _CRASHER, str(root)], stdout=subprocess.PIPE, cwd=Path(__file__).resolve().parents[2]
    )
    assert proc.stdout and proc.stdout.readline().strip() == b"ready"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    seg = layout.segments(root, "w1")[-1]
    with open(seg, "ab") as f:  # the crash cut a line in half
        f.write(b'{"schema_version":"1.0","id":"0190')
    rep = _verify(root)
    assert rep.ok and rep.chains[0].status == "torn" and not rep.chains[0].torn[0]["acknowledged"]
    j = Journal(make_settings(root), "w1")
    e = j.append_sync(sample(1000))
    j.close()
    cps = [x for _, _, x in layout.iter_events(root) if x["type"] == "audit.checkpoint"]
    rec = next(c for c in cps if c["checkpoint"]["reason"] == "recovery")["checkpoint"]["recovery"]
    assert rec["unclean_stop"] and rec["torn_segment"] == seg.name
    rep = _verify(root)
    assert rep.ok and rep.chains[0].status == "torn" and rep.chains[0].torn[0]["acknowledged"]
    assert rep.chains[0].last_seq > e["seq"]


def test_batch_durability_returns_before_fsync_and_flushes_within_the_window(tmp_path: Path) -> None:
    j = Journal(make_settings(tmp_path, durability="batch", batch_window_ms=20), "w1")

    async def go() -> dict:
        return await j.append(sample(1))

    out = asyncio.run(go())
    time.sleep(0.3)
    ids = [e["id"] for _, _, e in layout.iter_events(tmp_path)]
    assert out["id"] in ids
    j.close()


@pytest.mark.parametrize("kind", ["thread", "process"])
def test_unwaited_appends_ride_on_the_next_fsync_or_are_written_when_their_window_closes(
    tmp_path: Path, kind: str
) -> None:
    """durability fsync, ``append(wait=False)`` (exchange.completed after the answer): returns before anything is
    written and costs no fsync of its own; the next waited append's fsync covers it, in chain order; alone, it
    is written when batch_window_ms has passed."""
    from guard.audit.sealer import ProcessJournal

    settings = make_settings(tmp_path, durability="fsync", batch_window_ms=400)
    j = ProcessJournal(settings, "w1") if kind == "process" else Journal(settings, "w1")
    on_disk = lambda: [e["id"] for _, _, e in layout.iter_events(tmp_path)]  # noqa: E731

    async def go() -> tuple[dict, dict, list[str], list[str], float]:
        lazy = await j.append(sample(1), wait=False)
        await asyncio.sleep(0.05)
        before = on_disk()
        waited = await j.append(sample(2))  # durable on return, and so is everything sealed before it
        after = on_disk()
        t0 = time.monotonic()
        alone = await j.append(sample(3), wait=False)
        while alone["id"] not in on_disk():
            await asyncio.sleep(0.01)
        return lazy, waited, before, [*after, alone["id"]], time.monotonic() - t0

    try:
        lazy, waited, before, after, took = asyncio.run(go())
        assert lazy["id"] not in before
        assert after.index(lazy["id"]) < after.index(waited["id"])  # sealed first, so first in the chain
        assert 0.3 < took < 5  # written by the window (400 ms), not by an fsync of its own
    finally:
        j.close()
    assert _verify(tmp_path).ok


def _mount_tmpfs(path: Path, size: str) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        return False
    return (
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True
        ).returncode
        == 0
    )


def test_disk_full_raises_journal_error_and_the_next_append_recovers(tmp_path: Path) -> None:
    mnt = tmp_path / "small"
    if not _mount_tmpfs(mnt, "256k"):
        pytest.skip("needs root and tmpfs")
    try:
        root = mnt / "audit"
        j = Journal(make_settings(root, checkpoint_events=1000), "w1")
        fill(j, 5)
        filler = mnt / "filler"
        fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
        try:
            while os.write(fd, b"x" * 4096):
                pass
        except OSError:
            pass
        os.close(fd)
        with pytest.raises(JournalError):
            for i in range(200):
                j.append_sync(sample(i, model="x" * 2000))
        assert not j.healthy
        with pytest.raises(JournalError):  # refused while unhealthy, even once one small write would fit
            j.append_sync(sample(6))
        filler.unlink()  # space again: the writer opens a new segment with a recovery checkpoint on its own
        deadline = time.monotonic() + 5
        while not j.healthy and time.monotonic() < deadline:
            time.sleep(0.02)
        ok = j.append_sync(sample(7))
        assert j.healthy and ok["seq"] > 5
        j.close()
        rep = _verify(root)
        assert rep.ok, rep.to_dict()
        recs = [e for _, _, e in layout.iter_events(root) if e.get("checkpoint", {}).get("reason") == "recovery"]
        assert recs and recs[0]["checkpoint"]["recovery"]["write_error"]
    finally:
        subprocess.run(["umount", "-l", str(mnt)])


def test_read_only_journal_fails_closed_and_works_again_when_writable(tmp_path: Path) -> None:
    mnt = tmp_path / "ro"
    if not _mount_tmpfs(mnt, "1m"):
        pytest.skip("needs root and tmpfs")
    try:
        root = mnt / "audit"
        j = Journal(make_settings(root), "w1")
        fill(j, 2)
        j.close()
        subprocess.run(["mount", "-o", "remount,ro", str(mnt)], check=True)
        with pytest.raises(JournalError, match="Read-only"):
            Journal(make_settings(root), "w1")
        subprocess.run(["mount", "-o", "remount,rw", str(mnt)], check=True)
        j = Journal(make_settings(root), "w1")
        j.append_sync(sample(3))
        j.close()
        assert _verify(root).ok
    finally:
        subprocess.run(["umount", "-l", str(mnt)])


def test_journal_without_write_permission_fails_closed(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("switches the effective uid to nobody")
    root = tmp_path / "audit"
    root.mkdir(mode=0o755)
    os.chmod(tmp_path, 0o755)
    os.seteuid(65534)  # root ignores file modes; an ordinary service user does not
    try:
        with pytest.raises(JournalError, match="Permission denied"):
            Journal(make_settings(root), "w1")
    finally:
        os.seteuid(0)


def test_events_carry_no_signing_key_material(tmp_path: Path) -> None:
    j = Journal(make_settings(tmp_path), "w1")
    fill(j, 3)
    j.close()
    priv = (tmp_path / "keys" / "signing-key.pem").read_text()
    body = "".join(line for line in priv.splitlines() if "-----" not in line)
    from cryptography.hazmat.primitives import serialization

    key = serialization.load_pem_private_key(priv.encode(), None)
    raw = key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption())
    import base64

    for seg in layout.segments(tmp_path, "w1"):
        data = seg.read_bytes()
        assert body.encode() not in data and raw.hex().encode() not in data
        assert base64.b64encode(raw) not in data
    assert "signing" not in repr(j.signer).lower() or "key_id" in repr(j.signer)


def test_one_journal_serves_successive_event_loops_without_stalling(tmp_path: Path) -> None:
    j = Journal(make_settings(tmp_path), "w1")

    async def one(i: int) -> dict:
        return await j.append(sample(i))

    loop = asyncio.new_event_loop()
    task = loop.create_task(one(0))
    loop.stop()
    loop.run_forever()  # one turn: the append is sealed and its wake-up queued, then the loop goes away
    loop.close()
    assert not task.done()
    t0 = time.monotonic()
    for i in range(3):
        asyncio.run(one(i + 1))
    assert time.monotonic() - t0 < 2.0
    j.close()


_LOADED = """
import asyncio, sys
from pathlib import Path
from guard.audit.journal import Journal
from guard.audit.settings import AuditSettings
from tests.audit.conftest import sample
j = Journal(AuditSettings(dir=Path(sys.argv[1]), checkpoint_events=50, segment_max_bytes=65536), "w1")

async def client(k):
    i = 0
    while True:
        e = await j.append(sample(k * 1000000 + i))
        sys.stdout.write(e["id"] + "\\n")  # the 'response': only after append returned
        sys.stdout.flush()
        i += 1

async def main():
    await asyncio.gather(*(client(k) for k in range(32)))

asyncio.run(main())
"""


def test_kill_9_under_concurrent_load_loses_no_acknowledged_event(tmp_path: Path) -> None:
    root = tmp_path / "a"
    proc = subprocess.Popen(
        [sys.executable, "-c", _LOADED, str(root)], stdout=subprocess.PIPE, cwd=Path(__file__).resolve().parents[2]
    )
    assert proc.stdout
    acked = []
    while len(acked) < 3000:
        line = proc.stdout.readline()
        assert line, "writer died"
        acked.append(line.strip().decode())
    os.kill(proc.pid, signal.SIGKILL)
    rest = proc.stdout.read().decode().split()
    proc.wait()
    acked += [x for x in rest if len(x) == 36]
    written = {e["id"] for _, _, e in layout.iter_events(root)}
    missing = [x for x in acked if x not in written]
    assert not missing, f"{len(missing)} acknowledged events missing"
    rep = _verify(root)
    assert rep.ok, rep.to_dict()
    j = Journal(make_settings(root), "w1")  # the restarted writer continues the chain
    j.append_sync(sample(1))
    j.close()
    assert _verify(root).ok


def test_a_failed_open_releases_the_chain_for_the_next_try(tmp_path: Path) -> None:
    mnt = tmp_path / "full"
    if not _mount_tmpfs(mnt, "256k"):
        pytest.skip("needs root and tmpfs")
    try:
        root = mnt / "audit"
        Journal(make_settings(root), "w1").close()
        filler = mnt / "filler"
        fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
        try:
            while os.write(fd, b"x" * 4096):
                pass
        except OSError:
            pass
        os.close(fd)
        with pytest.raises(JournalError, match="No space"):  # fails after taking the chain's lock
            Journal(make_settings(root), "w1")
        filler.unlink()
        j = Journal(make_settings(root), "w1")  # same process: the failed try let go of the lock
        j.close()
    finally:
        subprocess.run(["umount", "-l", str(mnt)])


def test_signatures_are_standard_ed25519_any_library_checks() -> None:
    """Guard signs records with cryptography (OpenSSL); the signatures are standard Ed25519 and OpenSSL,
    through cryptography, accepts them; check_signature refuses a flipped bit, another key, a short sig."""
    import base64
    import hashlib

    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from guard.audit.seal import Signer, check_signature

    key, other = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    s = Signer(key)
    for i in range(50):
        d = hashlib.sha256(str(i).encode()).digest()
        sig = s.sign(d)
        assert base64.b64decode(sig) == key.sign(d)
        key.public_key().verify(base64.b64decode(sig), d)  # raises if OpenSSL disagrees
        assert check_signature(key.public_key(), d.hex(), sig)
        bad = bytearray(base64.b64decode(sig))
        bad[i % 64] ^= 1 << (i % 8)
        assert not check_signature(key.public_key(), d.hex(), base64.b64encode(bytes(bad)).decode())
        assert not check_signature(other.public_key(), d.hex(), sig)
        assert not check_signature(key.public_key(), d.hex(), base64.b64encode(bytes(bad[:63])).decode())
