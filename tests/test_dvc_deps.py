"""dvc.yaml's code deps cannot drift from the code: each stage's deps cover every ``rnas`` module the
stage can run, found by following its imports (those inside functions too, and every module of a
package that loads its modules by name), and a resume fingerprint covers what its stage's deps do."""
import ast
import importlib
from pathlib import Path

import pytest
import yaml

from tests.helpers import ROOT

DVC = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
#: the stages DVC may skip (check always runs)
STAGES = [name for name, stage in DVC.items() if not stage.get("always_changed")]


def module_file(name: str) -> Path | None:
    path = ROOT / name.replace(".", "/")
    return next((p for p in (path / "__init__.py", path.with_suffix(".py")) if p.exists()), None)


def imported_modules(file: Path, package: str) -> set[str]:
    """The ``rnas``/``stages`` modules ``file`` imports anywhere, and the submodules of its own package
    when it loads modules by name (``importlib.import_module``: the registries of tasks, spaces...)."""
    tree = ast.parse(file.read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Attribute) and node.attr == "import_module" and file.name == "__init__.py":
            found.update(f"{package}.{p.stem}" for p in file.parent.glob("*.py") if p.stem != "__init__")
    return {name for name in found if name.split(".")[0] in ("rnas", "stages") and module_file(name)}


def closure(module: str) -> set[Path]:
    """The files of ``module`` and of everything it imports, with the packages on the way."""
    seen, todo = set(), [module]
    while todo:
        name = todo.pop()
        parts = name.split(".")
        for i in range(1, len(parts) + 1):  # importing a.b.c runs a/__init__ and a/b/__init__ too
            parent = ".".join(parts[:i])
            file = module_file(parent)
            if file is not None and file not in seen:
                seen.add(file)
                package = parent if file.name == "__init__.py" else ".".join(parts[:i - 1])
                todo.extend(imported_modules(file, package))
    return {f.relative_to(ROOT) for f in seen}


def covered(file: Path, deps: list[str]) -> bool:
    return any(str(file) == d or str(file).startswith(d.rstrip("/") + "/") for d in deps)


@pytest.mark.parametrize("stage", STAGES)
def test_dvc_deps_cover_every_module_the_stage_runs(stage):
    deps = DVC[stage].get("deps", [])
    missing = sorted(str(f) for f in closure(f"stages.{stage}") if not covered(f, deps))
    assert not missing, f"dvc.yaml stage {stage} misses deps on {missing}"


@pytest.mark.parametrize("stage", ["retrain", "rerank"])
def test_resume_fingerprint_covers_the_code_the_stage_runs(stage):
    code = importlib.import_module(f"stages.{stage}").CODE
    missing = sorted(str(f) for f in closure(f"stages.{stage}") if not covered(f, code))
    assert not missing, f"stages/{stage}.py's resume fingerprint misses {missing}"


def test_the_import_walk_sees_imports_inside_functions_and_registries():
    files = {str(f) for f in closure("rnas.tasks")}
    assert {"rnas/tasks/image.py", "rnas/tasks/language.py"} <= files  # loaded by name in get_task
    assert "rnas/tasks/__init__.py" in files and "rnas/__init__.py" in files
