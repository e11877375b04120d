"""Contracts of the adapters in guard/compat: each fails loudly when an upgrade of the library (or of Python)
breaks what the adapter assumes. They run the real library: a real TLS handshake on loopback, real uvicorn
servers answering real HTTP clients, Presidio's own engine."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import sys
import threading
from collections import deque
from pathlib import Path
from typing import Any

import httpx
import pytest

# --- ssl_chain -----------------------------------------------------------------------------------------


def _handshake(pki: Path, client: str | None) -> tuple[ssl.SSLObject, Any]:
    """A real mTLS handshake between two in-memory SSLObjects: (server side, its context)."""
    sctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    sctx.load_cert_chain(pki / "server.pem", pki / "server-key.pem")
    sctx.load_verify_locations(pki / "ca.pem")
    sctx.verify_mode = ssl.CERT_REQUIRED if client else ssl.CERT_OPTIONAL
    cctx = ssl.create_default_context(cafile=str(pki / "ca.pem"))
    if client:
        cctx.load_cert_chain(pki / f"{client}.pem", pki / f"{client}-key.pem")
    s_in, s_out, c_in, c_out = ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO()
    server = sctx.wrap_bio(s_in, s_out, server_side=True)
    cl = cctx.wrap_bio(c_in, c_out, server_hostname="localhost")
    for _ in range(10):
        for side in (cl, server):
            with contextlib.suppress(ssl.SSLWantReadError):
                side.do_handshake()
        s_in.write(c_out.read())
        c_in.write(s_out.read())
    cl.write(b"x")  # TLS 1.3: the server sees the client's certificate once it reads past the handshake
    s_in.write(c_out.read())
    server.read(1)
    return server, sctx


def test_ssl_chain_returns_the_verified_chain_leaf_first_as_der(pki_dir: Path):
    from cryptography import x509

    from guard.compat.ssl_chain import unverified_chain, verified_chain

    server, _ = _handshake(pki_dir, "app")
    leaf = server.getpeercert(binary_form=True)
    chain = verified_chain(server)
    assert chain is not None, "get_verified_chain is gone (Python changed): see guard/compat/ssl_chain.py"
    assert all(isinstance(c, bytes) for c in chain)
    assert chain[0] == leaf
    ca = x509.load_pem_x509_certificate((pki_dir / "ca.pem").read_bytes())
    assert x509.load_der_x509_certificate(chain[-1]) == ca  # up to the trust anchor
    sent = unverified_chain(server)
    assert sent is not None and sent[0] == leaf


def test_ssl_chain_private_fallback_exists_only_where_the_public_method_does_not():
    """Python 3.11-3.12 keep the chain methods on the private ``SSLObject._sslobj``; from 3.13 they are
    public and the adapter must not touch the private object."""
    from guard.compat import ssl_chain

    if sys.version_info >= (3, 13):
        assert ssl_chain._PUBLIC and hasattr(ssl.SSLObject, "get_verified_chain")
    else:
        assert not ssl_chain._PUBLIC
        import _ssl

        assert hasattr(_ssl._SSLSocket, "get_verified_chain") and hasattr(_ssl._SSLSocket, "get_unverified_chain")


def test_ssl_chain_without_a_client_certificate_is_empty(pki_dir: Path):
    from guard.revocation import chain_of

    server, _ = _handshake(pki_dir, None)
    assert server.getpeercert(binary_form=True) is None
    assert chain_of(server) == ()


# --- uvicorn -------------------------------------------------------------------------------------------


async def _ok(scope: dict, receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": b"ok"})


def _serve(protocol: type, app: Any = _ok) -> tuple[Any, threading.Thread, int]:
    import uvicorn

    from guard.compat.uvicorn_protocols import QuietServer, bound_port

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = QuietServer(uvicorn.Config(app, http=protocol, lifespan="off", log_level="warning"))
    th = threading.Thread(target=lambda: asyncio.run(server.serve(sockets=[sock])), daemon=True)
    th.start()
    for _ in range(500):
        if server.started:
            break
        threading.Event().wait(0.01)
    assert server.started
    assert bound_port(server) == sock.getsockname()[1]
    return server, th, sock.getsockname()[1]


def test_uvicorn_httptools_protocol_exposes_the_state_guard_reads():
    from guard.compat.uvicorn_protocols import HttpToolsProtocol

    seen: dict[str, Any] = {}

    class Probe(HttpToolsProtocol):  # type: ignore[misc, valid-type]
        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            seen["conn"] = (self.app, self.client, self.loop, self.transport)

        def on_message_begin(self) -> None:
            super().on_message_begin()
            seen["scope"] = type(self.scope)

        def on_headers_complete(self) -> None:
            seen["headers"], seen["url"], seen["pipeline"] = list(self.headers), self.url, self.pipeline
            if b"refuse" in self.url:
                raise ValueError("refused by the probe")
            super().on_headers_complete()
            seen["cycle"] = (hasattr(self.cycle, "response_complete"), self.cycle.transport is self.transport)
            self.cycle.transport = self.transport  # Guard swaps in a coalescing writer

        def send_400_response(self, msg: str) -> None:
            seen["400"] = msg
            super().send_400_response(msg)

    server, th, port = _serve(Probe)
    try:
        r = httpx.get(f"http://127.0.0.1:{port}/a?b=1", headers={"x-probe": "1"})
        assert r.status_code == 200 and r.text == "ok"
        app, client, loop, transport = seen["conn"]
        assert callable(app) and client[0] == "127.0.0.1" and isinstance(loop, asyncio.AbstractEventLoop)
        assert isinstance(transport, asyncio.Transport)
        assert seen["scope"] is dict
        assert (b"x-probe", b"1") in seen["headers"] and seen["url"] == b"/a?b=1"
        assert isinstance(seen["pipeline"], deque)
        assert seen["cycle"] == (True, True)
        r = httpx.get(f"http://127.0.0.1:{port}/refuse")
        assert r.status_code == 400 and "400" in seen, "an exception in on_headers_complete must end in a 400"
    finally:
        server.should_exit = True
        th.join(10)


def test_uvicorn_h11_protocol_serves_with_the_app_set_after_connection_made():
    from guard.compat.uvicorn_protocols import H11Protocol

    async def wrapped(scope: dict, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 209, "headers": [(b"content-length", b"0")]})
        await send({"type": "http.response.body", "body": b""})

    class Probe(H11Protocol):  # type: ignore[misc, valid-type]
        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            self.app = wrapped

    server, th, port = _serve(Probe)
    try:
        assert httpx.get(f"http://127.0.0.1:{port}/").status_code == 209
    finally:
        server.should_exit = True
        th.join(10)


def test_uvicorn_server_installs_its_signal_handlers_through_capture_signals():
    """QuietServer relies on ``serve`` entering ``capture_signals``; were it bypassed, uvicorn would take
    SIGINT/SIGTERM from Guard's supervisor."""
    import uvicorn

    assert callable(getattr(uvicorn.Server, "capture_signals", None))
    entered: list[bool] = []
    from guard.compat.uvicorn_protocols import QuietServer

    class Probe(QuietServer):
        def capture_signals(self) -> Any:
            entered.append(True)
            return super().capture_signals()

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = Probe(uvicorn.Config(_ok, lifespan="off", log_level="warning"))

    async def run() -> None:
        task = asyncio.create_task(server.serve(sockets=[sock]))
        while not server.started:
            await asyncio.sleep(0.01)
        server.should_exit = True
        await task

    asyncio.run(run())
    assert entered == [True]


# --- Presidio -------------------------------------------------------------------------------------------


def test_presidio_engine_steps_behave_as_analyze_does():
    from presidio_analyzer import Pattern, PatternRecognizer, RecognizerResult

    from guard.compat import presidio_engine
    from guard.screens.pii.engine import build_engine

    rec = PatternRecognizer(
        supported_entity="TICKET",
        name="tickets",
        patterns=[Pattern("ticket", r"TCK-\d{4}", 0.6), Pattern("weak", r"WK-\d{2}", 0.1)],
    )
    engine = build_engine([rec])
    engine.default_score_threshold = 0.3
    text = "see TCK-1234 and WK-12"
    found = rec.analyze(text, ["TICKET"], None)
    assert len(found) == 2
    presidio_engine.add_recognizer_id(engine, found, rec)
    assert all(r.recognition_metadata[RecognizerResult.RECOGNIZER_IDENTIFIER_KEY] == rec.id for r in found)
    assert all(r.recognition_metadata[RecognizerResult.RECOGNIZER_NAME_KEY] == "tickets" for r in found)
    dup = RecognizerResult("TICKET", 4, 12, 0.6, recognition_metadata=dict(found[0].recognition_metadata))
    done = presidio_engine.finish(engine, [*found, dup], [rec])
    assert [(r.start, r.end) for r in done] == [(4, 12)]  # under the threshold dropped, duplicate dropped
    assert all(r.analysis_explanation is None for r in done)
    # and the same as the engine's own analyze
    ref = engine.analyze(text, language="en", entities=["TICKET"])
    assert [(r.entity_type, r.start, r.end, r.score) for r in ref] == [
        (r.entity_type, r.start, r.end, r.score) for r in done
    ]


def test_presidio_email_recognizer_validates_through_its_module_tldextract():
    from presidio_analyzer.predefined_recognizers.generic import email_recognizer

    from guard.compat.presidio_engine import use_offline_suffix_list
    from guard.screens.pii.engine import _OFFLINE_TLD

    asked: list[str] = []

    def extract(url: str) -> object:
        asked.append(url)
        return _OFFLINE_TLD(url)

    try:
        use_offline_suffix_list(extract)
        rec = email_recognizer.EmailRecognizer()
        assert rec.analyze("mail jane.doe@example.com now", ["EMAIL_ADDRESS"], None)
        assert asked, "Presidio's email recognizer no longer validates through its module's tldextract"
    finally:
        use_offline_suffix_list(_OFFLINE_TLD)


# --- torch (extra "local") ------------------------------------------------------------------------------


def test_torch_rowwise_fp8_matmul_and_recompile_limits():
    torch = pytest.importorskip("torch")
    dynamo = pytest.importorskip("torch._dynamo")

    from guard.compat import torch_fp8

    torch.manual_seed(0)
    x, w = torch.randn(16, 32), torch.randn(64, 32)
    xs = x.abs().amax(dim=1, keepdim=True).float() / 448.0
    ws = w.abs().amax(dim=1).float() / 448.0
    xq, w8 = (x / xs).to(torch.float8_e4m3fn), (w / ws[:, None]).to(torch.float8_e4m3fn)
    y = torch_fp8.scaled_mm_rowwise(xq, w8.t(), xs, ws[None, :].contiguous(), torch.bfloat16)
    ref = x @ w.t()
    assert y.shape == (16, 64) and y.dtype == torch.bfloat16
    assert (y.float() - ref).abs().max() < 0.1 * ref.abs().max()  # FP8 rounding, scales applied per row
    present = [k for k in torch_fp8._LIMITS if hasattr(dynamo.config, k)]
    assert present, "torch._dynamo.config has none of the recompile limits guard.compat.torch_fp8 raises"
    before = {k: getattr(dynamo.config, k) for k in present}
    try:
        torch_fp8.raise_recompile_limits(10_000)
        assert all(getattr(dynamo.config, k) >= 10_000 for k in present)
    finally:
        for k, v in before.items():
            setattr(dynamo.config, k, v)


# --- presidio_import -----------------------------------------------------------------------------------


def test_presidio_is_imported_without_torch_and_both_still_import_afterwards() -> None:
    """In a fresh interpreter: the PII screen's package imports Presidio without transformers/torch, the
    engine still analyses text, and Guard's own later imports of both libraries work."""
    import subprocess

    code = (
        "import sys\n"
        "import guard.screens.pii.engine as e\n"
        "assert 'torch' not in sys.modules and 'transformers' not in sys.modules, sorted(sys.modules)[:5]\n"
        "from presidio_analyzer import AnalyzerEngine\n"
        "from presidio_analyzer.predefined_recognizers import EmailRecognizer\n"
        "r = EmailRecognizer().analyze('write to alice@example.com', ['EMAIL_ADDRESS'])\n"
        "assert [x.entity_type for x in r] == ['EMAIL_ADDRESS'], r\n"
        "import importlib.util\n"
        "for name in ('torch', 'transformers'):\n"
        "    if importlib.util.find_spec(name) is not None:\n"
        "        importlib.import_module(name)\n"
        "        assert sys.modules[name] is not None\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]


# --- otel_logs -----------------------------------------------------------------------------------------


def test_otel_logs_names_the_otlp_sink_uses_exist_and_encode_a_record() -> None:
    """The logs signal's classes are where the adapter imports them, and the exporter's own encoder turns
    one record into an OTLP ExportLogsServiceRequest (what the sink sends)."""
    from opentelemetry.exporter.otlp.proto.common._log_encoder import encode_logs
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.util.instrumentation import InstrumentationScope

    from guard.compat import otel_logs

    assert otel_logs.LogRecordExportResult.SUCCESS != otel_logs.LogRecordExportResult.FAILURE
    rec = otel_logs.LogRecord(timestamp=1, body="guard", severity_number=otel_logs.SeverityNumber.INFO)
    readable = otel_logs.ReadableLogRecord(
        rec, resource=Resource.create({"service.name": "guard"}), instrumentation_scope=InstrumentationScope("guard")
    )
    msg = encode_logs([readable])
    body = msg.resource_logs[0].scope_logs[0].log_records[0].body.string_value
    assert body == "guard"
    assert callable(otel_logs.OTLPLogExporter(endpoint="http://127.0.0.1:9/v1/logs").export)
