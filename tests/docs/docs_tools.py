"""What keeps the docs honest: generated tables, line counts, code blocks, service processes.

The README's configuration table and the migration guide's line counts are generated here from
the code itself; the tests compare them with the documents, and this script rewrites them::

    .venv/bin/python tests/docs/docs_tools.py          # check: exit 1 and a diff when stale
    .venv/bin/python tests/docs/docs_tools.py --write  # regenerate the tables in place
"""

from __future__ import annotations

import ast
import asyncio
import contextlib
import difflib
import enum
import inspect
import io
import os
import re
import signal
import sys
import textwrap
import tokenize
import typing
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tars.mqtt import MQTTClientConfig
from tars.mqtt._config import ENV_VARS, REQUIRED

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
MIGRATION_DIR = ROOT / "tests" / "data" / "migration"
MIGRATION_DOC = ROOT / "docs" / "migration.md"

# --- counting lines of code ------------------------------------------------------------------

_NOT_CODE = frozenset(
    {
        tokenize.COMMENT,
        tokenize.NL,
        tokenize.NEWLINE,
        tokenize.INDENT,
        tokenize.DEDENT,
        tokenize.ENCODING,
        tokenize.ENDMARKER,
    }
)
_MAIN_GUARD = re.compile(r"""^if __name__ == ["']__main__["']:\s*(#.*)?$""")


def code_lines(source: str) -> list[int]:
    """The numbers of the lines that hold code: not blank, not only a comment, not part of a
    docstring, and not the ``if __name__ == "__main__":`` line itself (its body counts)."""
    docstrings: set[int] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            body = node.body
            if (
                body
                and isinstance(body[0], ast.Expr)
                and isinstance(body[0].value, ast.Constant)
                and isinstance(body[0].value.value, str)
            ):
                end = body[0].end_lineno or body[0].lineno
                docstrings.update(range(body[0].lineno, end + 1))
    lines: set[int] = set()
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type not in _NOT_CODE:
            lines.update(range(token.start[0], token.end[0] + 1))
    text = source.splitlines()
    return sorted(
        n for n in lines - docstrings if not _MAIN_GUARD.match(text[n - 1].strip() if n else "")
    )


# --- the migration guide's figures -----------------------------------------------------------

PATTERNS: dict[str, str] = {
    "setup": "Imports and configuration (URL, client id, topics)",
    "connection": "Connection, reconnect loop, session set-up",
    "envelope": "Envelope wrapping and parsing",
    "publish": "Publishing",
    "subscribe": "Subscribe loop and topic dispatch",
    "health": "Health status and last will",
    "heartbeat": "Heartbeat",
    "dedup": "De-duplication",
    "request": "Request/response with correlation ids",
    "shutdown": "Signals and graceful shutdown",
}
"""The MQTT plumbing patterns, in the guide's order; ``app`` (the service's own logic) is
counted apart."""

MIGRATION_FILES: dict[str, str] = {
    "paho-mqtt 2.x": "before_paho.py",
    "aiomqtt 2.x": "before_aiomqtt.py",
    "tars-core": "after_tars.py",
}
_SECTION = re.compile(r"^\s*# \[(\w+)\]")


def pattern_lines(path: Path) -> dict[str, int]:
    """Lines of code per pattern in a migration example.

    A ``# [pattern]`` comment line starts a section; every line of code up to the next marker
    belongs to it. Code before the first marker (imports, constants) counts as ``app`` unless
    the marker says otherwise. Unknown pattern names are an error, so a typo cannot hide lines.
    """
    source = path.read_text()
    text = source.splitlines()
    owner: dict[int, str] = {}
    current = "app"
    for number, line in enumerate(text, start=1):
        match = _SECTION.match(line)
        if match:
            current = match.group(1)
            if current != "app" and current not in PATTERNS:
                raise ValueError(f"{path.name}:{number}: unknown pattern [{current}]")
        owner[number] = current
    counts = dict.fromkeys([*PATTERNS, "app"], 0)
    for number in code_lines(source):
        counts[owner[number]] += 1
    return counts


def migration_table() -> str:
    """The guide's table: lines of MQTT plumbing per pattern, before and after."""
    counts = {label: pattern_lines(MIGRATION_DIR / name) for label, name in MIGRATION_FILES.items()}
    labels = list(MIGRATION_FILES)
    rows = [
        "| Pattern | " + " | ".join(labels) + " |",
        "|---|" + "---:|" * len(labels),
    ]
    for key, title in PATTERNS.items():
        rows.append(f"| {title} | " + " | ".join(str(counts[lb][key]) for lb in labels) + " |")
    totals = [sum(counts[lb][k] for k in PATTERNS) for lb in labels]
    rows.append("| **MQTT plumbing, total** | " + " | ".join(f"**{t}**" for t in totals) + " |")
    rows.append(
        "| The service's own logic (not plumbing) | "
        + " | ".join(str(counts[lb]["app"]) for lb in labels)
        + " |"
    )
    return "\n".join(rows)


# --- the README's configuration table ---------------------------------------------------------


def _default(value: Any) -> str:
    if value is REQUIRED:
        return "*required*"
    if isinstance(value, str):
        return f'`"{value}"`'
    if isinstance(value, int) and not isinstance(value, bool) and value >= 10_000:
        return f"`{value:_}`"
    return f"`{value}`"


def config_table() -> str:
    """One row per :class:`MQTTClientConfig` field: option, variable, default, meaning."""
    rows = ["| Option | Environment variable | Default | Meaning |", "|---|---|---|---|"]
    for name, info in MQTTClientConfig.model_fields.items():
        meaning = (info.description or "").replace("|", "\\|")
        rows.append(f"| `{name}` | `{ENV_VARS[name]}` | {_default(info.default)} | {meaning} |")
    return "\n".join(rows)


# --- the API reference's signatures -----------------------------------------------------------

API_MEMBERS_REQUIRED = ("MQTTClient", "Message", "Subscription")
"""Classes whose every public method and property must be in docs/api.md, not just the class."""


class _Shown(str):
    """An annotation or default shown as written (no quotes)."""

    def __repr__(self) -> str:
        return str(self)


def _annotation(value: Any) -> str:
    text = value if isinstance(value, str) else inspect.formatannotation(value)
    return text.replace("typing.", "")


def _value(value: Any) -> str:
    if isinstance(value, enum.Enum):
        return f"{type(value).__module__}.{value.name}"
    if isinstance(value, tuple):
        return "(" + ", ".join(_value(v) for v in value) + ("," if len(value) == 1 else "") + ")"
    return repr(value)


def _signature(func: Any, *, drop_first: bool = False, returns: bool = True) -> str:
    sig = inspect.signature(func)
    params = list(sig.parameters.values())[1 if drop_first else 0 :]
    shown = [
        p.replace(
            annotation=p.empty if p.annotation is p.empty else _Shown(_annotation(p.annotation)),
            default=p.empty if p.default is p.empty else _Shown(_value(p.default)),
        )
        for p in params
    ]
    text = str(sig.replace(parameters=shown, return_annotation=inspect.Signature.empty))
    if returns and sig.return_annotation is not inspect.Signature.empty:
        text += f" -> {_annotation(sig.return_annotation)}"
    return text


def _init_attributes(cls: type) -> set[str]:
    """Names the class's ``__init__`` assigns as ``self.<name>`` (public instance attributes)."""
    init = cls.__dict__.get("__init__")
    if init is None:
        return set()
    tree = ast.parse(textwrap.dedent(inspect.getsource(init)))
    return {
        node.attr
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute)
        and isinstance(node.value, ast.Name)
        and node.value.id == "self"
        and isinstance(node.ctx, ast.Store)
        and not node.attr.startswith("_")
    }


def _bases(cls: type) -> str:
    names = [b.__name__ for b in cls.__bases__ if b is not object]
    return f"class {cls.__name__}({', '.join(names)})"


def api_signature(dotted: str) -> str:
    """How docs/api.md shows a public name (``MQTTClient``) or member (``MQTTClient.publish``).

    Raises ``AttributeError`` when the name does not exist (a stale entry in the reference).
    """
    import tars.mqtt

    owner_name, _, member = dotted.partition(".")
    if owner_name not in tars.mqtt.__all__:
        raise AttributeError(f"{owner_name} is not in tars.mqtt.__all__")
    owner = getattr(tars.mqtt, owner_name)
    if not member:
        return _object_signature(owner_name, owner)
    try:
        raw = inspect.getattr_static(owner, member)
    except AttributeError:
        if member in _init_attributes(owner):
            return f"attribute {member}"
        raise
    if isinstance(raw, property):
        returns = inspect.signature(raw.fget).return_annotation if raw.fget else Any
        return f"property {member}: {_annotation(returns)}"
    if isinstance(raw, classmethod):
        return f"classmethod {member}{_signature(raw.__func__, drop_first=True)}"
    if isinstance(raw, staticmethod):
        return f"staticmethod {member}{_signature(raw.__func__)}"
    if callable(raw):
        prefix = "async " if inspect.iscoroutinefunction(raw) else ""
        return f"{prefix}{member}{_signature(raw, drop_first=True)}"
    return f"{member}: {_annotation(owner.__annotations__.get(member, type(raw)))}"


def _object_signature(name: str, obj: Any) -> str:
    if inspect.isclass(obj):
        if issubclass(obj, BaseException) or issubclass(obj, enum.Enum):
            return _bases(obj)
        if getattr(obj, "_is_protocol", False):
            return f"class {name}(Protocol)"
        if typing.is_typeddict(obj):
            return f"class {name}(TypedDict, total={getattr(obj, '__total__', True)})"
        init = obj.__dict__.get("__init__")
        if init is not None:
            return f"{name}{_signature(init, drop_first=True, returns=False)}"
        return f"{name}{_signature(obj, returns=False)}"
    prefix = "async " if inspect.iscoroutinefunction(obj) else ""
    return f"{prefix}{name}{_signature(obj)}"


def public_members(cls: type) -> list[str]:
    """The public methods and properties a class defines or inherits from the library."""
    names: set[str] = set()
    for klass in cls.__mro__:
        if klass.__module__.startswith("tars."):
            names.update(n for n in vars(klass) if not n.startswith("_"))
            names.update(_init_attributes(klass))
    return sorted(names)


_API_HEADING = re.compile(r"^#{3,4} `([\w.]+)`\s*$")


def api_entries(text: str) -> dict[str, str]:
    """Each ``### `Name``` / ``#### `Name.member``` heading of api.md and the signature below it
    (the first line of the entry, in backticks)."""
    entries: dict[str, str] = {}
    lines = text.splitlines()
    for index, line in enumerate(lines):
        match = _API_HEADING.match(line)
        if match is None:
            continue
        following = next((x for x in lines[index + 1 :] if x.strip()), "")
        entries[match.group(1)] = following.strip().removeprefix("`").removesuffix("`")
    return entries


# --- generated regions in Markdown ------------------------------------------------------------


def region(text: str, name: str) -> str:
    """The text between ``<!-- name:start -->`` and ``<!-- name:end -->`` (stripped)."""
    match = re.search(rf"<!-- {name}:start -->\n(.*?)\n?<!-- {name}:end -->", text, re.S)
    if match is None:
        raise LookupError(f"no <!-- {name}:start --> ... <!-- {name}:end --> region")
    return match.group(1).strip()


def replace_region(text: str, name: str, body: str) -> str:
    region(text, name)  # raises when missing
    return re.sub(
        rf"(<!-- {name}:start -->\n).*?\n?(<!-- {name}:end -->)",
        lambda m: m.group(1) + body + "\n" + m.group(2),
        text,
        flags=re.S,
    )


GENERATED: dict[Path, dict[str, Any]] = {
    README: {"config-table": config_table},
    MIGRATION_DOC: {"measured": migration_table},
}


# --- Python code blocks in Markdown -----------------------------------------------------------

_FENCE = re.compile(r"^```(\w*)\s*$")
_DIRECTIVE = re.compile(r"^<!-- docs-test: (.+?) -->\s*$")


@dataclass
class CodeBlock:
    """A fenced ``python`` block and what its ``<!-- docs-test: ... -->`` line asks for.

    Directives: ``run`` (execute it as a script; it must exit 0), ``broker`` (execute it with
    ``MQTT_URL`` and ``MQTT_CLIENT_ID`` set to a test broker), ``same-as PATH`` (the block is
    the code of that file, verbatim), ``continues`` (append to the previous block of the file
    before checking). Every block is compiled and type-checked (``mypy --strict``).
    """

    path: Path
    line: int
    code: str
    directives: dict[str, str] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def python_blocks(path: Path) -> list[CodeBlock]:
    """Every ``python`` fenced block of a Markdown file, ``continues`` blocks merged."""
    lines = path.read_text().splitlines()
    blocks: list[CodeBlock] = []
    directives: dict[str, str] = {}
    i = 0
    while i < len(lines):
        directive = _DIRECTIVE.match(lines[i])
        if directive:
            for item in directive.group(1).split(";"):
                key, _, value = item.strip().partition(" ")
                directives[key] = value.strip()
            i += 1
            continue
        fence = _FENCE.match(lines[i])
        if fence is None:
            if lines[i].strip():
                directives = {}
            i += 1
            continue
        start = i
        i += 1
        body: list[str] = []
        while i < len(lines) and lines[i].rstrip() != "```":
            body.append(lines[i])
            i += 1
        i += 1
        if fence.group(1) == "python":
            code = "\n".join(body) + "\n"
            if "continues" in directives and blocks:
                previous = blocks[-1]
                previous.code += "\n" + code
                previous.directives.update(d for d in directives.items() if d[0] != "continues")
            else:
                blocks.append(CodeBlock(path, start + 1, code, dict(directives)))
        directives = {}
    return blocks


def doc_files() -> list[Path]:
    """The README and every document under docs/ whose blocks must compile and type-check.

    ``architecture.md`` is excluded: its blocks are signature sketches of module contracts,
    not code (they are checked against the code by the API reference instead).
    """
    docs = sorted(p for p in (ROOT / "docs").glob("*.md") if p.name != "architecture.md")
    return [README, *docs]


# --- running a service as a process -----------------------------------------------------------


@dataclass
class ServiceProcess:
    """A Python script running as its own process, as an operator would start it."""

    process: asyncio.subprocess.Process
    output: bytearray = field(default_factory=bytearray)

    def terminate(self, signum: int = signal.SIGTERM) -> None:
        if self.process.returncode is None:
            self.process.send_signal(signum)

    async def wait(self, timeout: float = 10.0) -> int:
        """Wait for the exit status; the output so far is in :attr:`output`."""
        async with asyncio.timeout(timeout):
            assert self.process.stdout is not None
            self.output += await self.process.stdout.read()
            return await self.process.wait()


@contextlib.asynccontextmanager
async def run_script(
    script: Path | str, env: Mapping[str, str], *args: str
) -> AsyncIterator[ServiceProcess]:
    """Start ``python script`` with ``env`` added to this process's environment; kill it (and
    report its output) if the test leaves it running."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        str(script),
        *args,
        env={**os.environ, "PYTHONUNBUFFERED": "1", **env},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        cwd=ROOT,
    )
    service = ServiceProcess(process)
    try:
        yield service
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


# --- the command line ---------------------------------------------------------------------------


def main(argv: list[str]) -> int:
    """Check the generated tables (exit 1 with a diff when stale), or rewrite them (--write)."""
    write = "--write" in argv
    stale = 0
    for path, regions in GENERATED.items():
        text = path.read_text()
        new = text
        for name, make in regions.items():
            new = replace_region(new, name, make())
        if new == text:
            continue
        if write:
            path.write_text(new)
            print(f"rewrote {path.relative_to(ROOT)}")
        else:
            stale += 1
            sys.stdout.writelines(
                difflib.unified_diff(
                    text.splitlines(keepends=True), new.splitlines(keepends=True), str(path)
                )
            )
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
