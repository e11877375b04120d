"""A Guard (real mTLS proxy) answering requests, with two witnesses and a TSA on loopback: its checkpoints end up
cosigned by both and timestamped; /readyz reports the notary; `guard audit verify` checks it all; an answer's
receipt is proven against a cosigned checkpoint and `verify-receipt --witness-key` checks the quorum offline."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from guard.audit import layout, logtree
from guard.audit.cosign import WitnessKey
from guard.audit.notary import read_records
from guard.audit.proofs import verify_receipt
from guard.audit.seal import keygen, load_public_keys
from guard.audit.witnessed_receipts import check_receipt_witnesses
from tests.audit.proxy_helpers import chat
from tests.audit.tsa_server import LocalTsa
from tests.audit.witness_helpers import start_witness

ROUTES = [{"model": "gpt-*", "upstream": "local"}]


def _log_line(pub: Path) -> str:
    out = subprocess.run(
        [sys.executable, "-m", "guard.cli", "audit", "log-key", "--public-key", str(pub)],
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.strip()


def test_a_guard_under_traffic_gets_its_checkpoints_cosigned_by_two_witnesses_and_timestamped(
    guard_factory: Callable[..., Any], tmp_path: Path
) -> None:
    priv, pub, _ = keygen(tmp_path / "audit-keys")
    line = _log_line(pub)
    assert line.endswith(" guard-audit/*")
    w1 = start_witness(tmp_path, "witness.test/w1", [line])
    w2 = start_witness(tmp_path, "witness.test/w2", [line])
    try:
        with LocalTsa(tmp_path / "tsa") as tsa:
            audit = {
                "dir": str(tmp_path / "audit"),
                "signing_key": str(priv),
                "checkpoint_events": 4,
                "witnesses": [{"url": w.url, "key": w.vkey} for w in (w1, w2)],
                "witness_quorum": 2,
                "timestamp": {"url": tsa.url, "ca": str(tsa.ca)},
                "notary_on_failure": "block",
            }
            g = guard_factory(routes=ROUTES, audit=audit)
            with g.client("app") as c:
                answers = [chat(c, f"hello {i}") for i in range(6)]
            assert all(r.status_code == 200 for r in answers)
            leaf = answers[0].headers.get("x-guard-audit-leaf", "")
            ready = httpx.get(g.admin_url + "/readyz", timeout=10)
            assert ready.json()["checks"]["audit_notary"] is True
            # the admin API serves the receipt against a checkpoint both witnesses cosigned (waiting for it)
            log_id, _, index = leaf.rpartition("/")
            r = httpx.get(
                g.admin_url + "/audit/v1/proof",
                timeout=40,
                params={"log": log_id, "index": index, "witnessed": "2", "wait": "20"},
            )
            assert r.status_code == 200, r.text
            live = r.json()
            key = load_public_keys([pub])
            assert verify_receipt(live, list(key.values())).startswith(f"leaf {index} of {log_id}")
            wkeys = [WitnessKey.parse(w.vkey) for w in (w1, w2)]
            assert set(check_receipt_witnesses(live, wkeys, 2)) == {w1.name, w2.name}
            bad = httpx.get(
                g.admin_url + "/audit/v1/proof", timeout=10, params={"log": log_id, "index": index, "witnessed": "-1"}
            )
            assert bad.status_code == 400 and "error" in bad.json()
            g.stop()
            root = Path(g.config.audit.dir)
            (chain,) = layout.chain_names(root)
            last = read_records(root, chain)[-1]
            assert last["size"] == logtree.noted_size(root, chain)  # the final checkpoint, written at close
            assert set(last["witnesses"]) == {w1.name, w2.name}, last["failed"]
            assert last["tsr"], last["timestamp_error"]
            out = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "guard.cli",
                    "audit",
                    "verify",
                    str(root),
                    "--public-key",
                    str(pub),
                    "--json",
                    "--jobs",
                    "1",
                    "--witness-key",
                    w1.vkey,
                    "--witness-key",
                    w2.vkey,
                    "--tsa-ca",
                    str(tsa.ca),
                    "--require-timestamps",
                ],
                capture_output=True,
                text=True,
            )
            notary = json.loads(out.stdout)["notary"]
            assert notary["ok"], notary
            assert out.returncode == 0, out.stdout[-3000:]  # the journal itself verifies too
            assert notary["chains"][0]["witnessed_size"] == last["size"]

            # The first answer's receipt, proven against a checkpoint both witnesses cosigned, checked offline
            log_id, _, index = leaf.rpartition("/")
            assert log_id == logtree.origin_for(chain), leaf
            cli = [sys.executable, "-m", "guard.cli", "audit"]
            out = subprocess.run(
                [*cli, "proof", str(root), "--log", log_id, "--index", index, "--witnessed", "2"],
                capture_output=True,
                text=True,
            )
            assert out.returncode == 0, out.stderr
            rec = json.loads(out.stdout)
            assert rec["checkpoint"].count("\u2014 witness.test/") == 2 and rec["timestamp_token"]
            receipt = tmp_path / "receipt.json"
            receipt.write_text(json.dumps(rec))
            check = [
                *cli,
                "verify-receipt",
                str(receipt),
                "--key",
                str(pub),
                "--witness-key",
                w1.vkey,
                "--witness-key",
                w2.vkey,
            ]
            out = subprocess.run(check, capture_output=True, text=True)
            assert out.returncode == 0 and "cosigned by witness.test/w1, witness.test/w2" in out.stdout, out
            # one cosignature line altered: the quorum of two is gone, the log's own signature still holds
            lines = rec["checkpoint"].splitlines(keepends=True)
            i = next(n for n, x in enumerate(lines) if x.startswith("\u2014 witness.test/w2"))
            lines[i] = lines[i][:-10] + ("A" if lines[i][-10] != "A" else "B") + lines[i][-9:]
            receipt.write_text(json.dumps({**rec, "checkpoint": "".join(lines)}))
            out = subprocess.run(check, capture_output=True, text=True)
            assert out.returncode == 1 and "1 valid witness cosignature(s), 2 required" in out.stdout, out
            out = subprocess.run([*check, "--witness-quorum", "1"], capture_output=True, text=True)
            assert out.returncode == 0 and "cosigned by witness.test/w1" in out.stdout
    finally:
        w1.stop()
        w2.stop()
