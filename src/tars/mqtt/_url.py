"""Broker URLs: ``mqtt://user:pass@host:port``, ``mqtts://`` and MQTT over WebSockets
(``ws://host:port/path``, ``wss://``) parsed into :class:`ConnectionParams`, and redaction, so
that a password never reaches a repr, a log line or an error message.

A WebSocket URL may have a path (default ``/mqtt``, the path most brokers and reverse proxies
serve MQTT on) and a query (some gateways take a token there: it is masked like a password).

``mqtt_url`` may also list several brokers (the nodes of a cluster), separated by commas:
``mqtt://a:1883,mqtt://b:1883``. A comma starts a new URL only where a scheme follows it, so a
password holding a bare comma, valid before lists existed, still parses as one URL. Every URL of
a list is TLS (``mqtts``, ``wss``) or none is: a failover from ``mqtts://`` to ``mqtt://`` would
silently send the credentials in clear. TCP and WebSocket URLs may be mixed (a node reached
directly, another through a proxy on port 443). Credentials may differ per URL.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal
from urllib.parse import quote, unquote

from ._argcheck import wrong_type
from ._errors import ConfigError, ConfigTypeError, InvalidArgumentError

if TYPE_CHECKING:
    import random

__all__ = [
    "BrokerOrder",
    "ConnectionParams",
    "check_mqtt_url",
    "check_mqtt_urls",
    "check_ws_headers",
    "endpoint_from_reference",
    "order_endpoints",
    "parse_mqtt_url",
    "parse_mqtt_urls",
    "redact_url",
    "redact_urls",
    "split_mqtt_urls",
]

# scheme -> (default port, TLS, WebSocket)
_SCHEMES = {
    "mqtt": (1883, False, False),
    "mqtts": (8883, True, False),
    "ws": (80, False, True),
    "wss": (443, True, True),
}
WS_DEFAULT_PATH = "/mqtt"
_MASK = "***"
# RFC 9110 field names are tokens; the WebSocket handshake's own headers are ours to set.
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_HANDSHAKE_HEADERS = frozenset(
    {
        "host",
        "upgrade",
        "connection",
        "content-length",
        "transfer-encoding",
        "sec-websocket-key",
        "sec-websocket-version",
        "sec-websocket-accept",
        "sec-websocket-extensions",
        "sec-websocket-protocol",
    }
)
# A comma followed (after optional spaces) by a scheme separates two URLs. No valid single URL
# contains one: the "//" would be a path, which a broker URL may not have. Any scheme counts, so
# "mqtt://a,http://b" is a list whose second URL is refused for its scheme.
_SEPARATOR = re.compile(r",\s*(?=[a-z][a-z0-9+.-]*://)", re.IGNORECASE)

Protocol = Literal["5", "3.1.1", "auto"]
"""The MQTT version of a broker (``?protocol=`` in its URL; see docs/mqtt311.md)."""

BrokerOrder = Literal["in_order", "shuffle"]
"""How a client orders the brokers of ``mqtt_url``: as written, or shuffled once per client."""


@dataclass(frozen=True, slots=True)
class ConnectionParams:
    """Where and how to connect, as parsed from ``mqtt_url``; the password never shows."""

    host: str
    port: int
    tls: bool
    username: str | None = None
    password: str | None = None
    ws_path: str | None = None
    """The HTTP path (and query) of a ``ws://``/``wss://`` URL; None for MQTT over TCP."""
    protocol: Protocol | None = None  # ?protocol=: this broker's MQTT version (None: the option)

    def __repr__(self) -> str:
        password = None if self.password is None else _MASK
        ws = "" if self.ws_path is None else f", ws_path={_mask_query(self.ws_path)!r}"
        protocol = "" if self.protocol is None else f", protocol={self.protocol!r}"
        return (
            f"ConnectionParams(host={self.host!r}, port={self.port}, tls={self.tls}, "
            f"username={self.username!r}, password={password!r}{ws}{protocol})"
        )

    __str__ = __repr__

    @property
    def websocket(self) -> bool:
        """True for a ``ws://`` or ``wss://`` broker (MQTT over WebSockets)."""
        return self.ws_path is not None

    @property
    def redacted_url(self) -> str:
        """The URL with the password masked, e.g. ``mqtt://user:***@host:1883``: fit for logs."""
        userinfo = ""
        if self.username is not None or self.password is not None:
            userinfo = quote(self.username or "", safe="")
            userinfo += f":{_MASK}@" if self.password is not None else "@"
        host = f"[{self.host}]" if ":" in self.host else self.host
        if self.ws_path is not None:
            scheme = "wss" if self.tls else "ws"
            return f"{scheme}://{userinfo}{host}:{self.port}{_mask_query(self.ws_path)}"
        scheme = "mqtts" if self.tls else "mqtt"
        query = "" if self.protocol is None else f"?protocol={self.protocol}"
        return f"{scheme}://{userinfo}{host}:{self.port}{query}"


def _mask_query(path: str) -> str:
    """``/mqtt?token=...`` -> ``/mqtt?***``: a query may carry a gateway's token."""
    path, question, _ = path.partition("?")
    return f"{path}?{_MASK}" if question else path


class _URLError(ValueError):
    """A URL problem, described without quoting any part of the URL that may hold a secret."""


def redact_url(url: str) -> str:
    """Mask any password in a URL-ish string with ``***``, even when it does not parse.

    Everything between the first ``:`` of the user-info and the last ``@`` is masked, so a
    password holding unescaped ``@``, ``/`` or ``#`` is masked whole. Without an ``@``, a
    ``user:secret`` authority whose "port" is not a number is masked as well. A query (a
    WebSocket gateway's token) is masked too. Erring towards masking too much is deliberate:
    this is for logs.

    Raises :class:`~tars.mqtt.InvalidArgumentTypeError` when ``url`` is not a ``str``.
    """
    if not isinstance(url, str):
        raise wrong_type("url", url, "a str")
    at = url.rfind("@")
    question = url.find("?", at + 1)
    if question >= 0:
        url = f"{url[: question + 1]}{_MASK}"
    scheme_end = url.find("://")
    at = url.rfind("@")
    start = scheme_end + 3 if 0 <= scheme_end < at or (scheme_end >= 0 and at < 0) else 0
    if at >= 0:
        colon = url.find(":", start, at)
        return url if colon < 0 else f"{url[: colon + 1]}{_MASK}{url[at:]}"
    end = len(url)
    for stop in "/?#":
        found = url.find(stop, start)
        if found >= 0:
            end = min(end, found)
    authority = url[start:end]
    colon = authority.find(":")
    port = authority[colon + 1 :]
    if colon < 0 or authority.startswith("[") or port.isdigit() or not port:
        return url
    # "mqtt://user:secret" (host forgotten): the "port" may be a password cut short by an
    # unescaped '/', so everything after the colon goes.
    return f"{url[: start + colon + 1]}{_MASK}"


def split_mqtt_urls(text: str) -> list[str]:
    """The URLs of a comma-separated ``mqtt_url`` (one item for a single URL, untouched).

    Items of a list are stripped of surrounding whitespace; nothing is validated here.
    """
    parts = _SEPARATOR.split(text)
    return parts if len(parts) == 1 else [part.strip() for part in parts]


def redact_urls(text: str) -> str:
    """:func:`redact_url` for a comma-separated list: each URL redacted, the hosts kept.

    When any item does not parse, the whole text is redacted as one URL instead, which masks
    more than needed but never leaves part of a password readable.
    """
    parts = split_mqtt_urls(text)
    if len(parts) > 1:
        try:
            for part in parts:
                _parse(part)
        except _URLError:
            return redact_url(text)
        return ",".join(redact_url(part) for part in parts)
    return redact_url(text)


def parse_mqtt_urls(text: str) -> tuple[ConnectionParams, ...]:
    """Parse one URL or a comma-separated list into :class:`ConnectionParams`, in order.

    A single URL parses exactly as :func:`parse_mqtt_url`. In a list, every URL must be valid,
    all must use TLS (``mqtts``, ``wss``) or none, and no broker may appear twice.

    Raises:
        ConfigError: (``field="mqtt_url"``) as :func:`parse_mqtt_url`; for a list, the message
            says which URL ("URL 2 of 3: ..."). It never contains a password.
    """
    _check_is_str(text)
    try:
        return _parse_list(text)
    except _URLError as exc:
        raise ConfigError("mqtt_url", str(exc)) from None


def check_mqtt_urls(text: str) -> None:
    """:func:`check_mqtt_url` for one URL or a comma-separated list (``ValueError``)."""
    _parse_list(text)


def order_endpoints(
    endpoints: Sequence[ConnectionParams], order: BrokerOrder, rng: random.Random | None = None
) -> tuple[ConnectionParams, ...]:
    """The brokers in the order a client tries them.

    ``"in_order"`` keeps the configured order (the first is the preferred node, the others are
    fallbacks). ``"shuffle"`` returns a random permutation drawn from ``rng`` (a fresh
    ``random.Random()`` by default), so that a fleet of clients with the same configuration
    spreads over the nodes; a client draws it once, so it keeps its own order across failovers.

    Raises:
        ValueError: an unknown ``order``.
    """
    if order == "in_order":
        return tuple(endpoints)
    if order == "shuffle":
        shuffled = list(endpoints)
        if rng is None:
            import random  # loaded only by who shuffles (issue 21)

            rng = random.Random()
        rng.shuffle(shuffled)
        return tuple(shuffled)
    raise InvalidArgumentError(f"unknown broker order {order!r}: use 'in_order' or 'shuffle'")


def check_ws_headers(headers: object) -> dict[str, str]:
    """The extra headers of a WebSocket upgrade (``ws_headers``), checked; a JSON object in a
    string (an environment variable) is read first.

    Raises:
        ValueError: not a mapping of str to str, a name that is not an HTTP token, a value
            with a line break or NUL (header injection), or a header the handshake sets itself
            (``Host``, ``Upgrade``, ``Sec-WebSocket-*``...). The message names the header,
            never its value: it may be a token.
    """
    if isinstance(headers, str):
        import orjson  # only for this option, read from the environment

        try:
            headers = orjson.loads(headers)
        except orjson.JSONDecodeError:
            raise ValueError(
                'must be a JSON object of header names to values, e.g. {"Authorization": "..."}'
            ) from None
    if not isinstance(headers, dict):
        raise ValueError("must be a mapping of header names to values")
    checked: dict[str, str] = {}
    for name, value in headers.items():
        if not isinstance(name, str) or not _TOKEN.fullmatch(name):
            shown = repr(name) if isinstance(name, str) and len(name) <= 40 else "a header"
            raise ValueError(f"{shown} is not a valid HTTP header name")
        if name.lower() in _HANDSHAKE_HEADERS:
            raise ValueError(f"{name!r} is set by the WebSocket handshake itself")
        if not isinstance(value, str) or any(c in value for c in "\r\n\0"):
            raise ValueError(f"the value of {name!r} must be a str without line breaks or NUL")
        checked[name] = value
    return checked


def _parse_list(text: str) -> tuple[ConnectionParams, ...]:
    if not isinstance(text, str):
        return (_parse(text),)  # the single-URL message for a non-string
    parts = split_mqtt_urls(text)
    if len(parts) == 1:
        return (_parse(text),)
    parsed = []
    for number, part in enumerate(parts, 1):
        try:
            parsed.append(_parse(part))
        except _URLError as exc:
            raise _URLError(f"URL {number} of {len(parts)}: {exc}") from None
    if len({params.tls for params in parsed}) > 1:
        raise _URLError(
            "all URLs of a list must use TLS (mqtts://, wss://) or none may: mixing them would "
            "let a failover drop TLS"
        )
    seen: dict[tuple[str, int, str | None], int] = {}
    for number, params in enumerate(parsed, 1):
        first = seen.setdefault((params.host.lower(), params.port, params.ws_path), number)
        if first != number:
            raise _URLError(
                f"URL {number} of {len(parts)} repeats URL {first} (same host and port)"
            )
    return tuple(parsed)


def parse_mqtt_url(url: str) -> ConnectionParams:
    """Parse ``mqtt[s]://[user[:password]@]host[:port][/][?protocol=5|3.1.1|auto]`` or
    ``ws[s]://[user[:password]@]host[:port][/path][?query]`` into :class:`ConnectionParams`
    (a WebSocket URL's query is part of the HTTP resource it asks for).

    ``mqtt`` defaults to port 1883, ``mqtts`` to 8883 with TLS, ``ws`` to 80 and ``wss`` to
    443 with TLS; a WebSocket URL without a path uses ``/mqtt``. The scheme is
    case-insensitive; IPv6 hosts go in brackets; the user name and password are
    percent-decoded (they go in the MQTT CONNECT, over WebSockets too).

    Raises:
        ConfigError: (``field="mqtt_url"``) unknown scheme, missing host, a port that is not an
            integer in 1..65535, a path other than ``/`` (TCP), a query parameter other than
            ``protocol`` (TCP), a fragment, bad percent-encoding, or a user name holding a
            control or non-character (MQTT 5 section 1.5.4). The message never contains the
            password. A ``url`` that is not a ``str`` raises :class:`~tars.mqtt.ConfigTypeError`
            (both a ``ConfigError`` and an ``InvalidArgumentTypeError``).
    """
    _check_is_str(url)
    try:
        return _parse(url)
    except _URLError as exc:
        raise ConfigError("mqtt_url", str(exc)) from None


def _check_is_str(url: object) -> None:
    if not isinstance(url, str):
        raise ConfigTypeError(
            "mqtt_url", f"must be a str like mqtt://host:1883, not {type(url).__name__}"
        )


def check_mqtt_url(url: str) -> None:
    """Raise ``ValueError`` (with a message that quotes nothing secret) when ``url`` is not a
    valid broker URL; for validators that add the field name themselves."""
    _parse(url)


def _parse(url: str) -> ConnectionParams:
    if not isinstance(url, str):
        raise _URLError("must be a string like mqtt://host:1883")
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise _URLError(
            "must look like mqtt://[user[:password]@]host[:port] (or mqtts://, ws://, wss://)"
        )
    scheme = scheme.lower()
    if scheme not in _SCHEMES:
        shown = f" {scheme!r}" if scheme.isascii() and scheme.isalnum() else ""
        raise _URLError(
            f"unknown scheme{shown}: use mqtt://, mqtts:// (TLS), ws:// or wss:// "
            "(MQTT over WebSockets)"
        )
    default_port, tls, websocket = _SCHEMES[scheme]
    end = min((i for i in (rest.find(c) for c in "/?#") if i >= 0), default=len(rest))
    authority, tail = rest[:end], rest[end:]
    ws_path = _ws_path(tail) if websocket else None
    path, qmark, query = ("", "", "") if websocket else tail.partition("?")
    if not websocket and (path not in ("", "/") or "#" in query):
        raise _URLError(
            "must not have a path or fragment (a path is for ws:// and wss://); "
            "percent-encode '/', '?', '#' and '@' in the user name and password"
        )
    protocol = _parse_query(query) if qmark else None
    userinfo, at, hostport = authority.rpartition("@")
    if "," in hostport:  # no host name has one: a list with a URL missing its scheme
        raise _URLError(
            "a comma-separated list needs the scheme on every URL, e.g. mqtt://a:1883,mqtt://b:1883"
        )
    host, port = _parse_hostport(hostport, default_port)
    username: str | None = None
    password: str | None = None
    if at:
        user, colon, secret = userinfo.partition(":")
        try:
            username = unquote(user, errors="strict") or None
            password = unquote(secret, errors="strict") if colon else None
        except UnicodeDecodeError:
            raise _URLError("the user name or password is not percent-encoded UTF-8") from None
        if username is not None and not username.isprintable():
            # The user name is an MQTT 5 UTF-8 string (the password is binary data): Mosquitto
            # closes every connection whose CONNECT holds a control or non-character in it.
            # isprintable() first (every forbidden character is unprintable) spares nearly every
            # name this import: about 2 us a call, and loading the topic rules without a client.
            from ._topics import forbidden_character

            reason = forbidden_character(username)
            if reason is not None:
                raise _URLError(f"the user name {reason}")
    return ConnectionParams(host, port, tls, username, password, ws_path, protocol)


def _ws_path(tail: str) -> str:
    """The HTTP resource of a WebSocket URL: its path (``/mqtt`` when it has none) and query."""
    if "#" in tail:
        raise _URLError(
            "must not have a fragment; percent-encode '#' in the user name and password"
        )
    if any(c.isspace() or not c.isprintable() or not c.isascii() for c in tail):
        raise _URLError("the path contains whitespace, control or non-ASCII characters")
    if not tail or tail.startswith("?"):
        return WS_DEFAULT_PATH + tail
    return tail


def _parse_query(query: str) -> Protocol:
    """The one URL parameter a broker URL may have: ``protocol=5|3.1.1|auto``."""
    name, _, value = query.partition("=")
    if name != "protocol" or "&" in value:
        raise _URLError(
            "the only query parameter is protocol=5, protocol=3.1.1 or protocol=auto "
            "(percent-encode '?' in the user name and password)"
        )
    if value not in ("5", "3.1.1", "auto"):
        raise _URLError(f"protocol must be 5, 3.1.1 or auto, not {value[:10]!r}")
    return value  # type: ignore[return-value]


def _parse_hostport(hostport: str, default_port: int) -> tuple[str, int]:
    if hostport.startswith("["):
        close = hostport.find("]")
        after = hostport[close + 1 :] if close > 0 else ""
        if close < 0 or (after and not after.startswith(":")):
            raise _URLError("an IPv6 host must be written in brackets, e.g. mqtt://[::1]:1883")
        host = hostport[1:close]
        import ipaddress  # only for bracketed hosts: kept off every service's start

        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise _URLError("the host in brackets is not an IPv6 address") from None
        port_text = after[1:]
    else:
        if hostport.count(":") > 1:
            raise _URLError("an IPv6 host must be written in brackets, e.g. mqtt://[::1]:1883")
        host, _, port_text = hostport.partition(":")
    if not host:
        raise _URLError("missing host, e.g. mqtt://localhost:1883")
    if any(c.isspace() or not c.isprintable() for c in host):
        raise _URLError("the host contains whitespace or control characters")
    if not port_text:
        return host, default_port
    if not (port_text.isascii() and port_text.isdigit() and 1 <= int(port_text) <= 65535):
        raise _URLError("the port must be an integer from 1 to 65535")
    return host, int(port_text)


def endpoint_from_reference(reference: str, current: ConnectionParams) -> ConnectionParams | None:
    """Where an MQTT 5 Server Reference (CONNACK/DISCONNECT 0x9C/0x9D) sends us, or None.

    The spec leaves the format to the server; brokers send ``host``, ``host:port``,
    ``[v6]:port``, several of those separated by spaces (the first is taken), or a URL. The
    scheme and the credentials stay the current broker's: a redirection must never make the
    client send its password in clear, nor to a server it was not configured with credentials
    for under another scheme. A bare ``host:port`` keeps the current transport (a WebSocket
    link stays one, on the same path). None when the reference cannot be read (the caller logs it).
    """
    token = reference.strip().split()[0] if reference.strip() else ""
    if not token:
        return None
    ws_path = current.ws_path
    if "://" in token:
        try:
            target = parse_mqtt_url(token)
        except ValueError:
            return None
        if target.tls != current.tls:
            return None
        host, port, ws_path = target.host, target.port, target.ws_path
    else:
        match = re.fullmatch(
            r"\[([0-9A-Fa-f:.]+)\](?::(\d{1,5}))?|([^:\[\]/@]+)(?::(\d{1,5}))?", token
        )
        if match is None:
            return None
        host = match.group(1) or match.group(3)
        port_text = match.group(2) or match.group(4)
        port = int(port_text) if port_text else current.port
        if not 0 < port < 65536:
            return None
    return ConnectionParams(
        host, port, current.tls, current.username, current.password, ws_path, current.protocol
    )
