"""Evidence pack: one zip an auditor can take away and check with `guard audit verify PACK.zip`.

    events.jsonl                  the selected events as the journal holds them (hash, chain, seq)
    receipts.jsonl                per event (same order), its inclusion proof in the chain's signed checkpoint
    events.jsonl.manifest.json    signed export manifest (guard.audit.export): range, filters, counts, digest
    events.<fmt>[.manifest.json]  the same events in each further format asked for (csv, ocsf, cef, ecs), signed
    keys/<key_id>.pub.pem         public keys of the signing keys named in the pack (convenience, not trust)
    SUMMARY.txt / summary.json    period, counts, journal verification result, key fingerprints, policy version

Verifying a pack needs no journal: every event's hash and its receipt (inclusion in a checkpoint signed by
a trusted key; events of the earlier format: their own Ed25519 signature), the links between events that
follow each other in a chain, and each manifest's signature and file digest. With the journal at hand,
`guard audit verify DIR --manifest` also proves the export complete for its range.
"""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization

from guard.audit import facts
from guard.audit.event import utc_now
from guard.audit.export import FORMATS, Filter, export, sign_manifest
from guard.audit.seal import (
    Signer,
    canonical,
    check_signature,
    load_public_keys,
    raw_public,
    record_problem,
)

FILE_NAMES = {
    "jsonl": "events.jsonl",
    "csv": "events.csv",
    "ocsf": "events.ocsf.jsonl",
    "cef": "events.cef",
    "ecs": "events.ecs.jsonl",
}
_MAX_MEMBER = 4 << 30  # refuse to read a member claiming more than this (zip bomb)


def key_fingerprint(public: Any) -> str:
    """SHA-256 of the raw 32-byte Ed25519 public key, hex (what a person compares out of band)."""
    return hashlib.sha256(raw_public(public)).hexdigest()


def build_pack(
    root: Path,
    flt: Filter,
    formats: list[str],
    signer: Signer,
    *,
    policy_version: str = "",
    verification: dict[str, Any] | None = None,
    extra_keys: dict[str, Any] | None = None,
) -> tuple[bytes, dict[str, Any]]:
    """The pack's bytes and its summary. ``jsonl`` is always included (it is what verify checks);
    ``verification`` is a `guard audit verify` report of the journal (``Report.to_dict()``), if one was run."""
    fmts = ["jsonl"] + [f for f in dict.fromkeys(formats) if f != "jsonl"]
    for f in fmts:
        if f not in FORMATS:
            raise ValueError(f"format must be among {FORMATS}")
    buf = io.BytesIO()
    summary: dict[str, Any] = {}
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        key_ids: set[str] = {signer.key_id}
        for fmt in fmts:
            out = io.StringIO()
            body = export(root, flt, fmt, out)
            data = out.getvalue().encode()
            name = FILE_NAMES[fmt]
            body["export"] = name
            m = sign_manifest(body, hashlib.sha256(data).hexdigest(), signer)
            z.writestr(name, data)
            z.writestr(name + ".manifest.json", json.dumps(m, indent=2, ensure_ascii=False) + "\n")
            if fmt == "jsonl":
                z.writestr("receipts.jsonl", _receipts(root, data))
                summary = _summary(data, m, policy_version, verification)
                key_ids |= set(summary["key_ids"])
        keys = {signer.key_id: signer.public, **(extra_keys or {})}
        summary["keys"] = [
            {"key_id": k, "sha256": key_fingerprint(keys[k])}
            if k in keys
            else {"key_id": k, "sha256": "(public key not at hand)"}
            for k in sorted(key_ids)
        ]
        for k in sorted(key_ids):
            if k in keys:
                pem = keys[k].public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
                z.writestr(f"keys/{k}.pub.pem", pem)
        summary["formats"] = fmts
        z.writestr("summary.json", json.dumps(summary, indent=2, ensure_ascii=False) + "\n")
        z.writestr("SUMMARY.txt", summary_text(summary))
    return buf.getvalue(), summary


def _receipts(root: Path, events: bytes) -> bytes:
    """One receipt per event line of the earlier-format-free kind (no ``sig``): its inclusion proof."""
    from guard.audit.logtree import origin_for
    from guard.audit.proofs import ProofError, receipt

    out = []
    for line in events.splitlines():
        e = json.loads(line)
        if "sig" in e:
            out.append(b"{}\n")
            continue
        try:
            rec = receipt(root, origin_for(e["chain"]), e["seq"] - 1)
        except ProofError as err:
            rec = {"log": origin_for(e["chain"]), "index": e["seq"] - 1, "error": str(err)}
        out.append(json.dumps(rec, separators=(",", ":")).encode() + b"\n")
    return b"".join(out)


def _summary(
    data: bytes, manifest: dict[str, Any], policy_version: str, verification: dict[str, Any] | None
) -> dict[str, Any]:
    by_verdict: dict[str, int] = {}
    key_ids: set[str] = set()
    policies: set[str] = set()
    for line in data.splitlines():
        e = json.loads(line)
        v = facts.verdict(e)
        if v:
            by_verdict[v] = by_verdict.get(v, 0) + 1
        key_ids.add(str(e.get("key_id", "")))
        for d in (e.get("decisions") or {}).values():
            if isinstance(d, dict) and d.get("policy_version"):
                policies.add(str(d["policy_version"]))
    ver = None
    if verification is not None:
        ver = {
            "ok": verification.get("ok"),
            "events": verification.get("events"),
            "chains": [
                {"chain": c["chain"], "status": c["status"], "last_seq": c["last_seq"], "broken": c.get("broken")}
                for c in verification.get("chains", [])
            ],
        }
    return {
        "generated": utc_now(),
        "range": manifest["range"],
        "filters": manifest["filters"],
        "counts": {
            "events": manifest["counts"]["exported"],
            "scanned": manifest["counts"]["scanned"],
            "by_type": manifest["counts"]["by_type"],
            "by_verdict": by_verdict,
        },
        "chains": manifest["chains"],
        "journal_verification": ver,
        "policy_version_in_force": policy_version,
        "policy_versions_in_events": sorted(policies),
        "key_ids": sorted(k for k in key_ids if k),
        "manifest_hash": manifest["hash"],
        "manifest_key_id": manifest["key_id"],
    }


def summary_text(s: dict[str, Any]) -> str:
    r = s["range"]
    lines = [
        "Guard audit evidence pack",
        "",
        f"Generated:        {s['generated']}",
        f"Period:           {r.get('since') or '(start)'} <= time < {r.get('until') or '(now)'}",
        f"Filters:          {', '.join(f'{k}={v}' for k, v in s['filters'].items() if v) or 'none'}",
        f"Events:           {s['counts']['events']} (of {s['counts']['scanned']} in the journal)",
    ]
    for k, v in sorted(s["counts"]["by_type"].items()):
        lines.append(f"  {k:<28}{v}")
    for k, v in sorted(s["counts"]["by_verdict"].items()):
        lines.append(f"  exchanges {k:<18}{v}")
    ver = s.get("journal_verification")
    if ver is None:
        lines.append("Journal verified: not checked when the pack was made")
    else:
        lines.append(f"Journal verified: {'INTACT' if ver['ok'] else 'TAMPERED'} ({ver['events']} events)")
        for c in ver["chains"]:
            b = c.get("broken")
            extra = f": {b['reason']} at seq {b['seq']} ({b['file']}:{b['line']})" if b else ""
            lines.append(f"  chain {c['chain']}: {c['status']} through seq {c['last_seq']}{extra}")
    lines.append(f"Policy in force:  {s.get('policy_version_in_force') or '(not known)'}")
    if s.get("policy_versions_in_events"):
        lines.append(f"Policy versions in the events: {', '.join(s['policy_versions_in_events'])}")
    lines.append("Signing keys (key_id, SHA-256 of the raw Ed25519 public key):")
    lines += [f"  {k['key_id']}  {k['sha256']}" for k in s.get("keys", [])]
    lines += [
        f"Manifest:         events.jsonl.manifest.json (hash {s['manifest_hash'][:16]}..., key {s['manifest_key_id']})",
        "",
        "Check it: guard audit verify THIS.zip --public-key <the journal's public key>",
        "",
    ]
    return "\n".join(lines)


# --- verifying a pack -----------------------------------------------------------------------------------


def _read(z: zipfile.ZipFile, name: str) -> bytes:
    info = z.getinfo(name)
    if info.file_size > _MAX_MEMBER:
        raise ValueError(f"{name}: member too large")
    return z.read(info)


def pack_keys(path: Path) -> dict[str, Any]:
    """The public keys carried inside a pack (for --trust-local-keys: not independent evidence)."""
    import tempfile

    with zipfile.ZipFile(path) as z, tempfile.TemporaryDirectory() as tmp:
        for n in z.namelist():
            if n.startswith("keys/") and n.endswith(".pub.pem") and "/" not in n[5:]:
                (Path(tmp) / n[5:]).write_bytes(_read(z, n))
        return load_public_keys([Path(tmp)])


def verify_pack(path: Path, keys: dict[str, Any]) -> dict[str, Any]:
    """Check a pack without the journal: every event's hash and signature, links between consecutive
    events of a chain, and every manifest (signature, file digest, counts). Returns a report with ``ok``."""
    problems: list[str] = []
    chains: dict[str, dict[str, Any]] = {}
    events = 0
    try:
        z = zipfile.ZipFile(path)
    except (OSError, zipfile.BadZipFile) as e:
        return {"ok": False, "pack": str(path), "events": 0, "chains": {}, "problems": [f"not a pack: {e}"]}
    with z:
        names = set(z.namelist())
        if "events.jsonl" not in names or "events.jsonl.manifest.json" not in names:
            return {
                "ok": False,
                "pack": str(path),
                "events": 0,
                "chains": {},
                "problems": ["events.jsonl or its manifest is missing"],
            }
        for name in sorted(n for n in names if n.endswith(".manifest.json")):
            problems += _check_manifest(z, name, names, keys)
        prev: dict[str, tuple[int, str]] = {}
        receipts = _read(z, "receipts.jsonl").splitlines() if "receipts.jsonl" in names else []
        for n, line in enumerate(_read(z, "events.jsonl").splitlines(), 1):
            events += 1
            why = _event_problem(line, keys, receipts[n - 1] if n <= len(receipts) else b"")
            if why:
                problems.append(f"events.jsonl:{n}: {why}")
                continue
            ev = json.loads(line)
            c = chains.setdefault(ev["chain"], {"events": 0, "first_seq": ev["seq"], "last_seq": ev["seq"], "links": 0})
            c["events"] += 1
            c["last_seq"] = ev["seq"]
            last = prev.get(ev["chain"])
            if last is not None:
                if ev["seq"] <= last[0]:
                    problems.append(f"events.jsonl:{n}: chain {ev['chain']} seq {ev['seq']} out of order")
                elif ev["seq"] == last[0] + 1:
                    c["links"] += 1
                    if ev["prev"] != last[1]:
                        problems.append(f"events.jsonl:{n}: broken_link: seq {ev['seq']} does not follow seq {last[0]}")
            prev[ev["chain"]] = (ev["seq"], ev["hash"])
        m = json.loads(_read(z, "events.jsonl.manifest.json"))
        if m.get("counts", {}).get("exported") != events:
            problems.append(f"manifest says {m.get('counts', {}).get('exported')} events, events.jsonl holds {events}")
        for chain, mc in (m.get("chains") or {}).items():
            got = chains.get(chain, {}).get("events", 0)
            if mc.get("exported") != got:
                problems.append(f"chain {chain}: manifest says {mc.get('exported')} events, the pack holds {got}")
    return {
        "ok": not problems,
        "pack": str(path),
        "events": events,
        "chains": chains,
        "problems": problems,
        "manifest": {"range": m.get("range"), "filters": m.get("filters"), "key_id": m.get("key_id")},
    }


def _check_manifest(z: zipfile.ZipFile, name: str, names: set[str], keys: dict[str, Any]) -> list[str]:
    try:
        m = json.loads(_read(z, name))
    except ValueError:
        return [f"{name}: not JSON"]
    why = record_problem(m, keys) if isinstance(m, dict) else "hash_mismatch"
    if why == "unknown_key":
        return [f"{name}: signed by unknown key {m.get('key_id')!r}"]
    if why is not None:
        return [f"{name}: signature does not verify ({why})"]
    target = m.get("export")
    if target not in names or name != f"{target}.manifest.json":
        return [f"{name}: names {target!r}, which is not beside it in the pack"]
    if hashlib.sha256(_read(z, target)).hexdigest() != m.get("export_sha256"):
        return [f"{target}: not the file its manifest describes"]
    return []


def _event_problem(line: bytes, keys: dict[str, Any], receipt_line: bytes = b"") -> str | None:
    try:
        e = json.loads(line)
        h, sig, kid = e["hash"], e.get("sig"), e["key_id"]
        _ = (e["chain"], e["seq"], e["prev"])  # must be present
    except (ValueError, KeyError, TypeError):
        return "malformed"
    key = keys.get(kid)
    if key is None:
        return f"unknown_key {kid!r}"
    body = {k: v for k, v in e.items() if k not in ("hash", "sig")}
    try:
        if hashlib.sha256(canonical(body)).hexdigest() != h:
            return f"hash_mismatch (chain {e['chain']} seq {e['seq']})"
    except (TypeError, ValueError, UnicodeError):
        return "hash_mismatch"
    if sig is None:  # covered by the chain's signed checkpoint: the pack carries the inclusion proof
        from guard.audit.proofs import ProofError, verify_receipt

        try:
            rec = json.loads(receipt_line) if receipt_line else {}
            if "error" in rec:
                return f"no signed checkpoint covers chain {e['chain']} seq {e['seq']}: {rec['error']}"
            verify_receipt(rec, keys.values(), event=e)
        except (ValueError, ProofError) as err:
            return f"bad_signature (chain {e['chain']} seq {e['seq']}: receipt: {err})"
        return None
    if not check_signature(key, h, sig):
        return f"bad_signature (chain {e['chain']} seq {e['seq']})"
    return None


def policy_version_from_config(config_path: Path | None) -> str:
    if config_path is None:
        return ""
    from guard.config import load_config
    from guard.policy.loader import load_policy

    s = load_config(config_path).policy
    return load_policy(s.model, list(s.rules)).version
