"""Tasks: what the pipeline searches for, one module each (``rnas/tasks/<name>.py`` defining
``TASK``): ``image`` (classification, the CNN track) and ``language`` (word-level language
modelling, the RNN track of docs/algorithm.md §7). The six stages are the same for every task; they
ask the task (``rnas.tasks.base.Task``) for the work that differs, and a task's module types its own
parameter blocks per search space (``Task.params``), which ``parse_params`` picks by the ``task``
and ``space`` keys.
"""
from __future__ import annotations

import importlib
import os
import pkgutil
from pathlib import Path
from typing import Any

import yaml

from rnas.config import ConfigError, from_dict, require
from rnas.params import PipelineParams
from rnas.tasks.base import Task


def available_tasks() -> list[str]:
    return sorted(m.name for m in pkgutil.iter_modules(__path__) if m.name != "base")


def get_task(name: str) -> Task:
    if name not in available_tasks():
        raise ValueError(f"unknown task {name!r}; known: {', '.join(available_tasks())}")
    return importlib.import_module(f"{__name__}.{name}").TASK()


def parse_params(data: Any) -> PipelineParams:
    """Validated parameters of the task that ``data`` (the nested dict of params.yaml) names: a
    ConfigError names the first bad key."""
    data = data if isinstance(data, dict) else {}
    name = data.get("task", PipelineParams.task)
    require(name in available_tasks(), "task", f"{name!r} is not one of {', '.join(available_tasks())}")
    spaces = get_task(name).params
    space = data.get("space", next(iter(spaces)))
    require(space in spaces, "space", f"{space!r} is not one of {', '.join(spaces)} (the spaces of task {name!r})")
    try:
        return from_dict(spaces[space], data)
    except ConfigError as e:
        if str(e).startswith("unknown parameter") and space != next(iter(spaces)):
            raise ConfigError(f"{e}; space {space} has settings of its own: select them with its conf group "
                              f"(-S task={space}, or a profile that does)") from None
        raise


def load_params(path: str | os.PathLike = "params.yaml") -> PipelineParams:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"parameters file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ConfigError(f"{path} is not valid YAML ({' '.join(str(e).split())})") from None
    return parse_params(data or {})


__all__ = ["Task", "available_tasks", "get_task", "load_params", "parse_params"]
