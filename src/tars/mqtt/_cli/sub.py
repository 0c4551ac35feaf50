"""``tars-mqtt sub FILTER...``: print live messages, decoded, one per line.

Envelopes show time, topic, type, source, correlation and a compact preview of their data;
other JSON, text and binary payloads are shown by kind, escaped so a payload can never drive
the terminal. ``--json`` prints one JSON object per message instead, for ``jq`` and scripts.
"""

from __future__ import annotations

import argparse
import asyncio
import fnmatch
import sys
import time
from typing import Any

from ._common import EXIT_OK, add_broker_options, make_client, run, style_for
from ._render import Received, classify, envelope_line, json_line

__all__ = ["add_parser", "matches"]

HELP = "print live messages on topic filters, envelopes decoded"


def add_parser(commands: Any) -> None:
    """Register ``sub`` on the ``tars-mqtt`` subcommands."""
    parser: argparse.ArgumentParser = commands.add_parser(
        "sub", help=HELP, description=__doc__.split("\n\n")[0].replace("``", "")
    )
    parser.add_argument("filters", nargs="+", metavar="FILTER", help="topic filters (+, # allowed)")
    parser.add_argument("--json", action="store_true", help="one JSON object per line")
    parser.add_argument(
        "--type", dest="types", action="append", default=[], metavar="PATTERN",
        help="only envelopes whose type matches (shell pattern, e.g. 'stt.*'; repeatable)",
    )  # fmt: skip
    parser.add_argument(
        "--source", dest="sources", action="append", default=[], metavar="PATTERN",
        help="only envelopes whose source matches (shell pattern; repeatable)",
    )  # fmt: skip
    parser.add_argument("--qos", type=int, choices=(0, 1, 2), default=0, help="subscription QoS")
    parser.add_argument(
        "-n", "--count", type=int, default=0, metavar="N", help="exit after N messages shown"
    )
    add_broker_options(parser)
    parser.set_defaults(func=lambda args: run(args, _sub))


def matches(received: Received, types: list[str], sources: list[str]) -> bool:
    """True when the message passes ``--type`` and ``--source`` (both empty: everything).

    With either filter set, only envelopes can match: other payloads have no type or source.
    """
    if not types and not sources:
        return True
    if received.kind != "envelope":
        return False
    env = received.value
    if types and not any(fnmatch.fnmatchcase(env["type"], p) for p in types):
        return False
    return not sources or any(fnmatch.fnmatchcase(env["source"], p) for p in sources)


async def _sub(args: argparse.Namespace) -> int:
    from .. import Message, validate_topic_filter

    for topic_filter in args.filters:  # refused before connecting: no broker needed to say so
        validate_topic_filter(topic_filter)

    style = style_for()
    done = asyncio.Event()
    shown = 0

    async def show(message: Message) -> None:
        nonlocal shown
        received = classify(
            time.time(), message.topic, message.payload, message.qos, message.retain
        )
        if not matches(received, args.types, args.sources):
            return
        line = json_line(received) if args.json else envelope_line(received, style)
        sys.stdout.write(line + "\n")
        sys.stdout.flush()
        shown += 1
        if args.count and shown >= args.count:
            done.set()

    client = make_client(args, "sub", queue_size=10_000)
    async with client:
        for topic in args.filters:
            await client.subscribe(topic, show, qos=args.qos)
        print(f"subscribed to {', '.join(args.filters)}", file=sys.stderr, flush=True)
        await done.wait()
    return EXIT_OK
