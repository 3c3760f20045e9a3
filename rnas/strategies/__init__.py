"""Search strategies: one module each (``rnas/strategies/<name>.py`` defining ``STRATEGY``)."""
from __future__ import annotations

import importlib
import pkgutil
from typing import Any

from rnas.config import from_dict
from rnas.spaces.base import SearchSpace
from rnas.strategies.base import Observation, SearchStrategy


def available_strategies() -> list[str]:
    return sorted(m.name for m in pkgutil.iter_modules(__path__) if m.name != "base")


def strategy_class(name: str) -> type[SearchStrategy]:
    if name not in available_strategies():
        raise ValueError(f"unknown search strategy {name!r}; known: {', '.join(available_strategies())}")
    return importlib.import_module(f"{__name__}.{name}").STRATEGY


def make_strategy(name: str, space: SearchSpace, options: dict[str, Any] | None = None,
                  seed: int = 0, key: str = "strategy") -> SearchStrategy:
    cls = strategy_class(name)
    return cls(space, from_dict(cls.Config, options or {}, key), seed=seed)


__all__ = ["Observation", "SearchStrategy", "available_strategies", "make_strategy", "strategy_class"]
