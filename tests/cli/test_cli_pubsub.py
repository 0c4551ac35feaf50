"""``tars-mqtt sub``, ``pub`` and ``request`` as a person runs them, against a real Mosquitto."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from support.cli_process import TARS_MQTT, Spawn
from support.mosquitto_cli import Inbox, MosquittoSub, connected_client, mosquitto_pub, unique
from tars.mqtt import Envelope, Message
from tars.mqtt.testing import MosquittoBroker

pytestmark = pytest.mark.mosquitto


async def test_sub_shows_envelopes_and_other_payloads_one_per_line(
    spawn: Spawn, shared_mosquitto: MosquittoBroker
) -> None:
    base = unique("cli-sub")
    sub = await spawn(TARS_MQTT, "sub", f"{base}/#", "--url", shared_mosquitto.url, "-n", "4")
    assert sub.process.stderr is not None
    assert b"subscribed" in await sub.process.stderr.readline()
    async with connected_client(shared_mosquitto, "cli-producer", source_name="kitchen") as c:
        await c.publish_event(f"{base}/temp", "temp.reading", {"celsius": 21.5}, qos=1)
        await c.publish_event(f"{base}/ack", "temp.ack", {}, correlation_id="req-42", qos=1)
    await mosquitto_pub(shared_mosquitto, f"{base}/text", b"hello\nworld", qos=1)
    await mosquitto_pub(shared_mosquitto, f"{base}/bin", b"\x00\xff\x1b[2J", qos=1)
    status, out, _ = await sub.finish()
    assert status == 0
    lines = out.splitlines()
    assert len(lines) == 4
    fields = [line.split("  ") for line in lines]
    assert fields[0][1:] == [f"{base}/temp", "temp.reading", "kitchen", "-", '{"celsius":21.5}']
    assert fields[1][1:] == [f"{base}/ack", "temp.ack", "kitchen", "re:req-42", "{}"]
    assert fields[2][1:] == [f"{base}/text", "(text)", "-", "-", "'hello\\nworld'"]
    assert fields[3][1:] == [f"{base}/bin", "(binary 6 B)", "-", "-", "00ff1b5b324a"]
    assert "\x1b" not in out  # piped: no colour, and a payload's escape never reaches the terminal


async def test_sub_json_lines_and_filters_by_type_and_source(
    spawn: Spawn, shared_mosquitto: MosquittoBroker
) -> None:
    topic = unique("cli-json")
    sub = await spawn(
        TARS_MQTT, "sub", topic, "--json", "--type", "order.*", "--source", "shop",
        "--url", shared_mosquitto.url, "-n", "1",
    )  # fmt: skip
    assert sub.process.stderr is not None
    assert b"subscribed" in await sub.process.stderr.readline()
    async with connected_client(shared_mosquitto, "cli-shop", source_name="shop") as shop:
        await shop.publish_event(topic, "invoice.paid", {"n": 1}, qos=1)  # wrong type
        async with connected_client(shared_mosquitto, "cli-bar", source_name="bar") as bar:
            await bar.publish_event(topic, "order.placed", {"n": 2}, qos=1)  # wrong source
        await mosquitto_pub(shared_mosquitto, topic, b"not an envelope", qos=1)
        wanted = await shop.publish_event(topic, "order.placed", {"n": 3}, qos=1)
    status, out, _ = await sub.finish()
    assert status == 0
    (line,) = out.splitlines()
    doc = json.loads(line)
    assert doc["topic"] == topic
    assert doc["kind"] == "envelope"
    assert doc["envelope"]["id"] == wanted
    assert doc["envelope"]["data"] == {"n": 3}


async def test_pub_prints_the_id_of_the_envelope_it_published(
    spawn: Spawn, shared_mosquitto: MosquittoBroker
) -> None:
    topic = unique("cli-pub")
    async with MosquittoSub(shared_mosquitto, topic, qos=2) as observer:
        pub = await spawn(
            TARS_MQTT, "pub", topic, "--type", "lamp.set", "--data", '{"on": true}',
            "--retain", "--url", shared_mosquitto.url,
        )  # fmt: skip
        status, out, err = await pub.finish()
        assert (status, err) == (0, "")
        (captured,) = await observer.wait_for(1)
    envelope = Envelope.model_validate_json(captured.payload)
    assert out.strip() == envelope.id
    assert (envelope.type, envelope.data) == ("lamp.set", {"on": True})
    assert captured.qos == 1  # the default
    async with MosquittoSub(shared_mosquitto, topic) as late:  # retained: a newcomer gets it
        (kept,) = await late.wait_for(1)
    assert kept.retain
    assert kept.payload == captured.payload


async def test_pub_raw_sends_the_bytes_of_a_file_unwrapped(
    spawn: Spawn, shared_mosquitto: MosquittoBroker, tmp_path: Path
) -> None:
    topic = unique("cli-raw")
    payload = bytes(range(256))
    path = tmp_path / "blob.bin"
    path.write_bytes(payload)
    async with MosquittoSub(shared_mosquitto, topic) as observer:
        pub = await spawn(
            TARS_MQTT, "pub", topic, "--raw", "--data-file", str(path), "--qos", "0",
            "--url", shared_mosquitto.url,
        )  # fmt: skip
        assert (await pub.finish())[0] == 0
        (captured,) = await observer.wait_for(1)
    assert captured.payload == payload
    assert captured.qos == 0


async def test_request_prints_the_reply(spawn: Spawn, shared_mosquitto: MosquittoBroker) -> None:
    topic, answers = unique("cli-ask"), unique("cli-answers")
    async with connected_client(shared_mosquitto, "cli-oracle", source_name="oracle") as oracle:
        seen: Inbox[str] = Inbox()

        async def answer(request: Message) -> None:
            seen.add(request.envelope.id)
            await oracle.reply(request, "math.sum", {"sum": sum(request.envelope.data["xs"])})

        await oracle.subscribe(topic, answer, qos=1)
        ask = await spawn(
            TARS_MQTT, "request", topic, "--type", "math.add", "--data", '{"xs": [1, 2, 3]}',
            "--response-topic", answers, "--json", "--url", shared_mosquitto.url,
        )  # fmt: skip
        status, out, err = await ask.finish()
    assert (status, err) == (0, "")
    reply = Envelope.model_validate_json(out)
    assert (reply.type, reply.data, reply.source) == ("math.sum", {"sum": 6}, "oracle")
    assert reply.correlate == seen.items[0]


async def test_request_without_an_answer_times_out_in_one_line(
    spawn: Spawn, shared_mosquitto: MosquittoBroker
) -> None:
    ask = await spawn(
        TARS_MQTT, "request", unique("cli-void"), "--type", "q.ask",
        "--response-topic", unique("cli-nobody"), "--timeout", "0.5",
        "--url", shared_mosquitto.url,
    )  # fmt: skip
    status, out, err = await ask.finish()
    assert status == 1
    assert out == ""
    assert err.startswith("tars-mqtt: no reply on cli-nobody")
    assert err.count("\n") == 1
