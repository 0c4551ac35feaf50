"""Type checks for the arguments of public calls, one ``isinstance`` per argument.

Why: Python's own failure on a wrong type surfaces deep inside (``argument of type 'int' is not
iterable`` from a topic rule, ``'<' not supported`` from a limit), outside :class:`MQTTError`,
after part of the call already ran. Each public entry point checks its arguments first and
raises :class:`~tars.mqtt.InvalidArgumentTypeError` (an ``MQTTError`` and a ``TypeError``)
naming the argument and the type it got. The checks return nothing and cost one ``isinstance``
when the argument is right; the message is only built when it is not.

``bool`` is an ``int`` in Python; an argument that counts (qos, a size) takes ``True`` as 1, as
Python does, but a flag (``retain``, ``wait``) must be a real ``bool`` so that ``retain=1`` or
``wait="no"`` (truthy!) cannot mean something the caller did not write.
"""

from __future__ import annotations

from typing import Any, Final

from ._errors import InvalidArgumentTypeError

__all__ = [
    "check_bool",
    "check_callable",
    "check_int",
    "check_number",
    "check_str",
    "check_type",
    "wrong_type",
]

_NUMBER: Final = (int, float)


def wrong_type(name: str, value: object, expected: str) -> InvalidArgumentTypeError:
    """The error for ``name`` given ``value`` where ``expected`` was wanted (the value itself is
    not shown: it may be a secret or huge)."""
    return InvalidArgumentTypeError(f"{name} must be {expected}, not {type(value).__name__}")


def check_str(name: str, value: object, *, optional: bool = False) -> None:
    """Raise unless ``value`` is a ``str`` (or None when ``optional``)."""
    if not isinstance(value, str) and not (optional and value is None):
        raise wrong_type(name, value, "a str or None" if optional else "a str")


def check_int(name: str, value: object, *, optional: bool = False) -> None:
    """Raise unless ``value`` is an ``int`` (or None when ``optional``)."""
    if not isinstance(value, int) and not (optional and value is None):
        raise wrong_type(name, value, "an int or None" if optional else "an int")


def check_number(name: str, value: object, *, optional: bool = False) -> None:
    """Raise unless ``value`` is an ``int`` or ``float`` (or None when ``optional``)."""
    if not isinstance(value, _NUMBER) and not (optional and value is None):
        raise wrong_type(name, value, "a number or None" if optional else "a number")


def check_bool(name: str, value: object) -> None:
    """Raise unless ``value`` is a ``bool`` (not merely truthy)."""
    if value is not True and value is not False:
        raise wrong_type(name, value, "a bool")


def check_callable(name: str, value: object, *, optional: bool = False) -> None:
    """Raise unless ``value`` can be called (or is None when ``optional``)."""
    if not callable(value) and not (optional and value is None):
        raise wrong_type(name, value, "callable")


def check_type(
    name: str, value: object, expected: type[Any] | tuple[type[Any], ...], *, optional: bool = False
) -> None:
    """Raise unless ``value`` is an instance of ``expected`` (or None when ``optional``)."""
    if not isinstance(value, expected) and not (optional and value is None):
        names = (
            " or ".join(t.__name__ for t in expected)
            if isinstance(expected, tuple)
            else expected.__name__
        )
        raise wrong_type(name, value, f"a {names}" + (" or None" if optional else ""))
