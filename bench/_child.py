"""One measurement in a fresh interpreter, its result the JSON object on its last line of stdout.

The diagnostics (:mod:`bench.phases`, :mod:`bench.opcount`) run each (client, case) so, like
the bench, so that a run's imports, caches and tracer are its own.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

__all__ = ["json_child"]

ROOT = Path(__file__).resolve().parent.parent


def json_child(module: str, args: list[str], timeout: float) -> dict[str, Any]:
    """Run ``python -m module *args`` from the repository root; its last stdout line, parsed.

    Raises RuntimeError with the child's last stderr line when it exits non-zero.
    """
    proc = subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False,
    )  # fmt: skip
    if proc.returncode != 0:
        raise RuntimeError(f"{module} {' '.join(args)}: {proc.stderr.strip().splitlines()[-1:]}")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result
