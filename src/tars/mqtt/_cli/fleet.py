"""``tars-mqtt fleet``: every service seen on ``system/health/+`` and ``system/keepalive/+``.

Live by default: the table is redrawn every ``--interval`` seconds on a terminal, or printed
again (followed by a blank line) when the output is piped. ``--once`` listens for ``--wait``
seconds, prints the table and exits; ``--check`` does the same and exits with status 1 when a
service is unhealthy, offline or stale, for scripts and container health checks.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import time
from typing import Any

from ._common import EXIT_FAILED, EXIT_OK, add_broker_options, make_client, run, style_for
from ._fleet_view import FleetView, render_table

__all__ = ["add_parser"]

HELP = "show the health of every service (live table, --once, --check)"
_CLEAR = "\x1b[H\x1b[2J"


def add_parser(commands: Any) -> None:
    """Register ``fleet`` on the ``tars-mqtt`` subcommands."""
    parser: argparse.ArgumentParser = commands.add_parser(
        "fleet", help=HELP, description=__doc__.split("\n\n")[0].replace("``", "")
    )
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--once", action="store_true", help="print the table once and exit")
    mode.add_argument(
        "--check", action="store_true", help="like --once; exit 1 if any service is not ok"
    )
    parser.add_argument(
        "--wait", type=float, default=6.0, metavar="SECONDS",
        help="how long --once/--check listen before answering (6: one default heartbeat)",
    )  # fmt: skip
    parser.add_argument(
        "--stale-after", type=float, default=15.0, metavar="SECONDS",
        help="a service whose last heartbeat is older than this is stale (15)",
    )  # fmt: skip
    parser.add_argument(
        "--expect-heartbeats", action="store_true",
        help="a service never heard heartbeating within --stale-after is stale too",
    )  # fmt: skip
    parser.add_argument(
        "--interval", type=float, default=1.0, metavar="SECONDS", help="live refresh period (1)"
    )
    parser.add_argument(
        "--also-url", action="append", default=[], metavar="URL",
        help="watch this broker too (repeatable); adds a BROKER column",
    )  # fmt: skip
    add_broker_options(parser)
    parser.set_defaults(func=lambda args: run(args, _fleet))


async def _fleet(args: argparse.Namespace) -> int:
    from .. import Message

    view = FleetView(
        stale_after=args.stale_after,
        expect_heartbeats=args.expect_heartbeats,
        started=time.monotonic(),
    )
    style = style_for()
    clients = [make_client(args, "fleet")]
    clients += [make_client(args, "fleet", url=url) for url in args.also_url]

    def handler_for(broker: str) -> Any:
        async def feed(message: Message) -> None:
            view.feed(message.topic, message.payload, time.monotonic(), broker)

        return feed

    async with contextlib.AsyncExitStack() as stack:
        for client in clients:
            await stack.enter_async_context(client)
            params = client.config.connection
            feed = handler_for(f"{params.host}:{params.port}")
            await client.subscribe("system/health/+", feed, qos=1)
            await client.subscribe("system/keepalive/+", feed)
        if args.once or args.check:
            await asyncio.sleep(args.wait)  # listening is the work: the wait is the answer's window
            now = time.monotonic()
            print(render_table(view, now, style), flush=True)
            return EXIT_FAILED if args.check and view.in_trouble(now) else EXIT_OK
        tty = style.color
        while True:
            table = render_table(view, time.monotonic(), style)
            stamp = time.strftime("%H:%M:%S")
            if tty:
                sys.stdout.write(f"{_CLEAR}tars-mqtt fleet  {stamp}\n\n{table}\n")
            else:
                sys.stdout.write(f"{stamp}\n{table}\n\n")
            sys.stdout.flush()
            await asyncio.sleep(args.interval)
