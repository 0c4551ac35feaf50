"""A throwaway CA (made by openssl) and a Mosquitto TLS listener signed by it, for TLS tests."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tars.mqtt.testing import MosquittoBroker

__all__ = ["make_certs", "tls_mosquitto", "tls_url"]


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def make_certs(d: Path, ca_name: str = "tars-test-ca") -> Path:
    """Write ``ca.pem``, a ``server.pem``/``server.key`` for 127.0.0.1 and a client certificate
    ``client.pem``/``client.key`` (for mutual TLS), all signed by that CA, into ``d``.

    Give another ``ca_name`` for a second CA: one with the same name would be taken for the
    first by a peer, which then fails the signature check instead of not knowing the CA."""
    if shutil.which("openssl") is None:
        pytest.fail("openssl not found: tars-core's TLS tests need it (apt-get install openssl)")
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
             "-keyout", "ca.key", "-out", "ca.pem", "-subj", f"/CN={ca_name}", cwd=d)  # fmt: skip
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key",
             "-out", "server.csr", "-subj", "/CN=127.0.0.1", cwd=d)  # fmt: skip
    (d / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    _openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
             "-CAcreateserial", "-out", "server.pem", "-days", "2", "-extfile", "san.ext",
             cwd=d)  # fmt: skip
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "client.key",
             "-out", "client.csr", "-subj", "/CN=tars-test-client", cwd=d)  # fmt: skip
    _openssl("x509", "-req", "-in", "client.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
             "-CAcreateserial", "-out", "client.pem", "-days", "2", cwd=d)  # fmt: skip
    return d


@contextmanager
def tls_mosquitto(certs: Path, *, require_certificate: bool = False) -> Iterator[MosquittoBroker]:
    """A started Mosquitto whose listener speaks TLS with the certificate of ``certs``; with
    ``require_certificate`` it also demands a client certificate signed by the same CA."""
    broker = MosquittoBroker(
        persistence=False,
        extra_config=(
            f"cafile {certs / 'ca.pem'}\n"
            f"certfile {certs / 'server.pem'}\n"
            f"keyfile {certs / 'server.key'}\n"
            + ("require_certificate true\n" if require_certificate else "")
        ),
    )
    broker.start()
    try:
        yield broker
    finally:
        broker.close()


def tls_url(broker: MosquittoBroker, user: str = "") -> str:
    return f"mqtts://{user}127.0.0.1:{broker.port}"
