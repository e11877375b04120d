"""A throwaway CA and a server certificate for 127.0.0.1 / localhost (TLS sink tests), made by `guard pki`."""

from __future__ import annotations

from pathlib import Path

from guard import pki


def make_certs(d: Path) -> tuple[Path, Path, Path]:
    """Return (ca.pem, server.pem, server key)."""
    d.mkdir(parents=True, exist_ok=True)
    ca = pki.init_ca(d, cn="test ca", days=1)
    cert, key = pki.issue(d, "server", server=True, cn="127.0.0.1", san_dns=["localhost"], san_ip=["127.0.0.1"], days=1)
    return ca, cert, key
