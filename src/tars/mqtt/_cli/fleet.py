"""``tars-mqtt fleet``: every service seen on ``system/health/+`` and ``system/keepalive/+``.

Live by default: the table is redrawn every ``--interval`` seconds on a terminal, or printed
again (followed by a blank line) when the output is piped. ``--once`` listens for ``--wait``
seconds, prints the table and exits. ``--check`` is the health check: it listens until every
service is decided (see ``FleetView.decided``), and at most ``--stale-after`` seconds, prints the
table and exits 0 when every service is ``ok`` or ``stopped``, 1 when one is unhealthy, offline,
stale, unknown or missing (2: a usage mistake, 1 too when the broker cannot be reached).
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
        "--check", action="store_true",
        help="health check: exit 1 if a service is not ok (or stopped), within --stale-after",
    )  # fmt: skip
    parser.add_argument(
        "services", nargs="*", metavar="SERVICE",
        help="only these services (client ids or service names); one never heard is missing",
    )  # fmt: skip
    parser.add_argument(
        "--wait", type=float, default=None, metavar="SECONDS",
        help="how long --once listens (6: one default heartbeat); for --check, the least it "
        "listens (1: the retained statuses)",
    )  # fmt: skip
    parser.add_argument(
        "--stale-after", type=float, default=15.0, metavar="SECONDS",
        help="a service silent for longer than this is stale (15: three default heartbeat "
        "intervals, as the client's own watchdog)",
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

    # Wall-clock time throughout: statuses are aged by their own timestamps (``ts``).
    view = FleetView(
        stale_after=args.stale_after,
        expect_heartbeats=args.expect_heartbeats,
        started=time.time(),
        only=tuple(args.services),
    )
    style = style_for()
    clients = [make_client(args, "fleet")]
    clients += [make_client(args, "fleet", url=url) for url in args.also_url]

    def handler_for(broker: str) -> Any:
        async def feed(message: Message) -> None:
            view.feed(message.topic, message.payload, time.time(), broker)

        return feed

    async with contextlib.AsyncExitStack() as stack:
        for client in clients:
            await stack.enter_async_context(client)
            params = client.config.connection
            feed = handler_for(f"{params.host}:{params.port}")
            await client.subscribe("system/health/+", feed, qos=1)
            await client.subscribe("system/keepalive/+", feed)
        if args.once:
            await asyncio.sleep(6.0 if args.wait is None else args.wait)  # listening is the work
            print(render_table(view, time.time(), style), flush=True)
            return EXIT_OK
        if args.check:
            now = await _listen_until_decided(view, 1.0 if args.wait is None else args.wait)
            print(render_table(view, now, style), flush=True)
            return EXIT_FAILED if view.in_trouble(now) else EXIT_OK
        tty = style.color
        while True:
            table = render_table(view, time.time(), style)
            stamp = time.strftime("%H:%M:%S")
            if tty:
                sys.stdout.write(f"{_CLEAR}tars-mqtt fleet  {stamp}\n\n{table}\n")
            else:
                sys.stdout.write(f"{stamp}\n{table}\n\n")
            sys.stdout.flush()
            await asyncio.sleep(args.interval)


async def _listen_until_decided(view: FleetView, least: float) -> float:
    """Listen at least ``least`` seconds, then until every service is decided, and at most
    ``stale_after`` seconds in all (a service still silent then is stale); return the time the
    answer is given at.

    Polled every 0.1 s: decisions depend on the clock too (a silence becomes staleness), not
    only on messages, and a check is short-lived.
    """
    deadline = view.started + max(least, view.stale_after)
    await asyncio.sleep(least)
    now = time.time()
    while now < deadline and not view.all_decided(now):
        await asyncio.sleep(min(0.1, deadline - now))
        now = time.time()
    return now
