"""Name -> object registries, so configs, the CLI and the docs share one vocabulary."""

from __future__ import annotations

from typing import Callable, Generic, Iterable, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """A case-insensitive mapping from names (and aliases) to registered objects."""

    def __init__(self, kind: str, name_attr: str | None = None):
        """`name_attr`: an attribute that `register` sets on each object to its registered name, so an object
        (e.g. a method class) can name itself in messages without repeating the name by hand."""
        self.kind = kind
        self.name_attr = name_attr
        self._items: dict[str, T] = {}
        self._aliases: dict[str, str] = {}

    def register(self, name: str, aliases: Iterable[str] = ()) -> Callable[[T], T]:
        def decorator(obj: T) -> T:
            key = name.lower()
            if key in self._items or key in self._aliases:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._items[key] = obj
            if self.name_attr:
                setattr(obj, self.name_attr, key)
            for alias in aliases:
                self._aliases[alias.lower()] = key
            return obj

        return decorator

    def canonical(self, name: str) -> str:
        """The registered name for `name` or one of its aliases; a clear error listing known names otherwise."""
        key = str(name).lower()
        key = self._aliases.get(key, key)
        if key not in self._items:
            raise ValueError(f"unknown {self.kind} {name!r}; known: {', '.join(self.names(with_aliases=True))}")
        return key

    def get(self, name: str) -> T:
        return self._items[self.canonical(name)]

    def names(self, with_aliases: bool = False) -> list[str]:
        names = sorted(self._items)
        if with_aliases:
            names += sorted(f"{a} (= {k})" for a, k in self._aliases.items())
        return names

    def __contains__(self, name: str) -> bool:
        key = str(name).lower()
        return self._aliases.get(key, key) in self._items
