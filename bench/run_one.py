"""Run one (client, case) and print its figures: ``python -m bench.run_one --client X --case Y``.

The harness (:mod:`bench.__main__`) starts this in a fresh process per run, so ``getrusage``
and peak RSS belong to that run alone. The last line of stdout is one JSON object::

    {"client": ..., "case": ..., "n": ..., "status": "ok", "metrics": {...}}
    {"client": ..., "case": ..., "n": ..., "status": "failed", "error": "..."}
    {"client": ..., "case": ..., "n": ..., "status": "unavailable", "error": "ImportError: ..."}
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any

from bench.adapters import ADAPTERS, load_adapter
from bench.cases import CASES, CaseFailed, run_case

__all__ = ["main", "run"]


def run(
    client: str,
    case_name: str,
    n: int,
    host: str,
    port: int,
    timeout: float,
    ws_port: int | None = None,
) -> dict[str, Any]:
    """Run one case in this process and describe the outcome (never raises for a client's fault).

    A WebSocket adapter (``transport = "ws"``) connects to ``ws_port`` instead of ``port``.
    """
    result: dict[str, Any] = {"client": client, "case": case_name, "n": n}
    try:
        factory = load_adapter(client)
    except (ImportError, AttributeError) as exc:
        return result | {"status": "unavailable", "error": f"{type(exc).__name__}: {exc}"}
    if factory.transport == "ws":
        if ws_port is None:
            return result | {"status": "failed", "error": "a WebSocket client needs --ws-port"}
        port = ws_port
    try:
        metrics = asyncio.run(run_case(CASES[case_name], factory, host, port, n, timeout))
    except CaseFailed as exc:
        return result | {"status": "failed", "error": str(exc)}
    except Exception as exc:  # a client's bug is a result to report, not a crash of the bench
        return result | {"status": "failed", "error": f"{type(exc).__name__}: {exc}"}
    return result | {"status": "ok", "metrics": metrics}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.run_one", description=__doc__)
    parser.add_argument("--client", required=True, choices=sorted(ADAPTERS))
    parser.add_argument("--case", required=True, choices=list(CASES))
    parser.add_argument("--n", type=int, help="measured messages (default: the case's own)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True, help="broker port")
    parser.add_argument("--ws-port", type=int, help="the broker's WebSocket port (tars_ws)")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds for the whole run")
    parser.add_argument("--json", action="store_true", help="print one JSON line (for the harness)")
    args = parser.parse_args(argv)
    n = args.n or CASES[args.case].n
    result = run(args.client, args.case, n, args.host, args.port, args.timeout, args.ws_port)
    if args.json:
        print(json.dumps(result))
    elif result["status"] == "ok":
        figures = ", ".join(f"{k} {v:,.3f}" for k, v in result["metrics"].items())
        print(f"{args.client} {args.case} (n={n}): {figures}")
    else:
        print(f"{args.client} {args.case} (n={n}): {result['status']}: {result['error']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
