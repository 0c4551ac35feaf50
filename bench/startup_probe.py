"""One start-up measurement in a fresh interpreter (run by path by :mod:`bench.startup`).

``python bench/startup_probe.py CLIENT PORT`` prints one JSON line::

    {"client": ..., "import_ms": ..., "rss_mb": ..., "first_event_ms": ...}

It imports nothing but ``time`` and ``sys`` before its clock starts, and parses its arguments
by hand (argparse would be imported before the clock and spare a library that imports it), so
``import_ms`` is the library's import alone and ``first_event_ms`` is what a service's start
costs after the interpreter is up: import, connect, subscribe to its own topic, publish one
event at QoS 1 and receive it back through the broker.
"""

import time

T0 = time.perf_counter()

import sys  # noqa: E402  (after the clock on purpose: it is already loaded by the interpreter)

IMPORTS = {
    "tars.mqtt": "import tars.mqtt",
    "tars_event": "from tars.mqtt import MQTTClient",
    "gmqtt": "import gmqtt",
    "aiomqtt": "import aiomqtt",
    "paho": "import paho.mqtt.client",
}
"""What a service writes to start using each library (by the bench's adapter names).

``tars.mqtt`` is the bare package import (names load on first use); its first event is
measured with the ``tars_event`` adapter, like ``tars_event``'s.
"""
ADAPTER = {"tars.mqtt": "tars_event"}


def _rss_mb() -> float:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    client, port = sys.argv[1], int(sys.argv[2])
    exec(IMPORTS[client])  # the measured statement, as a service would write it
    import_s = time.perf_counter() - T0
    rss = _rss_mb()

    import asyncio
    import json
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from bench.adapters import load_adapter

    async def first_event() -> float:
        adapter = load_adapter(ADAPTER.get(client, client))()
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
        "rss_mb": rss,
        "first_event_ms": first * 1000,
    }))  # fmt: skip


if __name__ == "__main__":
    main()
