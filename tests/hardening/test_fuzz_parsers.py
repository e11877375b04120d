"""Fuzzing the parsers that read untrusted bytes outside the request body (hypothesis, in-process):

* upstream streams: ``openai.split_events`` / ``event_data`` (SSE) and ``ollama.split_lines`` (NDJSON) cut a
  stream into the same events however the bytes arrive; ``Relay`` (feed/finish through stream screens) raises
  nothing but ``UpstreamStreamError`` on any bytes, always writes well-formed events to the client, and on a
  well-formed stream loses or duplicates no text of any channel;
* the XFCC parser: a Principal or ``XFCCError``, nothing else;
* ``load_config`` and ``load_policy``: a result or ``ConfigError`` whose every line is ``file:line: ...``;
* ``guard scan --jsonl``: one output line per input line, error lines ``{"error": "line N: ...", "line": N}``
  and exit status 2 for bad lines, no traceback (the CLI run in a subprocess as well).

Crashers found once live under ``corpus/<target>/`` and are replayed by ``test_corpus``.
"""

from __future__ import annotations

import asyncio
import io
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from guard.apis import ollama, openai
from guard.config import ConfigError, load_config
from guard.identity import Principal, XFCCError, principal_from_xfcc
from guard.policy.files import display_path
from guard.policy.loader import load_policy
from guard.relay import Relay, UpstreamStreamError
from guard.screens.base import StreamStep, Verdict
from tests.hardening.conftest import fuzz_settings

ROOT = Path(__file__).resolve().parents[2]
CORPUS = Path(__file__).parent / "corpus"
FUZZ = fuzz_settings(100)

scalars = st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=10)
json_values = st.recursive(
    scalars, lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=6), c, max_size=3), max_leaves=8
)


def chunked(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=False)]


# --- SSE / NDJSON splitting ---------------------------------------------------------------------------------

sse_bytes = st.lists(
    st.sampled_from(
        [
            b"data: ",
            b"data:",
            b"\n",
            b"\r\n",
            b"\n\n",
            b"\r\n\r\n",
            b": ping",
            b"event: x",
            b"{",
            b"}",
            b"[DONE]",
            b'"a"',
            b"\r",
            b"\xff",
            b"\x00",
        ]
    )
    | st.binary(max_size=8),
    max_size=40,
).map(b"".join)


def split_all(split: Any, parts: list[bytes]) -> tuple[list[bytes], bytes]:
    buf, out = bytearray(), []
    for p in parts:
        buf += p
        out += list(split(buf))
    return out, bytes(buf)


@FUZZ
@given(data=sse_bytes, cuts=st.lists(st.integers(0, 400), max_size=8))
def test_sse_split_does_not_depend_on_chunking(data: bytes, cuts: list[int]) -> None:
    whole, rest_whole = split_all(openai.split_events, [data])
    parts, rest_parts = split_all(openai.split_events, chunked(data, cuts))
    assert (parts, rest_parts) == (whole, rest_whole)
    assert b"\n\n" not in rest_whole and b"\r\n\r\n" not in rest_whole
    for ev in whole:
        d = openai.event_data(ev)
        assert d is None or isinstance(d, bytes)


@FUZZ
@given(data=sse_bytes, cuts=st.lists(st.integers(0, 400), max_size=8))
def test_ndjson_split_does_not_depend_on_chunking(data: bytes, cuts: list[int]) -> None:
    whole, rest = split_all(ollama.split_lines, [data])
    assert split_all(ollama.split_lines, chunked(data, cuts)) == (whole, rest)
    assert b"\n" not in rest and all(line and line == line.strip() for line in whole)


# --- Relay ----------------------------------------------------------------------------------------------------


class HoldBack:
    """A stream screen that holds back the last ``n`` characters (like the windowed screens) and stops the
    stream when it sees ``stop_on``."""

    def __init__(self, n: int, stop_on: str | None) -> None:
        self.n, self.stop_on, self.held = n, stop_on, ""

    async def feed(self, text: str) -> StreamStep:
        self.held += text
        if self.stop_on and self.stop_on in self.held:
            return StreamStep(stop=Verdict("safety", "response", action="block", blocked=True))
        cut = max(len(self.held) - self.n, 0)
        out, self.held = self.held[:cut], self.held[cut:]
        return StreamStep(release=out)

    async def finish(self) -> StreamStep:
        out, self.held = self.held, ""
        if self.stop_on and self.stop_on in out:
            return StreamStep(stop=Verdict("safety", "response", action="block", blocked=True))
        return StreamStep(release=out)


def relay_run(
    api: str, op: str, parts: list[bytes], hold: int = 3, stop_on: str | None = None
) -> tuple[bytes, Verdict | None]:
    relay = Relay(api, op, "m", lambda kind: [HoldBack(hold, stop_on), HoldBack(1, None)])

    async def go() -> tuple[bytes, Verdict | None]:
        out = bytearray()
        for p in parts:
            got, stop = await relay.feed(p)
            out += got
            if stop:
                return bytes(out) + relay.stop_bytes(), stop
        got, stop = await relay.finish()
        out += got
        return (bytes(out) + relay.stop_bytes(), stop) if stop else (bytes(out), None)

    return asyncio.run(go())


def client_chunks(api: str, out: bytes) -> list[Any]:
    """What the client receives, parsed; fails if any event is not a JSON object or [DONE]."""
    if api == "ollama":
        lines = out.split(b"\n")
        assert lines[-1] == b"", "NDJSON output ends with a newline"
        return [json.loads(ln) for ln in lines[:-1]]
    assert out == b"" or out.endswith(b"\n\n")
    got = []
    for ev in out.split(b"\n\n")[:-1]:
        assert ev.startswith(b"data: "), ev
        d = ev[6:]
        got.append("[DONE]" if d == b"[DONE]" else json.loads(d))
    for c in got:
        assert c == "[DONE]" or isinstance(c, dict)
    return got


def texts_by_channel(api: str, op: str, chunks: list[Any]) -> dict[tuple, str]:
    mod = openai if api == "openai" else ollama
    acc: dict[tuple, str] = {}
    for c in chunks:
        if isinstance(c, dict):
            for key, _, text in mod.chunk_channels(op, c):
                acc[key] = acc.get(key, "") + text
    return {k: v for k, v in acc.items() if v}


def relay_check(api: str, op: str, data: bytes, cuts: list[int], stop_on: str | None = None) -> None:
    """The Relay property on arbitrary bytes: only UpstreamStreamError, and well-formed client output."""
    try:
        out, _ = relay_run(api, op, chunked(data, cuts), stop_on=stop_on)
    except UpstreamStreamError:
        return
    client_chunks(api, out)


texts = st.text(max_size=12)
choice = st.fixed_dictionaries(
    {},
    optional={
        "index": st.integers(0, 2) | json_values,
        "finish_reason": st.none() | st.sampled_from(["stop", "length"]),
        "text": texts | json_values,
        "delta": json_values
        | st.fixed_dictionaries(
            {},
            optional={
                "content": texts | json_values,
                "role": st.just("assistant"),
                "tool_calls": json_values
                | st.lists(
                    st.fixed_dictionaries(
                        {},
                        optional={
                            "index": st.integers(0, 1) | json_values,
                            "function": json_values
                            | st.fixed_dictionaries({}, optional={"arguments": texts | json_values}),
                        },
                    ),
                    max_size=2,
                ),
            },
        ),
    },
)
usage = json_values | st.fixed_dictionaries(
    {}, optional={"prompt_tokens": json_values, "completion_tokens": json_values}
)
sse_chunk = st.fixed_dictionaries(
    {}, optional={"id": st.just("c"), "usage": usage, "choices": st.lists(choice, max_size=2) | json_values}
)
nd_chunk = st.fixed_dictionaries(
    {},
    optional={
        "model": st.just("m"),
        "done": st.booleans() | json_values,
        "response": texts | json_values,
        "message": json_values
        | st.fixed_dictionaries({}, optional={"role": st.just("assistant"), "content": texts | json_values}),
        "prompt_eval_count": json_values,
        "eval_count": json_values,
        "done_reason": json_values,
    },
)
garbage = st.sampled_from(
    [
        b"data: {not json}\n\n",
        b"data: [1]\n\n",
        b": keep-alive\n\n",
        b"\xff\xfe\n\n",
        b"data: " + b"[" * 5000 + b"\n\n",
        b"event: x\r\n\r\n",
        b"data: [DONE]\n\n",
    ]
)


def sse_stream(chunks: list[Any], done: bool, crlf: bool) -> bytes:
    sep = b"\r\n\r\n" if crlf else b"\n\n"
    return b"".join(b"data: " + json.dumps(c).encode() + sep for c in chunks) + (b"data: [DONE]" + sep if done else b"")


@FUZZ
@given(
    op=st.sampled_from(["chat", "completion"]),
    chunks=st.lists(sse_chunk, max_size=5),
    extra=st.lists(garbage | st.binary(max_size=12), max_size=2),
    done=st.booleans(),
    crlf=st.booleans(),
    cuts=st.lists(st.integers(0, 3000), max_size=6),
    stop=st.sampled_from([None, "x"]),
)
@example(op="chat", chunks=[{"choices": [{"delta": "x"}]}], extra=[], done=True, crlf=False, cuts=[], stop=None)
@example(
    op="chat",
    chunks=[{"choices": [{"index": [1], "delta": {"content": "a"}}]}],
    extra=[],
    done=True,
    crlf=False,
    cuts=[],
    stop=None,
)
def test_relay_sse_never_raises_anything_but_upstream_stream_error(
    op: str, chunks: list[Any], extra: list[bytes], done: bool, crlf: bool, cuts: list[int], stop: str | None
) -> None:
    data = sse_stream(chunks, done, crlf)
    relay_check("openai", op, data, cuts, stop)
    relay_check("openai", op, data[: len(data) // 2] + b"".join(extra) + data[len(data) // 2 :], cuts, stop)


@FUZZ
@given(
    op=st.sampled_from(["chat", "completion"]),
    chunks=st.lists(nd_chunk, max_size=5),
    extra=st.lists(st.binary(max_size=12), max_size=2),
    cuts=st.lists(st.integers(0, 2000), max_size=6),
    stop=st.sampled_from([None, "x"]),
)
def test_relay_ndjson_never_raises_anything_but_upstream_stream_error(
    op: str, chunks: list[Any], extra: list[bytes], cuts: list[int], stop: str | None
) -> None:
    data = b"".join(json.dumps(c).encode() + b"\n" for c in chunks)
    relay_check("ollama", op, data, cuts, stop)
    relay_check("ollama", op, b"".join(extra) + data, cuts, stop)


well_formed_choice = st.builds(
    lambda i, content, args: {
        "index": i,
        "delta": {
            "content": content,
            **({"tool_calls": [{"index": 0, "function": {"arguments": args}}]} if args is not None else {}),
        },
        "finish_reason": None,
    },
    st.integers(0, 1),
    st.text(max_size=10),
    st.none() | st.text(max_size=6),
)


@FUZZ
@given(
    chunks=st.lists(st.lists(well_formed_choice, min_size=1, max_size=2), max_size=6),
    finish=st.booleans(),
    done=st.booleans(),
    cuts=st.lists(st.integers(0, 2000), max_size=6),
    hold=st.integers(0, 6),
)
def test_relay_sse_loses_and_duplicates_no_text(
    chunks: list[list[dict]], finish: bool, done: bool, cuts: list[int], hold: int
) -> None:
    evs = [{"id": "c", "choices": ch} for ch in chunks]
    if finish:
        evs.append({"id": "c", "choices": [{"index": i, "delta": {}, "finish_reason": "stop"} for i in (0, 1)]})
    out, stop = relay_run("openai", "chat", chunked(sse_stream(evs, done, False), cuts), hold=hold)
    assert stop is None
    got = client_chunks("openai", out)
    assert texts_by_channel("openai", "chat", got) == texts_by_channel("openai", "chat", evs)
    assert got.count("[DONE]") == (1 if done else 0)


@FUZZ
@given(
    pieces=st.lists(st.text(max_size=10), max_size=6),
    done=st.booleans(),
    cuts=st.lists(st.integers(0, 2000), max_size=6),
)
def test_relay_ndjson_loses_and_duplicates_no_text(pieces: list[str], done: bool, cuts: list[int]) -> None:
    evs: list[dict] = [{"model": "m", "message": {"role": "assistant", "content": p}, "done": False} for p in pieces]
    if done:
        evs.append({"model": "m", "message": {"role": "assistant", "content": ""}, "done": True})
    data = b"".join(json.dumps(e).encode() + b"\n" for e in evs)
    out, stop = relay_run("ollama", "chat", chunked(data, cuts))
    assert stop is None
    assert texts_by_channel("ollama", "chat", client_chunks("ollama", out)) == texts_by_channel("ollama", "chat", evs)


# --- XFCC -----------------------------------------------------------------------------------------------------


def xfcc_check(header: str) -> None:
    try:
        p = principal_from_xfcc(header)
    except XFCCError:
        return
    assert isinstance(p, Principal) and p.source == "xfcc"


xfcc_keys = st.sampled_from(["By", "Hash", "Cert", "Chain", "Subject", "URI", "DNS", "subject", "uri", "x", ""])
dn = st.lists(
    st.tuples(st.sampled_from(["CN", "O", "OU", "C", "1.2.3.4", "cn", "DC", "X"]), st.text(max_size=10)), max_size=3
).map(lambda kv: ",".join(f"{k}={v}" for k, v in kv))
xfcc_value = st.one_of(
    st.text(max_size=20),
    dn,
    dn.map(lambda s: '"' + s.replace('"', '\\"') + '"'),
    st.text(max_size=20).map(quote),
    st.just("spiffe://example.org/ns/prod/sa/x"),
)
xfcc_element = st.lists(st.tuples(xfcc_keys, st.sampled_from(["=", "", "=="]), xfcc_value), max_size=4).map(
    lambda kvs: ";".join(k + eq + v for k, eq, v in kvs)
)


@FUZZ
@given(header=st.lists(xfcc_element, max_size=3).map(",".join) | st.text(max_size=60))
@example(header='Subject="CN=a\\')
@example(header="Cert=%ZZ")
@example(header='Subject="1.2.3=#zz"')
def test_xfcc_parser_raises_only_xfcc_error(header: str) -> None:
    xfcc_check(header)


def test_xfcc_real_certificate_and_subject(pki_dir: Path) -> None:
    pem = (pki_dir / "app.pem").read_text()
    p = principal_from_xfcc(f'By=spiffe://guard;Hash=ab;Cert="{quote(pem)}";Subject="CN=ignored"')
    assert p.cn and p.fingerprint and p.source == "xfcc"
    p = principal_from_xfcc('Hash=AB;Subject="CN=svc,OU=apps,O=Example";URI=spiffe://example.org/ns/prod/sa/x')
    assert (p.cn, p.ou, p.spiffe_id, p.fingerprint) == ("svc", ("apps",), "spiffe://example.org/ns/prod/sa/x", "ab")


# --- config and policy loaders ----------------------------------------------------------------------------------


def _file_line_only(msg: str, path: Path) -> None:
    for line in msg.split("\n"):
        assert re.match(rf"^{re.escape(str(path))}:\d+: \S", line), f"not file:line: {line!r}"


def config_check(tmp: Path, data: bytes) -> None:
    p = tmp / "guard.yaml"
    p.write_bytes(data)
    try:
        load_config(p)
    except ConfigError as e:
        _file_line_only(str(e), p)


def _base_config() -> str:
    return (ROOT / "deploy" / "guard.yaml").read_text()


def mutate_lines(text: str, ops: list[tuple[int, int, str]]) -> str:
    lines = text.splitlines()
    for kind, at, junk in ops:
        if not lines:
            break
        i = at % len(lines)
        if kind == 0:
            del lines[i]
        elif kind == 1:
            lines.insert(i, junk)
        elif kind == 2:  # replace the value after the first ':'
            head = lines[i].split(":", 1)[0]
            lines[i] = f"{head}: {junk}"
        else:
            lines[i] = lines[i] + junk
    return "\n".join(lines) + "\n"


yaml_junk = st.one_of(
    st.text(max_size=20),
    st.sampled_from(
        [
            "[",
            "{",
            "&a [1, 2]",
            "*a",
            "!!binary AA==",
            "!!python/object:os.system {}",
            "? [a]\n: b",
            "{[1]: 2}",
            "- x",
            "null",
            "~",
            "1e999",
            "-1",
            "0x10",
            "'",
            '"',
            "|",
            ">",
            "\t",
            "\x00",
            "\ud7ff",
            "yes",
            "2026-01-01",
        ]
    ),
)


@FUZZ
@given(ops=st.lists(st.tuples(st.integers(0, 3), st.integers(0, 200), yaml_junk), min_size=1, max_size=4))
def test_config_loader_raises_only_config_error_with_file_and_line(
    tmp_path_factory: Any, ops: list[tuple[int, int, str]]
) -> None:
    tmp = tmp_path_factory.mktemp("cfg")
    config_check(tmp, mutate_lines(_base_config(), ops).encode("utf-8", "surrogatepass"))


@FUZZ
@given(data=st.binary(max_size=200) | yaml_junk.map(lambda s: s.encode("utf-8", "surrogatepass")))
@example(data=b"? [a]\n: 1\n")
@example(data=b"[" * 5000)
@example(data=b"a: 1\n\xff\n")
def test_config_loader_on_any_bytes(tmp_path_factory: Any, data: bytes) -> None:
    config_check(tmp_path_factory.mktemp("cfg"), data)


def policy_check(tmp: Path, model: bytes | None, rules: bytes) -> None:
    mp = ROOT / "policies" / "model.conf"
    if model is not None:
        mp = tmp / "model.conf"
        mp.write_bytes(model)
    rp = tmp / "rules.csv"
    rp.write_bytes(rules)
    try:
        load_policy(mp, [rp])
    except ConfigError as e:
        for line in str(e).split("\n"):
            shown = "|".join(re.escape(display_path(x)) for x in (mp, rp))
            assert re.match(rf"^({shown}):\d+: \S", line), line


cond_atoms = st.sampled_from(
    [
        "r.sub.cn",
        "r.sub.ou",
        "r.obj.model",
        "r.env.hour",
        "r.env.pii",
        "r.act",
        "True",
        "'apps'",
        "'x'",
        "1",
        "0",
        "[1, 2]",
        "keyMatch(",
        "globMatch(",
        "regexMatch(",
        "ipMatch(",
        ")",
        "(",
        "]",
        "[",
        ",",
        " && ",
        " || ",
        "!",
        " == ",
        " != ",
        " in ",
        " < ",
        " + ",
        " ** ",
        ".",
        "__class__",
        "__import__('os')",
        "lambda: 1",
        "'",
        "\\",
        "\x00",
        "#",
        "r.sub[0]",
        "p.cond",
        "eval(",
        "9**9**9",
    ]
)
rule_line = st.builds(
    lambda p, stage, eft, act, prof, cond: f"{p}, {stage}, {eft}, {act}, {prof}, {cond}",
    st.sampled_from(["p", "p", "g", "p2", ""]),
    st.sampled_from(["access", "content", "x", ""]),
    st.sampled_from(["allow", "deny", "profile", "maybe"]),
    st.sampled_from(["chat", "*", ""]),
    st.sampled_from(["-", "strict", "bad name", ""]),
    st.lists(cond_atoms, max_size=8).map("".join),
) | st.text(max_size=40)
model_text = st.one_of(
    st.none(),
    st.text(max_size=80),
    st.lists(
        st.sampled_from(
            [
                "[request_definition]",
                "r = sub, obj, act, env, stage",
                "r = sub",
                "[policy_definition]",
                "p = stage, eft, act, profile, cond",
                "p2 = a",
                "[role_definition]",
                "g = _, _",
                "[policy_effect]",
                "e = some(where (p.eft == allow)) && !some(where (p.eft == deny))",
                "e = some(where (p.eft == allow))",
                "[matchers]",
                "m = r.stage == p.stage && keyMatch(r.act, p.act) && eval(p.cond)",
                "m = (((",
                "x",
            ]
        ),
        max_size=10,
    ).map("\n".join),
)


@FUZZ
@given(model=model_text, rules=st.lists(rule_line, max_size=5).map("\n".join))
def test_policy_loader_raises_only_config_error_with_file_and_line(
    tmp_path_factory: Any, model: str | None, rules: str
) -> None:
    enc = lambda s: s.encode("utf-8", "surrogatepass")  # noqa: E731
    policy_check(tmp_path_factory.mktemp("pol"), None if model is None else enc(model), enc(rules))


# --- guard scan --jsonl ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pii_profile() -> Any:
    from guard.screens.pii.profile import load_pii_profiles

    return load_pii_profiles(ROOT / "filters" / "pii.yaml")["default"]


def scan_check(profile: Any, data: bytes) -> None:
    from guard.screens.cli import scan_jsonl

    sink = io.BytesIO()
    out = io.TextIOWrapper(sink, encoding="utf-8", write_through=True)  # strict, like a real stdout
    status = scan_jsonl(profile, io.BytesIO(data), out)
    out.flush()
    text = sink.getvalue().decode("utf-8")  # JSON Lines: split on "\n" only (U+0085, U+2028 stay raw)
    assert text == "" or text.endswith("\n")
    lines = text.split("\n")[:-1]
    inputs = io.BytesIO(data).readlines()
    assert len(lines) == len(inputs)
    errors = 0
    for n, line in enumerate(lines, 1):
        obj = json.loads(line)
        if "error" in obj:
            errors += 1
            assert obj["line"] == n and obj["error"].startswith(f"line {n}: ")
        else:
            assert set(obj) == {"findings", "redacted"}
    assert status == (2 if errors else 0)


jsonl_line = st.one_of(
    st.builds(lambda t: json.dumps({"text": t}).encode(), st.text(max_size=60)),
    st.builds(
        lambda t: json.dumps({"text": t}, ensure_ascii=False).encode("utf-8", "surrogatepass"), st.text(max_size=30)
    ),
    st.sampled_from(
        [
            b'{"text": "mail jane@example.com"}',
            b'{"text": "\\ud800"}',
            b'{"text": 1}',
            b"[]",
            b"",
            b"\xff",
            b"{",
            b'{"text": "a"',
            b"[" * 3000,
            b'"text"',
            b"null",
        ]
    ),
    json_values.map(lambda v: json.dumps(v).encode()),
    st.binary(max_size=20),
)


@FUZZ
@given(lines=st.lists(jsonl_line, max_size=5), end=st.sampled_from([b"\n", b"\r\n"]), last=st.booleans())
def test_scan_jsonl_reader(pii_profile: Any, lines: list[bytes], end: bytes, last: bool) -> None:
    data = end.join(ln.replace(b"\n", b" ") for ln in lines) + (end if last and lines else b"")
    scan_check(pii_profile, data)


def test_scan_jsonl_cli_bad_input_exit_2_without_traceback() -> None:
    data = b'{"text": "mail jane@example.com"}\n{"text": "\\ud800"}\n\xff\nnot json\n' + b"[" * 100_000 + b"\n"
    r = subprocess.run(
        [sys.executable, "-m", "guard.cli", "scan", "--jsonl", "--filters", str(ROOT / "filters")],
        input=data,
        capture_output=True,
        timeout=120,
        cwd=ROOT,
    )
    assert r.returncode == 2, r.stderr.decode()[-2000:]
    assert b"Traceback" not in r.stderr
    out = [json.loads(line) for line in r.stdout.decode().splitlines()]
    assert [o.get("line") for o in out] == [None, 2, 3, 4, 5]
    assert out[0]["redacted"] == "mail <EMAIL_ADDRESS>"


# --- the kept crashers ---------------------------------------------------------------------------------------


def _cases(prefixes: tuple[str, ...]) -> list[Path]:
    return (
        sorted(
            p
            for d in CORPUS.iterdir()
            if d.is_dir() and d.name.startswith(prefixes)
            for p in d.iterdir()
            if p.is_file()
        )
        if CORPUS.is_dir()
        else []
    )


@pytest.mark.parametrize(
    "case",
    _cases(("sse-", "ndjson-", "xfcc", "config", "policy", "scan-jsonl")),
    ids=lambda p: f"{p.parent.name}/{p.name}",
)
def test_corpus(case: Path, tmp_path: Path, pii_profile: Any) -> None:
    """corpus/sse-<operation>/, ndjson-<operation>/: upstream stream bytes; xfcc/: a header; config/: a
    guard.yaml; policy/: rules (a ``.conf`` file is a model, checked with the shipped rules); scan-jsonl/:
    ``guard scan --jsonl`` input."""
    data, kind = case.read_bytes(), case.parent.name
    if kind.startswith(("sse-", "ndjson-")):
        api = "openai" if kind.startswith("sse-") else "ollama"
        op = kind.split("-", 1)[1]
        for cuts in ([], [1, 2, 3, 5, 8, 13, 21, 34, 55, 89], list(range(0, len(data), 7))):
            relay_check(api, op, data, cuts)
            relay_check(api, op, data, cuts, stop_on="x")
    elif kind == "xfcc":
        xfcc_check(data.decode("latin-1"))  # as the pipeline decodes the header
    elif kind == "config":
        config_check(tmp_path, data)
    elif kind == "policy":
        if case.suffix == ".conf":
            policy_check(tmp_path, data, (ROOT / "policies" / "policy.csv").read_bytes())
        else:
            policy_check(tmp_path, None, data)
    else:
        scan_check(pii_profile, data)
