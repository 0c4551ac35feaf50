"""``tars-mqtt broker``: the development and test broker on TCP (and WebSockets).

``tars-mqtt broker`` (also ``python -m tars.mqtt.testing``) runs the testing kit's
:class:`~tars.mqtt.testing.InMemoryBroker` over TCP until Ctrl-C or SIGTERM, for trying a
service by hand; ``--ws-port`` adds a WebSocket listener (``ws://host:port/mqtt``, the ``ws``
extra). It is a development and test broker, not a production one.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Sequence
from typing import Any

__all__ = ["add_parser", "broker_parser", "main_broker", "run_broker"]

_BROKER_HELP = (
    "Run tars-core's development and test MQTT 5 and 3.1.1 broker over TCP until Ctrl-C. It keeps "
    "everything in memory and has no authentication, authorization or TLS: "
    "never use it in production."
)


def _add_broker_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1)")
    parser.add_argument("--port", type=int, default=1883, help="TCP port, 0 for a free one (1883)")
    parser.add_argument(
        "--protocol",
        choices=("both", "5", "3.1.1"),
        default="both",
        help="MQTT versions spoken: both (each client gets what it asks for), 5, or 3.1.1 "
        "(acts as a 3.1.1-only broker)",
    )
    parser.add_argument(
        "--ws-port",
        type=int,
        default=None,
        help="also accept MQTT over WebSockets on this port (0 for a free one), at --ws-path",
    )
    parser.add_argument(
        "--ws-path", default="/mqtt", help="HTTP path of the WebSocket listener (/mqtt)"
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log every packet decision")


def broker_parser(prog: str | None = None) -> argparse.ArgumentParser:
    """The parser of ``python -m tars.mqtt.testing`` (the ``broker`` options alone)."""
    parser = argparse.ArgumentParser(prog=prog, description=_BROKER_HELP)
    _add_broker_arguments(parser)
    return parser


def add_parser(commands: Any) -> None:
    """Register ``broker`` on the ``tars-mqtt`` subcommands."""
    parser = commands.add_parser(
        "broker", help="run a development/test MQTT 5 broker", description=_BROKER_HELP
    )
    _add_broker_arguments(parser)
    parser.set_defaults(func=_serve)


async def run_broker(
    host: str,
    port: int,
    protocol: str = "both",
    *,
    ws_port: int | None = None,
    ws_path: str = "/mqtt",
) -> None:
    """Serve the in-memory broker on ``host:port`` (and WebSockets on ``ws_port`` at
    ``ws_path``) until SIGINT/SIGTERM (or cancellation). ``protocol``: ``"both"``, ``"5"`` or
    ``"3.1.1"`` (the MQTT versions it speaks).

    Prints one line with the broker's URL(s) once it listens.

    Raises:
        OSError: the address cannot be bound (port in use...).
        ConfigError: ``ws_port`` without the ``ws`` extra installed.
    """
    from ..testing import InMemoryBroker  # the CLI is optional; keep the import lazy

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):  # not on every platform
            loop.add_signal_handler(signum, stop.set)
    try:
        protocols = ("5", "3.1.1") if protocol == "both" else (protocol,)
        async with InMemoryBroker(name="tars-mqtt", protocols=protocols) as broker:
            await broker.serve_tcp(host, port)
            urls = str(broker.tcp_url)
            if ws_port is not None:
                _require_ws_extra()
                await broker.serve_ws(host, ws_port, path=ws_path)
                urls += f" and {broker.ws_url}"
            print(f"tars-mqtt dev broker (not for production) listening on {urls}", flush=True)
            await stop.wait()
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)


def _require_ws_extra() -> None:
    import importlib.util

    if importlib.util.find_spec("websockets") is None:
        from .._errors import ConfigError

        raise ConfigError(
            "--ws-port", "a WebSocket listener needs the 'ws' extra: pip install 'websockets>=17'"
        )


def _serve(args: argparse.Namespace) -> int:
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        asyncio.run(
            run_broker(
                args.host, args.port, args.protocol, ws_port=args.ws_port, ws_path=args.ws_path
            )
        )
    except KeyboardInterrupt:
        pass
    except ValueError as exc:  # ConfigError (no ws extra), InvalidArgumentError (a bad path)
        print(f"tars-mqtt: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"tars-mqtt: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1
    return 0


def main_broker(argv: Sequence[str] | None = None, prog: str | None = None) -> int:
    """Entry point of ``python -m tars.mqtt.testing``: the broker options only."""
    return _serve(broker_parser(prog).parse_args(argv))
