"""tars-core works from an installed wheel, not only from this source tree.

Builds the wheel (``pip wheel . --no-deps``), installs it with its ``testing`` extra into a fresh
virtual environment, and runs, from a directory far from the sources: ``tars-mqtt --version``,
``tars-mqtt pub``/``sub`` against a real Mosquitto, the schema check (on the schema files the
wheel ships), and the import of the testing kit's pytest plugin.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest

from support.mosquitto_cli import unique
from tars.mqtt.testing import MosquittoBroker

pytestmark = [pytest.mark.mosquitto, pytest.mark.slow, pytest.mark.timeout(300)]

ROOT = Path(__file__).resolve().parents[2]


def _run(*argv: str | Path, cwd: Path, timeout: float = 240) -> str:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    result = subprocess.run(
        [str(a) for a in argv], cwd=cwd, env=env, capture_output=True, text=True,
        timeout=timeout, check=False,
    )  # fmt: skip
    assert result.returncode == 0, f"{argv}: {result.stdout}\n{result.stderr}"
    return result.stdout


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The ``bin/`` of a fresh venv with the wheel (and its testing extra) installed."""
    work = tmp_path_factory.mktemp("wheel")
    _run(sys.executable, "-m", "pip", "wheel", ROOT, "--no-deps", "-q", "-w", work, cwd=work)
    (wheel,) = work.glob("tars_core-*.whl")
    venv = work / "venv"
    _run(sys.executable, "-m", "venv", venv, cwd=work)
    _run(venv / "bin" / "python", "-m", "pip", "install", "-q", f"{wheel}[testing]", cwd=work)
    return venv / "bin"


def test_the_installed_package_is_the_wheel_not_the_sources(installed: Path) -> None:
    where = _run(installed / "python", "-c", "import tars.mqtt; print(tars.mqtt.__file__)",
                 cwd=installed)  # fmt: skip
    assert "site-packages" in where
    assert str(ROOT / "src") not in where
    assert _run(installed / "tars-mqtt", "--version", cwd=installed).strip() == (
        "tars-mqtt (tars-core) 0.1.0"
    )


def test_the_schema_check_uses_the_shipped_schemas(installed: Path) -> None:
    code = "from tars.mqtt._schemas import schemas_dir; print(schemas_dir())"
    where = _run(installed / "python", "-c", code, cwd=installed).strip()
    assert where.endswith("site-packages/tars/mqtt/schemas")
    assert sorted(p.name for p in Path(where).iterdir()) == [
        "envelope.schema.json", "health_status.schema.json", "heartbeat.schema.json",
    ]  # fmt: skip
    _run(installed / "python", "-m", "tars.mqtt._schemas", "--check", cwd=installed)


def test_the_testing_extra_brings_what_the_plugin_needs(installed: Path) -> None:
    _run(installed / "python", "-c", "import pytest_asyncio, tars.mqtt.testing.pytest_plugin",
         cwd=installed)  # fmt: skip


async def test_pub_and_sub_from_the_installed_script(
    installed: Path, shared_mosquitto: MosquittoBroker
) -> None:
    topic, url = unique("wheel"), shared_mosquitto.url
    sub = await asyncio.create_subprocess_exec(
        installed / "tars-mqtt", "sub", topic, "--json", "-n", "1", "--url", url,
        cwd=installed, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        assert sub.stderr is not None
        assert b"subscribed" in await asyncio.wait_for(sub.stderr.readline(), 30)
        pub = await asyncio.create_subprocess_exec(
            installed / "tars-mqtt", "pub", topic, "--type", "wheel.ok", "--data", '{"n": 1}',
            "--url", url, cwd=installed, stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        event_id, _ = await asyncio.wait_for(pub.communicate(), 30)
        assert pub.returncode == 0
        out, _ = await asyncio.wait_for(sub.communicate(), 30)
    finally:
        if sub.returncode is None:
            sub.kill()
            await sub.wait()
    assert sub.returncode == 0
    assert f'"id":"{event_id.decode().strip()}"' in out.decode()
