"""Tasks: what the pipeline searches for, one module each (``rnas/tasks/<name>.py`` defining
``TASK``): ``image`` (classification, the CNN track) and ``language`` (word-level language
modelling, the RNN track of docs/algorithm.md §7). The six stages are the same for every task; they
ask the task (``rnas.tasks.base.Task``) for the work that differs.
"""
from __future__ import annotations

import importlib
import pkgutil

from rnas.tasks.base import Task


def available_tasks() -> list[str]:
    return sorted(m.name for m in pkgutil.iter_modules(__path__) if m.name != "base")


def get_task(name: str) -> Task:
    if name not in available_tasks():
        raise ValueError(f"unknown task {name!r}; known: {', '.join(available_tasks())}")
    return importlib.import_module(f"{__name__}.{name}").TASK()


__all__ = ["Task", "available_tasks", "get_task"]
