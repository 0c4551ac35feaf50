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
import signal
import sys
from collections.abc import AsyncIterator

import pytest

from support.cli_process import SERVICE, TARS_MQTT, Proc, Spawn
from support.mosquitto_cli import unique
from tars.mqtt.testing import MosquittoBroker

pytestmark = [pytest.mark.mosquitto, pytest.mark.slow]


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


async def test_check_exits_zero_only_when_every_service_is_ok(
    spawn: Spawn, mosquitto_broker: MosquittoBroker, stopped: list[int]
) -> None:
    url = mosquitto_broker.url
    speech = await start_service(spawn, mosquitto_broker, "speech")

    async def check(*extra: str) -> tuple[int, list[str]]:
        proc = await spawn(TARS_MQTT, "fleet", "--check", "--wait", "1.5", "--url", url, *extra)
        status, out, err = await proc.finish()
        assert err == ""
        return status, out.splitlines()

    status, table = await check()
    assert status == 0
    assert states(table) == {"speech": "ok"}

    os.kill(speech.process.pid, signal.SIGSTOP)  # hung: connected, silent
    stopped.append(speech.process.pid)
    status, table = await check("--expect-heartbeats", "--stale-after", "1")
    assert status == 1
    assert states(table) == {"speech": "stale"}

    await start_service(spawn, mosquitto_broker, "billing", "--unhealthy", "disk full")
    status, table = await check()  # without --expect-heartbeats: speech is not judged stale
    assert status == 1
    assert states(table) == {"billing": "unhealthy", "speech": "ok"}


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
