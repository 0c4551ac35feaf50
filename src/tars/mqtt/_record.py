"""Records as dataclasses behave, without the dataclass machinery's cost at import.

``@dataclass`` writes the source of ``__init__``, ``__repr__``, ``__eq__``, ``__hash__`` and the
frozen ``__setattr__`` and compiles it with ``exec()`` when the class is created: about 1 ms a
class on a 2-core x86 VM (more on a Raspberry Pi), paid by every service start (issue 21), and
the client has some twenty internal records. These bases give the same behaviour from methods
written once: a subclass annotates its fields in the class body (their order is the fields'
order, as in a dataclass), names them in ``__slots__`` and writes its own ``__init__``.

- :class:`Frozen`: compared and hashed by its fields, shown as ``Name(field=value, ...)``, and
  immutable (assigning raises :class:`dataclasses.FrozenInstanceError`, as a frozen dataclass
  does): ``__init__`` sets the fields with ``_set`` (``object.__setattr__``, as dataclasses do).
- :class:`Record`: mutable, compared by its fields, unhashable, shown the same way.

``@dataclass_transform`` tells type checkers what these classes are, so ``mypy`` still rejects
an assignment to a frozen record's field and a call with arguments its ``__init__`` lacks.
Public types stay real dataclasses (users may call ``dataclasses.fields`` or ``asdict`` on them).
"""

from __future__ import annotations

from dataclasses import FrozenInstanceError
from typing import Any, ClassVar, dataclass_transform

__all__ = ["Frozen", "Record", "_set"]

_set = object.__setattr__
"""What a :class:`Frozen` subclass's ``__init__`` sets its fields with."""


def _values(record: _Fields) -> tuple[Any, ...]:
    return tuple([getattr(record, name) for name in record.__match_args__])


def _repr(record: _Fields) -> str:
    fields = ", ".join(f"{name}={getattr(record, name)!r}" for name in record.__match_args__)
    return f"{type(record).__qualname__}({fields})"


def _fields(cls: type) -> tuple[str, ...]:
    """The fields of a record class: its annotations in order, a base's first (not ClassVars)."""
    names: dict[str, None] = {}
    for klass in reversed(cls.__mro__):
        for name, annotation in vars(klass).get("__annotations__", {}).items():
            if not str(annotation).startswith(("ClassVar", "typing.ClassVar")):
                names[name] = None
    return tuple(names)


class _Fields:
    """What both kinds share: the field order (``__match_args__``), comparison by fields, and
    the dataclass-like repr."""

    __slots__: ClassVar[tuple[str, ...]] = ()
    __match_args__: ClassVar[tuple[str, ...]] = ()

    def __init_subclass__(cls) -> None:
        super().__init_subclass__()
        cls.__match_args__ = _fields(cls)  # type: ignore[misc]

    def __eq__(self, other: object) -> bool:
        if other.__class__ is self.__class__:
            return _values(self) == _values(other)
        return NotImplemented

    def __repr__(self) -> str:
        return _repr(self)


@dataclass_transform(frozen_default=True, eq_default=True)
class Frozen(_Fields):
    """An immutable record compared and hashed by its fields (a frozen dataclass's behaviour)."""

    __slots__ = ()

    def __hash__(self) -> int:
        return hash(_values(self))

    def __setattr__(self, name: str, value: object) -> None:
        raise FrozenInstanceError(f"cannot assign to field {name!r}")

    def __delattr__(self, name: str) -> None:
        raise FrozenInstanceError(f"cannot delete field {name!r}")


@dataclass_transform(eq_default=True)
class Record(_Fields):
    """A mutable record compared by its fields, and so unhashable (a dataclass's behaviour)."""

    __slots__ = ()
    __hash__ = None  # type: ignore[assignment]
