"""Turn the runs' JSON into the Markdown report (printed and written to bench/RESULTS.md).

Ratio convention, stated in the report too: every ratio is "how many times better the row's
client is than the column's peer", so > 1 always favours the row. Throughput is
client / peer; CPU, latency and memory are peer / client.
"""

from __future__ import annotations

import datetime as dt
import importlib.metadata
import os
import platform
import statistics
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from bench._broker import mosquitto_version
from bench.cases import CASES, Case

__all__ = ["PEERS", "Outcome", "aggregate", "render"]

PEERS = ("gmqtt", "aiomqtt", "paho")
TARS_EVENT = "tars_event"

_PACKAGES = ("tars-core", "gmqtt", "aiomqtt", "paho-mqtt", "mqtt5", "orjson", "pydantic")


@dataclass(slots=True)
class Outcome:
    """Every run of one (client, case), folded into medians."""

    client: str
    case: str
    n: int
    status: str  # "ok", "failed", "unavailable" or "not run" (see bench.adapters.NOT_RUN)
    error: str = ""
    runs: int = 0
    ok_runs: int = 0
    metrics: dict[str, float] = field(default_factory=dict)

    @property
    def cell(self) -> str:
        """What stands in a figure's place when there is none."""
        reason = self.error.replace("|", "\\|").replace("\n", " ")
        if self.status == "unavailable":
            return f"not available: {reason}"
        if self.status == "not run":
            return f"not run: {reason}"
        return f"failed: {reason}"


def aggregate(results: Iterable[dict[str, Any]]) -> dict[tuple[str, str], Outcome]:
    """Group run results by (client, case) and take the median of each metric over ok runs."""
    grouped: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for result in results:
        grouped.setdefault((result["client"], result["case"]), []).append(result)
    outcomes: dict[tuple[str, str], Outcome] = {}
    for key, runs in grouped.items():
        ok = [r for r in runs if r["status"] == "ok"]
        bad = [r for r in runs if r["status"] != "ok"]
        outcome = Outcome(key[0], key[1], runs[0]["n"], "ok", runs=len(runs), ok_runs=len(ok))
        if ok:
            names = ok[0]["metrics"].keys()
            outcome.metrics = {m: statistics.median(r["metrics"][m] for r in ok) for m in names}
            if bad:
                outcome.error = f"{len(bad)} of {len(runs)} runs failed: {bad[0]['error']}"
        else:
            outcome.status, outcome.error = bad[0]["status"], bad[0]["error"]
        outcomes[key] = outcome
    return outcomes


def _fmt(value: float) -> str:
    if value >= 1000:
        return f"{value:,.0f}"
    if value >= 100:
        return f"{value:.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}" if value >= 0.1 else f"{value:.3f}"


def _ratio(mine: float | None, peer: float | None, higher_is_better: bool) -> float | None:
    if mine is None or peer is None or mine <= 0 or peer <= 0:
        return None
    return mine / peer if higher_is_better else peer / mine


def _ratio_cell(ratio: float | None) -> str:
    return "—" if ratio is None else f"{ratio:.2f}x"


@dataclass(frozen=True, slots=True)
class _Column:
    metric: str
    header: str
    higher_is_better: bool
    ratios: bool = True


_COLUMNS: dict[str, tuple[_Column, ...]] = {
    "throughput": (
        _Column("msgs_per_s", "msgs/s", True),
        _Column("cpu_us_per_msg", "CPU µs/msg", False),
    ),
    "large": (
        _Column("msgs_per_s", "msgs/s", True),
        _Column("mb_per_s", "MB/s", True, ratios=False),
        _Column("cpu_us_per_msg", "CPU µs/msg", False),
    ),
    "rtt": (
        _Column("p50_ms", "p50 ms", False),
        _Column("p90_ms", "p90 ms", False, ratios=False),
        _Column("p99_ms", "p99 ms", False),
        _Column("cpu_us_per_exchange", "CPU µs/exchange", False, ratios=False),
    ),
    "rss": (
        _Column("rss_peak_mb_checkpoint", "peak RSS MB at N/10", False, ratios=False),
        _Column("rss_peak_mb_end", "peak RSS MB at N", False),
        _Column("rss_growth_mb", "growth MB", False, ratios=False),
        _Column("msgs_per_s", "msgs/s", True, ratios=False),
    ),
}


def _case_table(
    case: Case, clients: Sequence[str], outcomes: dict[tuple[str, str], Outcome]
) -> list[str]:
    columns = _COLUMNS["large" if case.large else case.kind]
    peers = [p for p in PEERS if p in clients]
    header = ["client"]
    for col in columns:
        header.append(col.header)
        if col.ratios:
            header += [f"vs {p}" for p in peers]
    n = next((o.n for (_, c), o in outcomes.items() if c == case.name), case.n)
    lines = [
        f"### {case.title} (`{case.name}`, N = {n:,})",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    for client in clients:
        outcome = outcomes.get((client, case.name))
        if outcome is None:
            continue
        if outcome.status != "ok":
            lines.append(f"| {client} | {outcome.cell} |" + " |" * (len(header) - 2))
            continue
        row = [client + (" †" if outcome.error else "")]
        for col in columns:
            mine = outcome.metrics.get(col.metric)
            row.append("—" if mine is None else _fmt(mine))
            if col.ratios:
                for peer in peers:
                    other = outcomes.get((peer, case.name))
                    theirs = other.metrics.get(col.metric) if other else None
                    row.append(_ratio_cell(_ratio(mine, theirs, col.higher_is_better)))
        lines.append("| " + " | ".join(row) + " |")
    notes = [
        f"† {o.client}: {o.error}"
        for (_, c), o in outcomes.items()
        if c == case.name and o.error and o.status == "ok"
    ]
    return [*lines, *(["", *notes] if notes else []), ""]


@dataclass(frozen=True, slots=True)
class _Target:
    text: str
    case: str
    metric: str
    peer: str
    check: Callable[[float], bool]  # receives the ratio "tars_event better than peer"
    bound: str


_TARGETS = (
    _Target(
        "envelope events >= 1.0x raw gmqtt msgs/s, QoS 0 pipelined",
        "qos0_pipelined",
        "msgs_per_s",
        "gmqtt",
        lambda r: r >= 1.0,
        ">= 1.0x",
    ),
    _Target(
        "envelope events >= 1.0x raw gmqtt msgs/s, QoS 1 pipelined",
        "qos1_pipelined",
        "msgs_per_s",
        "gmqtt",
        lambda r: r >= 1.0,
        ">= 1.0x",
    ),
    _Target(
        "envelope events >= 8x raw aiomqtt msgs/s, QoS 0 pipelined",
        "qos0_pipelined",
        "msgs_per_s",
        "aiomqtt",
        lambda r: r >= 8.0,
        ">= 8x",
    ),
    _Target(
        "envelope events >= 8x raw aiomqtt msgs/s, QoS 1 pipelined",
        "qos1_pipelined",
        "msgs_per_s",
        "aiomqtt",
        lambda r: r >= 8.0,
        ">= 8x",
    ),
    _Target(
        "CPU per envelope event <= raw gmqtt per raw message, QoS 0 pipelined",
        "qos0_pipelined",
        "cpu_us_per_msg",
        "gmqtt",
        lambda r: r >= 1.0,
        "gmqtt/tars >= 1",
    ),
    _Target(
        "CPU per envelope event <= raw gmqtt per raw message, QoS 1 pipelined",
        "qos1_pipelined",
        "cpu_us_per_msg",
        "gmqtt",
        lambda r: r >= 1.0,
        "gmqtt/tars >= 1",
    ),
    _Target(
        "RTT p50 <= raw gmqtt, QoS 0",
        "rtt_qos0",
        "p50_ms",
        "gmqtt",
        lambda r: r >= 1.0,
        "gmqtt/tars >= 1",
    ),
    _Target(
        "RTT p99 <= raw gmqtt, QoS 0",
        "rtt_qos0",
        "p99_ms",
        "gmqtt",
        lambda r: r >= 1.0,
        "gmqtt/tars >= 1",
    ),
    _Target(
        "RTT p50 <= raw gmqtt, QoS 1",
        "rtt_qos1",
        "p50_ms",
        "gmqtt",
        lambda r: r >= 1.0,
        "gmqtt/tars >= 1",
    ),
    _Target(
        "RTT p99 <= raw gmqtt, QoS 1",
        "rtt_qos1",
        "p99_ms",
        "gmqtt",
        lambda r: r >= 1.0,
        "gmqtt/tars >= 1",
    ),
)
_HIGHER_IS_BETTER = {"msgs_per_s": True}


def _targets(outcomes: dict[tuple[str, str], Outcome]) -> list[str]:
    lines = [
        "## Targets (tars-core envelope events, `tars_event`)",
        "",
        "| target | bound | measured | met? |",
        "|---|---|---|---|",
    ]
    for target in _TARGETS:
        mine = outcomes.get((TARS_EVENT, target.case))
        peer = outcomes.get((target.peer, target.case))
        if mine is None or peer is None or mine.status != "ok" or peer.status != "ok":
            lines.append(f"| {target.text} | {target.bound} | — | not measured |")
            continue
        ratio = _ratio(
            mine.metrics.get(target.metric),
            peer.metrics.get(target.metric),
            _HIGHER_IS_BETTER.get(target.metric, False),
        )
        if ratio is None:
            lines.append(f"| {target.text} | {target.bound} | — | not measured |")
            continue
        verdict = "met" if target.check(ratio) else "**NOT met**"
        lines.append(f"| {target.text} | {target.bound} | {ratio:.2f}x | {verdict} |")
    rss = outcomes.get((TARS_EVENT, "rss"))
    if rss is None or rss.status != "ok":
        lines.append("| RSS growth N/10 -> N with dedup on | < 10 MB | — | not measured |")
    else:
        growth = rss.metrics["rss_growth_mb"]
        verdict = "met" if growth < 10.0 else "**NOT met**"
        lines.append(
            f"| RSS growth {rss.n // 10:,} -> {rss.n:,} messages with dedup on | < 10 MB "
            f"| {growth:.1f} MB | {verdict} |"
        )
    return [*lines, ""]


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _environment(command: str, mode: str, repeat: int, broker: str) -> list[str]:
    uname = platform.uname()
    versions = ", ".join(f"{p} {_version(p)}" for p in _PACKAGES)
    return [
        "## Environment",
        "",
        f"- Date: {dt.datetime.now(dt.UTC).strftime('%Y-%m-%d %H:%M UTC')}",
        f"- Command: `{command}`",
        f"- Mode: {mode}; each (client, case) run in a fresh process, median of {repeat} "
        "(the `rss` case once: a long run whose figure barely varies)",
        f"- Machine: {uname.system} {uname.release} {uname.machine}; CPU {_cpu_model()}; "
        f"{os.cpu_count()} cores",
        f"- Python {platform.python_version()} ({platform.python_implementation()})",
        f"- Packages: {versions}",
        f"- Broker: Mosquitto {mosquitto_version()} on 127.0.0.1 (`{broker}`)",
        "",
    ]


_METHOD = """\
## How to read this

- Ratio convention: every `vs <peer>` column says how many times better the row's client is
  than that peer, so **> 1 means the row is better**. Throughput: client / peer. CPU,
  latency and memory: peer / client.
- Every case runs publisher and subscriber in one process on two connections to the same
  broker; CPU is `getrusage(RUSAGE_SELF)` user + system (all threads) over the measured part,
  divided by N, so it covers sending and receiving one message.
- Messages are ~210-byte JSON transcript events serialized with orjson and parsed back by the
  receiver (64 KiB JSON in `large_qos0`). `tars_event` publishes them as envelope `data`
  (`publish_event`, dedup on, the handler reads the parsed envelope); `tars_raw` and the peers
  send the orjson bytes. `tars_ws` is `tars_raw` over `ws://` (Mosquitto's WebSocket
  listener): the difference between those two rows is the cost of the WebSocket link.
- Throughput: time from the first publish to the N-th message received. Pipelined = publish
  without waiting for completion; sequential = await each publish's completion (QoS 1:
  PUBACK; gmqtt has no completion, so its QoS 1 sequential publish waits for the subscriber's
  receipt). The publisher never runs more than 1,000 messages (64 for 64 KiB) ahead of the
  subscriber, for every client.
- Round trip: a requester publishes on `bench/req`, a responder subscribed there replies on
  `bench/resp`; one exchange at a time.
- Memory: peak RSS (`ru_maxrss`) of the process after N/10 and after N messages through a
  QoS 1 subscription; growth is the difference.
- Peers are used raw, with their defaults: gmqtt (MQTT 5, synchronous `on_message`),
  aiomqtt (MQTT 3.1.1, `async for message in client.messages`, one task per pipelined
  publish), paho (MQTT 3.1.1, `loop_start` thread bridged with `call_soon_threadsafe`).
  Neither paho nor aiomqtt sets TCP_NODELAY on its socket: a second small write before the
  first is acknowledged waits for the broker's delayed ACK (~44 ms), so their QoS 1 round
  trip costs ~88 ms out of the box (gmqtt and tars-core use asyncio's sockets, which set it).
"""


def render(
    outcomes: dict[tuple[str, str], Outcome],
    clients: Sequence[str],
    cases: Sequence[str],
    *,
    command: str,
    mode: str,
    repeat: int,
    broker: str,
) -> str:
    """The whole report as Markdown."""
    lines = ["# tars-core benchmark", ""]
    if mode.startswith("quick"):
        lines += [
            "> **Quick mode**: a few hundred messages per run, one run each: these figures check",
            "> that the harness works, they do not measure anything. Run `make bench` for that.",
            "",
        ]
    lines += _targets(outcomes)
    lines += ["## Results", ""]
    for name in cases:
        lines += _case_table(CASES[name], clients, outcomes)
    lines += _environment(command, mode, repeat, broker)
    lines.append(_METHOD)
    return "\n".join(lines)
