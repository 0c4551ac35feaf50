"""The ``tars-mqtt`` command line: ``sub``, ``pub``, ``request``, ``fleet`` and ``broker``.

One module per command; :mod:`._render` and :mod:`._fleet_view` are pure (text in, text out) and
unit-tested without a broker. The commands use only the public ``tars.mqtt`` API, the way a
service would, and import it only when they run, so ``tars-mqtt --help`` stays quick.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from . import broker, fleet, pub, request, sub
from .broker import broker_parser, main_broker, run_broker

__all__ = ["broker_parser", "main", "main_broker", "run_broker"]

_COMMANDS = (sub, pub, request, fleet, broker)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"tars-mqtt (tars-core) {version('tars-core')}"
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "tars-mqtt (tars-core, not installed)"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tars-mqtt",
        description="tars-core tools: watch, publish to and check a fleet of MQTT services.",
    )
    parser.add_argument("--version", action="version", version=_version())
    commands = parser.add_subparsers(dest="command", required=True)
    for command in _COMMANDS:
        command.add_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``tars-mqtt``; returns the exit status."""
    args = _parser().parse_args(argv)
    status: int = args.func(args)
    return status


if __name__ == "__main__":
    sys.exit(main())
