"""``tars-mqtt`` on uvloop (issue 20).

The CLI runs its commands with ``asyncio.run``, so it uses whatever event loop policy the
process has: uvloop when a wrapper (or ``uvloop.install()`` in a ``sitecustomize``) sets its
policy, the stock loop otherwise. It does not switch to uvloop by itself: the commands are
short-lived and I/O-light, and one loop for every command keeps their behaviour the same
everywhere. This test runs the CLI's own entry point (``tars.mqtt._cli.main``) in a process whose
policy is uvloop's, and checks that the loop really was uvloop.
"""

from __future__ import annotations

import sys

import pytest

from support.cli_process import Spawn
from support.mosquitto_cli import connected_client, unique
from tars.mqtt.testing import MosquittoBroker

pytestmark = pytest.mark.mosquitto

# The CLI's main() under uvloop's policy; says on stderr which loops asyncio.run made.
_UNDER_UVLOOP = """
import sys, uvloop

made = []

class Policy(uvloop.EventLoopPolicy):
    def new_event_loop(self):
        loop = super().new_event_loop()
        made.append(type(loop).__module__ + "." + type(loop).__name__)
        return loop

import asyncio
asyncio.set_event_loop_policy(Policy())
from tars.mqtt._cli import main
status = main(sys.argv[1:])
print("loops:", ",".join(made), file=sys.stderr)
sys.exit(status)
"""


async def test_sub_and_pub_run_on_uvloop_when_it_is_the_policy(
    spawn: Spawn, shared_mosquitto: MosquittoBroker
) -> None:
    topic = unique("cli-uvloop")
    url = shared_mosquitto.url
    sub = await spawn(sys.executable, "-c", _UNDER_UVLOOP, "sub", topic, "--url", url, "-n", "2")
    assert sub.process.stderr is not None
    assert b"subscribed" in await sub.process.stderr.readline()
    async with connected_client(shared_mosquitto, "cli-uv-producer", source_name="uv") as c:
        await c.publish_event(topic, "uv.tick", {"n": 1}, qos=1)
    pub = await spawn(
        sys.executable, "-c", _UNDER_UVLOOP, "pub", topic, "--type", "uv.tock", "--url", url
    )
    pub_status, _, pub_err = await pub.finish()
    assert pub_status == 0, pub_err
    assert "loops: uvloop.Loop" in pub_err
    status, out, err = await sub.finish()
    assert status == 0, err
    lines = out.splitlines()
    assert len(lines) == 2
    assert "uv.tick" in lines[0]
    assert "uv.tock" in lines[1]
    assert "loops: uvloop.Loop" in err
