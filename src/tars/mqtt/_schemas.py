"""Write (or check) the JSON Schemas of the wire payloads under ``schemas/``.

Run from the repository root::

    python -m tars.mqtt._schemas           # regenerate schemas/*.schema.json
    python -m tars.mqtt._schemas --check   # exit 1 when a committed file is missing or stale

The files are generated from the pydantic models (:mod:`tars.mqtt._models`, exact: no extra keys,
absent fields absent rather than null), so the models stay the single source of truth;
they are committed so that services in other languages, and the integration suite checking real
wire captures, can validate payloads without importing this package. The wheel ships them as
``tars/mqtt/schemas/`` (see ``pyproject.toml``); :func:`schemas_dir` finds them in a source tree
and in an installed package alike.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from tars.mqtt._models import EnvelopeModel, HealthStatus, HeartbeatPayload

__all__ = [
    "SCHEMA_MODELS",
    "check_schemas",
    "main",
    "render_schemas",
    "schemas_dir",
    "write_schemas",
]

SCHEMA_MODELS: dict[str, type[BaseModel]] = {
    "envelope.schema.json": EnvelopeModel,
    "health_status.schema.json": HealthStatus,
    "heartbeat.schema.json": HeartbeatPayload,
}
"""File name under ``schemas/`` -> the model it describes."""

_DIALECT = "https://json-schema.org/draft/2020-12/schema"


def schemas_dir() -> Path:
    """Where the schema files are: the copy inside an installed package, else the source tree's.

    A wheel carries them as ``tars/mqtt/schemas/``; a source checkout (and an editable install)
    has them at the repository root, ``schemas/``.
    """
    packaged = Path(__file__).resolve().parent / "schemas"
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parents[3] / "schemas"


def _schema(model: type[BaseModel]) -> dict[str, Any]:
    """The model's validation schema, tagged with the draft pydantic writes (2020-12)."""
    return {"$schema": _DIALECT, **model.model_json_schema()}


def render_schemas() -> dict[str, str]:
    """Return each schema file's exact text: sorted keys, two-space indent, final newline.

    Stable formatting keeps the committed files byte-for-byte reproducible, so a diff in them
    always means the models changed.
    """
    return {
        name: json.dumps(_schema(model), indent=2, sort_keys=True, ensure_ascii=False) + "\n"
        for name, model in SCHEMA_MODELS.items()
    }


def check_schemas(directory: Path) -> list[str]:
    """Return the names of the schema files in ``directory`` that are missing or out of date."""
    stale = []
    for name, text in render_schemas().items():
        path = directory / name
        if not path.is_file() or path.read_text(encoding="utf-8") != text:
            stale.append(name)
    return stale


def write_schemas(directory: Path) -> list[str]:
    """Write the schema files that are missing or out of date; return their names."""
    directory.mkdir(parents=True, exist_ok=True)
    stale = check_schemas(directory)
    texts = render_schemas()
    for name in stale:
        (directory / name).write_text(texts[name], encoding="utf-8")
    return stale


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit status (1 when ``--check`` finds a difference)."""
    parser = argparse.ArgumentParser(
        prog="python -m tars.mqtt._schemas",
        description="Write (or check) the JSON Schemas of the wire payloads.",
    )
    parser.add_argument(
        "--check", action="store_true", help="only compare; exit 1 if any file differs"
    )
    parser.add_argument(
        "--dir",
        type=Path,
        default=None,
        help="the schemas directory (default: the package's own copy when installed from a "
        "wheel, else the source tree's schemas/)",
    )
    args = parser.parse_args(argv)
    directory: Path = args.dir if args.dir is not None else schemas_dir()
    if args.check:
        stale = check_schemas(directory)
        for name in stale:
            print(f"{directory / name} is missing or out of date", file=sys.stderr)
        if stale:
            print("run: python -m tars.mqtt._schemas", file=sys.stderr)
        return 1 if stale else 0
    for name in write_schemas(directory):
        print(f"wrote {directory / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
