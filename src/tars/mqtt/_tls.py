"""TLS for ``mqtts://``: the checks of the TLS options, the SSL context, and which failures are
final.

The files named by ``tls_ca_file``, ``tls_cert_file`` and ``tls_key_file`` are read once when the
configuration is built, so a typo or a key that does not match its certificate is a
:class:`~tars.mqtt.ConfigError` at start-up, not an endless reconnect loop with a traceback each
time. A certificate the broker presents that we cannot verify is final too: trying again gets
the same certificate, so :func:`is_certificate_failure` lets the connect loop stop at once
instead of retrying forever (a wrong CA bundle, an expired or mismatched broker certificate).
"""

from __future__ import annotations

import ssl
from typing import Protocol

from ._errors import ConfigError

__all__ = [
    "TLSSettings",
    "check_ca_file",
    "check_cert_chain",
    "is_certificate_failure",
    "make_ssl_context",
]


def _no_password() -> str:
    # Without a callback OpenSSL would prompt on the terminal for an encrypted key: a service
    # would hang at start-up. We have no option for a key password, so refuse such a key.
    raise ValueError("the key is encrypted: give an unencrypted key (file permissions protect it)")


def check_ca_file(path: str) -> None:
    """Raise :class:`ValueError` unless ``path`` is a readable PEM bundle of CA certificates."""
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cafile=path)
    except FileNotFoundError:
        raise ValueError(f"no such file: {path!r}") from None
    except ssl.SSLError as exc:  # before OSError: it is one
        raise ValueError(f"{path!r} holds no PEM certificate ({exc.reason or exc})") from None
    except OSError as exc:
        raise ValueError(f"cannot read {path!r}: {exc.strerror or exc}") from None


def check_cert_chain(cert_file: str, key_file: str) -> None:
    """Raise :class:`ValueError` unless the certificate and key files load and match."""
    for path in (cert_file, key_file):
        try:
            with open(path, "rb"):
                pass
        except FileNotFoundError:
            raise ValueError(f"no such file: {path!r}") from None
        except OSError as exc:
            raise ValueError(f"cannot read {path!r}: {exc.strerror or exc}") from None
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_cert_chain(
            cert_file, key_file, password=_no_password
        )
    except ssl.SSLError as exc:
        raise ValueError(
            f"{cert_file!r} and {key_file!r} are not a PEM certificate and its private key "
            f"({exc.reason or exc})"
        ) from None


class TLSSettings(Protocol):
    """The TLS fields of :class:`~tars.mqtt.MQTTClientConfig` (a protocol: the configuration
    imports this module for its checks, so this module must not import it)."""

    @property
    def tls_ca_file(self) -> str | None: ...

    @property
    def tls_cert_file(self) -> str | None: ...

    @property
    def tls_key_file(self) -> str | None: ...

    @property
    def tls_insecure(self) -> bool: ...


def make_ssl_context(config: TLSSettings) -> ssl.SSLContext:
    """The client's SSL context: verify the broker (``tls_ca_file``, else the system store),
    present ``tls_cert_file``/``tls_key_file`` when given (mutual TLS), and skip every check
    with ``tls_insecure``.

    Raises:
        ConfigError: a file changed since the configuration was checked and no longer loads.
    """
    try:
        ctx = ssl.create_default_context(cafile=config.tls_ca_file)
        if config.tls_cert_file is not None:
            ctx.load_cert_chain(config.tls_cert_file, config.tls_key_file, password=_no_password)
    except (OSError, ssl.SSLError, ValueError) as exc:
        field = "tls_ca_file" if config.tls_cert_file is None else "tls_cert_file"
        raise ConfigError(field, f"cannot load the TLS files: {exc}") from None
    if config.tls_insecure:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


# The TLS alerts by which a broker refuses our certificate (or its absence): OpenSSL's reasons.
_REFUSED_CERTIFICATE = frozenset(
    {
        "TLSV13_ALERT_CERTIFICATE_REQUIRED",
        "TLSV1_ALERT_UNKNOWN_CA",
        "TLSV1_ALERT_ACCESS_DENIED",
        "SSLV3_ALERT_BAD_CERTIFICATE",
        "SSLV3_ALERT_UNSUPPORTED_CERTIFICATE",
        "SSLV3_ALERT_CERTIFICATE_REVOKED",
        "SSLV3_ALERT_CERTIFICATE_EXPIRED",
    }
)


def is_certificate_failure(exc: BaseException) -> bool:
    """Whether ``exc`` (or an exception it wraps) is a certificate failure no retry can fix:
    the broker's certificate failed our verification (:class:`ssl.SSLCertVerificationError`),
    or the broker refused ours, or its absence, with a TLS alert (mutual TLS). Unlike a refused
    or dropped connection, the next attempt would present the same certificates."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, ssl.SSLCertVerificationError):
            return True
        if (
            isinstance(current, ssl.SSLError)
            and getattr(current, "reason", None) in _REFUSED_CERTIFICATE
        ):
            return True
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return False
