"""examples/web_service.py runs under uvicorn on uvloop and does what docs/web.md says (issue 20).

The service is a real process (``python examples/web_service.py --loop uvloop``) on a free port,
driven as a browser and an operator would: plain HTTP requests (urllib) and a WebSocket client,
against a real Mosquitto observed with ``mosquitto_sub`` and a tars-core client of the test's own.
"""

from __future__ import annotations

import asyncio
import json
import signal
import urllib.request
from typing import Any

import pytest
import websockets
from docs_tools import ROOT, ServiceProcess, run_script

from support.mosquitto_cli import MosquittoSub, connected_client, unique
from tars.mqtt.testing import MosquittoBroker
from tars.mqtt.testing._process import free_port

pytestmark = pytest.mark.mosquitto


def http(method: str, url: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
    """One plain HTTP request (in a worker thread: urllib blocks); the status and JSON body."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)
    request.add_header("content-type", "application/json")
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.status, json.loads(response.read())


async def started(service: ServiceProcess, timeout: float = 30.0) -> None:
    """Wait for uvicorn's "Uvicorn running on" (said after the lifespan connected MQTT and
    the port listens)."""
    stdout = service.process.stdout
    assert stdout is not None
    async with asyncio.timeout(timeout):
        while b"Uvicorn running on" not in service.output:
            line = await stdout.readline()
            if not line:
                raise AssertionError(f"the service exited:\n{service.output.decode()}")
            service.output += line


async def test_the_web_service_publishes_on_http_and_forwards_events_over_a_websocket(
    shared_mosquitto: MosquittoBroker,
) -> None:
    port = free_port("127.0.0.1")
    base = f"http://127.0.0.1:{port}"
    stt = unique("web/stt")
    env = {
        "MQTT_URL": shared_mosquitto.url,
        "MQTT_CLIENT_ID": unique("ui-web"),
        "WEB_FORWARD": stt,
    }
    script = ROOT / "examples" / "web_service.py"
    async with run_script(script, env, "--port", str(port), "--loop", "uvloop") as service:
        await started(service)

        status, body = await asyncio.to_thread(http, "GET", f"{base}/status")
        assert status == 200
        assert body["connected"] is True
        assert body["loop"].startswith("uvloop")  # uvicorn --loop uvloop, and tars-core on it

        # A route that publishes: the event is on the broker when the response comes.
        async with MosquittoSub(shared_mosquitto, "tts/say", qos=1) as tts:
            status, body = await asyncio.to_thread(http, "POST", f"{base}/say", {"text": "hi"})
            assert status == 200
            [said] = await tts.wait_for(1)
        envelope = json.loads(said.payload)
        assert (envelope["id"], envelope["type"]) == (body["id"], "tts.say")
        assert envelope["data"] == {"text": "hi"}
        assert envelope["source"] == env["MQTT_CLIENT_ID"]

        # A WebSocket that forwards the subscription's events to the browser.
        async with websockets.connect(f"ws://127.0.0.1:{port}/ws") as socket:
            hello = json.loads(await asyncio.wait_for(socket.recv(), 10))
            assert hello == {"type": "hello", "forwarding": [stt]}
            async with connected_client(shared_mosquitto, "stt-worker", source_name="stt") as c:
                sent = await c.publish_event(stt, "stt.final", {"text": "hello robot"}, qos=1)
                await c.publish(stt, b"plain text", qos=1)
            first = json.loads(await asyncio.wait_for(socket.recv(), 10))
            second = json.loads(await asyncio.wait_for(socket.recv(), 10))
        assert first == {
            "topic": stt,
            "type": "stt.final",
            "source": "stt",
            "id": sent,
            "data": {"text": "hello robot"},
        }
        assert second == {"topic": stt, "data": "plain text"}

        # SIGTERM: uvicorn ends the lifespan, which shuts the MQTT client down gracefully
        # (health "shutdown" on the wire), then re-raises the signal (uvicorn >= 0.29).
        health = f"system/health/{env['MQTT_CLIENT_ID']}"
        async with MosquittoSub(shared_mosquitto, health, qos=1) as statuses:
            [ready] = await statuses.wait_for(1)  # the retained one
            service.terminate(signal.SIGTERM)
            status = await service.wait(timeout=20)
            [_, bye] = await statuses.wait_for(2)
    output = service.output.decode()
    assert status in (0, -signal.SIGTERM), output
    assert "Application shutdown complete" in output
    assert "Traceback" not in output, output
    assert json.loads(ready.payload)["data"]["event"] == "ready"
    assert json.loads(bye.payload)["data"]["event"] == "shutdown"
