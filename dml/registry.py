"""Name -> component lookup shared by every registry (losses, miners, models, samplers, optimisers)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TypeVar

T = TypeVar("T")


def lookup(registry: Mapping[str, T], key: str, name: str) -> T:
    """``registry[name]``, or a one-line error naming the params key and the accepted names.
    Only the lookup is guarded: a KeyError raised while *building* the component is a bug and
    must not be reported as an unknown name."""
    try:
        return registry[name]
    except KeyError:
        raise ValueError(f"{key}: unknown {name!r}; expected one of {sorted(registry)}") from None
