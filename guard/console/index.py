"""The console's search index: SQLite beside the journal, built and brought up to date from it.

The index is a finding aid, never evidence: it holds each event's searchable facts and where its line is
(chain, segment, byte offset). The event page reads the line from the journal and checks it there. The
index can be deleted at any time; it is rebuilt from the journal on the next search.

Per chain the index remembers how far it has read (segment and offset); an update reads only what was
appended since. A segment it had read that is gone (pruned) or shorter than what it read, or a journal
at another place, makes it start again for that chain.
"""

from __future__ import annotations

import contextlib
import fcntl
import sqlite3
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from guard.audit import facts, layout

SCHEMA = """
CREATE TABLE IF NOT EXISTS events(
  n INTEGER PRIMARY KEY, time TEXT NOT NULL, type TEXT NOT NULL, chain TEXT NOT NULL, seq INTEGER NOT NULL,
  segment TEXT NOT NULL, offset INTEGER NOT NULL, hash TEXT, event_id TEXT, request_id TEXT,
  principal TEXT, subject TEXT, fingerprint TEXT, groups TEXT, model TEXT, upstream TEXT, api TEXT,
  operation TEXT, verdict TEXT, rule TEXT, screens TEXT, findings TEXT, status INTEGER);
CREATE TABLE IF NOT EXISTS tags(tag TEXT NOT NULL, ev INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS progress(chain TEXT PRIMARY KEY, segment TEXT, offset INTEGER, seq INTEGER);
CREATE TABLE IF NOT EXISTS meta(k TEXT PRIMARY KEY, v TEXT);
CREATE TABLE IF NOT EXISTS verify(chain TEXT PRIMARY KEY, at TEXT, status TEXT, last_seq INTEGER,
  events INTEGER, reason TEXT, detail TEXT);
"""
INDEXES = {  # made after a build from scratch (faster than keeping them up to date row by row)
    "ev_chain_seq": "events(chain, seq)",
    "ev_time": "events(time)",
    "ev_principal": "events(principal, time)",
    "ev_model": "events(model, time)",
    "ev_verdict": "events(verdict, time)",
    "ev_subject": "events(subject)",
    "ev_upstream": "events(upstream, time)",
    "ev_rule": "events(rule, time)",
    "tags_tag": "tags(tag, ev)",
}
COLUMNS = (
    "time",
    "type",
    "chain",
    "seq",
    "segment",
    "offset",
    "hash",
    "event_id",
    "request_id",
    "principal",
    "subject",
    "fingerprint",
    "groups",
    "model",
    "upstream",
    "api",
    "operation",
    "verdict",
    "rule",
    "screens",
    "findings",
    "status",
)
_INSERT = f"INSERT INTO events(n,{','.join(COLUMNS)}) VALUES (?,{','.join('?' * len(COLUMNS))})"
# Multi-valued facts (groups, blocking screens, finding types) are also rows of ``tags`` ("g:team", "s:pii",
# "f:US_SSN") so that a filter on one reads an index, not every event.
_TAGGED = (("g:", 12), ("s:", 19), ("f:", 20))  # tag prefix, column index in a row
_BATCH = 20000
_VERSION = 2  # the layout below; another one is dropped and rebuilt


def _bars(items: list[str]) -> str:
    """A list as '|a|b|' so that one member is found with instr(col, '|a|')."""
    return "|" + "|".join(x.replace("|", "/") for x in items) + "|" if items else ""


def row_of(e: dict[str, Any], chain: str, segment: str, offset: int) -> tuple[Any, ...]:
    p = e.get("principal") or {}
    p = p if isinstance(p, dict) else {}
    status = (e.get("outcome") or {}).get("status") if isinstance(e.get("outcome"), dict) else None
    return (
        str(e.get("time", "")),
        str(e.get("type", "")),
        chain,
        int(e.get("seq", 0)),
        segment,
        offset,
        e.get("hash"),
        e.get("id"),
        e.get("request_id"),
        facts.principal_label(e),
        p.get("subject") or None,
        p.get("fingerprint") or None,
        _bars(facts.groups(e)),
        e.get("model"),
        e.get("upstream"),
        e.get("api"),
        e.get("operation"),
        facts.verdict(e) or None,
        facts.rule(e) or None,
        _bars(facts.blocked_screens(e)),
        _bars(facts.findings(e)),
        status if isinstance(status, int) else None,
    )


@dataclass
class Query:
    """Search filters; empty strings mean 'any'. ``since``/``until`` in the journal's time form."""

    since: str = ""
    until: str = ""
    principal: str = ""
    group: str = ""
    model: str = ""
    upstream: str = ""
    api: str = ""
    type: str = ""
    decision: str = ""  # allowed | denied | blocked
    screen: str = ""
    finding: str = ""
    rule: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def where(self) -> tuple[str, list[Any]]:
        w: list[str] = []
        a: list[Any] = []
        if self.since:
            w.append("time >= ?")
            a.append(self.since)
        if self.until:
            w.append("time < ?")
            a.append(self.until)
        if self.principal:  # a subject has '=', a fingerprint is 64 hex digits, else a CN or SPIFFE ID
            p = self.principal
            col = (
                "subject"
                if "=" in p
                else "fingerprint"
                if len(p) == 64 and all(ch in "0123456789abcdef" for ch in p)
                else "principal"
            )
            w.append(f"{col} = ?")
            a.append(p)
        for col in ("model", "upstream", "api", "type", "rule"):
            v = getattr(self, col)
            if v:
                if col == "model" and any(ch in v for ch in "*?["):
                    w.append("model GLOB ?")
                else:
                    w.append(f"{col} = ?")
                a.append(v)
        if self.decision:
            w.append("verdict = ?")
            a.append(self.decision)
        for prefix, v in (("g:", self.group), ("s:", self.screen), ("f:", self.finding)):
            if v:
                w.append("n IN (SELECT ev FROM tags WHERE tag = ?)")
                a.append(prefix + v)
        return (" WHERE " + " AND ".join(w)) if w else "", a

    def as_dict(self) -> dict[str, str]:
        return {k: v for k, v in self.__dict__.items() if k != "extra" and v}


class Index:
    """One SQLite file; updates are serialised by a file lock (workers share the admin port)."""

    def __init__(self, path: Path, root: Path) -> None:
        self.path, self.root = Path(path), Path(root)
        self._lock = threading.Lock()  # the writing connection (updates, verification results)
        self._rlock = threading.Lock()  # the reading one: pages read while an update writes (WAL)
        self._open()

    def _open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=OFF")  # a lost index is rebuilt from the journal
        if self.db.execute("PRAGMA user_version").fetchone()[0] != _VERSION:  # an index of an older layout
            for table in ("events", "tags", "progress", "meta", "verify"):
                self.db.execute(f"DROP TABLE IF EXISTS {table}")
            self.db.execute(f"PRAGMA user_version = {_VERSION}")
        self.db.executescript(SCHEMA)
        self.make_indexes()
        self.db.row_factory = sqlite3.Row
        self.rdb = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None)
        self.rdb.row_factory = sqlite3.Row
        src = self._meta("root")
        if src is not None and src != str(self.root.resolve()):  # an index of another journal
            for table in ("events", "tags", "progress", "verify"):
                self.db.execute(f"DELETE FROM {table}")
        self._set_meta("root", str(self.root.resolve()))

    def make_indexes(self) -> None:
        for name, on in INDEXES.items():
            self.db.execute(f"CREATE INDEX IF NOT EXISTS {name} ON {on}")

    def close(self) -> None:
        self.db.close()
        self.rdb.close()

    def _meta(self, k: str) -> str | None:
        r = self.db.execute("SELECT v FROM meta WHERE k = ?", (k,)).fetchone()
        return r[0] if r else None

    def _set_meta(self, k: str, v: str) -> None:
        self.db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (k, v))

    def clear(self) -> None:
        with self._lock:
            self.db.execute("DELETE FROM events")
            self.db.execute("DELETE FROM tags")
            self.db.execute("DELETE FROM progress")
            self.db.execute("DELETE FROM verify")

    @contextlib.contextmanager
    def _file_lock(self) -> Iterator[None]:
        with open(self.path.with_suffix(".lock"), "a") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    # --- building ------------------------------------------------------------------------------------

    def update(self) -> int:
        """Read what the journal gained since the last update; return the number of events added."""
        added = 0
        if not self.path.exists():  # deleted under us: build a new one from the journal
            with self._lock, self._rlock:
                self.close()
                self._open()
        with self._lock, self._file_lock():
            empty = self.db.execute("SELECT 1 FROM events LIMIT 1").fetchone() is None
            if empty:
                for name in INDEXES:
                    self.db.execute(f"DROP INDEX IF EXISTS {name}")
            try:
                for chain in layout.chain_names(self.root):
                    added += self._update_chain(chain)
            finally:
                if empty:
                    self.make_indexes()
                    self.db.execute("ANALYZE")  # statistics, so that the planner picks the selective index
        return added

    def _update_chain(self, chain: str) -> int:
        segs = layout.segments(self.root, chain)
        r = self.db.execute("SELECT segment, offset FROM progress WHERE chain = ?", (chain,)).fetchone()
        names = [s.name for s in segs]
        start_seg, start_off = (r[0], r[1]) if r else (None, 0)
        if start_seg is not None:
            i = names.index(start_seg) if start_seg in names else -1
            if i < 0 or segs[i].stat().st_size < start_off:  # pruned or rewritten: read the chain again
                self.db.execute("DELETE FROM tags WHERE ev IN (SELECT n FROM events WHERE chain = ?)", (chain,))
                self.db.execute("DELETE FROM events WHERE chain = ?", (chain,))
                start_seg, start_off = None, 0
            else:
                segs = segs[i:]
        added = 0
        self.db.execute("BEGIN")
        try:
            batch: list[tuple[Any, ...]] = []
            pos = (start_seg, start_off)
            for seg in segs:
                off = start_off if seg.name == start_seg else 0
                for begin, end, line in layout.iter_lines(seg, off):
                    pos = (seg.name, end)
                    try:
                        e = orjson.loads(line)
                    except orjson.JSONDecodeError:
                        continue
                    if not isinstance(e, dict) or not isinstance(e.get("seq"), int):
                        continue
                    batch.append(row_of(e, chain, seg.name, begin))
                    if len(batch) >= _BATCH:
                        added += self._insert(batch)
                        batch.clear()
            if batch:
                added += self._insert(batch)
            if pos[0] is not None:
                self.db.execute("INSERT OR REPLACE INTO progress VALUES (?, ?, ?, 0)", (chain, pos[0], pos[1]))
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        return added

    def _insert(self, rows: list[tuple[Any, ...]]) -> int:
        start = (self.db.execute("SELECT MAX(n) FROM events").fetchone()[0] or 0) + 1
        self.db.executemany(_INSERT, ((start + i, *r) for i, r in enumerate(rows)))
        tags = [
            (prefix + v, start + i)
            for i, r in enumerate(rows)
            for prefix, col in _TAGGED
            for v in (r[col] or "").split("|")
            if v
        ]
        self.db.executemany("INSERT INTO tags VALUES (?, ?)", tags)
        return len(rows)

    def add_rows(self, rows: list[tuple[Any, ...]]) -> None:
        """Bulk insert (the benchmark's synthetic events)."""
        with self._lock:
            self.db.execute("BEGIN")
            self._insert(rows)
            self.db.execute("COMMIT")

    # --- reading -------------------------------------------------------------------------------------

    def search(self, q: Query, limit: int = 50, offset: int = 0) -> tuple[list[sqlite3.Row], int]:
        where, args = q.where()
        with self._rlock:
            rows = self.rdb.execute(
                f"SELECT * FROM events{where} ORDER BY time DESC, n DESC LIMIT ? OFFSET ?", [*args, limit, offset]
            ).fetchall()
            total = self.rdb.execute(f"SELECT COUNT(*) FROM events{where}", args).fetchone()[0]
        return rows, int(total)

    def get(self, chain: str, seq: int) -> sqlite3.Row | None:
        with self._rlock:
            return self.rdb.execute("SELECT * FROM events WHERE chain = ? AND seq = ?", (chain, seq)).fetchone()

    def query(self, sql: str, args: list[Any] | tuple[Any, ...] = ()) -> list[sqlite3.Row]:
        with self._rlock:
            return self.rdb.execute(sql, args).fetchall()

    def count(self) -> int:
        return int(self.query("SELECT COUNT(*) FROM events")[0][0])

    def distinct(self, col: str, limit: int = 200) -> list[str]:
        assert col in ("model", "upstream", "api", "type", "rule", "principal")
        return [
            r[0]
            for r in self.query(
                f"SELECT DISTINCT {col} FROM events WHERE {col} IS NOT NULL ORDER BY 1 LIMIT ?", (limit,)
            )
        ]

    # --- verification results --------------------------------------------------------------------------

    def save_verify(self, at: str, report: dict[str, Any]) -> None:
        with self._lock:
            self.db.execute("BEGIN")
            self.db.execute("DELETE FROM verify")
            for c in report.get("chains", []):
                b = c.get("broken") or {}
                # last_seq: how far the chain verifies (for a broken chain, up to the event before the break)
                last = (b["seq"] - 1) if b and isinstance(b.get("seq"), int) else (None if b else c.get("last_seq"))
                self.db.execute(
                    "INSERT INTO verify VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (
                        c["chain"],
                        at,
                        c["status"],
                        last,
                        c.get("events"),
                        b.get("reason"),
                        _break_text(b) if b else None,
                    ),
                )
            self.db.execute("COMMIT")

    def verify_state(self) -> dict[str, sqlite3.Row]:
        return {r["chain"]: r for r in self.query("SELECT * FROM verify")}


def _break_text(b: dict[str, Any]) -> str:
    at = f"{b.get('file')}:{b.get('line')} seq {b.get('seq')}"
    return f"BROKEN at {at}: {b.get('reason')} {b.get('detail', '')}".rstrip()
