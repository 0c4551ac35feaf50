"""Faults injected into one method for one call: how tests make a callback fail once."""

from __future__ import annotations

from typing import Any

import pytest

__all__ = ["fail_once"]


def fail_once(monkeypatch: pytest.MonkeyPatch, owner: type, name: str, error: Exception) -> None:
    """``owner.name`` raises ``error`` on its next call, then works again."""
    original = getattr(owner, name)
    armed = [error]

    def failing(self: Any, *args: Any, **kwargs: Any) -> Any:
        if armed:
            raise armed.pop()
        return original(self, *args, **kwargs)

    monkeypatch.setattr(owner, name, failing)
