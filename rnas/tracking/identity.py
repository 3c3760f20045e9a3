"""Which pipeline run a stage process belongs to: the key every stage of one run computes alike, and
what its parent run says (its name, the params changed against the baseline)."""
from __future__ import annotations

import hashlib
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import yaml

from rnas.tracking.runs import (BASELINE, CHANGED_TAG, DESCRIPTION_TAG, EXPERIMENT_NAME_TAG, GIT_COMMIT_TAG, MAX_NAME_LENGTH,
                                NO_BASELINE, PIPELINE_KEY_TAG, flatten_params)
from rnas.tracking.store import original_project_root


@dataclass(frozen=True)
class PipelineIdentity:
    """The key that every stage process of one pipeline run computes alike, and what the parent says."""
    key: str
    name: str
    commit: str | None
    changed: str                 # "key=value, ..." for the params that differ from the baseline's
    description: str

    @classmethod
    def of(cls, project_root: Path) -> PipelineIdentity:
        commit = git(project_root, "rev-parse", "HEAD")
        params_file = project_root / "params.yaml"
        params_text = params_file.read_text() if params_file.is_file() else ""
        params_hash = hashlib.sha256(params_text.encode()).hexdigest()
        experiment = os.environ.get("DVC_EXP_NAME")
        baseline = os.environ.get("DVC_EXP_BASELINE_REV") if experiment else commit
        committed = git(project_root, "show", f"{baseline}:params.yaml", strip=False) if baseline else None
        changes = tuple(params_changes(load_yaml(committed), load_yaml(params_text))) if committed else ()
        if experiment:
            identity = f"dvc-exp\0{baseline or ''}\0{experiment}\0{params_hash}"
            name = experiment
            how = f"`dvc exp run` experiment `{experiment}` on baseline `{(baseline or '?')[:7]}`"
        else:
            identity = f"repro\0{commit or 'no-git'}\0{params_hash}"
            branch = git(project_root, "rev-parse", "--abbrev-ref", "HEAD") or "no-git"
            name = f"{branch}@{(commit or '')[:7]}".rstrip("@")
            name = name if not changes else cut(f"{name} {', '.join(changes)}", MAX_NAME_LENGTH)
            how = f"`dvc repro` (or a stage run by hand) of `{name}`"
        if committed is None:
            what = "No committed params.yaml to compare with."
        elif changes:
            what = "Changed against the baseline's committed params.yaml:\n\n" + "\n".join(f"- `{c}`" for c in changes)
        else:
            what = "The baseline's committed params.yaml, unchanged."
        changed = NO_BASELINE if committed is None else ", ".join(changes) or BASELINE
        return cls(hashlib.sha256(identity.encode()).hexdigest(), name, commit, changed, f"{how}.\n\n{what}")

    def source_tags(self) -> dict[str, str]:
        tags = {GIT_COMMIT_TAG: self.commit, EXPERIMENT_NAME_TAG: os.environ.get("DVC_EXP_NAME")}
        return {key: value for key, value in tags.items() if value}

    def parent_tags(self) -> dict[str, str]:
        return {PIPELINE_KEY_TAG: self.key, CHANGED_TAG: self.changed,
                DESCRIPTION_TAG: self.description, **self.source_tags()}


def params_changes(baseline: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    """``key=value`` (dotted keys, sorted) for every param of ``current`` that differs from ``baseline``;
    a param that ``current`` lacks reads ``key=<removed>``."""
    old, new = flatten_params(baseline), flatten_params(current)
    changed = sorted(key for key in old.keys() | new.keys() if old.get(key) != new.get(key))
    return [f"{key}={new.get(key, '<removed>')}" for key in changed]


def load_yaml(text: str | None) -> dict[str, Any]:
    try:
        loaded = yaml.safe_load(text or "")
    except yaml.YAMLError:
        return {}
    return loaded if isinstance(loaded, dict) else {}


def cut(text: str, length: int) -> str:
    return text if len(text) <= length else text[:length - 3] + "..."


def git(project_root: Path, *args: str, strip: bool = True) -> str | None:
    """A git command's output in ``project_root`` (else the original repository), or None."""
    for cwd in dict.fromkeys((project_root, original_project_root(project_root))):
        try:
            result = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=False)
        except (FileNotFoundError, NotADirectoryError):  # no git installed, or no such folder
            return None
        if result.returncode == 0:
            return result.stdout.strip() if strip else result.stdout
    return None
