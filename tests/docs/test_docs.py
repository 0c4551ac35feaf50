"""Every Python block of the README and docs/ compiles, type-checks, and runs where marked.

A ``<!-- docs-test: ... -->`` line above a block says how it is checked (see
:class:`docs_tools.CodeBlock`): ``run`` and ``broker`` blocks are executed (``broker`` ones with
``MQTT_URL`` pointing at a test Mosquitto), ``service`` blocks are started, must report health
``ready`` and exit 0 on SIGTERM, ``same-as``/``excerpt-of`` blocks must match the file they
come from, and every other block is compiled and type-checked with ``mypy --strict``.
"""

from __future__ import annotations

import ast
import json
import re
import signal
from pathlib import Path

import jsonschema  # type: ignore[import-untyped]
import pytest
from docs_tools import (
    README,
    ROOT,
    CodeBlock,
    config_table,
    doc_files,
    python_blocks,
    region,
    run_script,
)
from mypy import api as mypy_api

from support.mosquitto_cli import Inbox, connected_client, unique
from tars.mqtt import Message
from tars.mqtt.testing import MosquittoBroker

BLOCKS = [block for path in doc_files() for block in python_blocks(path)]
_MARKER_LINE = "# ["


def by_directive(*names: str) -> list[CodeBlock]:
    return [b for b in BLOCKS if any(n in b.directives for n in names)]


def standalone() -> list[CodeBlock]:
    """Blocks that are their own code (not a copy of a file)."""
    return [b for b in BLOCKS if not ({"same-as", "excerpt-of"} & set(b.directives))]


def ids(blocks: list[CodeBlock]) -> list[str]:
    return [b.name for b in blocks]


def without_docstring(source: str) -> str:
    """The code of a module without its docstring, leading blank lines stripped."""
    tree = ast.parse(source)
    first = tree.body[0] if tree.body else None
    lines = source.splitlines(keepends=True)
    if (
        isinstance(first, ast.Expr)
        and isinstance(first.value, ast.Constant)
        and isinstance(first.value.value, str)
    ):
        lines = lines[first.end_lineno or 0 :]
    return "".join(lines).lstrip("\n")


def test_the_docs_have_python_blocks_and_every_directive_is_known() -> None:
    known = {"run", "broker", "service", "same-as", "excerpt-of", "continues", "schema"}
    assert len(BLOCKS) >= 10
    for block in BLOCKS:
        assert set(block.directives) <= known, f"{block.name}: {block.directives}"


@pytest.mark.parametrize("block", by_directive("same-as"), ids=ids(by_directive("same-as")))
def test_block_is_the_file_it_shows(block: CodeBlock) -> None:
    source = (ROOT / block.directives["same-as"]).read_text()
    assert block.code == without_docstring(source), f"{block.name} differs from the file"


@pytest.mark.parametrize("block", by_directive("excerpt-of"), ids=ids(by_directive("excerpt-of")))
def test_block_is_an_excerpt_of_its_file(block: CodeBlock) -> None:
    """Its lines appear in the file in order; a ``...`` line skips any number of file lines.
    ``# [pattern]`` marker lines of the migration services are not shown in the guide."""
    path = ROOT / block.directives["excerpt-of"]
    text = [x for x in path.read_text().splitlines() if not x.strip().startswith(_MARKER_LINE)]
    position = 0
    chunks: list[list[str]] = [[]]
    for line in block.code.splitlines():
        if line.strip() == "...":
            chunks.append([])
        else:
            chunks[-1].append(line)
    for chunk in (c for c in chunks if c):
        size = len(chunk)
        found = next(
            (i for i in range(position, len(text) - size + 1) if text[i : i + size] == chunk),
            None,
        )
        assert found is not None, f"{block.name}: not in {path.name} (after line {position}):\n" + (
            "\n".join(chunk)
        )
        position = found + size


@pytest.mark.parametrize("block", standalone(), ids=ids(standalone()))
def test_block_compiles(block: CodeBlock) -> None:
    compile(block.code, block.name, "exec")


def test_blocks_examples_and_migration_services_type_check(tmp_path: Path) -> None:
    files = []
    for number, block in enumerate(standalone()):
        stem = re_safe(block.name)
        file = tmp_path / f"block_{number}_{stem}.py"
        file.write_text(block.code)
        files.append(str(file))
    files += [str(p) for p in sorted((ROOT / "examples").glob("*.py"))]
    files += [str(p) for p in sorted((ROOT / "tests" / "data" / "migration").glob("*.py"))]
    stdout, stderr, status = mypy_api.run(
        [
            "--strict",
            "--config-file",
            str(ROOT / "pyproject.toml"),
            "--cache-dir",
            str(ROOT / ".mypy_cache"),
            *files,
        ]
    )
    assert status == 0, stdout + stderr


def re_safe(name: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in name)


@pytest.mark.mosquitto
@pytest.mark.parametrize(
    "block", by_directive("run", "broker"), ids=ids(by_directive("run", "broker"))
)
async def test_block_runs(shared_mosquitto: MosquittoBroker, block: CodeBlock) -> None:
    env = {"MQTT_URL": shared_mosquitto.url, "MQTT_CLIENT_ID": unique("docs")}
    async with run_script("-c", env, block.code) as process:
        status = await process.wait(timeout=30)
    assert status == 0, f"{block.name} failed:\n{process.output.decode()}"


@pytest.mark.mosquitto
@pytest.mark.parametrize("block", by_directive("service"), ids=ids(by_directive("service")))
async def test_service_block_starts_and_stops_on_sigterm(
    shared_mosquitto: MosquittoBroker, block: CodeBlock
) -> None:
    client_id = unique("docs-service")
    health: Inbox[str] = Inbox()

    async def on_health(msg: Message) -> None:
        health.add(str(msg.envelope.data["event"]))

    async with connected_client(shared_mosquitto, "observer") as observer:
        await observer.subscribe(f"system/health/{client_id}", on_health, qos=1)
        env = {"MQTT_URL": shared_mosquitto.url, "MQTT_CLIENT_ID": client_id}
        async with run_script("-c", env, block.code) as process:
            assert await health.wait_for(1, timeout=15) == ["ready"]
            process.terminate(signal.SIGTERM)
            status = await process.wait(timeout=15)
        assert await health.wait_for(2) == ["ready", "shutdown"]
    assert status == 0, f"{block.name}:\n{process.output.decode()}"


def json_blocks() -> list[tuple[str, str, str]]:
    """(where, schema name, text) of every ``json`` block marked ``schema NAME``."""
    found = []
    for path in doc_files():
        lines = path.read_text().splitlines()
        for index, line in enumerate(lines):
            if line.startswith("<!-- docs-test: schema ") and lines[index + 1] == "```json":
                end = lines.index("```", index + 2)
                name = line.removeprefix("<!-- docs-test: schema ").removesuffix(" -->")
                where = f"{path.relative_to(ROOT)}:{index + 2}"
                found.append((where, name, "\n".join(lines[index + 2 : end])))
    return found


@pytest.mark.parametrize(("where", "schema", "text"), json_blocks())
def test_documented_payloads_match_the_wire_schemas(where: str, schema: str, text: str) -> None:
    document = json.loads((ROOT / "schemas" / f"{schema}.schema.json").read_text())
    jsonschema.validate(json.loads(text), document)


def test_readme_configuration_table_matches_the_model() -> None:
    assert region(README.read_text(), "config-table") == config_table(), (
        "README.md's configuration table is stale: "
        "run .venv/bin/python tests/docs/docs_tools.py --write"
    )


def test_readme_opens_with_the_two_setup_commands() -> None:
    text = README.read_text()
    first_block = text.split("```sh\n", 1)[1].split("```", 1)[0]
    assert [line.split("#")[0].strip() for line in first_block.splitlines()] == [
        "make demo",
        "make test",
    ]
    assert text.index("make demo") < text.index("## ")


def test_docs_links_point_at_files_that_exist_or_are_promised() -> None:
    """Relative links resolve; testing.md and resilience.md are written by other issues."""
    promised = {"docs/testing.md", "docs/resilience.md"}
    for path in doc_files():
        for target in _links(path.read_text()):
            resolved = (path.parent / target).resolve().relative_to(ROOT)
            assert resolved.exists() or str(resolved) in promised, f"{path.name}: {target}"


def _links(text: str) -> list[str]:
    return [
        m.split("#")[0]
        for m in re.findall(r"\]\(([^)]+)\)", text)
        if not m.startswith(("http:", "https:", "#")) and m.split("#")[0]
    ]
