"""Named registries for every plugin kind (models, attacks, pruners, metrics, embedders).

Unlike timm, a duplicate name is an error: in a sweep a silently shadowed
name would change results without anyone noticing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

T = TypeVar("T")


class RegistryError(KeyError):
    """A name is unknown or registered twice."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0]) if self.args else ""


class Registry(Generic[T]):
    """A name -> object table with helpful failures."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def deco(obj: T) -> T:
            if name in self._items:
                raise RegistryError(f"{self.kind} {name!r} is already registered; pick another name")
            self._items[name] = obj
            return obj

        return deco

    def get(self, name: str) -> T:
        try:
            return self._items[name]
        except KeyError:
            raise RegistryError(
                f"unknown {self.kind} {name!r}; valid {self.kind}s: {', '.join(sorted(self._items))}"
            ) from None

    def in_order(self) -> list[T]:
        """The registered objects in registration order (declaration order is meaningful for reports)."""
        return list(self._items.values())

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())


def first_line(doc: str | None) -> str:
    """A registered plugin's one-line description: its docstring's first paragraph on one line
    (a summary wrapped over two source lines stays whole), or ""."""
    return " ".join((doc or "").strip().split("\n\n", 1)[0].split())
