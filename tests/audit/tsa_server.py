"""A real RFC 3161 time-stamping authority on loopback for tests: keys and certificates made by openssl, every
request answered by `openssl ts -reply` (no mock: the tokens are what any OpenSSL-based TSA issues).

    with LocalTsa(tmp_path) as tsa:       # tsa.url, tsa.ca (root PEM), tsa.fail = True -> 503
        ...
"""

from __future__ import annotations

import subprocess
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

_CNF = """\
[ tsa ]
default_tsa = tsa_config1

[ tsa_config1 ]
dir = {dir}
serial = $dir/serial
crypto_device = builtin
signer_cert = $dir/tsa.pem
signer_key = $dir/tsa.key
signer_digest = sha256
default_policy = 1.3.6.1.4.1.99999.1
digests = sha256, sha384, sha512
accuracy = secs:1
ordering = no
tsa_name = yes
ess_cert_id_chain = no
ess_cert_id_alg = sha256
"""


def _run(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_tsa_pki(d: Path, name: str = "Test TSA") -> None:
    """ca.key/ca.pem (root), tsa.key/tsa.pem (critical EKU timeStamping, signed by the root), tsa.cnf."""
    d.mkdir(parents=True, exist_ok=True)
    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes")
    _run(
        "req",
        "-x509",
        *ec,
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "30",
        "-subj",
        f"/CN={name} Root",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
        cwd=d,
    )
    _run("req", "-new", *ec, "-keyout", "tsa.key", "-out", "tsa.csr", "-subj", f"/CN={name} Signer", cwd=d)
    (d / "tsa.ext").write_text(
        "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=critical,timeStamping\n"
    )
    _run(
        "x509",
        "-req",
        "-in",
        "tsa.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "tsa.pem",
        "-days",
        "30",
        "-extfile",
        "tsa.ext",
        cwd=d,
    )
    (d / "chain.pem").write_bytes((d / "tsa.pem").read_bytes() + (d / "ca.pem").read_bytes())
    (d / "serial").write_text("01\n")
    (d / "tsa.cnf").write_text(_CNF.format(dir=d))


class LocalTsa:
    def __init__(self, root: Path, name: str = "Test TSA") -> None:
        self.dir = Path(root)
        make_tsa_pki(self.dir, name)
        self.ca = self.dir / "ca.pem"
        self.fail = False
        self.requests = 0
        self._lock = threading.Lock()
        tsa = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a: Any) -> None:
                pass

            def do_POST(self) -> None:
                n = int(self.headers.get("Content-Length") or 0)
                query = self.rfile.read(n)
                tsa.requests += 1
                if tsa.fail or self.headers.get("Content-Type") != "application/timestamp-query":
                    self.send_response(503 if tsa.fail else 415)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                with tsa._lock, tempfile.TemporaryDirectory() as t:
                    q, r = Path(t) / "q.tsq", Path(t) / "r.tsr"
                    q.write_bytes(query)
                    p = subprocess.run(
                        [
                            "openssl",
                            "ts",
                            "-reply",
                            "-config",
                            str(tsa.dir / "tsa.cnf"),
                            "-queryfile",
                            str(q),
                            "-out",
                            str(r),
                        ],
                        capture_output=True,
                    )
                    body = r.read_bytes() if p.returncode == 0 and r.exists() else b""
                self.send_response(200 if body else 400)
                self.send_header("Content-Type", "application/timestamp-reply")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self._srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._srv.server_address[1]}/tsa"
        self._thread = threading.Thread(target=self._srv.serve_forever, daemon=True)

    def __enter__(self) -> LocalTsa:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._srv.shutdown()
        self._srv.server_close()
