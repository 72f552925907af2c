"""A generic, typed plugin registry.

One :class:`Registry` instance exists per plugin kind (models, datasets, perturbations,
metrics). Entries are registered either eagerly (a decorator or :meth:`Registry.register`)
or lazily as a ``"module:attr"`` string or an entry point, so that listing names never
imports model code. Lookups of unknown names fail with a :class:`UnknownNameError` that
suggests the closest registered names.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.metadata
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Generic, TypeVar, cast

from bench.errors import UserError

T = TypeVar("T")


class RegistryError(UserError):
    """A registration that the registry refuses (duplicate name, wrong type, frozen)."""


class UnknownNameError(UserError, KeyError):
    """A lookup of a name that no plugin registered."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0])


@dataclass(frozen=True)
class Entry:
    """One registry entry: the object itself, or a lazy ``module:attr`` target."""

    name: str
    target: object | str | importlib.metadata.EntryPoint
    source: str  # "builtin", "decorator" or "entry point <distribution>"

    @property
    def is_loaded(self) -> bool:
        return not isinstance(self.target, (str, importlib.metadata.EntryPoint))


class Registry(Generic[T]):
    """Maps names to plugin classes (or factories) of one kind.

    Args:
        kind: the plugin kind, used in messages ("model", "dataset", ...).
        base: every registered object must be a subclass (or instance) of this type.
        entry_point_group: the Python entry-point group that third-party packages use
            to add plugins of this kind (e.g. ``sida_bench.models``).
    """

    def __init__(self, kind: str, base: type, entry_point_group: str | None = None) -> None:
        self.kind = kind
        self.base = base
        self.entry_point_group = entry_point_group
        self._entries: dict[str, Entry] = {}
        self._lock = threading.RLock()
        self._frozen = False
        self._discovered = entry_point_group is None

    # ----------------------------------------------------------------- registration
    def register(self, name: str, obj: T | None = None, *, source: str = "decorator") -> Callable[[T], T] | T:
        """Register ``obj`` under ``name``; without ``obj`` this is a class decorator."""
        if obj is None:
            def decorator(target: T) -> T:
                self._add(Entry(name, self._check_type(name, target), source))
                return target
            return decorator
        self._add(Entry(name, self._check_type(name, obj), source))
        return obj

    def register_lazy(self, name: str, target: str, *, source: str = "builtin") -> None:
        """Register a ``"package.module:attr"`` target, imported on first use."""
        if ":" not in target:
            raise RegistryError(f"Lazy {self.kind} target must look like 'module:attr', got {target!r}")
        self._add(Entry(name, target, source))

    def freeze(self) -> None:
        """Refuse any further registration."""
        self._frozen = True

    def _add(self, entry: Entry) -> None:
        with self._lock:
            if self._frozen:
                raise RegistryError(f"The {self.kind} registry is frozen; cannot register {entry.name!r}")
            if not entry.name or not isinstance(entry.name, str):
                raise RegistryError(f"A {self.kind} name must be a non-empty string, got {entry.name!r}")
            if entry.name in self._entries:
                old = self._entries[entry.name]
                raise RegistryError(
                    f"{self.kind.capitalize()} {entry.name!r} is already registered (by {old.source}); "
                    f"refusing the registration from {entry.source}"
                )
            self._entries[entry.name] = entry

    def _check_type(self, name: str, obj: object) -> object:
        ok = (isinstance(obj, type) and issubclass(obj, self.base)) or isinstance(obj, self.base)
        if not ok:
            raise RegistryError(
                f"Cannot register {obj!r} as {self.kind} {name!r}: expected a subclass of "
                f"{self.base.__module__}.{self.base.__qualname__}"
            )
        return obj

    # ----------------------------------------------------------------- discovery
    def discover(self) -> None:
        """Add the plugins that installed packages declare in the entry-point group."""
        with self._lock:
            if self._discovered:
                return
            self._discovered = True
            for ep in importlib.metadata.entry_points(group=cast(str, self.entry_point_group)):
                dist = getattr(getattr(ep, "dist", None), "name", "?")
                self._add(Entry(ep.name, ep, f"entry point {dist}"))

    # ----------------------------------------------------------------- lookup
    def names(self) -> list[str]:
        """Sorted registered names; imports nothing."""
        self.discover()
        return sorted(self._entries)

    def entries(self) -> list[Entry]:
        self.discover()
        return [self._entries[n] for n in sorted(self._entries)]

    def __contains__(self, name: object) -> bool:
        self.discover()
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self.names())

    def suggest(self, name: str, n: int = 3) -> list[str]:
        """The registered names closest to ``name`` (difflib ratio ≥ 0.6)."""
        return difflib.get_close_matches(name, self.names(), n=n, cutoff=0.6)

    def get(self, name: str) -> type[T]:
        """The registered class for ``name``, importing it if it was registered lazily."""
        self.discover()
        with self._lock:
            entry = self._entries.get(name)
            if entry is None:
                raise UnknownNameError(self._unknown_message(name))
            if entry.is_loaded:
                return cast("type[T]", entry.target)
            target = entry.target
            if isinstance(target, importlib.metadata.EntryPoint):
                obj = target.load()
            else:
                module_name, _, attr = cast(str, target).partition(":")
                module = importlib.import_module(module_name)
                try:
                    obj = getattr(module, attr)
                except AttributeError as exc:
                    raise RegistryError(f"{self.kind.capitalize()} {name!r}: {module_name} has no attribute {attr!r}") from exc
            self._check_type(name, obj)
            self._entries[name] = Entry(name, obj, entry.source)
            return cast("type[T]", obj)

    def _unknown_message(self, name: str) -> str:
        hints = self.suggest(name)
        hint = f" Did you mean {', '.join(repr(h) for h in hints)}?" if hints else ""
        available = ", ".join(self.names()) or "none"
        return f"Unknown {self.kind} {name!r}.{hint} Available: {available}"

    def create(self, name: str, /, **kwargs: object) -> T:
        """Instantiate the plugin ``name`` with keyword arguments."""
        return cast(T, self.get(name)(**kwargs))
