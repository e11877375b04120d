"""Large denylist scans run in the screening processes (guard/screens/denylist/worker.py), off the serving
process's GIL, with the same results as in a thread; so do large PII scans (guard/screens/pii/pool.py). Real
worker processes (spawned), the shipped denylist and PII settings."""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from pathlib import Path

from guard.screens.base import Segment
from guard.screens.denylist import worker
from guard.screens.denylist.screen import DenylistScreen
from guard.screens.denylist.settings import load_denylist
from guard.screens.pii.pool import POOL
from guard.screens.pii.source import source_of
from tests.bench.bench_hostile import hostile_bodies

ROOT = Path(__file__).resolve().parents[2]


def _segments() -> list[Segment]:
    import json

    pem = json.loads(hostile_bodies(48 * 1024)["pem_pairs"])["messages"][0]["content"]
    jwt = json.loads(hostile_bodies(48 * 1024)["jwt_like"])["messages"][0]["content"]
    plain = "Plain words about the weather and nothing else. " * 800
    segs = [Segment(t, "user", "content", ("messages", i, "content")) for i, t in enumerate((plain, jwt, pem))]
    # a tool result (JSON text) with a secret spelt with escapes: the process reads it decoded too
    escaped = '{"log": "' + plain + '", "key": "AKIA\\u0049OSFODNN7EXAMPLE"}'
    return [*segs, Segment(escaped, "tool", "tool_result", ("messages", 3, "content"))]


def test_large_scans_in_a_screening_process_match_the_thread(tmp_path: Path) -> None:
    shutil.copy(ROOT / "filters" / "denylist.yaml", tmp_path / "denylist.yaml")
    src = source_of(tmp_path / "denylist.yaml", "default")
    screen = DenylistScreen.from_settings(load_denylist(tmp_path / "denylist.yaml"), "default", src, worker.in_process)
    assert POOL.size >= 1

    async def go() -> None:
        deadline = time.monotonic() + 120
        while POOL.get(src, warm=worker.warm) is None:  # the first call starts the processes; they load the settings
            assert time.monotonic() < deadline, "the screening processes never became ready"
            await asyncio.sleep(0.2)
        pool = POOL.get(src, warm=worker.warm)
        assert pool is not None and pool.submit(os.getpid).result(30) != os.getpid()
        done = await worker.in_process(src, "prompt", _segments())
        assert done is not None and len(done) == 4  # scanned there, not here
        assert done[3][2] == ["aws_access_key_id"], done[3][1:]  # the escaped key, found in the process
        in_process = await screen.screen_prompt(_segments(), {})
        threaded = await asyncio.to_thread(screen._screen, _segments(), "prompt")
        assert in_process.blocked and in_process.code == "secret_blocked", in_process
        assert "tool_result" in in_process.fields, in_process
        for k in ("blocked", "code", "entities", "categories", "fields", "message"):
            assert getattr(in_process, k) == getattr(threaded, k), k
        # an answer's secrets are redacted: the rewritten texts come back, the unchanged ones stay as they were
        key = "AKIA" + "ABCDEFGHIJKLMNOP"
        texts = ["Plain words about the weather. " * 800, f"the key is {key} " + "and more words. " * 1200]
        segs = [Segment(t, "assistant", "content", ("choices", i)) for i, t in enumerate(texts)]
        twin = [Segment(t, "assistant", "content", ("choices", i)) for i, t in enumerate(texts)]
        v = await screen.screen_response(segs, [], {})
        w = await asyncio.to_thread(screen._screen, twin, "response")
        assert v.modified and not v.blocked and v.entities == w.entities == {"aws_access_key_id": 1}, v
        assert [x.text for x in segs] == [x.text for x in twin] and segs[0].text == texts[0], segs[1].text[:60]
        assert key not in segs[1].text and "[REDACTED" in segs[1].text
        # as edits (guard.screens.edits): the redactions found in the process, in offsets of the text as written
        fresh = [Segment(t, "assistant", "content", ("choices", i)) for i, t in enumerate(texts)]
        ev, edits = await screen.screen_edits(fresh, [], {})
        assert not ev.blocked and [x.text for x in fresh] == texts  # the texts are left to the caller
        assert edits == [[], screen.scan(texts[1], "response").edits] and edits[1][0][:2] == (11, 11 + len(key))

    try:
        asyncio.run(go())
    finally:
        POOL.broken()  # shut the processes down


def test_large_pii_scans_in_a_screening_process_rewrite_like_the_thread(tmp_path: Path) -> None:
    """The PII side of the same processes: texts the worker left unchanged are not sent back (None), the
    rewritten ones are, and the serving process ends up with the same texts as a scan in a thread."""
    from guard.screens.pii.profile import load_pii_profiles
    from guard.screens.pii.scan import ScanPass
    from guard.screens.pii.screen import PIIScreen
    from guard.screens.pii.transform import pseudonyms_of

    shutil.copy(ROOT / "filters" / "pii.yaml", tmp_path / "pii.yaml")
    profile = load_pii_profiles(tmp_path / "pii.yaml")["default"]
    texts = ["Plain words about the weather. " * 800, "Write to jane.doe@example.com soon. " + "More words. " * 1500]

    def segs() -> list[Segment]:
        return [Segment(t, "user", "content", ("messages", i, "content")) for i, t in enumerate(texts)]

    async def go() -> None:
        deadline = time.monotonic() + 120
        while POOL.get(profile.source) is None:
            assert time.monotonic() < deadline, "the screening processes never became ready"
            await asyncio.sleep(0.2)
        from guard.screens.packed import pack
        from guard.screens.pii.pool import scan_job

        sent, counts, _ = await asyncio.wrap_future(
            POOL.get(profile.source).submit(  # type: ignore[union-attr]
                scan_job,
                profile.source,
                "prompt",
                pack([s.text for s in segs()]),
                [s.role for s in segs()],
                [s.kind for s in segs()],
                pseudonyms_of({}),
                None,
            )
        )
        assert counts.get("EMAIL_ADDRESS") == 1, counts
        assert sent[0] is None and sent[1] is not None and "jane.doe" not in sent[1], sent[1] and sent[1][:80]
        in_process = segs()
        v = await PIIScreen(profile).screen_prompt(in_process, {})
        threaded = segs()
        scan = ScanPass(profile, "prompt", pseudonyms_of({}))
        want = [scan.segment(s) for s in threaded]
        assert v.modified and [s.text for s in in_process] == want and in_process[0].text == texts[0]
        # an answer screened as edits (guard.screens.edits): the same edits as a scan in a thread
        card = ["Card 5500 0000 0000 0004 on file. " + "More words. " * 1500, texts[0]]
        answer = [Segment(t, "assistant", "content", ("choices", i)) for i, t in enumerate(card)]
        ev, edits = await PIIScreen(profile).screen_edits(answer, [], {})
        here = ScanPass(profile, "response", pseudonyms_of({}))
        assert not ev.blocked and [s.text for s in answer] == card
        assert edits == [here.segment_edits(s) for s in answer] and edits[0] and edits[0][0][:2] == (5, 24), edits

    try:
        asyncio.run(go())
    finally:
        POOL.broken()
