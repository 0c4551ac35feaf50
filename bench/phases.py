"""Where a tars-core message's CPU goes, measured inside a real run: ``python -m bench.phases``.

The bench (:mod:`bench.cases`) says how much CPU a message costs; this says in which part of
tars-core. It runs one case per fresh process, like :mod:`bench.run_one`, with tars-core's
per-message entry points wrapped in timers, and prints microseconds per message spent in each:

- ``publish_event`` (the envelope publish, all of it), ``encode_event`` (the envelope's bytes),
  ``publish`` (``MQTTClient._publish``: the MQTT publish under it, or the raw client's whole
  publish but for ``publish()``'s own frame);
- ``data_received`` (bytes from the broker to queued messages: framing, the session, dispatch,
  and ``offer``), ``offer`` (the subscription's part: dedup, queueing), ``dedup_seen`` (the
  window's lookup alone);
- ``handler`` (the subscription's call of the handler, with the envelope's parse);
- ``loop`` (every turn of the event loop: the whole process, less what runs between turns).

Why it exists (issue 18): warm micro-benchmarks of these functions (``timeit`` of one call)
account for a third of what they cost here, inside a run, where the same code is 3x slower per
call (caches and branch history shared with the rest of the client, the broker on the other
core); so the envelope path's extra cost had to be measured in place. Each timer adds about a
microsecond to its phase, and nested timers add theirs to the outer one: compare clients and
trees with each other under the same timers, never with the bench's figures.

Its figures move with the machine's load as the bench's do; :mod:`bench.opcount` counts the
instructions and calls per message instead, which do not move between runs.

Not part of ``make bench``: a diagnostic, run by hand (``--repeat`` alternates the clients, as
the bench does, so a burst of load touches each alike)::

    python -m bench.phases --clients tars_event,tars_raw --case qos1_pipelined --repeat 3
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import functools
import json
import sys
import time
from collections.abc import Callable
from typing import Any

from bench._broker import mosquitto_broker
from bench._child import json_child
from bench.cases import CASES, run_case

__all__ = ["main"]


TARS_CLIENTS = ("tars_event", "tars_raw", "tars_event_311", "tars_raw_311")


def _instrument(totals: dict[str, float]) -> None:
    """Wrap tars-core's per-message entry points with timers adding into ``totals``."""
    from asyncio import base_events

    from tars.mqtt import _dedup
    from tars.mqtt import client as client_module
    from tars.mqtt._asyncio import connection, subscription

    clock = time.perf_counter

    def timed(name: str, func: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            start = clock()
            try:
                return func(*args, **kwargs)
            finally:
                totals[name] += clock() - start

        return wrapper

    def timed_async(name: str, func: Callable[..., Any]) -> Callable[..., Any]:
        # Wall time across the await: right for calls that do not suspend (a pipelined
        # publish, a handler that returns at once), which is what the throughput cases make.
        @functools.wraps(func)
        async def wrapper(*args: Any, **kwargs: Any) -> Any:
            start = clock()
            try:
                return await func(*args, **kwargs)
            finally:
                totals[name] += clock() - start

        return wrapper

    wrapped: list[tuple[object, str, str, bool]] = [
        # (owner, attribute, phase, async)
        # _publish, not publish: publish_event() calls it directly (no instruments here).
        (client_module.MQTTClient, "_publish", "publish", True),
        (client_module.MQTTClient, "publish_event", "publish_event", True),
        (client_module, "encode_event", "encode_event", False),
        (connection.Connection, "data_received", "data_received", False),
        (subscription.Subscription, "offer", "offer", False),
        (subscription.Subscription, "_call", "handler", True),
        (_dedup.DedupWindow, "seen", "dedup_seen", False),
        (base_events.BaseEventLoop, "_run_once", "loop", False),
    ]
    for owner, attribute, phase, is_async in wrapped:
        func = getattr(owner, attribute)
        setattr(owner, attribute, (timed_async if is_async else timed)(phase, func))


def _child(client: str, case_name: str, n: int, port: int) -> dict[str, Any]:
    """Run one case in this process, timed; the per-message microseconds of each phase."""
    from bench.adapters import load_adapter

    totals: dict[str, float] = collections.defaultdict(float)
    factory = load_adapter(client)
    _instrument(totals)
    case = CASES[case_name]
    metrics = asyncio.run(run_case(case, factory, "127.0.0.1", port, n, 300.0))
    # Warm-up messages are timed too (the wrappers cannot tell them apart): per message of all.
    warm = min(200, max(10, n // 10))
    phases = {name: total / (n + warm) * 1e6 for name, total in sorted(totals.items())}
    return {"cpu_us_per_msg": metrics["cpu_us_per_msg"], "phases": phases}


def _run_child(client: str, case: str, n: int, port: int) -> dict[str, Any]:
    args = ["--child", client, "--case", case, "--n", str(n), "--port", str(port)]
    return json_child("bench.phases", args, timeout=600)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.phases", description=__doc__)
    parser.add_argument("--clients", default="tars_event,tars_raw")
    parser.add_argument("--case", default="qos1_pipelined", choices=list(CASES))
    parser.add_argument("--n", type=int, help="measured messages (default: the case's own)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    n = args.n or CASES[args.case].n
    if args.child:
        print(json.dumps(_child(args.child, args.case, n, args.port)))
        return 0
    clients = [c.strip() for c in args.clients.split(",") if c.strip()]
    unknown = [c for c in clients if c not in TARS_CLIENTS]
    if unknown:
        parser.error(f"not a tars-core client: {', '.join(unknown)} (one of {TARS_CLIENTS})")
    with mosquitto_broker() as broker:
        for repeat in range(args.repeat):
            for client in clients:
                result = _run_child(client, args.case, n, broker.port)
                phases = "  ".join(f"{k} {v:.1f}" for k, v in result["phases"].items())
                print(
                    f"{repeat + 1} {client:15s} cpu {result['cpu_us_per_msg']:5.1f} us/msg | "
                    f"{phases}",
                    flush=True,
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())
