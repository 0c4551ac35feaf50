"""examples/new_service.py: the README's promise of a complete service in under 10 lines.

The example runs as its own process, configured only through the environment, as an operator
would start it; the test talks to it over a real broker like any other service would.
"""

from __future__ import annotations

import signal

import pytest
from docs_tools import ROOT, code_lines, run_script

from support.mosquitto_cli import Inbox, connected_client, unique
from tars.mqtt import Envelope, Message
from tars.mqtt.testing import MosquittoBroker

pytestmark = pytest.mark.mosquitto

EXAMPLE = ROOT / "examples" / "new_service.py"


def test_new_service_has_fewer_than_ten_lines_of_code() -> None:
    lines = code_lines(EXAMPLE.read_text())
    assert len(lines) < 10, f"{len(lines)} lines of code: {lines}"


def test_the_line_counter_skips_docstrings_comments_blanks_and_the_main_guard() -> None:
    source = (
        '"""Module docstring\n\nspanning lines."""\n'
        "import asyncio  # a comment after code\n"
        "\n"
        "# a comment line\n"
        "async def main() -> None:\n"
        '    """Docstring."""\n'
        "    await asyncio.sleep(\n"
        "        0\n"
        "    )\n"
        'if __name__ == "__main__":\n'
        "    asyncio.run(main())\n"
    )
    assert code_lines(source) == [4, 7, 9, 10, 11, 13]


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
async def test_new_service_answers_then_shuts_down_gracefully_on_a_signal(
    shared_mosquitto: MosquittoBroker, signum: signal.Signals
) -> None:
    client_id = unique("shouter")
    health: Inbox[Message] = Inbox()
    answers: Inbox[Envelope] = Inbox()

    async def on_health(msg: Message) -> None:
        health.add(msg)

    async def on_answer(event: Envelope) -> None:
        answers.add(event)

    async with connected_client(shared_mosquitto, "tester") as tester:
        await tester.subscribe(f"system/health/{client_id}", on_health, qos=1)
        await tester.subscribe("shout/out", on_answer, qos=1)
        env = {"MQTT_URL": shared_mosquitto.url, "MQTT_CLIENT_ID": client_id}
        async with run_script(EXAMPLE, env) as service:
            [ready] = await health.wait_for(1, timeout=15)
            assert ready.envelope.data["event"] == "ready"

            await tester.publish_event("shout/in", "shout.in", {"text": "hello tars"}, qos=1)
            [answer] = await answers.wait_for(1)
            assert (answer.type, answer.data, answer.source) == (
                "shout.out",
                {"text": "HELLO TARS"},
                client_id,
            )

            service.terminate(signum)
            assert await service.wait() == 0, service.output.decode()
            [_, last] = await health.wait_for(2)
        assert (last.envelope.data["ok"], last.envelope.data["event"]) == (False, "shutdown")
        assert b"Traceback" not in service.output

    # The broker keeps the last status for whoever looks later.
    async with connected_client(shared_mosquitto, "dashboard") as dashboard:
        stored: Inbox[Message] = Inbox()

        async def on_stored(msg: Message) -> None:
            stored.add(msg)

        await dashboard.subscribe(f"system/health/{client_id}", on_stored, qos=1)
        [kept] = await stored.wait_for(1)
    assert (kept.retain, kept.envelope.data["event"]) == (True, "shutdown")
