"""``python -m bench`` (``make bench``): tars-core against gmqtt, aiomqtt and paho, one report.

Ends with the start-up rows (:mod:`bench.startup`): import time, memory after import and time
to the first event, each sample a fresh interpreter.

Starts its own Mosquitto on a free port, runs every (client, case) in a fresh process
(``python -m bench.run_one``) ``--repeat`` times, and writes the medians as Markdown to stdout
and to ``bench/RESULTS.md``. Repeats are the outer loop, so a burst of load on the machine
touches every client alike rather than one client's five runs.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench._broker import broker_settings, mosquitto_broker
from bench.adapters import NOT_RUN
from bench.cases import CASES, Case
from bench.report import aggregate, render
from bench.startup import measure as measure_startup
from bench.startup import render_startup

__all__ = ["main"]

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUTPUT = ROOT / "bench" / "RESULTS.md"
DEFAULT_JSON = ROOT / "bench" / "out" / "results.json"
CLIENTS = ("tars_event", "tars_raw", "tars_proto", "gmqtt", "aiomqtt", "paho")
# Not in the default set: tars_ws is tars_raw over WebSockets, compared with tars_raw alone
# (`make bench` runs it as its own report, bench/out/ws.md).
KNOWN = (*CLIENTS, "tars_ws")


def _names(text: str, known: tuple[str, ...] | list[str]) -> list[str]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in known]
    if unknown:
        raise argparse.ArgumentTypeError(
            f"unknown: {', '.join(unknown)} (known: {', '.join(known)})"
        )
    return names


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="tiny N and one repeat (smoke test)")
    parser.add_argument("--repeat", type=int, help="runs per (client, case); default 5, quick 1")
    parser.add_argument(
        "--clients",
        type=lambda text: _names(text, KNOWN),
        default=list(CLIENTS),
        help=f"comma-separated subset of {','.join(KNOWN)} (default: all but tars_ws)",
    )
    parser.add_argument(
        "--cases",
        type=lambda text: _names(text, list(CASES)),
        default=list(CASES),
        help=f"comma-separated subset of {','.join(CASES)}",
    )
    parser.add_argument(
        "--n",
        action="append",
        default=[],
        metavar="CASE=N",
        help="measured messages for one case (repeatable), e.g. --n rss=200000",
    )
    parser.add_argument(
        "--timeout-scale", type=float, default=1.0, help="multiply every run's time limit"
    )
    parser.add_argument(
        "--startup-repeat",
        type=int,
        help="start-up samples per client (default 9, quick 1; 0 skips the start-up rows)",
    )
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="Markdown report")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON, help="raw results of every run")
    return parser


def _counts(args: argparse.Namespace) -> dict[str, int]:
    counts = {name: (case.quick_n if args.quick else case.n) for name, case in CASES.items()}
    for item in args.n:
        name, _, value = item.partition("=")
        if name not in CASES or not value.isdigit() or int(value) < 1:
            raise SystemExit(f"--n expects CASE=N with CASE in {', '.join(CASES)}: {item!r}")
        counts[name] = int(value)
    return counts


def _timeout(case: Case, n: int, scale: float) -> float:
    return (60.0 + n * case.budget_ms / 1000) * scale


def _run(
    client: str, case: Case, n: int, ports: tuple[int, int | None], timeout: float
) -> dict[str, Any]:
    """One run in a fresh interpreter; any way it can go wrong becomes a "failed" result."""
    port, ws_port = ports
    command = [
        sys.executable, "-m", "bench.run_one", "--client", client, "--case", case.name,
        "--n", str(n), "--port", str(port), "--timeout", str(timeout), "--json",
    ]  # fmt: skip
    if ws_port is not None:
        command += ["--ws-port", str(ws_port)]
    base: dict[str, Any] = {"client": client, "case": case.name, "n": n}
    try:
        proc = subprocess.run(
            command, cwd=ROOT, capture_output=True, text=True, timeout=timeout + 30, check=False
        )
    except subprocess.TimeoutExpired:
        return base | {"status": "failed", "error": f"killed after {timeout + 30:g} s"}
    lines = proc.stdout.strip().splitlines()
    if lines:
        try:
            result: dict[str, Any] = json.loads(lines[-1])
            return result
        except json.JSONDecodeError:
            pass
    tail = (proc.stderr.strip().splitlines() or [f"exit code {proc.returncode}"])[-1]
    return base | {"status": "failed", "error": f"crashed: {tail}"}


def _describe(result: dict[str, Any]) -> str:
    if result["status"] != "ok":
        return f"{result['status']}: {result['error']}"
    metrics = result["metrics"]
    if "p50_ms" in metrics:
        return f"p50 {metrics['p50_ms']:.3f} ms, p99 {metrics['p99_ms']:.3f} ms"
    return f"{metrics['msgs_per_s']:,.0f} msgs/s, {metrics['cpu_us_per_msg']:.1f} µs CPU/msg"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = _parser().parse_args(argv)
    repeat = args.repeat or (1 if args.quick else 5)
    counts = _counts(args)
    cases = [CASES[name] for name in args.cases]
    plan = [
        (r, case, client)
        for r in range(repeat)
        for case in cases
        if r < (case.max_repeat or repeat)
        for client in args.clients
    ]
    results: list[dict[str, Any]] = []
    unavailable: dict[str, dict[str, Any]] = {}
    with mosquitto_broker() as broker:
        port, settings = broker.port, broker_settings(broker)
        ports = (port, broker.ws_port)
        for index, (_, case, client) in enumerate(plan, 1):
            n = counts[case.name]
            if client in unavailable:  # no need to spawn a process to fail the same import
                result = unavailable[client] | {"case": case.name, "n": n}
            elif (client, case.name) in NOT_RUN:
                reason = NOT_RUN[client, case.name]
                result = {"client": client, "case": case.name, "n": n, "status": "not run"}
                result["error"] = reason
            else:
                started = time.monotonic()
                result = _run(client, case, n, ports, _timeout(case, n, args.timeout_scale))
                took = time.monotonic() - started
                print(
                    f"[{index}/{len(plan)}] {client:<10} {case.name:<16} {_describe(result)}"
                    f" ({took:.1f} s)",
                    file=sys.stderr,
                    flush=True,
                )
                if result["status"] == "unavailable":
                    unavailable[client] = result
            results.append(result)
        startup_repeat = args.startup_repeat
        if startup_repeat is None:
            startup_repeat = 1 if args.quick else 9
        startup_samples = measure_startup(port, startup_repeat) if startup_repeat > 0 else []
    command = shlex.join(["python", "-m", "bench", *argv])
    mode = "quick (smoke figures: too few messages to mean much)" if args.quick else "full"
    report = render(
        aggregate(results),
        args.clients,
        args.cases,
        command=command,
        mode=mode,
        broker=settings,
        repeat=repeat,
    )
    if startup_samples:
        section = render_startup(startup_samples, startup_repeat)
        report = report.replace("\n## Environment", f"\n{section}\n## Environment", 1)
    print(report)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(report, encoding="utf-8")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=1), encoding="utf-8")
    if startup_samples:
        startup_json = args.json.with_name("startup.json")
        startup_json.write_text(json.dumps(startup_samples, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
