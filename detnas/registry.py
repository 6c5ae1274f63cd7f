"""One pattern for every place users plug things in or name things (search spaces, released archs, training recipes,
detector kinds, latency backends, search algorithms, objectives): a named `Registry` filled by a decorator or a call
where the thing is defined, as timm's `register_model`.

Adding a kind is then one module plus its registration; a wrong name is refused with the registered names.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from detnas.errors import DetnasError

T = TypeVar("T")


class Registry(Generic[T]):
    """Name -> entry for one concept (`what` says which in error messages, e.g. 'latency backend')."""

    def __init__(self, what: str, option: str | None = None, *, same: Callable[[T, T], bool] | None = None) -> None:
        self.what = what
        self.option = option  # the CLI option that names an entry, for the error line
        # Entries that are data (a space, an arch, a recipe) may be registered again by code that loads them twice,
        # e.g. a space file read by two commands: `same` says when a second entry is the first one again.
        self.same = same
        self._entries: dict[str, T] = {}

    def register(self, name: str, *, replace: bool = False) -> Callable[[T], T]:
        """Decorator adding the decorated entry under `name`; a second entry of that name is refused unless it is
        the same object, or `same` holds for the two (then the newer one is kept)."""

        def add(entry: T) -> T:
            if name in self._entries and self._entries[name] is not entry and not replace:
                if self.same is None:
                    raise DetnasError(f"{self.what} '{name}' is already registered; choose another name")
                if not self.same(self._entries[name], entry):
                    raise DetnasError(f"{self.what} '{name}' is already registered with other content; choose another "
                                      "name")
            self._entries[name] = entry
            return entry

        return add

    def unregister(self, name: str) -> None:
        self._entries.pop(name, None)

    def get(self, name: str) -> T:
        try:
            return self._entries[name]
        except KeyError:
            where = f"{self.option}: " if self.option else ""
            raise DetnasError(f"{where}unknown {self.what} '{name}'; choose one of {', '.join(self.names())}") from None

    def names(self) -> tuple[str, ...]:
        return tuple(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)
