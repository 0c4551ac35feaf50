"""The suite runs on the event loop it was asked for (``TARS_TEST_LOOP``, see tests/conftest.py).

Without this check a uvloop pass that silently fell back to the stock loop would stay green and
prove nothing.
"""

from __future__ import annotations

import asyncio
import os


async def test_async_tests_run_on_the_loop_named_by_tars_test_loop() -> None:
    loop = asyncio.get_running_loop()
    if os.environ.get("TARS_TEST_LOOP", "asyncio") == "uvloop":
        assert type(loop).__module__.startswith("uvloop"), type(loop)
    else:
        assert type(loop).__module__.startswith("asyncio"), type(loop)
