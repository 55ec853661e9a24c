"""Name -> factory registries for pluggable parts.

A registry maps a string (what a config file or CLI flag names) to a factory plus a one-line summary.
Unknown names fail loudly and list the known ones; registering a name twice is an error, so two plugins can
never silently shadow each other.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Generic, TypeVar

from polyserve.core.errors import RegistryError

T = TypeVar("T")


@dataclass(frozen=True)
class Entry(Generic[T]):
    name: str
    factory: Callable[..., T]
    summary: str


class Registry(Generic[T]):
    """A named collection of factories of one kind (``kind`` appears in error messages)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, Entry[T]] = {}

    def register(self, name: str, summary: str) -> Callable[[Callable[..., T]], Callable[..., T]]:
        """Decorator: ``@ROUTERS.register("random", "uniformly random server")``."""

        def deco(factory: Callable[..., T]) -> Callable[..., T]:
            self.add(name, factory, summary)
            return factory

        return deco

    def add(self, name: str, factory: Callable[..., T], summary: str) -> None:
        if name in self._entries:
            raise RegistryError(f"duplicate {self.kind} name {name!r}: each name may be registered once")
        self._entries[name] = Entry(name, factory, summary)

    def get(self, name: str) -> Entry[T]:
        try:
            return self._entries[name]
        except KeyError:
            known = ", ".join(sorted(self._entries)) or "(none registered)"
            raise RegistryError(f"unknown {self.kind} {name!r}; known: {known}") from None

    def create(self, name: str, /, **kwargs: object) -> T:
        return self.get(name).factory(**kwargs)

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[Entry[T]]:
        return iter(sorted(self._entries.values(), key=lambda e: e.name))
