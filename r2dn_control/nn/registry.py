"""The explicit registry of model classes that checkpoints may rebuild.

A checkpoint names its class by a stable registry name (``"LipschitzR2DN"``), never by an import
path: `load_model` only constructs classes registered here, so a
crafted file cannot make it call an arbitrary function. The built-in families are registered by
`r2dn_control.nn.checkpoint`; a third-party subclass of
`RecurrentModel` registers itself with the decorator::

    @register_model                 # registry name "MyModel"
    class MyModel(ContractingR2DN): ...

    @register_model(name="acme.MyModel")
    class MyModel(ContractingR2DN): ...
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar, overload

from .base import RecurrentModel

ModelClass = TypeVar("ModelClass", bound=type)

_REGISTRY: dict[str, type[RecurrentModel]] = {}


def _register(cls: type, name: str | None) -> type:
    if not (isinstance(cls, type) and issubclass(cls, RecurrentModel)):
        raise TypeError(f"register_model expects a RecurrentModel subclass, got {cls!r}")
    key = cls.__qualname__ if name is None else name
    if not isinstance(key, str) or not key:
        raise TypeError(f"a registry name must be a non-empty str, got {key!r}")
    existing = _REGISTRY.get(key)
    if existing is not None and existing is not cls:
        raise ValueError(
            f"registry name {key!r} is already taken by {existing.__module__}."
            f"{existing.__qualname__}; pass register_model(name=...) to pick another"
        )
    _REGISTRY[key] = cls
    return cls


@overload
def register_model(cls: ModelClass, *, name: str | None = None) -> ModelClass: ...
@overload
def register_model(cls: None = None, *, name: str | None = None
                   ) -> Callable[[ModelClass], ModelClass]: ...


def register_model(cls=None, *, name=None):
    """Register a `RecurrentModel` subclass for checkpoints (usable as a decorator).

    Parameters
    ----------
    cls : type
        The class; omit it to get a decorator (``@register_model(name="...")``).
    name : str, optional
        Stable name written into checkpoints (default: the class's ``__qualname__``).

    Raises
    ------
    TypeError
        ``cls`` is not a RecurrentModel subclass.
    ValueError
        ``name`` is already registered for a different class.
    """
    if cls is None:
        return lambda c: _register(c, name)
    return _register(cls, name)


def registered_models() -> dict[str, type[RecurrentModel]]:
    """A copy of the registry: name → class."""
    return dict(_REGISTRY)


def registry_name(cls: type) -> str:
    """The name under which ``cls`` is registered; ``ValueError`` if it is not."""
    for key, value in _REGISTRY.items():
        if value is cls:
            return key
    raise ValueError(
        f"{cls.__module__}.{cls.__qualname__} is not a registered model class; decorate it with "
        "r2dn_control.nn.register_model so checkpoints can rebuild it"
    )
