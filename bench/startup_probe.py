"""One start-up measurement in a fresh interpreter (run by path by :mod:`bench.startup`).

``python bench/startup_probe.py CLIENT PORT`` prints one JSON line::

    {"client": ..., "import_ms": ..., "ready_ms": ..., "rss_mb": ..., "first_event_ms": ...}

It imports nothing but ``time`` and ``sys`` before its clock starts, and parses its arguments
by hand (argparse would be imported before the clock and spare a library that imports it), so
the figures are what a service's start costs after the interpreter is up, measured from the
clock's start:

- ``import_ms``: the client class imported, as a service writes it (:data:`IMPORTS`);
- ``ready_ms``: plus the client object built from its configuration (:data:`READY`: for
  tars-core ``MQTTClient.from_env()``, the configuration checked from ``MQTT_*`` variables);
- ``rss_mb``: the process's resident memory at that point;
- ``first_event_ms``: plus connect, subscribe to its own topic, publish one event at QoS 1 and
  receive it back through the broker (the bench adapter of that client).
"""

import time

T0 = time.perf_counter()

import os  # noqa: E402  (after the clock on purpose: both are loaded by the interpreter already)
import sys  # noqa: E402

IMPORTS = {
    "tars_event": "from tars.mqtt import MQTTClient",
    "gmqtt": "from gmqtt import Client",
    "aiomqtt": "from aiomqtt import Client",
    "paho": "from paho.mqtt.client import Client, CallbackAPIVersion",
}
"""What a service writes to start using each library (by the bench's adapter names)."""

READY = {
    "tars_event": "client = MQTTClient.from_env()",
    "gmqtt": "client = Client(CLIENT_ID)",
    "aiomqtt": "client = None  # its Client needs a running event loop: built at connect",
    "paho": "client = Client(CallbackAPIVersion.VERSION2, client_id=CLIENT_ID)",
}
"""Then the client object, configured as a service does (``MQTT_URL`` and ``MQTT_CLIENT_ID`` are
set in the environment by :mod:`bench.startup`)."""


def _rss_mb() -> float:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    client, port = sys.argv[1], int(sys.argv[2])
    scope = {"PORT": port, "CLIENT_ID": os.environ.get("MQTT_CLIENT_ID", "startup")}
    exec(IMPORTS[client], scope)  # the measured statements, as a service would write them
    import_s = time.perf_counter() - T0
    exec(READY[client], scope)
    ready_s = time.perf_counter() - T0
    rss = _rss_mb()

    import asyncio
    import json
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from bench.adapters import load_adapter

    async def first_event() -> float:
        adapter = load_adapter(client)()
        await adapter.connect("127.0.0.1", port, f"startup-{client.replace('.', '_')}-{port}")
        got = asyncio.get_running_loop().create_future()
        topic = f"startup/{client.replace('.', '_')}/{time.time_ns()}"
        await adapter.subscribe(topic, 1, lambda event: got.done() or got.set_result(None))
        await adapter.publish(topic, {"hello": "world"}, 1, wait=False)
        await asyncio.wait_for(got, 30)
        took = time.perf_counter() - T0
        await adapter.close()
        return took

    first = asyncio.run(first_event())
    print(json.dumps({
        "client": client,
        "import_ms": import_s * 1000,
        "ready_ms": ready_s * 1000,
        "rss_mb": rss,
        "first_event_ms": first * 1000,
    }))  # fmt: skip


if __name__ == "__main__":
    main()
