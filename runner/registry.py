"""One small registry for the runner's plugins: workloads, probes and environments.

A plugin is a class registered under a name with `@REGISTRY.register("name")` (the decorator sets the class's
`name`). A registry finds its plugins itself: on a lookup it imports every module of its package (once; later
lookups find them in sys.modules), so a new plugin is one new module there and nothing else names it. A name it
does not know is one UnknownNameError line that lists the known ones (`no workload 'lockbnch'; known: ...`).
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from runner.errors import UnknownNameError

P = TypeVar("P")  # the plugins' base class (Workload, Probe, Environment)
C = TypeVar("C", bound=type)


class Registry(Generic[P]):
    """The plugins of one kind, by name. `unknown` is the message for a name it does not know, with the fields
    `name` and `known` (the names, sorted). `shared`: one instance per plugin for everyone (an environment);
    else each `get` makes a new one (a workload, a probe)."""

    def __init__(self, package: str, unknown: str, *, shared: bool = False) -> None:
        self.package = package
        self.unknown = unknown
        self.shared = shared
        self.classes: dict[str, type[P]] = {}
        self._instances: dict[str, P] = {}
        self._modules: tuple[str, ...] | None = None

    def register(self, name: str) -> Callable[[C], C]:
        """Class decorator: the plugin `name`."""

        def deco(cls: C) -> C:
            cls.name = name
            self.classes[name] = cls
            if self.shared:
                self._instances[name] = cls()
            return cls

        return deco

    def load(self) -> None:
        """Import every module of the package (importing a plugin's module registers it). Each call imports them
        again by name, which is a look-up in sys.modules once they are there, and waits, as an import does, for a
        module another thread is importing."""
        if self._modules is None:
            path: Any = importlib.import_module(self.package).__path__
            self._modules = tuple(f"{self.package}.{m.name}" for m in pkgutil.iter_modules(path))
        for module in self._modules:
            importlib.import_module(module)

    def names(self) -> list[str]:
        """Every plugin's name, sorted."""
        self.load()
        return sorted(self.classes)

    def get(self, name: str) -> P:
        """The plugin `name` (UnknownNameError naming the known ones when there is none)."""
        self.load()
        cls = self.classes.get(name)
        if cls is None:
            raise UnknownNameError(self.unknown.format(name=name, known=", ".join(sorted(self.classes))))
        return self._instances[name] if self.shared else cls()
