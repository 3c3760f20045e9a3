"""Search spaces: one module each (``rnas/spaces/<name>.py`` defining ``SPACE``).

A new space is one new file; ``get_space`` finds it by module name.
"""
from __future__ import annotations

import importlib
import pkgutil

from rnas.spaces.base import Arch, CellGraph, SearchSpace, Slot


def available_spaces() -> list[str]:
    return sorted(m.name for m in pkgutil.iter_modules(__path__) if m.name != "base")


def get_space(name: str) -> SearchSpace:
    if name not in available_spaces():
        raise ValueError(f"unknown search space {name!r}; known: {', '.join(available_spaces())}")
    return importlib.import_module(f"{__name__}.{name}").SPACE()


__all__ = ["Arch", "CellGraph", "SearchSpace", "Slot", "available_spaces", "get_space"]
