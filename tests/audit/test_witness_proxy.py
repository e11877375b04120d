"""A Guard (real mTLS proxy) answering requests, with two witnesses and a TSA on loopback: its checkpoints end up
cosigned by both and timestamped; /readyz reports the notary; `guard audit verify` checks it all."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from guard.audit import layout, logtree
from guard.audit.notary import read_records
from guard.audit.seal import keygen
from tests.audit.proxy_helpers import chat
from tests.audit.tsa_server import LocalTsa
from tests.audit.witness_helpers import start_witness

ROUTES = [{"model": "gpt-*", "upstream": "local"}]


def _log_line(pub: Path) -> str:
    out = subprocess.run([sys.executable, "-m", "guard.cli", "audit", "log-key", "--public-key", str(pub)],
                         capture_output=True, text=True, check=True)
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
                "dir": str(tmp_path / "audit"), "signing_key": str(priv), "checkpoint_events": 4,
                "witnesses": [{"url": w.url, "key": w.vkey} for w in (w1, w2)], "witness_quorum": 2,
                "timestamp": {"url": tsa.url, "ca": str(tsa.ca)}, "notary_on_failure": "block",
            }
            g = guard_factory(routes=ROUTES, audit=audit)
            with g.client("app") as c:
                for i in range(6):
                    assert chat(c, f"hello {i}").status_code == 200
            ready = httpx.get(g.admin_url + "/readyz", timeout=10)
            assert ready.json()["checks"]["audit_notary"] is True
            g.stop()
            root = Path(g.config.audit.dir)
            (chain,) = layout.chain_names(root)
            last = read_records(root, chain)[-1]
            assert last["size"] == logtree.noted_size(root, chain)  # the final checkpoint, written at close
            assert set(last["witnesses"]) == {w1.name, w2.name}, last["failed"]
            assert last["tsr"], last["timestamp_error"]
            out = subprocess.run(
                [sys.executable, "-m", "guard.cli", "audit", "verify", str(root), "--public-key", str(pub), "--json",
                 "--jobs", "1", "--witness-key", w1.vkey, "--witness-key", w2.vkey, "--tsa-ca", str(tsa.ca),
                 "--require-timestamps"],
                capture_output=True, text=True,
            )
            notary = json.loads(out.stdout)["notary"]
            assert notary["ok"], notary
            assert out.returncode == 0, out.stdout[-3000:]  # the journal itself verifies too
            assert notary["chains"][0]["witnessed_size"] == last["size"]
    finally:
        w1.stop()
        w2.stop()
