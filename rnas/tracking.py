"""MLflow tracking for pipeline stages: the only module in ``rnas`` that knows MLflow or DVC.

A stage opens ``with stage_run("warmup", cfg.tracking, root, params) as run:`` and logs
metrics, tags and artifacts through ``run``. In the MLflow UI a pipeline run is one parent
run with one nested run per stage.

Where the store is
    ``MLFLOW_TRACKING_URI`` if set, else ``TrackingConfig.uri``, else
    ``sqlite:///<project root>/mlflow.db`` (MLflow 3 has no ``./mlruns`` file store). The
    project root is the ORIGINAL repository even when DVC runs a queued or ``--temp``
    experiment in a copy at ``<root>/.dvc/tmp/exps/...``: DVC sets ``DVC_ROOT`` to the
    original root for those runs (and to the repository root in ``dvc repro``); without it we
    cut the path at ``.dvc/tmp/exps``. A relative SQLite path in ``uri`` is anchored there
    too. Artifacts of an experiment we create go to ``mlartifacts/`` beside the database.

How separate stage processes find one parent run
    Each stage is its own process, so the parent is looked up in the store by the tag
    ``rnas.pipeline_key``, a hash of:
    - ``dvc exp run`` (workspace, ``--temp`` or queued): ``DVC_EXP_BASELINE_REV`` and
      ``DVC_EXP_NAME``, both set by DVC for every stage of one experiment. The parent is
      named after the experiment.
    - otherwise (``dvc repro``, a stage run by hand): the git commit and the bytes of
      ``params.yaml``. Reproducing the same commit with the same params adds stage runs to the
      same parent; changing either starts a new one.
    The lookup and creation happen while holding an exclusive ``flock`` on
    ``<database>.lock``, so two queue workers racing to create the same parent (or the
    experiment, or the database itself) make exactly one. A non-SQLite store (an MLflow
    server) has no shared file to lock: there, duplicates are tolerated deterministically —
    every stage joins the earliest-created parent with the key.

Concurrency
    A new SQLite store is switched to WAL journaling (readers never block the writer) and
    MLflow sets a 20 s busy timeout per session; on top of that every store call is retried
    with exponential backoff when SQLite still reports "database is locked". The metrics of
    one ``log_metrics`` call go in one ``log_batch`` write.
"""
from __future__ import annotations

import fcntl
import hashlib
import os
import random
import sqlite3
import subprocess
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, TypeVar

from rnas.config import require

if TYPE_CHECKING:
    from mlflow import MlflowClient

T = TypeVar("T")

PIPELINE_KEY_TAG = "rnas.pipeline_key"
STAGE_TAG = "rnas.stage"
EXPERIMENT_NAME_TAG = "rnas.dvc_exp_name"
GIT_COMMIT_TAG = "mlflow.source.git.commit"  # the tag MLflow's UI shows as the source version
PARENT_RUN_TAG = "mlflow.parentRunId"  # what makes the UI nest a run under another

# MLflow's limits: per log_batch request, and on a param's value.
MAX_PARAMS_PER_BATCH = 100
MAX_METRICS_PER_BATCH = 1000
MAX_PARAM_LENGTH = 6000

LOCK_RETRIES = 12
LOCK_BACKOFF_S = 0.05
LOCK_BACKOFF_CAP_S = 5.0


@dataclass
class TrackingConfig:
    enabled: bool = True
    #: default: sqlite:///<project root>/mlflow.db; MLFLOW_TRACKING_URI overrides both
    uri: str | None = None
    experiment: str = "rnas"

    def check(self) -> None:
        require(self.uri is None or bool(self.uri.strip()), "uri", "must be null or a non-empty URI")
        require(bool(self.experiment.strip()), "experiment", "must not be empty")


# --- where the store is ------------------------------------------------------------------

def original_project_root(project_root: Path) -> Path:
    """The repository a stage belongs to, also from inside DVC's temporary experiment copies."""
    root = Path(os.environ.get("DVC_ROOT") or project_root).resolve()
    parts = root.parts
    for i in range(len(parts) - 2):
        if parts[i:i + 3] == (".dvc", "tmp", "exps"):
            return Path(*parts[:i])
    return root


def tracking_uri(cfg: TrackingConfig, project_root: Path) -> str:
    root = original_project_root(project_root)
    uri = os.environ.get("MLFLOW_TRACKING_URI") or cfg.uri
    if not uri:
        return f"sqlite:///{root / 'mlflow.db'}"
    database = _sqlite_path(uri)
    if database is not None and not database.is_absolute():
        return f"sqlite:///{root / database}"
    return uri


def _sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///path`` URI (relative or absolute), else None."""
    prefix = "sqlite:///"
    if not uri.startswith(prefix) or uri[len(prefix):] in ("", ":memory:"):
        return None
    return Path(uri[len(prefix):].split("?", 1)[0])


# --- the stage run ------------------------------------------------------------------------

class StageRun:
    """Logs into one nested MLflow run. Made without a client (tracking off), it ignores every call."""

    def __init__(self, client: MlflowClient | None = None, run_id: str | None = None):
        self._client = client
        self.run_id = run_id

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        if self._client is None or not metrics:
            return
        from mlflow.entities import Metric

        timestamp = _now_ms()
        step = 0 if step is None else step
        entries = [Metric(key, float(value), timestamp, step) for key, value in metrics.items()]
        for start in range(0, len(entries), MAX_METRICS_PER_BATCH):
            _retry_locked(self._client.log_batch, self.run_id,
                          metrics=entries[start:start + MAX_METRICS_PER_BATCH])

    def log_artifact(self, path: Path) -> None:
        """Upload a file, or a folder as a folder of the same name."""
        if self._client is None:
            return
        path = Path(path)
        if path.is_dir():
            _retry_locked(self._client.log_artifacts, self.run_id, str(path), artifact_path=path.name)
        elif path.is_file():
            _retry_locked(self._client.log_artifact, self.run_id, str(path))
        else:
            raise FileNotFoundError(f"artifact to log does not exist: {path}")

    def set_tags(self, tags: dict[str, str]) -> None:
        if self._client is None or not tags:
            return
        from mlflow.entities import RunTag

        _retry_locked(self._client.log_batch, self.run_id,
                      tags=[RunTag(key, str(value)) for key, value in tags.items()])


@contextmanager
def stage_run(stage: str, cfg: TrackingConfig, project_root: Path, params: dict) -> Iterator[StageRun]:
    """Open the nested run ``stage`` under this pipeline run's parent; close both on exit.

    ``params`` may be nested: they are logged flat, with dotted keys (a value longer than
    MLflow's limit is cut, ending in "..."). When the block raises,
    the stage run and the parent are marked FAILED (KILLED on Ctrl-C) and the error propagates.
    """
    if not cfg.enabled:
        yield StageRun()
        return
    from mlflow import MlflowClient

    project_root = Path(project_root)
    uri = tracking_uri(cfg, project_root)
    commit = _git_commit(project_root)
    with _store_lock(uri):
        client = MlflowClient(tracking_uri=uri)
        experiment_id = _experiment_id(client, cfg.experiment, uri)
        parent_id = _parent_run_id(client, experiment_id, project_root, commit)
    tags = {STAGE_TAG: stage, PARENT_RUN_TAG: parent_id, **_source_tags(commit)}
    run_id = _retry_locked(client.create_run, experiment_id, tags=tags, run_name=stage).info.run_id
    status = "FAILED"
    try:
        _log_params(client, run_id, flatten_params(params))
        yield StageRun(client, run_id)
        status = "FINISHED"
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    finally:
        end_time = _now_ms()
        _retry_locked(client.set_terminated, run_id, status, end_time)
        _retry_locked(client.set_terminated, parent_id, status, end_time)


def flatten_params(params: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": "1"}``; lists and other values become their ``str``."""
    flat: dict[str, str] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten_params(value, f"{name}."))
        else:
            flat[name] = str(value)
    return flat


def _log_params(client: MlflowClient, run_id: str, params: dict[str, str]) -> None:
    from mlflow.entities import Param

    entries = [Param(key, value if len(value) <= MAX_PARAM_LENGTH else value[:MAX_PARAM_LENGTH - 3] + "...")
               for key, value in params.items()]
    for start in range(0, len(entries), MAX_PARAMS_PER_BATCH):
        _retry_locked(client.log_batch, run_id, params=entries[start:start + MAX_PARAMS_PER_BATCH])


# --- experiment and parent run (called under the store lock) -----------------------------

def _experiment_id(client: MlflowClient, name: str, uri: str) -> str:
    experiment = _retry_locked(client.get_experiment_by_name, name)
    if experiment is not None:
        return experiment.experiment_id
    database = _sqlite_path(uri)
    # MLflow's default artifact root is relative to the cwd, i.e. inside a DVC temp copy
    # that is deleted after the run: keep artifacts beside the database instead.
    location = (database.parent / "mlartifacts").as_uri() if database is not None else None
    from mlflow.exceptions import MlflowException

    try:
        return _retry_locked(client.create_experiment, name, artifact_location=location)
    except MlflowException as error:  # created meanwhile by a process not sharing our lock
        if error.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
        return _retry_locked(client.get_experiment_by_name, name).experiment_id


def _parent_run_id(client: MlflowClient, experiment_id: str, project_root: Path, commit: str | None) -> str:
    key, name = _pipeline_key(project_root, commit)
    runs = _retry_locked(client.search_runs, [experiment_id],
                         filter_string=f"tags.`{PIPELINE_KEY_TAG}` = '{key}'", max_results=1000)
    if runs:
        parent = min(runs, key=lambda run: (run.info.start_time, run.info.run_id))
        _retry_locked(client.update_run, parent.info.run_id, status="RUNNING")
        return parent.info.run_id
    tags = {PIPELINE_KEY_TAG: key, **_source_tags(commit)}
    return _retry_locked(client.create_run, experiment_id, tags=tags, run_name=name).info.run_id


def _source_tags(commit: str | None) -> dict[str, str]:
    tags = {GIT_COMMIT_TAG: commit, EXPERIMENT_NAME_TAG: os.environ.get("DVC_EXP_NAME")}
    return {key: value for key, value in tags.items() if value}


def _pipeline_key(project_root: Path, commit: str | None) -> tuple[str, str]:
    """(key shared by every stage of one pipeline run, the parent run's display name)."""
    experiment = os.environ.get("DVC_EXP_NAME")
    if experiment:
        identity = f"dvc-exp\0{os.environ.get('DVC_EXP_BASELINE_REV', '')}\0{experiment}"
        name = experiment
    else:
        params_file = project_root / "params.yaml"
        params_hash = hashlib.sha256(params_file.read_bytes()).hexdigest() if params_file.is_file() else "none"
        identity = f"repro\0{commit or 'no-git'}\0{params_hash}"
        name = f"repro-{(commit or 'no-git')[:7]}-{params_hash[:8]}"
    return hashlib.sha256(identity.encode()).hexdigest(), name


def _git_commit(project_root: Path) -> str | None:
    try:
        result = subprocess.run(["git", "rev-parse", "HEAD"], cwd=project_root,
                                capture_output=True, text=True, check=False)
    except FileNotFoundError:  # no git installed
        return None
    return result.stdout.strip() if result.returncode == 0 else None


# --- concurrency ----------------------------------------------------------------------------

@contextmanager
def _store_lock(uri: str) -> Iterator[None]:
    """Exclusive lock across processes for a SQLite store; creates a new database in WAL mode."""
    database = _sqlite_path(uri)
    if database is None:
        yield
        return
    database.parent.mkdir(parents=True, exist_ok=True)
    with open(database.with_name(database.name + ".lock"), "w") as lock_file:
        fcntl.flock(lock_file, fcntl.LOCK_EX)
        try:
            if not database.exists():
                connection = sqlite3.connect(database)
                try:
                    connection.execute("PRAGMA journal_mode=WAL")
                finally:
                    connection.close()
            yield
        finally:
            fcntl.flock(lock_file, fcntl.LOCK_UN)


def _retry_locked(call: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """``call(*args, **kwargs)``, retried with jittered exponential backoff while SQLite is locked."""
    attempt = 0
    while True:
        try:
            return call(*args, **kwargs)
        except Exception as error:
            attempt += 1
            if "database is locked" not in str(error) or attempt == LOCK_RETRIES:
                raise
            delay = min(LOCK_BACKOFF_CAP_S, LOCK_BACKOFF_S * 2 ** attempt)
            time.sleep(delay * random.uniform(0.5, 1.0))


def _now_ms() -> int:
    return int(time.time() * 1000)
