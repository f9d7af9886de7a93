"""Deferred tuple fields: a frozen slots dataclass field that holds its tuple as columns (or
anything that can make it) and builds the tuple of objects the first time someone reads it.
Creating 100,000 small frozen objects costs more than a whole distribution's computation, and
most readers can work from the columns. Pure Python: a reader of a small distribution (the
``payouts distribution amounts`` command) loads no NumPy."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, TypeVar

T = TypeVar("T")
C = TypeVar("C", bound=type)


class Deferred(Generic[T]):
    """A tuple not built yet: :meth:`get` makes it once, on first read. Subclasses keep the
    columns the tuple is made from, for readers that do not need the objects."""

    __slots__ = ("_value",)

    def __init__(self) -> None:
        self._value: tuple[T, ...] | None = None

    def get(self) -> tuple[T, ...]:
        if self._value is None:
            self._value = self._make()
        return self._value

    def _make(self) -> tuple[T, ...]:
        raise NotImplementedError


class LazyTuple(Deferred[T]):
    """A :class:`Deferred` made by a function (which must not refer back to the owner object,
    or the pair would live until the cycle collector runs)."""

    __slots__ = ("_build",)

    def __init__(self, build: Callable[[], tuple[T, ...]]) -> None:
        super().__init__()
        self._build = build

    def _make(self) -> tuple[T, ...]:
        return self._build()


class _DeferredField:
    """Data descriptor over a dataclass slot that holds a tuple or a :class:`Deferred`.

    Reading always returns a real tuple, so every dataclass method (``__eq__``, ``__hash__``,
    ``__repr__``, :func:`dataclasses.replace`, pickling) and every caller sees the declared type.
    """

    __slots__ = ("slot",)

    def __init__(self, slot: Any) -> None:
        self.slot = slot

    def __get__(self, obj: object, owner: type | None = None) -> Any:
        if obj is None:
            return self
        value = self.slot.__get__(obj, owner)
        return value.get() if isinstance(value, Deferred) else value

    def __set__(self, obj: object, value: Any) -> None:
        self.slot.__set__(obj, value)


def defer_fields(cls: C, *names: str) -> C:
    """Let the tuple fields ``names`` of the slots dataclass ``cls`` hold a :class:`Deferred`."""
    for name in names:
        slot = cls.__dict__[name]
        setattr(cls, name, _DeferredField(slot))
    return cls


def raw_field(obj: object, name: str) -> Any:
    """What the slot ``name`` holds: the tuple, or the :class:`Deferred` not turned into one."""
    descriptor = type(obj).__dict__[name]
    assert isinstance(descriptor, _DeferredField)
    return descriptor.slot.__get__(obj, type(obj))


def store_field(obj: object, name: str, value: object) -> None:
    """Set a deferred field of a frozen dataclass (construction and column caches only)."""
    descriptor = type(obj).__dict__[name]
    assert isinstance(descriptor, _DeferredField)
    descriptor.slot.__set__(obj, value)
