"""A small name -> factory registry for interchangeable parts, in the way timm registers models.

Usage::

    EXTRACTORS = Registry("local feature extractor")

    @EXTRACTORS.register("sift")
    def create_sift(**kw) -> LocalFeatureExtractor: ...

    extractor = EXTRACTORS.create("sift", max_keypoints=1024)
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, TypeVar

__all__ = ["Registry", "UnknownNameError"]

T = TypeVar("T")


class UnknownNameError(KeyError):
    """Raised when a registry is asked for a name it does not hold; the message lists the known names."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0]) if self.args else ""


class Registry(Generic[T]):
    """Maps names to factories. ``kind`` is used in error messages ("unknown <kind> 'x'")."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._factories: dict[str, Callable[..., T]] = {}

    def register(self, name: str) -> Callable[[Callable[..., T]], Callable[..., T]]:
        """Decorator registering ``factory`` under ``name``; a name may be registered once."""

        def deco(factory: Callable[..., T]) -> Callable[..., T]:
            if name in self._factories:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._factories[name] = factory
            return factory

        return deco

    def names(self) -> list[str]:
        """Registered names, sorted."""
        return sorted(self._factories)

    def get(self, name: str) -> Callable[..., T]:
        """The factory for ``name``; raises :class:`UnknownNameError` listing the known names."""
        try:
            return self._factories[name]
        except KeyError:
            known = ", ".join(self.names()) or "(none)"
            raise UnknownNameError(f"unknown {self.kind} {name!r}; known: {known}") from None

    def create(self, name: str, **kwargs: Any) -> T:
        """Build the part registered under ``name`` with ``kwargs``."""
        return self.get(name)(**kwargs)

    def __contains__(self, name: object) -> bool:
        return name in self._factories
