"""What every networked command shares: broker options, the client, and one-line errors.

A person at a terminal (or a script) should never see a traceback for a mistake of theirs: a bad
URL, a broker that does not answer, JSON that does not parse. :func:`run` turns those into one
line on stderr and exit status 1 (:class:`CliError` carries the line); argparse keeps exit
status 2 for usage errors.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import secrets
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from .. import ConfigError, MQTTError
from ._render import PLAIN, Style

__all__ = [
    "CliError",
    "add_broker_options",
    "load_json_object",
    "make_client",
    "run",
    "style_for",
]

EXIT_OK = 0
EXIT_FAILED = 1

_FLAGS = {
    "mqtt_url": "--url / MQTT_URL",
    "tls_ca_file": "--ca-file / MQTT_TLS_CA_FILE",
    "ws_headers": "MQTT_WS_HEADERS",
    "connect_timeout": "--connect-timeout",
    "client_id": "--client-id",
}


_JSON_KINDS = {
    list: "an array",
    str: "a string",
    int: "a number",
    float: "a number",
    bool: "a boolean",
    type(None): "null",
}


class CliError(Exception):
    """A failure to report as one line on stderr (exit status 1)."""


def add_broker_options(parser: argparse.ArgumentParser) -> None:
    """The options of every command that talks to a broker (same names as the library's)."""
    group = parser.add_argument_group("broker")
    group.add_argument(
        "--url",
        default=None,
        help="mqtt://[user[:password]@]host[:port] or mqtts://... (default: $MQTT_URL, "
        "else mqtt://localhost:1883)",
    )
    group.add_argument(
        "--ca-file",
        default=None,
        help="CA bundle (PEM) to verify an mqtts:// broker (default: $MQTT_TLS_CA_FILE)",
    )
    group.add_argument(
        "--insecure",
        action="store_true",
        default=None,
        help="skip TLS certificate checks, for test brokers (default: $MQTT_TLS_INSECURE)",
    )
    group.add_argument(
        "--connect-timeout",
        type=float,
        default=5.0,
        metavar="SECONDS",
        help="give up when the broker does not answer within this time (5)",
    )
    group.add_argument(
        "--client-id", default=None, help="MQTT client id (default: tars-mqtt-<command>-<random>)"
    )
    group.add_argument(
        "-v", "--verbose", action="count", default=0, help="log the client's work (-vv: debug)"
    )


def _env_flag(name: str) -> bool:
    raw = os.environ.get(name, "").strip().lower()
    if raw in ("", "0", "false", "no", "off"):
        return False
    if raw in ("1", "true", "yes", "on"):
        return True
    raise CliError(f"{name}={raw!r} is not a boolean: use true/false, 1/0, yes/no or on/off")


def _ws_headers() -> dict[str, str] | None:
    """``MQTT_WS_HEADERS`` (a JSON object: a WebSocket gateway's token), checked."""
    raw = os.environ.get("MQTT_WS_HEADERS", "").strip()
    if not raw:
        return None
    from .._url import check_ws_headers

    try:
        return check_ws_headers(raw)
    except ValueError as exc:  # the message names the header, never its value
        raise CliError(f"bad MQTT_WS_HEADERS: {exc}") from None


def make_client(
    args: argparse.Namespace, command: str, *, url: str | None = None, **options: Any
) -> Any:
    """An ``MQTTClient`` for this command, failing fast: ``wait_for_broker=False``.

    Raises:
        CliError: a bad option, naming the flag or variable to fix.
    """
    from .. import MQTTClient  # the CLI loads the client only when it talks to a broker

    url = url or args.url or os.environ.get("MQTT_URL") or "mqtt://localhost:1883"
    insecure = args.insecure if args.insecure is not None else _env_flag("MQTT_TLS_INSECURE")
    try:
        return MQTTClient(
            url,
            args.client_id or f"tars-mqtt-{command}-{secrets.token_hex(4)}",
            tls_ca_file=args.ca_file or os.environ.get("MQTT_TLS_CA_FILE") or None,
            tls_insecure=insecure,
            ws_headers=_ws_headers(),
            connect_timeout=args.connect_timeout,
            wait_for_broker=False,
            reconnect_min_delay=0.5,
            **options,
        )
    except ConfigError as exc:
        flag = _FLAGS.get(exc.field, exc.field)
        raise CliError(f"bad {flag}: {str(exc).removeprefix(f'{exc.field}: ')}") from None


def load_json_object(text: str | None, path: str | None, what: str = "--data") -> dict[str, Any]:
    """The event data from ``--data`` (JSON text) or ``--data-file`` (a path, ``-``: stdin).

    Raises:
        CliError: unreadable file, invalid JSON, or JSON that is not an object.
    """
    import orjson

    raw = read_data(text, path)
    if raw is None:
        return {}
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        source = path if path is not None else what
        raise CliError(f"{source} is not valid JSON: {exc}") from None
    if type(value) is not dict:
        kind = _JSON_KINDS.get(type(value), type(value).__name__)
        raise CliError(f"{what} must be a JSON object (the envelope's data), not {kind}")
    return value


def read_data(text: str | None, path: str | None) -> bytes | None:
    """``--data`` as UTF-8, or the bytes of ``--data-file`` (``-``: stdin), or None."""
    if text is not None and path is not None:
        raise CliError("give --data or --data-file, not both")
    if text is not None:
        return text.encode("utf-8")
    if path is None:
        return None
    try:
        return sys.stdin.buffer.read() if path == "-" else Path(path).read_bytes()
    except OSError as exc:
        raise CliError(f"cannot read --data-file {path}: {exc.strerror or exc}") from None


def style_for(stream: Any = None) -> Style:
    """Colour when ``stream`` (stdout) is a terminal and ``NO_COLOR`` is unset; else plain."""
    stream = stream if stream is not None else sys.stdout
    is_tty = getattr(stream, "isatty", lambda: False)()
    return Style(color=True) if is_tty and not os.environ.get("NO_COLOR") else PLAIN


def _setup_logging(verbose: int) -> None:
    level = logging.ERROR if verbose <= 0 else logging.INFO if verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # Connection trouble is this command's one line on stderr; the library's own log lines
    # about it would say the same thing twice.
    logging.getLogger("tars.mqtt").setLevel(level if verbose else logging.CRITICAL)


def run(
    args: argparse.Namespace, command: Callable[[argparse.Namespace], Coroutine[Any, Any, int]]
) -> int:
    """Run ``command(args)`` under asyncio; report failures as one line; return the status."""
    _setup_logging(getattr(args, "verbose", 0))
    try:
        return asyncio.run(command(args))
    except KeyboardInterrupt:
        return 130
    except CliError as exc:
        return _fail(str(exc))
    except MQTTError as exc:
        return _fail(str(exc))
    except BrokenPipeError:
        # `tars-mqtt sub ... | head`: the reader left; not an error of ours.
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), sys.stdout.fileno())
        return EXIT_OK
    except OSError as exc:
        return _fail(f"{exc.strerror or exc}")


def _fail(message: str) -> int:
    print(f"tars-mqtt: {message}", file=sys.stderr)
    return EXIT_FAILED
