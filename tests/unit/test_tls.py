"""TLS helpers: the SSL context built from the options, and which failures are final."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest

from support.tls import make_certs
from tars.mqtt import ConfigError, ConnectionLostError, MQTTClientConfig
from tars.mqtt._tls import is_certificate_failure, make_ssl_context

BASE = {"mqtt_url": "mqtts://localhost", "client_id": "svc"}


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_certs(tmp_path_factory.mktemp("certs"))


def test_the_default_context_verifies_the_broker(certs: Path) -> None:
    ctx = make_ssl_context(MQTTClientConfig(**BASE, tls_ca_file=str(certs / "ca.pem")))
    assert ctx.verify_mode is ssl.CERT_REQUIRED
    assert ctx.check_hostname
    assert [c["subject"] for c in ctx.get_ca_certs()] == [((("commonName", "tars-test-ca"),),)]


def test_insecure_turns_every_check_off() -> None:
    ctx = make_ssl_context(MQTTClientConfig(**BASE, tls_insecure=True))
    assert ctx.verify_mode is ssl.CERT_NONE
    assert not ctx.check_hostname


def test_files_that_vanished_since_the_config_was_checked_are_a_config_error(
    certs: Path, tmp_path: Path
) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_bytes((certs / "ca.pem").read_bytes())
    config = MQTTClientConfig(**BASE, tls_ca_file=str(ca))
    ca.unlink()
    with pytest.raises(ConfigError, match="cannot load the TLS files") as info:
        make_ssl_context(config)
    assert info.value.field == "tls_ca_file"


def _wrapped(inner: BaseException) -> ConnectionLostError:
    outer = ConnectionLostError("link lost")
    outer.__cause__ = inner
    return outer


@pytest.mark.parametrize(
    ("exc", "final"),
    [
        (ssl.SSLCertVerificationError(1, "certificate verify failed"), True),
        (_wrapped(ssl.SSLCertVerificationError(1, "certificate verify failed")), True),
        (ConnectionRefusedError(), False),
        (ssl.SSLError(1, "wrong version number"), False),
        (TimeoutError(), False),
        (_wrapped(OSError("reset")), False),
    ],
)
def test_only_certificate_failures_are_final(exc: BaseException, final: bool) -> None:
    assert is_certificate_failure(exc) is final


def test_a_cycle_of_causes_ends() -> None:
    a, b = OSError("a"), OSError("b")
    a.__cause__, b.__cause__ = b, a
    assert not is_certificate_failure(a)
