"""The codec's side channel: what mqtt5 reports to ``sys.unraisablehook``, kept from pytest."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator

__all__ = ["codec_utf8_reports"]


@contextlib.contextmanager
def codec_utf8_reports() -> Iterator[list[BaseException | None]]:
    """Collect what the codec reports to ``sys.unraisablehook`` (mqtt5 0.8 reports the
    UnicodeDecodeError of a string field before it panics on it)."""
    reported: list[BaseException | None] = []
    previous = sys.unraisablehook
    sys.unraisablehook = lambda unraisable: reported.append(unraisable.exc_value)
    try:
        yield reported
    finally:
        sys.unraisablehook = previous
