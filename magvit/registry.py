"""One registry per family: a dict from name to constructor.

Both the YAML configs (`name: vqgan2d`) and the CLI's choices come from these; there are no
string if/elif chains anywhere else. A registry entry may carry the typed dataclass its
constructor takes, so that a config section like `{name: moving_digits, frames: 16}` is checked
against the right schema (see `magvit.config`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Generic, TypeVar

from magvit.errors import ConfigError

T = TypeVar("T")


@dataclass(frozen=True)
class Entry(Generic[T]):
    name: str
    build: Callable[..., T]
    config: type | None  # the frozen dataclass `build` takes as its first argument, if any
    help: str


class Registry(Generic[T]):
    """Maps a name to a constructor for one family (tokenizers, quantizers, tasks, ...)."""

    def __init__(self, family: str):
        self.family = family
        self._entries: dict[str, Entry[T]] = {}

    def register(self, name: str, config: type | None = None, help: str = ""):
        """Decorator: `@DATASETS.register("moving_digits", MovingDigitsConfig)`."""

        def wrap(build: Callable[..., T]) -> Callable[..., T]:
            known = self._entries.get(name)
            if known is not None and (known.build, known.config) == (build, config):
                return build  # the same entry again (a module that still registers what a table registers)
            if known is not None:
                raise ValueError(f"{self.family} registry already has {name!r}")
            doc = help or (build.__doc__ or "").strip().split("\n")[0]
            self._entries[name] = Entry(name, build, config, doc)
            return build

        return wrap

    def __getitem__(self, name: str) -> Entry[T]:
        if name not in self._entries:
            raise ConfigError(f"unknown {self.family} {name!r}; choose one of: {', '.join(self.names())}")
        return self._entries[name]

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def names(self) -> list[str]:
        return sorted(self._entries)

    def build(self, name: str, *args: object, **kwargs: object) -> T:
        return self[name].build(*args, **kwargs)
