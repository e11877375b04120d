"""Per-response receipts through the running proxy: every answer (plain, streamed, refused) names its record's
leaf in ``x-guard-audit-leaf``; ``GET /audit/v1/proof`` on the admin listener returns a receipt that
``guard audit verify-receipt`` checks offline with only the public key; every altered or forged receipt is
refused; a rewritten history signed again with the real key is caught by a kept checkpoint (fork)."""

from __future__ import annotations

import base64
import copy
import json
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from guard.audit import logtree
from guard.audit import note as N
from guard.audit.proofs import ProofError, receipt, verify_receipt
from guard.audit.schema import journal_errors
from guard.audit.seal import keygen, load_public_keys
from tests.audit.proxy_helpers import CHAT, GUARD, chat, journal_events

ROUTES = [{"model": "gpt-*", "upstream": "local"}, {"model": "internal-*", "upstream": "local"}]


def _setup(tmp_path: Path, **kw: Any) -> tuple[dict[str, Any], Path]:
    priv, pub, _ = keygen(tmp_path / "audit-keys")
    return {"dir": str(tmp_path / "audit"), "signing_key": str(priv), "checkpoint_events": 50, **kw}, pub


def _leaf(r: httpx.Response) -> tuple[str, int]:
    value = r.headers.get("x-guard-audit-leaf")
    assert value, f"no receipt header on a {r.status_code}"
    log, _, index = value.rpartition("/")
    return log, int(index)


@pytest.mark.parametrize(
    ("sealer", "start_record"),
    [("thread", "overlap"), ("process", "overlap"), ("thread", "before_forward"), ("process", "before_forward")],
)
def test_every_answer_names_its_leaf_and_the_admin_proof_verifies_offline(
    guard_factory: Callable[..., Any], tmp_path: Path, sealer: str, start_record: str
) -> None:
    audit, pub = _setup(
        tmp_path, sealer=sealer, start_record=start_record, checkpoint_seconds=3600
    )  # no checkpoint comes on its own
    g = guard_factory(routes=ROUTES, audit=audit)
    keys = list(load_public_keys([pub]).values())
    with g.client("app") as c:
        plain = chat(c, "Hello")
        with c.stream(
            "POST",
            CHAT,
            json={"model": "gpt-4o", "stream": True, "messages": [{"role": "user", "content": "story [[chunks=3]]"}]},
        ) as s:
            s.read()
            streamed = s
        refused = chat(c, "Hi", model="internal-finance")
    assert plain.status_code == 200 and streamed.status_code == 200 and refused.status_code == 403
    leaves = [_leaf(r) for r in (plain, streamed, refused)]
    assert len({log for log, _ in leaves}) == 1 and len({i for _, i in leaves}) == 3
    receipts = []
    for (log, index), r in zip(leaves, (plain, streamed, refused), strict=True):
        got = httpx.get(g.admin_url + "/audit/v1/proof", params={"log": log, "index": index}, timeout=30)
        assert got.status_code == 200, got.text
        rec = got.json()
        assert verify_receipt(rec, keys)
        event = next(
            e
            for e in journal_events(Path(audit["dir"]))
            if e["seq"] == index + 1 and e["chain"] == logtree.chain_of(log)
        )
        assert event["request_id"] == r.headers["x-guard-request-id"]
        assert event["type"] == ("exchange.denied" if r is refused else "exchange.started")
        verify_receipt(rec, keys, event=event)  # the event is the leaf the receipt proves
        receipts.append(rec)
    bad = httpx.get(g.admin_url + "/audit/v1/proof", params={"log": "x", "index": "1"}, timeout=10)
    assert bad.status_code == 400 and "error" in bad.json()
    bad = httpx.get(g.admin_url + "/audit/v1/proof", params={"log": "guard-audit/nobody", "index": "0"}, timeout=10)
    assert bad.status_code == 404 and bad.json()["error"]["code"] == "not_found"
    g.stop()
    root = Path(audit["dir"])
    assert journal_errors(root) == []  # the forced checkpoints ("receipt") are valid events of the schema
    assert any(e["type"] == "audit.checkpoint" and e["checkpoint"]["reason"] == "receipt" for e in journal_events(root))
    for rec in receipts:  # the same receipt from disk after shutdown, through the CLI
        assert receipt(root, rec["log"], rec["index"])["leaf_hash"] == rec["leaf_hash"]


@pytest.mark.parametrize("sealer", ["thread", "process"])
def test_with_batch_durability_the_record_is_proven_by_request_id_header_or_not(
    guard_factory: Callable[..., Any], tmp_path: Path, sealer: str
) -> None:
    """``durability: batch``: the thread journal names the leaf in the header; the sealer process does not (its
    acknowledgements come only for records a request waits for). Either way ``guard audit proof --request-id``
    finds the record the header would name and returns a receipt that verifies with the event."""
    audit, pub = _setup(tmp_path, sealer=sealer, durability="batch")
    g = guard_factory(routes=ROUTES, audit=audit)
    with g.client("app") as c:
        answered = chat(c, "Hello")
        refused = chat(c, "Hi", model="internal-finance")
    assert answered.status_code == 200 and refused.status_code == 403
    g.stop()
    root = Path(audit["dir"])
    keys = list(load_public_keys([pub]).values())
    for r, kind in ((answered, "exchange.started"), (refused, "exchange.denied")):
        rid = r.headers["x-guard-request-id"]
        if sealer == "thread":
            header = _leaf(r)
        else:
            assert "x-guard-audit-leaf" not in r.headers
        got = subprocess.run(
            [GUARD, "audit", "proof", str(root), "--request-id", rid, "--with-event"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert got.returncode == 0, got.stderr
        rec = json.loads(got.stdout)
        assert rec["event"]["request_id"] == rid and rec["event"]["type"] == kind
        assert verify_receipt(rec, keys, event=rec["event"])  # raises ProofError when it does not hold
        if sealer == "thread":
            assert (rec["log"], rec["index"]) == header
    missing = subprocess.run(
        [GUARD, "audit", "proof", str(root), "--request-id", "no-such-request"], capture_output=True, text=True
    )
    assert missing.returncode == 1 and "no-such-request" in missing.stderr
    both = subprocess.run(
        [GUARD, "audit", "proof", str(root), "--request-id", "x", "--log", "y", "--index", "0"],
        capture_output=True,
        text=True,
    )
    assert both.returncode == 2


def _journal(tmp_path: Path, n: int = 40) -> tuple[Path, Path]:
    import asyncio

    from guard.audit.journal import Journal
    from tests.audit.conftest import make_settings

    priv, pub, _ = keygen(tmp_path / "keys")
    root = tmp_path / "audit"
    j = Journal(make_settings(root, signing_key=priv, checkpoint_events=8), "w1")

    async def fill() -> None:
        for i in range(n):
            await j.append({"type": "test.event", "n": i})

    asyncio.run(fill())
    j.close()
    return root, pub


def test_every_altered_or_forged_receipt_is_refused(tmp_path: Path) -> None:
    root, pub = _journal(tmp_path)
    keys = list(load_public_keys([pub]).values())
    good = receipt(root, "guard-audit/w1", 13)
    verify_receipt(good, keys)
    rogue = N.Signer("guard-audit/w1", Ed25519PrivateKey.generate())
    cp = N.parse_checkpoint(N.parse(good["checkpoint"]).text)

    def changed(**kw: Any) -> dict[str, Any]:
        r = copy.deepcopy(good)
        r.update(kw)
        return r

    flipped = [
        base64.b64encode(bytes([base64.b64decode(h)[0] ^ 1]) + base64.b64decode(h)[1:]).decode()
        for h in good["inclusion_proof"]
    ]
    other_leaf = receipt(root, "guard-audit/w1", 14)["leaf_hash"]
    forged = [
        changed(leaf_hash=other_leaf),  # another event's leaf
        changed(index=12),
        changed(index=14),
        changed(index=good["tree_size"]),  # another position
        changed(tree_size=good["tree_size"] + 1),
        changed(tree_size=good["tree_size"] - 1),
        changed(inclusion_proof=good["inclusion_proof"][:-1]),  # truncated
        changed(inclusion_proof=[*good["inclusion_proof"], good["inclusion_proof"][0]]),  # extended
        changed(checkpoint=good["checkpoint"].replace("w1\n", "w2\n", 1)),  # another log's name, same signature
        changed(log="guard-audit/w2"),
        # a checkpoint of the same size and root, signed by a key the auditor does not trust
        changed(checkpoint=N.Checkpoint(cp.origin, cp.size, cp.root).sign([rogue])),
        # the root replaced by one the forger computed for its own leaf, signed by it
        changed(leaf_hash=other_leaf, checkpoint=N.Checkpoint(cp.origin, cp.size, b"\0" * 32).sign([rogue])),
    ]
    forged += [
        changed(inclusion_proof=[*flipped[:i], flipped[i], *good["inclusion_proof"][i + 1 :]])
        for i in range(len(flipped))
    ]
    for i, rec in enumerate(forged):
        with pytest.raises(ProofError):
            verify_receipt(rec, keys)
            pytest.fail(f"forged receipt {i} verified")
    event = next(e for e in journal_events(root) if e["seq"] == 15)
    with pytest.raises(ProofError):
        verify_receipt(good, keys, event=event)  # an event that is not the proven leaf


def test_a_history_rewritten_and_signed_again_with_the_real_key_is_a_fork(tmp_path: Path) -> None:
    """A writer gone wrong (it holds the key) rewrites event 5 and signs every checkpoint again. Locally the
    journal is consistent; the checkpoint an auditor kept from before (a receipt's) shows the fork, in
    `guard audit verify --checkpoint` and in `guard audit consistency`."""
    from guard.audit.seal import Signer

    root, pub = _journal(tmp_path)
    kept = tmp_path / "kept.note"
    kept.write_text(receipt(root, "guard-audit/w1", 9)["checkpoint"])
    signer = Signer.from_file(tmp_path / "keys" / "signing-key.pem")
    note_signer = N.Signer("guard-audit/w1", signer.private)
    from guard.audit import layout
    from guard.audit.merkle import CompactRange

    prev, last_cp, tree, recs = "0" * 64, "", CompactRange(), []
    for seg in layout.segments(root, "w1"):
        out = []
        for raw in seg.read_bytes().splitlines():
            e = json.loads(raw)
            e.pop("hash")
            if e["seq"] == 5:
                e["n"] = "rewritten"
            if e["type"] == "audit.checkpoint":
                e["checkpoint"].update(head=prev, prev_checkpoint=last_cp)
            line, h, leaf = signer.seal_event(e, "w1", e["seq"], prev)
            prev = h
            tree.append(leaf)
            if e["type"] == "audit.checkpoint":
                last_cp = h
                recs.append(
                    {
                        "size": tree.size,
                        "note": N.Checkpoint("guard-audit/w1", tree.size, tree.root()).sign([note_signer]),
                        "range": [],
                    }
                )
            out.append(line)
        seg.write_bytes(b"".join(out))
    d = layout.chains_dir(root) / "w1"
    (d / logtree.NOTES).write_text("".join(json.dumps(r) + "\n" for r in recs))
    (d / logtree.LATEST).write_text(recs[-1]["note"])
    latest = tmp_path / "latest.note"
    latest.write_text(recs[-1]["note"])

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([GUARD, "audit", *args], capture_output=True, text=True, timeout=60)

    assert run("verify", str(root), "--public-key", str(pub)).returncode == 0  # locally all of a piece
    p = run("verify", str(root), "--public-key", str(pub), "--checkpoint", str(kept), "--json")
    assert p.returncode == 1 and json.loads(p.stdout)["chains"][0]["broken"]["reason"] == "fork", p.stdout
    p = run("consistency", str(kept), str(latest), "--journal", str(root), "--key", str(pub))
    assert p.returncode == 1 and "NOT CONSISTENT" in p.stdout, p.stdout + p.stderr


def test_checkpoints_deleted_while_guard_was_down_are_never_signed_over(tmp_path: Path) -> None:
    """Someone without the key deletes the signed checkpoints and edits events while Guard is stopped: the
    restarted writer does not sign that state as if it were its own; the chain reads `truncated` at its
    recovery checkpoint, and without a restart at its end."""
    from guard.audit import layout
    from guard.audit.journal import Journal
    from guard.audit.verify import verify_dir
    from tests.audit.conftest import make_settings

    root, pub = _journal(tmp_path)
    keys = load_public_keys([pub])
    d = layout.chains_dir(root) / "w1"
    (d / logtree.NOTES).unlink()
    (d / logtree.LATEST).unlink()
    assert verify_dir(root, keys, jobs=1).chains[0].broken.reason == "truncated"  # type: ignore[union-attr]
    j = Journal(make_settings(root, signing_key=tmp_path / "keys" / "signing-key.pem"), "w1")
    j.close()
    c = verify_dir(root, keys, jobs=1).chains[0]
    assert c.broken is not None and c.broken.reason == "truncated" and "checkpoints gone" in c.broken.detail, c
