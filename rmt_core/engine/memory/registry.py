"""The registry of memory types: a name in RMTConfig.memory -> a MemoryType subclass.

Like transformers' Auto classes register model types: ``register_memory("mine", MyMemory)``
in a user's own module makes ``RMTConfig(memory="mine")`` work, with no edit inside rmt_core.
"""
from __future__ import annotations

from ...errors import ArgumentError, ConfigError
from .base import MemoryType

_REGISTRY: dict[str, type[MemoryType]] = {}


def register_memory(name: str, cls: type[MemoryType], *, replace: bool = False) -> type[MemoryType]:
    """Make memory type `cls` (a MemoryType subclass) selectable as RMTConfig(memory=name).

    Sets cls.name = name and returns cls (usable as a helper in a decorator). Raises
    ArgumentError for an empty or non-string name, a class that is not a MemoryType, or a name
    already taken by another class (pass replace=True to re-register on purpose)."""
    if not isinstance(name, str) or not name.strip():
        raise ArgumentError(f"A memory type's name must be a non-empty string, got {name!r}.")
    if not (isinstance(cls, type) and issubclass(cls, MemoryType)):
        raise ArgumentError(f"register_memory({name!r}, ...) needs a MemoryType subclass, got {cls!r}.")
    if name in _REGISTRY and _REGISTRY[name] is not cls and not replace:
        raise ArgumentError(f"Memory type {name!r} is already registered ({_REGISTRY[name].__qualname__}); "
                            "pick another name or pass replace=True.")
    cls.name = name
    _REGISTRY[name] = cls
    return cls


def known_memories() -> tuple[str, ...]:
    """Names of the registered memory types, sorted."""
    return tuple(sorted(_REGISTRY))


def memory_class(name: str) -> type[MemoryType]:
    """The MemoryType subclass registered as `name`; ConfigError naming the known ones otherwise."""
    if not isinstance(name, str) or name not in _REGISTRY:
        raise ConfigError(
            f"Unknown memory type {name!r}; known memory types are {list(known_memories())}. A memory type from "
            "your own module must be registered first (rmt_core.engine.memory.register_memory(name, cls)): "
            "import that module before building or loading the model.")
    return _REGISTRY[name]
