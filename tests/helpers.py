"""Helpers shared by the test modules: a scratch clone of the project, commands run in it, image folders."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
GIT_IDENTITY = {f"GIT_{who}_{what}": value for who in ("AUTHOR", "COMMITTER")
                for what, value in (("NAME", "rnas-test"), ("EMAIL", "rnas-test@localhost"))}


def run(cmd, cwd, check=True, **env):
    environ = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", **GIT_IDENTITY, **env}
    result = subprocess.run(cmd, cwd=cwd, env=environ, capture_output=True, text=True)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result


def compose(project: Path, *overrides: str) -> None:
    from dvc.utils.hydra import compose_and_dump
    compose_and_dump(project / "params.yaml", str(project / "conf"), None, "config", str(project), list(overrides))


def clone_project(project: Path, *overrides: str) -> Path:
    """This project's tracked files copied into a new git repo, params.yaml composed with ``overrides``."""
    files = run(["git", "ls-files", "-co", "--exclude-standard"], ROOT).stdout.split()
    for name in files:
        if (ROOT / name).is_file() and not name.startswith((".venv", "data/", "artifacts/")):
            (project / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, project / name)
    if overrides:
        compose(project, *overrides)
    run(["git", "init", "-q"], project)
    run(["git", "add", "-A"], project)
    run(["git", "commit", "-qm", " ".join(overrides) or "default"], project)
    return project


def copy_sources(project: Path, to: Path) -> None:
    """The project without its data, artifacts and repositories: a stage run here starts from nothing."""
    top_level_only = {"artifacts", "data", ".dvc", ".git", "mlflow.db"}
    shutil.copytree(project, to, ignore=lambda folder, names: top_level_only & set(names) if folder == str(project) else [])


def write_image(path: Path, value: int, size: tuple[int, int] = (6, 5), mode: str = "RGB") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, value if mode == "L" else (value, 255 - value, value // 2)).save(path)


def write_image_folder(root: Path, splits: dict[str, int], classes=("cat", "dog", "emu")) -> Path:
    """``<split>/<class>/<k>.jpg`` (split "" = ``<class>/<k>.jpg``), ``n`` images per class."""
    for split, n in splits.items():
        for c, cls in enumerate(classes):
            for k in range(n):
                write_image(root / split / cls / f"{k:03d}.jpg", 40 * c + k)
    return root
