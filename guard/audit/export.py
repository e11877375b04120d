"""Export a time range of the journal for an auditor, with a signed manifest that proves what it covers.

The manifest records the range, the filters, counts, and per chain the first and last event of the range
(seq and hash) and the hash of the event just before it, so anyone holding the journal (or the SIEM copy)
and the public key can check that the export is complete for its range and was not edited.
"""

from __future__ import annotations

import csv
import fnmatch
import hashlib
import io
import json
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from guard.audit import facts, layout
from guard.audit.content_keys import ContentKeys, reveal
from guard.audit.event import utc_now
from guard.audit.formats import CSV_COLUMNS, effect, to_cef, to_csv_row, to_ecs, to_ocsf
from guard.audit.seal import Signer, canonical

FORMATS = ("jsonl", "csv", "ocsf", "cef", "ecs")


def parse_time(s: str) -> str:
    """A date or RFC 3339 time -> the journal's own UTC microsecond form (so strings compare in time order)."""
    t = s.strip().replace("Z", "+00:00").replace("z", "+00:00")
    try:
        d = datetime.fromisoformat(t)
    except ValueError:
        raise ValueError(f"not a date or RFC 3339 time: {s!r}") from None
    if d.tzinfo is None:
        d = d.replace(tzinfo=UTC)
    return d.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class Filter:
    """Which events an export holds. ``decision`` is allow | deny (as export always had) or a console
    verdict: allowed | denied | blocked (guard.audit.facts). The other filters are the console's search
    fields; ``describe`` names only those set beyond the original three, so older manifests read the same."""

    EXTRA = ("group", "upstream", "api", "type", "screen", "finding", "rule")

    def __init__(
        self,
        since: str | None = None,
        until: str | None = None,
        principal: str | None = None,
        model: str | None = None,
        decision: str | None = None,
        **extra: str | None,
    ) -> None:
        self.since = parse_time(since) if since else None
        self.until = parse_time(until) if until else None
        self.principal, self.model, self.decision = principal, model, decision
        unknown = set(extra) - set(self.EXTRA)
        if unknown:
            raise ValueError(f"unknown export filter(s): {', '.join(sorted(unknown))}")
        self.extra = {k: v for k, v in extra.items() if v}

    def in_range(self, e: dict[str, Any]) -> bool:
        t = e.get("time", "")
        return (self.since is None or t >= self.since) and (self.until is None or t < self.until)

    def matches(self, e: dict[str, Any]) -> bool:
        if self.principal:
            p = e.get("principal") or {}
            if self.principal not in (p.get("cn"), p.get("subject"), p.get("spiffe_id"), p.get("fingerprint")):
                return False
        if self.model and not fnmatch.fnmatchcase(str(e.get("model", "")), self.model):
            return False
        if self.decision:
            if self.decision in ("allow", "deny"):
                if effect(e) != self.decision:
                    return False
            elif facts.verdict(e) != self.decision:
                return False
        return not self.extra or self._extra_match(e)

    def _extra_match(self, e: dict[str, Any]) -> bool:
        x = self.extra
        if "group" in x and x["group"] not in facts.groups(e):
            return False
        for k in ("upstream", "api", "type"):
            if k in x and str(e.get(k, "")) != x[k]:
                return False
        if "screen" in x and x["screen"] not in facts.blocked_screens(e):
            return False
        if "finding" in x and x["finding"] not in facts.findings(e):
            return False
        return "rule" not in x or facts.rule(e) == x["rule"]

    def describe(self) -> dict[str, Any]:
        return {"principal": self.principal, "model": self.model, "decision": self.decision, **self.extra}

    @classmethod
    def from_manifest(cls, r: dict[str, Any], flt: dict[str, Any]) -> Filter:
        extra = {k: v for k, v in flt.items() if k in cls.EXTRA}
        return cls(r.get("since"), r.get("until"), flt.get("principal"), flt.get("model"), flt.get("decision"), **extra)


class _Writer:
    def __init__(self, fmt: str, out: IO[str]) -> None:
        self.fmt, self.out = fmt, out
        self.csv = csv.writer(out) if fmt == "csv" else None
        if self.csv:
            self.csv.writerow(CSV_COLUMNS)

    def write(self, e: dict[str, Any]) -> None:
        if self.csv:
            self.csv.writerow(to_csv_row(e))
        elif self.fmt == "cef":
            self.out.write(to_cef(e) + "\n")
        else:
            obj = to_ocsf(e) if self.fmt == "ocsf" else to_ecs(e) if self.fmt == "ecs" else e
            self.out.write(json.dumps(obj, separators=(",", ":"), ensure_ascii=False) + "\n")


def export(
    root: Path,
    flt: Filter,
    fmt: str,
    out: IO[str],
    progress: Callable[[int], None] | None = None,
    content_keys: ContentKeys | None = None,
) -> dict[str, Any]:
    """Write matching events to ``out``; return the (unsigned) manifest body. With ``content_keys`` captured
    texts are opened (or marked ``shredded`` where the period's key is gone); without, events are written as
    the journal holds them (sealed texts stay ciphertext, and jsonl lines keep hashing to their ``hash``)."""
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}")
    w = _Writer(fmt, out)
    chains: dict[str, dict[str, Any]] = {}
    by_type: dict[str, int] = {}
    scanned = written = 0
    for chain, _seg, e in layout.iter_events(root):
        scanned += 1
        if progress and scanned % 2000 == 0:
            progress(scanned)
        c = chains.setdefault(chain, {"events_in_range": 0, "exported": 0, "before_range": None})
        if not flt.in_range(e):
            if flt.since and e.get("time", "") < flt.since:
                c["before_range"] = {"seq": e.get("seq"), "hash": e.get("hash")}
            continue
        c["events_in_range"] += 1
        c.setdefault("first", {"seq": e.get("seq"), "hash": e.get("hash"), "time": e.get("time")})
        c["last"] = {"seq": e.get("seq"), "hash": e.get("hash"), "time": e.get("time")}
        if not flt.matches(e):
            continue
        c["exported"] += 1
        written += 1
        by_type[e.get("type", "")] = by_type.get(e.get("type", ""), 0) + 1
        w.write(reveal(e, content_keys) if content_keys is not None else e)
    if progress:
        progress(scanned)
    return {
        "manifest_version": "1",
        "generated": utc_now(),
        "source": str(root),
        "format": fmt,
        "range": {"since": flt.since, "until": flt.until, "semantics": "since <= time < until"},
        "filters": flt.describe(),
        "counts": {"scanned": scanned, "exported": written, "by_type": by_type},
        "chains": chains,
        **({"content": "opened"} if content_keys is not None else {}),
    }


def sign_manifest(manifest: dict[str, Any], export_bytes_sha256: str, signer: Signer) -> dict[str, Any]:
    """Add the export file digest, key_id, hash (SHA-256 of the JCS form) and an Ed25519 signature."""
    m = dict(manifest, export_sha256=export_bytes_sha256, key_id=signer.key_id)
    digest = hashlib.sha256(canonical(m)).digest()
    m["hash"], m["sig"] = digest.hex(), signer.sign(digest)
    return m


def run_export(
    root: Path,
    flt: Filter,
    fmt: str,
    out_path: Path | None,
    signer: Signer,
    content_keys: ContentKeys | None = None,
    progress: Any = None,
) -> dict[str, Any]:
    """Export to ``out_path`` (or stdout) and write ``<out>.manifest.json`` beside it; return the manifest.
    ``progress``: a guard.audit.progress.Progress (called with events scanned, finished at the end)."""
    if out_path is None:
        buf = io.StringIO()
        body = export(root, flt, fmt, buf, progress, content_keys)
        data = buf.getvalue().encode()
        sys.stdout.write(buf.getvalue())
        manifest_path = Path(f"guard-audit-export-{utc_now()[:19].replace(':', '')}.manifest.json")
    else:
        with open(out_path, "w", encoding="utf-8", newline="") as f:
            body = export(root, flt, fmt, f, progress, content_keys)
        data = Path(out_path).read_bytes()
        manifest_path = Path(f"{out_path}.manifest.json")
    if progress is not None:
        progress.finish(body["counts"]["scanned"])
    body["export"] = out_path.name if out_path else "-"
    m = sign_manifest(body, hashlib.sha256(data).hexdigest(), signer)
    manifest_path.write_text(json.dumps(m, indent=2, ensure_ascii=False) + "\n")
    m["manifest_path"] = str(manifest_path)
    return m


def check_manifest(
    path: Path, keys: dict[str, Any], root: Path | None = None, content_keys: ContentKeys | None = None
) -> list[str]:
    """Problems with an export and its manifest (empty when all is well).

    Checks the manifest's signature, that the export file beside it is the one it describes, and, given the
    journal ``root``, that exporting the same range and filters again yields exactly that file — so the
    export is complete for its range and holds nothing else. An export with opened content (``"content":
    "opened"``) is redone with ``content_keys`` (default ``<root>/keys/content``): once a period's key is
    shredded, that export no longer matches (check exports before their content is shredded).
    """
    try:
        m = json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        return [f"manifest unreadable: {e}"]
    from guard.audit.seal import record_problem

    why = record_problem(m, keys) if isinstance(m, dict) else "hash_mismatch"
    if why == "unknown_key":
        return [f"manifest signed by unknown key {m.get('key_id')!r}"]
    if why is not None:
        return ["manifest signature does not verify"]
    problems = []
    if m.get("export") not in (None, "-"):
        f = Path(path).parent / m["export"]
        if not f.exists() or hashlib.sha256(f.read_bytes()).hexdigest() != m.get("export_sha256"):
            problems.append(f"export file {f.name} is missing or not the one the manifest describes")
    if root is not None:
        r, flt = m.get("range", {}), m.get("filters", {})
        again = io.StringIO()
        ck = None
        if m.get("content") == "opened":
            ck = content_keys or ContentKeys(root / "keys" / "content")
        body2 = export(root, Filter.from_manifest(r, flt), m.get("format", "jsonl"), again, content_keys=ck)
        if hashlib.sha256(again.getvalue().encode()).hexdigest() != m.get("export_sha256"):
            problems.append("the journal's events for this range and these filters differ from the export")
        for chain, c in m.get("chains", {}).items():
            now = body2["chains"].get(chain, {})
            for k in ("events_in_range", "exported", "first", "last", "before_range"):
                if now.get(k) != c.get(k):
                    problems.append(
                        f"chain {chain}: {k} is {now.get(k)!r} in the journal, {c.get(k)!r} in the manifest"
                    )
    return problems
