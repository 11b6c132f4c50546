"""Named implementations of one interface, chosen by name (as timm's model registry does for models).

The probe's meters and the trainer's run meters each keep one :class:`Registry`; a class registers
itself with a decorator, and the stage looks it up by the name the user gave (``--device``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T", bound=type)


class Registry(Generic[T]):
    """Classes by name.

    Args:
        kind: what the classes are, for the error message (e.g. "probe meter").
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._classes: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Class decorator: make the class available as ``name`` (and set its ``name`` attribute)."""

        def register(cls: T) -> T:
            cls.name = name
            self._classes[name] = cls
            return cls

        return register

    def names(self) -> list[str]:
        return sorted(self._classes)

    def get(self, name: str) -> T:
        """The class registered as ``name``.

        Raises:
            KeyError: no class has that name (the message lists the names there are).
        """
        try:
            return self._classes[name]
        except KeyError:
            raise KeyError(f"no {self.kind} named {name!r}; there are: {', '.join(self.names())}") from None
