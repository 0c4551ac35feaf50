"""``tars-mqtt pub TOPIC --type T --data JSON``: publish one event and print its envelope id.

The data comes from ``--data`` (JSON text) or ``--data-file`` (a path, ``-`` for stdin).
``--raw`` publishes the bytes as they are, with no envelope (and prints nothing). QoS 1 and 2
return once the broker acknowledged the message.
"""

from __future__ import annotations

import argparse
from typing import Any

from ._common import (
    EXIT_OK,
    CliError,
    add_broker_options,
    load_json_object,
    make_client,
    read_data,
    run,
)

__all__ = ["add_data_options", "add_parser"]

HELP = "publish one event (or raw payload) and print its envelope id"


def add_data_options(parser: argparse.ArgumentParser, *, raw: bool) -> None:
    """``--type``, ``--data``, ``--data-file`` (and ``--raw``): shared with ``request``."""
    parser.add_argument(
        "--type", dest="event_type", metavar="TYPE", help="event type, e.g. stt.final"
    )
    parser.add_argument("--data", metavar="JSON", help="event data, a JSON object ({} if omitted)")
    parser.add_argument("--data-file", metavar="PATH", help="read the data from a file (- : stdin)")
    if raw:
        parser.add_argument(
            "--raw", action="store_true", help="publish --data/--data-file as is, no envelope"
        )
    parser.add_argument("--qos", type=int, choices=(0, 1, 2), default=1, help="QoS (1)")


def add_parser(commands: Any) -> None:
    """Register ``pub`` on the ``tars-mqtt`` subcommands."""
    parser: argparse.ArgumentParser = commands.add_parser(
        "pub", help=HELP, description=__doc__.split("\n\n")[0].replace("``", "")
    )
    parser.add_argument("topic", metavar="TOPIC")
    add_data_options(parser, raw=True)
    parser.add_argument("--retain", action="store_true", help="ask the broker to retain it")
    parser.add_argument("--correlate", metavar="ID", help="the id of the event this one answers")
    add_broker_options(parser)
    parser.set_defaults(func=lambda args: run(args, _pub))


async def _pub(args: argparse.Namespace) -> int:
    from .. import validate_topic_name

    validate_topic_name(args.topic)  # a bad topic is the user's typo: no broker needed to say so
    if args.raw:
        if args.event_type or args.correlate:
            raise CliError("--raw publishes bytes without an envelope: drop --type/--correlate")
        payload = read_data(args.data, args.data_file) or b""
        data: dict[str, Any] = {}
    else:
        if not args.event_type:
            raise CliError("--type is required (or --raw for a payload without an envelope)")
        data = load_json_object(args.data, args.data_file)
        payload = b""
    async with make_client(args, "pub") as client:
        if args.raw:
            await client.publish(args.topic, payload, qos=args.qos, retain=args.retain)
            return EXIT_OK
        event_id = await client.publish_event(
            args.topic,
            args.event_type,
            data,
            correlation_id=args.correlate,
            qos=args.qos,
            retain=args.retain,
        )
        await client.flush(timeout=args.connect_timeout)
    print(event_id, flush=True)
    return EXIT_OK
