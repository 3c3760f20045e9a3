"""Fault injection: every bad input ends the stage or command it is given to with exit status 2,
one last line on stderr naming the file or key (``error: ...``), no traceback, and nothing written
outside its scratch project. Plus: a retrain killed mid-run resumes to the same weights.

Each case runs as a process of its own, in its own folder made from one prepared scratch project
(smoke profile, digits, tracking off); the processes are forked from two warm interpreters
(``warm_python.py``) so that torch is imported twice, not once per case.
"""
from __future__ import annotations

import gzip
import io
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from tests.helpers import compose

ROOT = Path(__file__).resolve().parents[1]
#: a valid cell of the smoke profile's space, so that retrain needs no search
ARCH = "0 1 1 2 0 2 1 4 0 3 1 0 2 1 4 0 2 2 2 3 0 4 1 0 1 2 1 3 0 3 0 3 2 2 3 0 1 4 5 1"
NB201_CELLS = ["|nor_conv_3x3~0|+|none~0|nor_conv_3x3~1|+|skip_connect~0|none~1|skip_connect~2|",
               "|none~0|+|none~0|none~1|+|none~0|none~1|none~2|"]
SETTINGS = ["profile=smoke", "device=cpu", "threads=1", "tracking.enabled=false"]


# --- writing bad inputs ------------------------------------------------------------------------
def jpeg(color: int, size: int = 8) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.full((size, size, 3), color, dtype=np.uint8)).save(buffer, format="JPEG")
    return buffer.getvalue()


def image_folder(root: Path, classes=("cat", "dog"), per_class: int = 3, **replace: bytes) -> Path:
    """``<class>/<i>.jpg`` images; ``replace`` maps a file name (``dog_1``) to other bytes."""
    for c, name in enumerate(classes):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            (root / name / f"{i}.jpg").write_bytes(replace.get(f"{name}_{i}", jpeg(60 * c + 10 * i)))
    return root


def tar_gz(path: Path, members: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w:gz") as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return path


def good_tar(path: Path) -> Path:
    return tar_gz(path, {f"train/{c}/{i}.jpg": jpeg(60 * k + i)
                         for k, c in enumerate(("cat", "dog")) for i in range(3)})


def corpus(root: Path, train: bytes = b"the cat sat\nthe dog sat\n" * 20, valid: bytes = b"the cat sat\n",
           name: str = "train.txt") -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / name).write_bytes(train)
    (root / "valid.txt").write_bytes(valid)
    return root


def table(path: Path, rows: list[tuple[str, float]]) -> Path:
    lines = ["arch_str,valid,test,seconds"] + [f"{arch},90,91,{cost}" for arch, cost in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


# --- the cases ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Case:
    name: str
    args: tuple[str, ...]                       # after `python`
    names: str                                  # what the last line must name
    params: dict[str, Any] = field(default_factory=dict)   # dotted keys set in params.yaml
    setup: Callable[[Path], Any] | None = None  # writes the bad input into the case's folder
    language: bool = False                      # the ptb-smoke params instead of smoke
    artifacts: tuple[str, ...] = ()             # folders of the prepared project copied in
    status: int = 2


def stage(name: str) -> tuple[str, ...]:
    return ("-m", f"stages.{name}")


def write(relative: str, data: bytes | Callable[[], bytes]) -> Callable[[Path], None]:
    def setup(folder: Path) -> None:
        (folder / relative).parent.mkdir(parents=True, exist_ok=True)
        (folder / relative).write_bytes(data() if callable(data) else data)
    return setup


def truncated(relative: str) -> Callable[[Path], None]:
    def setup(folder: Path) -> None:
        path = folder / relative
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return setup


def torch_file(payload: Any) -> Callable[[], bytes]:
    def data() -> bytes:
        buffer = io.BytesIO()
        torch.save(payload, buffer)
        return buffer.getvalue()
    return data


BENCH = ("-m", "rnas.judging.benchmark", "nb201", "--select-col", "valid", "--report-col", "test", "--strategies", "random",
         "--seeds", "1", "--budget-queries", "2")
EVALUATE = ("-m", "rnas.evaluate", "--dataset", "digits", "--device", "cpu")
DATA = {"data.search.dataset": "imagefolder", "data.search.root": "input", "data.search.valid_fraction": 0.34,
        "data.search.test_fraction": 0.34}
ALL = ("data", "artifacts/warmup")

CASES = [
    # parameters: the check stage, which DVC runs every time
    Case("threads negative", stage("check"), "threads", {"threads": -1}),
    Case("unknown key", stage("check"), "unknown parameter foo", {"foo": 1}),
    Case("blank tracking uri", stage("check"), "tracking.uri", {"tracking.uri": " "}),
    Case("seed negative", stage("check"), "seed", {"seed": -1}),
    Case("device unknown", stage("check"), "device", {"device": "foo"}),
    Case("arch too short", stage("check"), "retrain.arch", {"retrain.arch": "0 1 2"}),
    Case("rerank top negative", stage("check"), "rerank.top", {"rerank.top": -1}),
    Case("arch bad token", stage("check"), "retrain.arch", {"retrain.arch": ARCH.replace("0", "x", 1)}),
    Case("wrong type", stage("check"), "warmup.pool_size", {"warmup.pool_size": "many"}),
    Case("zero batch size", stage("check"), "retrain.train.batch_size", {"retrain.train.batch_size": 0}),
    Case("params not yaml", stage("check"), "params.yaml", setup=write("params.yaml", b"seed: [1\n")),
    Case("params before work", stage("warmup"), "evaluate.batch_size", {"evaluate.batch_size": 0}),
    # the tracking server: down when the stage starts (nothing listens on port 9 here)
    Case("tracking server down", stage("warmup"), "tracking store http://127.0.0.1:9",
         {"tracking.enabled": True, "tracking.uri": "http://127.0.0.1:9"}, artifacts=("data",)),
    # image data
    Case("empty image folder", stage("prepare"), "data.search.root", DATA, lambda f: (f / "input").mkdir()),
    Case("corrupt jpeg", stage("prepare"), "dog/1.jpg", DATA,
         lambda f: image_folder(f / "input", dog_1=b"\xff\xd8 not a jpeg")),
    Case("truncated jpeg", stage("prepare"), "cat/2.jpg", DATA,
         lambda f: image_folder(f / "input", cat_2=jpeg(5, 64)[:200])),
    Case("mixed image sizes", stage("prepare"), "dog/0.jpg", DATA,
         lambda f: image_folder(f / "input", dog_0=jpeg(5, 16))),
    Case("one class", stage("prepare"), "classification needs at least 2", DATA,
         lambda f: image_folder(f / "input", classes=("cat",))),
    Case("truncated tar.gz", stage("prepare"), "input.tar.gz", {**DATA, "data.search.root": "input.tar.gz"},
         lambda f: (good_tar(f / "input.tar.gz"), truncated("input.tar.gz")(f))),
    Case("not gzip", stage("prepare"), "input.tar.gz", {**DATA, "data.search.root": "input.tar.gz"},
         write("input.tar.gz", b"plain text, not gzip\n" * 10)),
    Case("absolute tar member", stage("prepare"), "/etc/cat.jpg", {**DATA, "data.search.root": "input.tar.gz"},
         lambda f: tar_gz(f / "input.tar.gz", {"train/dog/0.jpg": jpeg(1), "/etc/cat.jpg": jpeg(2)})),
    Case("missing data root", stage("prepare"), "nowhere", {**DATA, "data.search.root": "nowhere"}),
    # text data
    Case("ptb not utf-8", stage("prepare"), "train.txt", {"data.search.root": "input"},
         lambda f: corpus(f / "input", train=b"caf\xe9 au lait\n"), language=True),
    Case("ptb not gzip", stage("prepare"), "train.txt.gz", {"data.search.root": "input"},
         lambda f: corpus(f / "input", train=b"not gzip", name="train.txt.gz"), language=True),
    Case("ptb truncated gzip", stage("prepare"), "train.txt.gz", {"data.search.root": "input"},
         lambda f: corpus(f / "input", train=gzip.compress(b"the cat\n" * 999)[:40], name="train.txt.gz"),
         language=True),
    Case("ptb empty valid", stage("prepare"), "valid.txt: has no words", {"data.search.root": "input"},
         lambda f: corpus(f / "input", valid=b""), language=True),
    Case("ptb empty train", stage("prepare"), "train.txt: has no words", {"data.search.root": "input"},
         lambda f: corpus(f / "input", train=b"\n\n"), language=True),
    # artifacts
    Case("missing prepared data", stage("warmup"), "data/prepared/search/meta.json"),
    Case("garbage pool.csv", stage("embed"), "artifacts/warmup/pool.csv", artifacts=ALL,
         setup=write("artifacts/warmup/pool.csv", b"\x00\x01garbage\x02\n\x03")),
    Case("pool.csv bad arch", stage("embed"), "artifacts/warmup/pool.csv", artifacts=ALL,
         setup=write("artifacts/warmup/pool.csv", b"arch,score,round\n1 2 3,0.5,0\n")),
    Case("corrupt supernet", stage("sample"), "artifacts/warmup/supernet.pt", artifacts=ALL,
         setup=lambda f: (truncated("artifacts/warmup/supernet.pt")(f),
                          write("artifacts/embed/controller.pt", b"")(f))),
    Case("controller without weights", stage("sample"), "artifacts/embed/controller.pt", artifacts=ALL,
         setup=write("artifacts/embed/controller.pt", torch_file({"seed": 0}))),
    Case("garbage pool_final.csv", stage("rerank"), "artifacts/sample/pool_final.csv", {"rerank.top": 2},
         artifacts=ALL, setup=lambda f: (write("artifacts/sample/best.json", b'{"arch": "x", "score": 1}')(f),
                                         write("artifacts/sample/pool_final.csv", b"\x00garbage\x01\n")(f))),
    Case("corrupt best.json", stage("retrain"), "artifacts/rerank/best.json", artifacts=ALL,
         setup=write("artifacts/rerank/best.json", b"{not json")),
    Case("diverging retrain", stage("retrain"), "lr", {"retrain.arch": ARCH, "retrain.train.lr_max": 1e6},
         artifacts=ALL),
    Case("diverging warmup", stage("warmup"), "lr", {"warmup.train.epochs": 1, "warmup.train.lr_max": 1e6},
         artifacts=("data",)),
    Case("corrupt model, evaluate stage", stage("evaluate"), "artifacts/retrain/model.pt", artifacts=ALL,
         setup=write("artifacts/retrain/model.pt", b"PK\x03\x04 truncated zip")),
    Case("corrupt model, evaluate command", (*EVALUATE, "--model", "model.pt"), "model.pt",
         setup=write("model.pt", torch_file({"card": {"arch": "1 2"}, "state_dict": {}}))),
    Case("evaluate batch size 0", (*EVALUATE, "--model", "model.pt", "--batch-size", "0"), "--batch-size"),
    # the benchmark command
    Case("header-only table", (*BENCH, "--table", "t.csv", "--out", "out"), "t.csv: the table has a header but no rows",
         setup=lambda f: table(f / "t.csv", [])),
    Case("partial table", (*BENCH, "--table", "t.csv", "--out", "out"), "--subset-table",
         setup=lambda f: table(f / "t.csv", [(NB201_CELLS[0], 10), (NB201_CELLS[1], 20)])),
    Case("inf cost", (*BENCH, "--table", "t.csv", "--out", "out", "--cost-col", "seconds"), "'seconds'",
         setup=lambda f: table(f / "t.csv", [(NB201_CELLS[0], 10), (NB201_CELLS[1], float("inf"))])),
    Case("negative cost", (*BENCH, "--table", "t.csv", "--out", "out", "--cost-col", "seconds"), "'seconds'",
         setup=lambda f: table(f / "t.csv", [(NB201_CELLS[0], -1), (NB201_CELLS[1], 20)])),
    Case("strategy batch size 0", (*BENCH, "--table", "t.csv", "--out", "out", "--strategy-options",
                                   '{"random": {"batch_size": 0}}'), "strategies.random.batch_size",
         setup=lambda f: table(f / "t.csv", [(NB201_CELLS[0], 10)])),
    Case("--out not ours", (*BENCH, "--table", "t.csv", "--out", "input", "--subset-table"), "--out input",
         setup=lambda f: (table(f / "t.csv", [(NB201_CELLS[0], 10), (NB201_CELLS[1], 20)]),
                          write("input/notes.txt", b"mine")(f))),
    Case("missing table", (*BENCH, "--table", "absent.csv", "--out", "out"), "absent.csv"),
]


# --- running them ------------------------------------------------------------------------------
def set_key(data: dict, dotted: str, value: Any) -> None:
    *parents, last = dotted.split(".")
    for key in parents:
        data = data.setdefault(key, {})
    data[last] = value


def environment(folder: Path) -> dict[str, str]:
    """Temporary files and caches inside the case's folder; no bytecode written next to the code."""
    (folder / "tmp").mkdir(exist_ok=True)
    return {**os.environ, "TMPDIR": str(folder / "tmp"), "HOME": str(folder), "PYTHONDONTWRITEBYTECODE": "1",
            "MPLCONFIGDIR": str(folder / "tmp"), "RNAS_DEBUG": "0"}


def python(args, cwd: Path, timeout: float = 120, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=cwd, env={**environment(cwd), **env}, capture_output=True,
                          text=True, timeout=timeout)


def new_project(folder: Path, base: Path, params: Path) -> Path:
    """A project folder sharing the base's code (linked, read-only use) with its own params.yaml."""
    folder.mkdir(parents=True)
    for name in ("rnas", "stages"):
        (folder / name).symlink_to(base / name)
    shutil.copy(params, folder / "params.yaml")
    return folder


def set_params(folder: Path, values: dict[str, Any]) -> None:
    params = yaml.safe_load((folder / "params.yaml").read_text())
    for key, value in values.items():
        set_key(params, key, value)
    (folder / "params.yaml").write_text(yaml.safe_dump(params))


@pytest.fixture(scope="module")
def scratch(tmp_path_factory) -> Path:
    """The project's code, dvc.yaml and conf, the two params files, prepared digits and a scored warmup
    pool (no supernet training): what the cases copy from."""
    base = tmp_path_factory.mktemp("faults")
    shutil.copy(ROOT / "dvc.yaml", base / "dvc.yaml")  # the stages' code deps: what a resume fingerprint covers
    shutil.copytree(ROOT / "rnas", base / "rnas", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(ROOT / "stages", base / "stages", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(ROOT / "conf", base / "conf")
    compose(base, *SETTINGS, "warmup.train.epochs=0")  # a scored pool, no supernet training
    shutil.move(base / "params.yaml", base / "image.yaml")
    compose(base, *SETTINGS, "profile=ptb-smoke", "++data.search.root=input")
    shutil.move(base / "params.yaml", base / "language.yaml")
    prepared = new_project(base / "prepared", base, base / "image.yaml")
    for name in ("prepare", "warmup"):
        result = python(stage(name), prepared)
        assert result.returncode == 0, result.stderr
    return base


def snapshot(*folders: Path, skip: tuple[Path, ...] = ()) -> dict[str, tuple[int, int]]:
    files = {}
    for folder in folders:
        for path in folder.rglob("*"):
            if path.is_file() and not any(part in ("__pycache__", ".pytest_cache", ".git") for part in path.parts) \
                    and not any(path.is_relative_to(s) for s in skip):
                stat = path.stat()
                files[str(path)] = (stat.st_size, stat.st_mtime_ns)
    return files


def run_case(case: Case, base: Path, server: subprocess.Popen) -> tuple[subprocess.CompletedProcess, dict, dict]:
    folder = new_project(base / "cases" / case.name.replace(" ", "_").replace("/", "_"), base,
                         base / ("language.yaml" if case.language else "image.yaml"))
    for name in case.artifacts:
        shutil.copytree(base / "prepared" / name, folder / name)
    set_params(folder, case.params)
    if case.setup is not None:
        case.setup(folder)
    inputs = snapshot(folder, skip=(folder / "tmp",))
    job = {"args": case.args, "cwd": str(folder), "env": environment(folder),
           "stdout": str(folder / "tmp/stdout"), "stderr": str(folder / "tmp/stderr")}
    server.stdin.write(json.dumps(job) + "\n")
    server.stdin.flush()
    status = json.loads(server.stdout.readline())
    result = subprocess.CompletedProcess(case.args, status, (folder / "tmp/stdout").read_text(),
                                         (folder / "tmp/stderr").read_text())
    return result, inputs, snapshot(folder, skip=(folder / "tmp",))


@pytest.fixture(scope="module")
def outcomes(scratch) -> dict[str, tuple[subprocess.CompletedProcess, dict, dict]]:
    """Every case run once, in a process of its own forked by one of two warm servers
    (``warm_python.py``: torch imported once, not per case); the code and the prepared project
    must be untouched."""
    outside = (ROOT, scratch / "rnas", scratch / "stages", scratch / "conf", scratch / "prepared")
    before = snapshot(*outside)
    (scratch / "cases").mkdir()
    servers = [subprocess.Popen([sys.executable, str(ROOT / "tests/warm_python.py")], cwd=scratch,
                                env=environment(scratch), stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
               for _ in range(2)]
    try:
        with ThreadPoolExecutor(len(servers)) as pool:
            halves = pool.map(lambda i: [(c.name, run_case(c, scratch, servers[i])) for c in CASES[i::len(servers)]],
                              range(len(servers)))
            results = dict(pair for half in halves for pair in half)
    finally:
        for server in servers:
            server.stdin.close()
            server.wait(timeout=60)
    assert snapshot(*outside) == before, "a case wrote outside its scratch project"
    return results


@pytest.mark.slow
@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input_ends_in_one_line_naming_it(case, outcomes):
    result, inputs_before, after = outcomes[case.name]
    lines = result.stderr.strip().splitlines()
    assert result.returncode == case.status, result.stderr[-2000:]
    assert "Traceback" not in result.stderr, result.stderr[-2000:]
    assert lines and case.names in lines[-1] and "error" in lines[-1], result.stderr[-2000:]
    # the bad input is read, not changed; a failing stage writes no result
    assert {k: v for k, v in after.items() if k in inputs_before} == inputs_before
    assert not any("/artifacts/" in k and k not in inputs_before and "retrain_state" not in k for k in after)


def test_every_stage_has_a_bad_input_case():
    """A stage added to dvc.yaml without a bad-input case here fails this test."""
    stages = set(yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"])
    covered = {c.args[1].removeprefix("stages.") for c in CASES if c.args[:1] == ("-m",)}
    assert stages <= covered, f"no bad-input case for {sorted(stages - covered)}"
    assert len({c.name for c in CASES}) == len(CASES)  # the case ids are unique


# --- what is not an error: a checkpoint that cannot be used is set aside -----------------------
@pytest.mark.slow
def test_debug_shows_the_traceback(scratch, tmp_path):
    folder = new_project(tmp_path / "p", scratch, scratch / "image.yaml")
    set_params(folder, {"seed": -1})
    result = python(stage("check"), folder, RNAS_DEBUG="1")
    assert result.returncode == 2 and "Traceback" in result.stderr
    assert result.stderr.strip().splitlines()[-1] == "error: seed: must be >= 0"


def retrain_project(scratch: Path, folder: Path, epochs: int, tracking: bool = False) -> Path:
    """Retraining ARCH on the prepared digits; ``tracking`` into the folder's own mlflow.db."""
    folder = new_project(folder, scratch, scratch / "image.yaml")
    shutil.copytree(scratch / "prepared/data", folder / "data")
    set_params(folder, {"retrain.arch": ARCH, "retrain.train.epochs": epochs, "tracking.enabled": tracking,
                        "tracking.uri": "sqlite:///mlflow.db"})
    return folder


def model_weights(folder: Path) -> dict[str, torch.Tensor]:
    return torch.load(folder / "artifacts/retrain/model.pt", weights_only=True)["state_dict"]


@pytest.mark.slow
def test_killed_retrain_resumes_to_the_same_weights_and_a_rerun_trains_anew(scratch, tmp_path):
    epochs = 2  # killed just after the first epoch's checkpoint
    straight = retrain_project(scratch, tmp_path / "straight", epochs)
    uninterrupted = subprocess.Popen([sys.executable, *stage("retrain")], cwd=straight, env=environment(straight),
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # meanwhile

    killed = retrain_project(scratch, tmp_path / "killed", epochs, tracking=True)  # tracking: changes no weight
    checkpoint = killed / "artifacts/retrain_state/checkpoint.pt"
    process = subprocess.Popen([sys.executable, *stage("retrain")], cwd=killed, env=environment(killed),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not checkpoint.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL and not (killed / "artifacts/retrain/model.pt").exists()
    (checkpoint.parent / "corrupt.pt").write_bytes(b"")  # another file there is no reason to stop

    resumed = python(stage("retrain"), killed)
    assert resumed.returncode == 0 and f"resuming {checkpoint.relative_to(killed)} after epoch" in resumed.stderr
    assert f"after epoch {epochs}/{epochs}" not in resumed.stderr
    assert uninterrupted.wait(timeout=120) == 0
    straight_weights, resumed_weights = model_weights(straight), model_weights(killed)
    assert straight_weights.keys() == resumed_weights.keys()
    assert all(torch.equal(straight_weights[k], resumed_weights[k]) for k in straight_weights)
    # the killed process's MLflow run was closed by the rerun: nothing is left RUNNING
    from mlflow.tracking import MlflowClient
    client = MlflowClient(f"sqlite:///{killed / 'mlflow.db'}")
    from mlflow.entities import ViewType
    runs = [r for e in client.search_experiments() for r in client.search_runs([e.experiment_id],
                                                                               run_view_type=ViewType.ALL)]
    assert runs and not [r.info.run_name for r in runs if r.info.status == "RUNNING"]
    assert "KILLED" in {r.info.status for r in runs}

    # what `dvc repro -f` does: the same command again; the delivered run is not resumed
    set_params(killed, {"tracking.enabled": False})  # not in the fingerprint
    again = python(stage("retrain"), killed)
    assert again.returncode == 0 and "resuming" not in again.stderr and f"epoch {epochs}/{epochs}" in again.stderr


@pytest.mark.slow
def test_unreadable_checkpoint_is_set_aside_and_training_starts_over(scratch, tmp_path):
    folder = retrain_project(scratch, tmp_path / "p", 1)
    checkpoint = folder / "artifacts/retrain_state/checkpoint.pt"
    checkpoint.parent.mkdir(parents=True)
    checkpoint.write_bytes(b"PK\x03\x04 cut short")
    result = python(stage("retrain"), folder)
    assert result.returncode == 0 and "Traceback" not in result.stderr
    assert "checkpoint.pt is unreadable: set aside as checkpoint.pt.unreadable, not loaded" in result.stderr
    assert (checkpoint.parent / "checkpoint.pt.unreadable").read_bytes() == b"PK\x03\x04 cut short"


@pytest.mark.slow
def test_ctrl_c_is_one_line_and_status_130(scratch, tmp_path):
    folder = retrain_project(scratch, tmp_path / "p", 100000)  # far more than the signal lets it run
    # a job started in the background inherits SIGINT ignored, and Python then keeps ignoring it:
    # give the stage the default disposition a terminal's foreground process has
    process = subprocess.Popen([sys.executable, *stage("retrain")], cwd=folder, env=environment(folder),
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    while "[train] epoch" not in process.stderr.readline():
        assert process.poll() is None
    process.send_signal(signal.SIGINT)
    try:
        _, stderr = process.communicate(timeout=120)
    finally:
        process.kill()
    assert process.returncode == 130 and "Traceback" not in stderr
    assert stderr.strip().splitlines()[-1] == "interrupted"


def test_source_fingerprint_changes_with_the_code_only(tmp_path):
    from rnas.artifacts import source_fingerprint

    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg/a.py").write_text("x = 1\n")
    (tmp_path / "pkg/notes.txt").write_text("not code")
    (tmp_path / "b.py").write_text("y = 2\n")
    first = source_fingerprint(tmp_path, ["pkg", "b.py"])
    (tmp_path / "pkg/notes.txt").write_text("changed, still not code")
    assert source_fingerprint(tmp_path, ["b.py", "pkg"]) == first
    (tmp_path / "pkg/a.py").write_text("x = 0\n")
    assert source_fingerprint(tmp_path, ["pkg", "b.py"]) != first


def test_artifacts_are_written_with_the_umask_mode(tmp_path):
    from rnas.artifacts import atomic_dir, write_json

    previous = os.umask(0o027)
    try:
        write_json(tmp_path / "a.json", {})
        with atomic_dir(tmp_path / "folder") as out:
            write_json(out / "b.json", {})
    finally:
        os.umask(previous)
    assert (tmp_path / "a.json").stat().st_mode & 0o777 == 0o640
    assert (tmp_path / "folder/b.json").stat().st_mode & 0o777 == 0o640


def test_pool_columns_keep_their_order():
    from rnas.search.pool import ArchPool
    from rnas.spaces.nb201 import NB201Space

    space = NB201Space()
    pool = ArchPool(space, [space.from_str(NB201_CELLS[0])], [1.0], {"round": [0], "origin": ["seed"], "b": [1]})
    grown = pool.extend([space.from_str(NB201_CELLS[1])], round=[1], origin=["random"], a=[2])
    assert list(grown.to_frame().columns) == ["arch", "score", "round", "origin", "b", "a"]


def test_diverging_language_model_stops_naming_epoch_and_lr(tmp_path):
    from rnas.errors import ConfigError
    from rnas.networks.rnn import RNNModel, RNNModelConfig
    from rnas.spaces import get_space
    from rnas.training.language_model import LMTrainConfig, train_language_model

    space, words = get_space("rnn"), 20
    torch.manual_seed(0)
    model = RNNModel(space, space.random(random.Random(0)), RNNModelConfig(hidden_size=8), words)
    ids = torch.randint(words, (400,))
    cfg = LMTrainConfig(epochs=3, batch_size=4, bptt=10, eval_batch_size=2, lr=1e12, grad_clip=1e12)
    with pytest.raises(ConfigError, match=r"training diverged: .* steps of epoch \d \(lr 1e\+12\)"):
        train_language_model(model, cfg, ids, ids[:100], torch.device("cpu"), tmp_path / "lm.pt", "run")
