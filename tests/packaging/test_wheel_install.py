"""tars-core works from an installed wheel, not only from this source tree.

The install commands are the documentation's own: the ``sh`` blocks marked
``<!-- docs-test: install -->`` (README.md, docs/testing.md; the same commands everywhere).
They run in fresh virtual environments, with ``./tars-core`` standing for this source tree: the
wheel build and the install of that wheel with its ``testing`` extra in one, the install from
the source tree in another. Then, from a directory far from the sources: ``tars-mqtt
--version``, ``tars-mqtt pub``/``sub`` against a real Mosquitto, the schema check (on the
schema files the wheel ships), and the import of the testing kit's pytest plugin.
"""

from __future__ import annotations

import asyncio
import os
import shlex
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


DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def documented_installs() -> list[list[str]]:
    """The commands of the ``install`` blocks (comments dropped), the same in every document."""
    blocks = {}
    for path in DOCS:
        lines = path.read_text().splitlines()
        for index, line in enumerate(lines):
            if line == "<!-- docs-test: install -->":
                assert lines[index + 1] == "```sh", path
                end = lines.index("```", index + 2)
                blocks[path.name] = [
                    shlex.split(text, comments=True) for text in lines[index + 2 : end]
                ]
    assert {"README.md", "testing.md"} <= set(blocks), blocks
    first, *others = blocks.values()
    assert all(block == first for block in others), blocks
    return first


def _venv_run(command: list[str], venv: Path, cwd: Path) -> None:
    """A documented command in ``venv`` (its ``pip``, its ``python``), from ``cwd``."""
    tool, *args = command
    program = {"pip": [venv / "bin" / "python", "-m", "pip"], "python": [venv / "bin" / "python"]}
    _run(*program[tool], *args, cwd=cwd)


def _fresh(work: Path) -> Path:
    """A fresh virtual environment, and ``./tars-core`` in ``work`` standing for the sources."""
    venv = work / "venv"
    _run(sys.executable, "-m", "venv", venv, cwd=work)
    (work / "tars-core").symlink_to(ROOT, target_is_directory=True)
    return venv


def test_the_install_commands_are_documented_where_installing_is_explained() -> None:
    commands = documented_installs()
    assert [c[:2] for c in commands] == [["pip", "install"], ["python", "-m"], ["pip", "install"]]
    stale = [p.name for p in DOCS if "pip install 'tars-core[" in p.read_text()]
    assert not stale, f"an install that fails (tars-core is on no index) in {stale}"


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The ``bin/`` of a fresh venv where the documented wheel commands ran: the wheel built
    from the sources, then installed with its testing extra."""
    work = tmp_path_factory.mktemp("wheel")
    venv = _fresh(work)
    _, *from_wheel = documented_installs()
    for command in from_wheel:
        _venv_run(command, venv, work)
    assert list((work / "dist").glob("tars_core-*.whl"))
    return venv / "bin"


def test_the_documented_install_from_the_source_tree_works(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    work = tmp_path_factory.mktemp("tree")
    venv = _fresh(work)
    from_tree, *_ = documented_installs()
    _venv_run(from_tree, venv, work)
    _run(venv / "bin" / "python", "-c", "import pytest_asyncio, tars.mqtt.testing.pytest_plugin",
         cwd=work)  # fmt: skip
    assert _run(venv / "bin" / "tars-mqtt", "--version", cwd=work).strip().endswith(" 0.1.0")


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
