"""mypy, not only the run-time check, rejects a handler that tars.mqtt cannot call.

``MQTTClient.subscribe`` types its handler as a union of the four supported forms, so a handler
annotated ``str``, ``dict`` or a dataclass is an error where it is subscribed.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from mypy import api as mypy_api

ROOT = Path(__file__).resolve().parents[2]

SNIPPET = """
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from tars.mqtt import Envelope, Message, MQTTClient


class Temperature(BaseModel):
    celsius: float


@dataclass
class Reading:
    value: int


async def on_bytes(payload: bytes) -> None: ...
async def on_message(message: Message) -> None: ...
async def on_envelope(envelope: Envelope) -> None: ...
async def on_model(temperature: Temperature) -> None: ...
async def on_any(payload: Any) -> None: ...
async def on_object(payload: object) -> None: ...
async def on_str(payload: str) -> None: ...
async def on_dict(payload: dict[str, Any]) -> None: ...
async def on_dataclass(payload: Reading) -> None: ...


async def main(client: MQTTClient) -> None:
    await client.subscribe("ok/bytes", on_bytes)
    await client.subscribe("ok/message", on_message)
    await client.subscribe("ok/envelope", on_envelope)
    await client.subscribe("ok/model", on_model)
    await client.subscribe("ok/any", on_any)
    await client.subscribe("ok/object", on_object)
    await client.subscribe("bad/str", on_str)
    await client.subscribe("bad/dict", on_dict)
    await client.subscribe("bad/dataclass", on_dataclass)
"""


@pytest.mark.slow
def test_mypy_rejects_unsupported_handler_forms_only(tmp_path: Path) -> None:
    file = tmp_path / "handlers.py"
    file.write_text(SNIPPET)
    stdout, stderr, status = mypy_api.run(
        [
            "--strict",
            "--config-file",
            str(ROOT / "pyproject.toml"),
            "--cache-dir",
            str(ROOT / ".mypy_cache"),
            str(file),
        ]
    )
    errors = [line for line in stdout.splitlines() if ": error:" in line]
    flagged = sorted(int(line.split(":")[1]) for line in errors)
    assert status == 1, stdout + stderr
    bad = [n for n, line in enumerate(SNIPPET.splitlines(), 1) if '"bad/' in line]
    assert flagged == bad, stdout + stderr
