"""``tars-mqtt fleet`` as the person on call sees it: real services, each its own process.

The services (``service.py``) run with health and one-second heartbeats against a fresh
Mosquitto (a fresh one, so no retained status of another test shows up). "Stale" is a real hung
process (SIGSTOP: its connection stays open, its heartbeats stop); "offline" is a real crash
(kill -9: the broker publishes the service's will).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from support.cli_process import SERVICE, TARS_MQTT, Proc, Spawn
from support.mosquitto_cli import unique
from tars.mqtt.testing import MosquittoBroker

pytestmark = [pytest.mark.mosquitto, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]


def row(table: list[str], service: str) -> list[str]:
    """The cells of one service's row (cells are separated by two spaces or more)."""
    for line in table:
        cells = [cell.strip() for cell in line.split("  ") if cell.strip()]
        if cells and cells[0] == service:
            return cells
    raise AssertionError(f"no row for {service} in:\n" + "\n".join(table))


def states(table: list[str]) -> dict[str, str]:
    """Service -> STATE column, for the rows of a table."""
    found = {}
    for line in table[:-1]:  # the last line is the summary
        cells = line.split()
        if len(cells) >= 2 and cells[0] != "SERVICE":  # not the time, not the header
            found[cells[0]] = cells[1]
    return found


async def start_service(spawn: Spawn, broker: MosquittoBroker, name: str, *extra: str) -> Proc:
    proc = await spawn(sys.executable, SERVICE, broker.url, name, *extra)
    assert await proc.line(timeout=15) == "ready"
    return proc


@pytest.fixture
async def stopped() -> AsyncIterator[list[int]]:
    """PIDs a test SIGSTOPped: continued at the end, so they can die of their kill."""
    pids: list[int] = []
    yield pids
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)


async def test_the_live_table_shows_healthy_unhealthy_stale_and_offline_services(
    spawn: Spawn, mosquitto_broker: MosquittoBroker, stopped: list[int]
) -> None:
    await start_service(spawn, mosquitto_broker, "speech")
    await start_service(spawn, mosquitto_broker, "billing", "--unhealthy", "database unreachable")
    hung = await start_service(spawn, mosquitto_broker, "vision")
    crashing = await start_service(spawn, mosquitto_broker, "planner")
    fleet = await spawn(
        TARS_MQTT, "fleet", "--url", mosquitto_broker.url, "--interval", "0.2",
        "--stale-after", "2.5",
    )  # fmt: skip
    healthy = {"planner": "ok", "speech": "ok", "vision": "ok"}
    first = await fleet.block_where(
        lambda t: (
            states(t) == {**healthy, "billing": "unhealthy"}
            and row(t, "vision")[3] != "-"  # a heartbeat of the one about to hang was heard
        )
    )
    assert first[1].split() == ["SERVICE", "STATE", "EVENT", "HEARTBEAT", "STATUS", "ERROR"]
    assert row(first, "billing")[1:3] == ["unhealthy", "degraded"]
    assert row(first, "billing")[-1] == "database unreachable"
    assert row(first, "speech")[-1] == "-"
    assert first[-1] == "4 services, 1 not ok"

    os.kill(hung.process.pid, signal.SIGSTOP)
    stopped.append(hung.process.pid)
    crashing.process.kill()  # SIGKILL: no goodbye, the broker publishes the will

    after = await fleet.block_where(
        lambda t: states(t).get("vision") == "stale" and states(t).get("planner") == "offline"
    )
    assert row(after, "planner")[1:3] == ["offline", "offline"]
    # The will's timestamp is its CONNECT's: shown as when the dead link was up since.
    assert row(after, "planner")[-1].startswith("connection lost unexpectedly (link up since ")
    assert float(row(after, "vision")[3].rstrip("s")) >= 2.5  # the age of its last heartbeat
    assert row(after, "speech")[1] == "ok"
    assert float(row(after, "speech")[3].rstrip("s")) < 2.5
    assert after[-1] == "4 services, 3 not ok"
    assert "\x1b" not in "".join(after)  # piped: plain text


STALE_AFTER = 3.0
"""The services heartbeat every second: three missed ones make a service stale."""
CHECK_BOUND = STALE_AFTER + 10.0
"""The documented bound (--stale-after) plus the CLI's own start and connect, on a loaded CI."""


async def run_check(spawn: Spawn, url: str, *names: str) -> tuple[int, list[str], float]:
    """``fleet --check`` as a container health check runs it: status, table, seconds taken."""
    started = time.monotonic()
    proc = await spawn(
        TARS_MQTT, "fleet", "--check", "--expect-heartbeats", "--stale-after", str(STALE_AFTER),
        "--url", url, *names,
    )  # fmt: skip
    status, out, err = await proc.finish(timeout=30)
    assert err == ""
    return status, out.splitlines(), time.monotonic() - started


async def test_check_classifies_healthy_hung_killed_silent_and_stopped_services(
    spawn: Spawn, mosquitto_broker: MosquittoBroker, stopped: list[int]
) -> None:
    """Each service alone (``fleet --check NAME``, as its container's health check would run
    it), then all together; every answer within the documented bound."""
    url = mosquitto_broker.url
    await start_service(spawn, mosquitto_broker, "speech")  # healthy
    hung = await start_service(spawn, mosquitto_broker, "vision")
    killed = await start_service(spawn, mosquitto_broker, "planner")
    await start_service(spawn, mosquitto_broker, "quiet", "--no-heartbeat")
    leaving = await start_service(spawn, mosquitto_broker, "tts")

    os.kill(hung.process.pid, signal.SIGSTOP)  # hung: connected, silent
    stopped.append(hung.process.pid)
    killed.process.kill()  # SIGKILL: no goodbye, the broker publishes the will
    await killed.process.wait()
    leaving.process.send_signal(signal.SIGTERM)  # a graceful shutdown
    assert await leaving.process.wait() == 0

    expected = {
        "speech": ("ok", 0),
        "tts": ("stopped", 0),
        "planner": ("offline", 1),
        "vision": ("stale", 1),
        "quiet": ("stale", 1),
        "nobody": ("missing", 1),
    }
    for name, (state, code) in expected.items():
        status, table, took = await run_check(spawn, url, name)
        assert (states(table), status) == ({name: state}, code), "\n".join(table)
        assert took < CHECK_BOUND, (name, took)

    status, table, took = await run_check(spawn, url)
    assert status == 1
    assert states(table) == {
        name: state for name, (state, _) in expected.items() if name != "nobody"
    }
    assert table[-1] == "5 services, 3 not ok, 1 stopped"
    assert took < CHECK_BOUND


async def test_check_answers_early_when_every_service_is_decided(
    spawn: Spawn, mosquitto_broker: MosquittoBroker
) -> None:
    """A healthy fleet is answered once each service was heard heartbeating, not after the
    whole staleness threshold."""
    await start_service(spawn, mosquitto_broker, "speech")
    proc = await spawn(
        TARS_MQTT, "fleet", "--check", "--expect-heartbeats", "--stale-after", "60",
        "--url", mosquitto_broker.url,
    )  # fmt: skip
    status, out, err = await asyncio.wait_for(proc.finish(timeout=30), 30)
    assert (status, err) == (0, "")
    assert states(out.splitlines()) == {"speech": "ok"}


def _cells(line: str) -> list[str]:
    """A table line's cells, ages replaced by ``<age>`` and clock times by ``<time>`` (an
    offline will's "link up since HH:MM:SS"): they differ from run to run."""
    cells = [CLOCK.sub("<time>", cell.strip()) for cell in re.split(r"\s{2,}", line.strip())]
    return ["<age>" if AGE.fullmatch(cell) else cell for cell in cells]


AGE = re.compile(r"\d+\.\ds|\d+s|\d+m\d\ds|\d+h\d\dm")
CLOCK = re.compile(r"\b\d\d:\d\d:\d\d\b")


async def test_the_docs_example_is_a_real_run(
    spawn: Spawn, mosquitto_broker: MosquittoBroker, stopped: list[int]
) -> None:
    """docs/cli.md's ``fleet --check`` example, produced here by real services: the same
    command, rows, states, events, errors and summary (ages differ run to run)."""
    doc = (ROOT / "docs" / "cli.md").read_text()
    block = doc.split("```console\n$ tars-mqtt fleet --check", 1)[1].split("```", 1)[0]
    command, *documented = block.splitlines()
    await start_service(spawn, mosquitto_broker, "speech")
    await start_service(spawn, mosquitto_broker, "billing", "--unhealthy", "database unreachable")
    hung = await start_service(spawn, mosquitto_broker, "vision")
    killed = await start_service(spawn, mosquitto_broker, "planner")
    leaving = await start_service(spawn, mosquitto_broker, "tts")
    os.kill(hung.process.pid, signal.SIGSTOP)
    stopped.append(hung.process.pid)
    killed.process.kill()
    leaving.process.send_signal(signal.SIGTERM)
    assert await leaving.process.wait() == 0
    args = command.split()
    assert args[:2] == ["--expect-heartbeats", "--stale-after"], command
    proc = await spawn(TARS_MQTT, "fleet", "--check", *args, "--url", mosquitto_broker.url)
    status, out, err = await proc.finish(timeout=30)
    real = out.splitlines()
    assert (status, err) == (1, "")
    assert [_cells(line) for line in real] == [_cells(line) for line in documented], (
        "docs/cli.md's fleet example differs from a real run; the real one:\n" + out
    )


async def test_once_prints_one_table_and_exits(
    spawn: Spawn, mosquitto_broker: MosquittoBroker
) -> None:
    proc = await spawn(TARS_MQTT, "fleet", "--once", "--wait", "0.3", "--url", mosquitto_broker.url)
    status, out, err = await asyncio.wait_for(proc.finish(), 15)
    assert (status, err) == (0, "")
    assert out.splitlines()[-1] == "no service seen yet on system/health/+ or system/keepalive/+"


async def test_several_brokers_get_a_broker_column(
    spawn: Spawn, mosquitto_broker: MosquittoBroker, shared_mosquitto: MosquittoBroker
) -> None:
    name = unique("edge")  # the shared broker may hold other tests' services: find ours by name
    await start_service(spawn, mosquitto_broker, "speech")
    await start_service(spawn, shared_mosquitto, name)
    proc = await spawn(
        TARS_MQTT, "fleet", "--once", "--wait", "1.5",
        "--url", mosquitto_broker.url, "--also-url", shared_mosquitto.url,
    )  # fmt: skip
    status, out, err = await proc.finish()
    assert (status, err) == (0, "")
    table = out.splitlines()
    assert table[0].split()[-1] == "BROKER"
    assert row(table, "speech")[-1] == f"127.0.0.1:{mosquitto_broker.port}"
    assert row(table, name)[-1] == f"127.0.0.1:{shared_mosquitto.port}"


async def test_instances_of_one_service_are_told_apart(
    spawn: Spawn, mosquitto_broker: MosquittoBroker
) -> None:
    """Two instances of ``stt`` (client ids ``stt-a``, ``stt-b``); ``b`` crashes (kill -9):
    the table says which instance is offline."""
    await start_service(spawn, mosquitto_broker, "stt", "--instance", "a")
    doomed = await start_service(spawn, mosquitto_broker, "stt", "--instance", "b")
    doomed.process.kill()  # SIGKILL: no goodbye, the broker publishes the will
    await doomed.process.wait()
    proc = await spawn(TARS_MQTT, "fleet", "--once", "--wait", "1.5", "--url", mosquitto_broker.url)
    status, out, err = await proc.finish()
    assert (status, err) == (0, "")
    table = out.splitlines()
    assert table[0].split()[:3] == ["SERVICE", "INSTANCE", "STATE"]
    assert [line.split()[:3] for line in table[1:3]] == [
        ["stt", "a", "ok"],
        ["stt", "b", "offline"],
    ]
    assert table[-1] == "1 service (2 instances), 1 not ok"
