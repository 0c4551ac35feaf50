"""Python work per message, counted rather than timed: ``python -m bench.opcount``.

CPU per message on a shared 2-core machine moves by a quarter between runs of the same code
(issue 18), so a change of a few percent cannot be told from noise by timing it. This counts
what the interpreter executes instead, which does not move: bytecode instructions, Python
function calls and C function calls per message, over a real run of a case against a real
Mosquitto (any client of the bench, the peers included; ``sys.settrace`` with opcode events,
``sys.setprofile`` for C calls). Each (client, case) runs twice in a fresh process, with N and
3N messages, and the difference is divided by 2N: what connecting, subscribing and the warm-up
cost cancels out. ``--by function`` adds the functions that execute the most instructions.

An instruction is not a fixed amount of time (a C call inside one may take long), and syscalls
are not counted at all (gmqtt writes one per publish and per acknowledgement; tars-core
coalesces them): compare a client with itself before and after a change, and use the bench for
the time. Tracing slows a run about 20-fold: keep N small (the default, 1,000, takes seconds)::

    python -m bench.opcount --clients tars_event,tars_raw --cases qos0_pipelined,qos1_pipelined
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import sys
from pathlib import Path
from types import FrameType
from typing import Any

from bench._broker import mosquitto_broker
from bench._child import json_child
from bench.adapters import ADAPTERS
from bench.cases import CASES, run_case

__all__ = ["main"]

KINDS = ("opcodes", "calls", "c_calls")


def _count(client: str, case_name: str, n: int, port: int, by_function: bool) -> dict[str, Any]:
    """Run one case in this process under the tracer; totals (and per-function opcodes)."""
    from bench.adapters import load_adapter

    totals = dict.fromkeys(KINDS, 0)
    functions: collections.Counter[str] = collections.Counter()

    def on_opcode(frame: FrameType, event: str, arg: object) -> Any:
        if event == "opcode":
            totals["opcodes"] += 1
            if by_function:
                code = frame.f_code
                functions[f"{Path(code.co_filename).name}:{code.co_name}"] += 1
        return on_opcode

    def on_call(frame: FrameType, event: str, arg: object) -> Any:
        frame.f_trace_opcodes = True
        frame.f_trace_lines = False
        totals["calls"] += 1
        return on_opcode

    def on_profile(frame: FrameType, event: str, arg: object) -> None:
        if event == "c_call":
            totals["c_calls"] += 1

    factory = load_adapter(client)
    sys.settrace(on_call)
    sys.setprofile(on_profile)
    try:
        asyncio.run(run_case(CASES[case_name], factory, "127.0.0.1", port, n, 600.0))
    finally:
        sys.settrace(None)
        sys.setprofile(None)
    return {"totals": totals, "functions": dict(functions)}


def _run_child(client: str, case: str, n: int, port: int, by_function: bool) -> dict[str, Any]:
    args = ["--child", client, "--cases", case, "--n", str(n), "--port", str(port)]
    return json_child("bench.opcount", args + (["--by", "function"] if by_function else []), 900)


def _per_message(
    client: str, case: str, n: int, port: int, by_function: bool
) -> tuple[dict[str, float], list[tuple[str, float]]]:
    """Per message of the 2N messages between a run of N and a run of 3N."""
    small = _run_child(client, case, n, port, by_function)
    large = _run_child(client, case, 3 * n, port, by_function)
    totals = {k: (large["totals"][k] - small["totals"][k]) / (2 * n) for k in KINDS}
    names = set(small["functions"]) | set(large["functions"])
    functions = [
        (name, (large["functions"].get(name, 0) - small["functions"].get(name, 0)) / (2 * n))
        for name in names
    ]
    functions.sort(key=lambda item: -item[1])
    return totals, functions


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.opcount", description=__doc__)
    parser.add_argument("--clients", default="tars_event,tars_raw,gmqtt")
    parser.add_argument("--cases", default="qos0_pipelined,qos1_pipelined")
    parser.add_argument("--n", type=int, default=1000, help="messages of the smaller run")
    parser.add_argument("--by", choices=["function"], help="also list the busiest functions")
    parser.add_argument("--top", type=int, default=15, help="functions listed with --by")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    by_function = args.by == "function"
    if args.child:
        print(json.dumps(_count(args.child, args.cases, args.n, args.port, by_function)))
        return 0
    clients = [c.strip() for c in args.clients.split(",") if c.strip()]
    cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    unknown = [c for c in clients if c not in ADAPTERS] + [c for c in cases if c not in CASES]
    if unknown:
        parser.error(f"unknown client or case: {', '.join(unknown)}")
    if "tars_ws" in clients:
        parser.error("tars_ws is not counted (it needs the broker's WebSocket port): use tars_raw")
    with mosquitto_broker() as broker:
        for case in cases:
            for client in clients:
                totals, functions = _per_message(client, case, args.n, broker.port, by_function)
                figures = "  ".join(f"{kind} {totals[kind]:,.1f}" for kind in KINDS)
                print(f"{case:15s} {client:12s} per message: {figures}", flush=True)
                for name, count in functions[: args.top] if by_function else ():
                    print(f"    {count:8.1f}  {name}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
