"""A tiny name -> factory registry, so models, losses and datasets are chosen by name, not by if-chains.

An entry may be registered *by path* (``"package.module:attribute"``): it is imported the first time it
is looked up. That is how a lower layer names a plugin a higher layer implements (the trainer's ``fid``
metric hook lives in ``medgan.metrics``) without importing upward.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from medgan.errors import UnknownNameError

T = TypeVar("T")


class Registry(Generic[T]):
    """``REG = Registry("loss")``; ``@REG.register("hinge")``; ``REG["hinge"]``; unknown names list the known ones."""

    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, T] = {}
        self._paths: dict[str, str] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def deco(obj: T) -> T:
            if name in self._items or name in self._paths:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._items[name] = obj
            return obj

        return deco

    def register_path(self, name: str, path: str) -> None:
        """Register ``name`` as ``"module:attribute"``, imported on first lookup."""
        if name in self._items or name in self._paths:
            raise ValueError(f"{self.kind} {name!r} is registered twice")
        if ":" not in path:
            raise ValueError(f"{self.kind} {name!r}: path must be 'module:attribute', got {path!r}")
        self._paths[name] = path

    def __getitem__(self, name: str) -> T:
        if name not in self._items and name in self._paths:
            module, attr = self._paths[name].split(":")
            self._items[name] = getattr(importlib.import_module(module), attr)
        try:
            return self._items[name]
        except KeyError:
            raise UnknownNameError(f"unknown {self.kind} {name!r}; known: {', '.join(self.names()) or '(none)'}") from None

    def __contains__(self, name: object) -> bool:
        return name in self._items or name in self._paths

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def names(self) -> list[str]:
        return sorted({*self._items, *self._paths})
