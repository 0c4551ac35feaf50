"""``tars-mqtt request TOPIC --type T --data JSON --response-topic RT``: ask and print the reply.

Publishes one event carrying MQTT 5 ``response_topic`` and ``correlation_data`` (a responder
built on tars-core just calls ``reply()``), waits for the envelope whose ``correlate`` is the
request's id, and prints it like ``sub`` does (``--json``: the envelope as JSON). No reply
within ``--timeout`` seconds is one line on stderr and exit status 1.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from ._common import (
    EXIT_OK,
    CliError,
    add_broker_options,
    load_json_object,
    make_client,
    run,
    style_for,
)
from ._render import classify, envelope_line
from .pub import add_data_options

__all__ = ["add_parser"]

HELP = "publish a request event and print the reply (or time out)"


def add_parser(commands: Any) -> None:
    """Register ``request`` on the ``tars-mqtt`` subcommands."""
    parser: argparse.ArgumentParser = commands.add_parser(
        "request", help=HELP, description=__doc__.split("\n\n")[0].replace("``", "")
    )
    parser.add_argument("topic", metavar="TOPIC")
    add_data_options(parser, raw=False)
    parser.add_argument(
        "--response-topic", required=True, metavar="TOPIC", help="where the reply is expected"
    )
    parser.add_argument(
        "--timeout", type=float, default=10.0, metavar="SECONDS", help="wait this long (10)"
    )
    parser.add_argument("--json", action="store_true", help="print the reply envelope as JSON")
    add_broker_options(parser)
    parser.set_defaults(func=lambda args: run(args, _request))


async def _request(args: argparse.Namespace) -> int:
    if not args.event_type:
        raise CliError("--type is required")
    from .. import validate_topic_name

    validate_topic_name(args.topic)  # refused before connecting: no broker needed to say so
    validate_topic_name(args.response_topic)
    data = load_json_object(args.data, args.data_file)
    async with make_client(args, "request") as client:
        try:
            reply = await client.request(
                args.topic,
                args.event_type,
                data,
                response_topic=args.response_topic,
                qos=args.qos,
                timeout=args.timeout,
            )
        except TimeoutError:
            raise CliError(
                f"no reply on {args.response_topic} within {args.timeout:g} s "
                f"(is a service answering {args.event_type!r} on {args.topic}?)"
            ) from None
    if args.json:
        print(reply.model_dump_json(), flush=True)
    else:
        received = classify(time.time(), args.response_topic, reply.model_dump_json().encode())
        sys.stdout.write(envelope_line(received, style_for()) + "\n")
    return EXIT_OK
