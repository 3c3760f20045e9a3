"""MLflow tracking for pipeline stages: with ``rnas.compare``, the only code in ``rnas`` that knows MLflow or DVC.

A stage opens ``with stage_run("warmup", cfg.tracking, root, params) as run:`` and logs
metrics, tags and artifacts through ``run``. In the MLflow UI a pipeline run is one parent
run, the experiment's summary, with one nested run per stage.

Where the store is
    ``MLFLOW_TRACKING_URI`` if set, else ``TrackingConfig.uri``, else
    ``sqlite:///<project root>/mlflow.db`` (MLflow 3 has no ``./mlruns`` file store). The
    project root is the ORIGINAL repository even when DVC runs a queued or ``--temp``
    experiment in a copy at ``<root>/.dvc/tmp/exps/...``: DVC sets ``DVC_ROOT`` to the
    original root for those runs (and to the repository root in ``dvc repro``); without it we
    cut the path at ``.dvc/tmp/exps``. A relative SQLite path in ``uri`` is anchored there
    too. Artifacts of an experiment we create go to ``mlartifacts/`` beside the database.

The parent run: one per pipeline run, the experiment's summary
    Each stage is its own process, so the parent is looked up in the store by the tag
    ``rnas.pipeline_key``, a hash of the bytes of ``params.yaml`` and of:
    - ``dvc exp run`` (workspace, ``--temp`` or queued): ``DVC_EXP_BASELINE_REV`` and
      ``DVC_EXP_NAME``, both set by DVC for every stage of one experiment. The parent is
      named after the experiment.
    - otherwise (``dvc repro``, a stage run by hand): the git commit. The parent is named
      ``<branch>@<commit>``, followed by the changed params when ``params.yaml`` differs from
      the commit's. Reproducing the same commit with the same params adds stage runs to the
      same parent; changing either starts a new one.
    The parent says what changed: the tag ``rnas.changed`` (``search.strategy=nao``) and its
    description list the params that differ from the baseline's committed ``params.yaml``. It
    holds all params (flattened with dots), the key results each stage reports with
    ``StageRun.log_summary`` (test metric, size, predictor tau, best supernet score,
    ``seconds_<stage>`` and ``seconds_total``), the key facts each stage tags with
    ``StageRun.tag_summary`` (``rnas.blind_search``: why the supernet told no cells apart),
    and the main pictures. A stage that DVC reused
    from its cache runs no process. So each stage run is tagged with a digest of the output
    folder it wrote (``rnas.output_sha256``); the next stage that runs digests the folders of
    the stages before it, finds the runs that wrote exactly those bytes, tags the parent
    ``rnas.reused.<stage>`` with them and copies their summaries (metrics and tags). (Nothing is written into the
    outputs: a stage rerun that writes the same bytes still lets DVC skip the stages after it.)

Runs end truthfully
    A stage run ends FINISHED, FAILED (tag ``rnas.end_reason``: the error) or KILLED (Ctrl-C,
    SIGTERM). A process killed outright (SIGKILL, out of memory) cannot close its run, so each
    stage run records its pid, the pid's start time and the host; every stage that starts marks
    the RUNNING runs of dead processes on this host KILLED, with a reason, and their parent too.
    A stage that runs again under the same parent (a rerun of ``dvc repro`` or of the same
    experiment) soft-deletes the earlier run of that stage (tag ``rnas.superseded_by``), so the
    parent never holds a stale child beside the current one.

Concurrency
    The lookup and creation of the experiment, the parent and the stage run happen while
    holding an exclusive ``flock`` on ``<database>.lock``, so two queue workers racing to create
    the same parent (or the experiment, or the database itself) make exactly one. A non-SQLite
    store (an MLflow server) has no shared file to lock: there, duplicates are tolerated
    deterministically — every stage joins the earliest-created parent with the key.
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
import signal
import socket
import sqlite3
import subprocess
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Mapping, TypeVar

import yaml

from rnas.config import require

if TYPE_CHECKING:
    from mlflow import MlflowClient

T = TypeVar("T")

PIPELINE_KEY_TAG = "rnas.pipeline_key"
STAGE_TAG = "rnas.stage"
EXPERIMENT_NAME_TAG = "rnas.dvc_exp_name"
CHANGED_TAG = "rnas.changed"           # on the parent: the params that differ from the baseline's
REUSED_TAG_PREFIX = "rnas.reused."     # on the parent, + stage: the run that made a stage reused from cache
OUTPUT_TAG = "rnas.output_sha256"      # on a stage run: the digest of the output folder it wrote
SUMMARY_TAG = "rnas.summary_keys"      # on a stage run: the metrics it gave the parent
SUMMARY_TAGS_TAG = "rnas.summary_tags"  # on a stage run: the tags it gave the parent
BLIND_SEARCH_TAG = "rnas.blind_search"  # why the supernet scored a pool without telling cells apart
PID_TAG, PID_START_TAG, HOST_TAG = "rnas.pid", "rnas.pid_start", "rnas.host"
END_REASON_TAG = "rnas.end_reason"
SUPERSEDED_TAG = "rnas.superseded_by"
DESCRIPTION_TAG = "mlflow.note.content"  # the run description in MLflow's UI
GIT_COMMIT_TAG = "mlflow.source.git.commit"  # the tag MLflow's UI shows as the source version
PARENT_RUN_TAG = "mlflow.parentRunId"  # what makes the UI nest a run under another

SECONDS_PREFIX = "seconds_"            # summary metrics: seconds_<stage>, and their sum seconds_total
TOTAL_SECONDS = SECONDS_PREFIX + "total"
BASELINE = "baseline"                  # rnas.changed of a run with the baseline's params
NO_BASELINE = "no committed params.yaml"

# MLflow's limits: per log_batch request, and on a param's value.
MAX_PARAMS_PER_BATCH = 100
MAX_METRICS_PER_BATCH = 1000
MAX_PARAM_LENGTH = 6000
MAX_NAME_LENGTH = 100  # of a parent's name: the changed params are cut beyond it

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


class StageTerminated(SystemExit):
    """SIGTERM, raised in the stage's main thread so that its run ends KILLED (exit status 143)."""

    def __init__(self) -> None:
        super().__init__(128 + signal.SIGTERM)


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

    def __init__(self, client: MlflowClient | None = None, run_id: str | None = None, parent_id: str | None = None):
        self._client = client
        self.run_id, self.parent_id = run_id, parent_id
        self.summary: dict[str, float] = {}
        self.summary_tags: dict[str, str] = {}

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        if self._client is not None:
            _log_metrics(self._client, self.run_id, metrics, step)

    def log_summary(self, metrics: Mapping[str, float]) -> None:
        """Key results: logged to this stage's run and to the parent (and to later parents reusing the stage)."""
        if self._client is None:
            return
        self.log_metrics(metrics)
        _log_metrics(self._client, self.parent_id, metrics)
        self.summary.update({key: float(value) for key, value in metrics.items()})

    def tag_summary(self, tags: Mapping[str, str]) -> None:
        """Key facts as tags: on this stage's run and on the parent (and on later parents reusing the stage)."""
        if self._client is None:
            return
        for run_id in (self.run_id, self.parent_id):
            _set_tags(self._client, run_id, tags)
        self.summary_tags.update(tags)

    def log_artifact(self, path: Path, summary: bool = False) -> None:
        """Upload a file, or a folder as a folder of the same name; ``summary``: to the parent too."""
        if self._client is None:
            return
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"artifact to log does not exist: {path}")
        for run_id in (self.run_id, self.parent_id) if summary else (self.run_id,):
            if path.is_dir():
                _retry_locked(self._client.log_artifacts, run_id, str(path), artifact_path=path.name)
            else:
                _retry_locked(self._client.log_artifact, run_id, str(path))

    def set_tags(self, tags: dict[str, str]) -> None:
        if self._client is not None:
            _set_tags(self._client, self.run_id, tags)



@contextmanager
def stage_run(stage: str, cfg: TrackingConfig, project_root: Path, params: dict, output: Path | None = None,
              upstream: Mapping[str, Path] | None = None) -> Iterator[StageRun]:
    """Open the nested run ``stage`` under this pipeline run's parent; close both on exit.

    ``params`` may be nested: they are logged flat, with dotted keys, to the stage run and the
    parent (a value longer than MLflow's limit is cut, ending in "..."). ``output``: the folder
    the stage writes, digested when the block succeeds. ``upstream``: the output folders of the
    stages before this one, by stage; those written by a run of another parent (DVC reused them
    from its cache) are linked to this one. When the block raises,
    the stage run and the parent are marked FAILED (KILLED on Ctrl-C or SIGTERM) and the error
    propagates.
    """
    if not cfg.enabled:
        yield StageRun()
        return
    from mlflow import MlflowClient

    project_root = Path(project_root)
    uri = tracking_uri(cfg, project_root)
    pipeline = PipelineIdentity.of(project_root)
    with _store_lock(uri):
        client = MlflowClient(tracking_uri=uri)
        experiment_id = _experiment_id(client, cfg.experiment, uri)
        close_runs_of_dead_processes(client, experiment_id)
        parent_id = _parent_run_id(client, experiment_id, pipeline)
        tags = {STAGE_TAG: stage, PARENT_RUN_TAG: parent_id, **pipeline.source_tags(), **_process_tags()}
        run_id = _retry_locked(client.create_run, experiment_id, tags=tags, run_name=stage).info.run_id
        _supersede_earlier_runs(client, experiment_id, parent_id, stage, run_id)
    run = StageRun(client, run_id, parent_id)
    status, reason = "FAILED", None
    try:
        with _sigterm_raises():
            flat = flatten_params(params)
            for target in (run_id, parent_id):
                _log_params(client, target, flat)
            _link_reused(client, experiment_id, parent_id, stage, upstream or {})
            yield run
        if output is not None and output.is_dir():
            _set_tags(client, run_id, {OUTPUT_TAG: folder_digest(output), SUMMARY_TAG: ",".join(run.summary),
                                       SUMMARY_TAGS_TAG: ",".join(run.summary_tags)})
        status = "FINISHED"
    except (KeyboardInterrupt, StageTerminated) as error:
        status, reason = "KILLED", "interrupted (Ctrl-C)" if isinstance(error, KeyboardInterrupt) else "SIGTERM"
        raise
    except BaseException as error:
        reason = f"{type(error).__name__}: {error}"
        raise
    finally:
        _update_total_seconds(client, parent_id)
        for target in (run_id, parent_id):
            if reason is not None:
                _set_tags(client, target, {END_REASON_TAG: f"{stage}: {reason}"[:MAX_PARAM_LENGTH]})
            _retry_locked(client.set_terminated, target, status, _now_ms())


def flatten_params(params: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": "1"}``; lists and other values become their ``str``."""
    flat: dict[str, str] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
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


def _log_metrics(client: MlflowClient, run_id: str, metrics: Mapping[str, float], step: int | None = None) -> None:
    if not metrics:
        return
    from mlflow.entities import Metric

    timestamp = _now_ms()
    entries = [Metric(key, float(value), timestamp, step or 0) for key, value in metrics.items()]
    for start in range(0, len(entries), MAX_METRICS_PER_BATCH):
        _retry_locked(client.log_batch, run_id, metrics=entries[start:start + MAX_METRICS_PER_BATCH])


def _set_tags(client: MlflowClient, run_id: str, tags: Mapping[str, str]) -> None:
    if not tags:
        return
    from mlflow.entities import RunTag

    _retry_locked(client.log_batch, run_id, tags=[RunTag(key, str(value)) for key, value in tags.items()])


def _link_reused(client: MlflowClient, experiment_id: str, parent_id: str, stage: str,
                 upstream: Mapping[str, Path]) -> None:
    """Tag the parent with the runs that wrote the upstream folders as they are now, when those runs
    belong to another parent (DVC reused their outputs), and copy their summaries to it; this stage,
    running now, is no longer reused."""
    for upstream_stage, folder in upstream.items():
        if not folder.is_dir():
            continue
        made = _retry_locked(client.search_runs, [experiment_id], max_results=1,
                             order_by=["attributes.start_time DESC"], filter_string=(
                                 f"tags.`{STAGE_TAG}` = '{upstream_stage}' AND "
                                 f"tags.`{OUTPUT_TAG}` = '{folder_digest(folder)}' AND attributes.status = 'FINISHED'"))
        if made and made[0].data.tags.get(PARENT_RUN_TAG) != parent_id:
            run = made[0]
            _set_tags(client, parent_id, {REUSED_TAG_PREFIX + upstream_stage: run.info.run_id})
            keys = [key for key in run.data.tags.get(SUMMARY_TAG, "").split(",") if key in run.data.metrics]
            _log_metrics(client, parent_id, {key: run.data.metrics[key] for key in keys})
            tags = [key for key in run.data.tags.get(SUMMARY_TAGS_TAG, "").split(",") if key in run.data.tags]
            _set_tags(client, parent_id, {key: run.data.tags[key] for key in tags})
    if REUSED_TAG_PREFIX + stage in _retry_locked(client.get_run, parent_id).data.tags:
        _retry_locked(client.delete_tag, parent_id, REUSED_TAG_PREFIX + stage)


def folder_digest(folder: Path) -> str:
    """SHA-256 over the relative paths and bytes of every file under ``folder``, in sorted order."""
    digest = hashlib.sha256()
    for path in sorted(p for p in Path(folder).rglob("*") if p.is_file()):
        digest.update(path.relative_to(folder).as_posix().encode() + b"\0")
        with open(path, "rb") as file:
            while chunk := file.read(1 << 20):
                digest.update(chunk)
        digest.update(b"\0")
    return digest.hexdigest()


def _update_total_seconds(client: MlflowClient, parent_id: str) -> None:
    metrics = _retry_locked(client.get_run, parent_id).data.metrics
    stages = [value for key, value in metrics.items() if key.startswith(SECONDS_PREFIX) and key != TOTAL_SECONDS]
    if stages:
        _log_metrics(client, parent_id, {TOTAL_SECONDS: round(sum(stages), 1)})


@contextmanager
def _sigterm_raises() -> Iterator[None]:
    """While the block runs in the main thread, SIGTERM raises ``StageTerminated`` there."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def terminate(signum, frame):
        raise StageTerminated()

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


# --- which pipeline run this is ------------------------------------------------------------

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
        commit = _git(project_root, "rev-parse", "HEAD")
        params_file = project_root / "params.yaml"
        params_text = params_file.read_text() if params_file.is_file() else ""
        params_hash = hashlib.sha256(params_text.encode()).hexdigest()
        experiment = os.environ.get("DVC_EXP_NAME")
        baseline = os.environ.get("DVC_EXP_BASELINE_REV") if experiment else commit
        committed = _git(project_root, "show", f"{baseline}:params.yaml", strip=False) if baseline else None
        changes = tuple(params_changes(_load_yaml(committed), _load_yaml(params_text))) if committed else ()
        if experiment:
            identity = f"dvc-exp\0{baseline or ''}\0{experiment}\0{params_hash}"
            name = experiment
            how = f"`dvc exp run` experiment `{experiment}` on baseline `{(baseline or '?')[:7]}`"
        else:
            identity = f"repro\0{commit or 'no-git'}\0{params_hash}"
            branch = _git(project_root, "rev-parse", "--abbrev-ref", "HEAD") or "no-git"
            name = f"{branch}@{(commit or '')[:7]}".rstrip("@")
            name = name if not changes else _cut(f"{name} {', '.join(changes)}", MAX_NAME_LENGTH)
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


def _load_yaml(text: str | None) -> dict[str, Any]:
    try:
        loaded = yaml.safe_load(text or "")
    except yaml.YAMLError:
        return {}
    return loaded if isinstance(loaded, dict) else {}


def _cut(text: str, length: int) -> str:
    return text if len(text) <= length else text[:length - 3] + "..."


def _git(project_root: Path, *args: str, strip: bool = True) -> str | None:
    """A git command's output in ``project_root`` (else the original repository), or None."""
    for cwd in dict.fromkeys((project_root, original_project_root(project_root))):
        try:
            result = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=False)
        except (FileNotFoundError, NotADirectoryError):  # no git installed, or no such folder
            return None
        if result.returncode == 0:
            return result.stdout.strip() if strip else result.stdout
    return None


# --- experiment, parent and stage runs (called under the store lock) -----------------------

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


def _parent_run_id(client: MlflowClient, experiment_id: str, pipeline: PipelineIdentity) -> str:
    runs = _retry_locked(client.search_runs, [experiment_id],
                         filter_string=f"tags.`{PIPELINE_KEY_TAG}` = '{pipeline.key}'", max_results=1000)
    if runs:
        parent = min(runs, key=lambda run: (run.info.start_time, run.info.run_id))
        _retry_locked(client.update_run, parent.info.run_id, status="RUNNING")
        if END_REASON_TAG in parent.data.tags:  # of an earlier failure: the pipeline run goes on
            _retry_locked(client.delete_tag, parent.info.run_id, END_REASON_TAG)
        return parent.info.run_id
    return _retry_locked(client.create_run, experiment_id, tags=pipeline.parent_tags(),
                         run_name=pipeline.name).info.run_id


def _supersede_earlier_runs(client: MlflowClient, experiment_id: str, parent_id: str, stage: str, run_id: str) -> None:
    """Soft-delete the earlier runs of ``stage`` under ``parent_id`` unless a live process still owns one."""
    earlier = _retry_locked(client.search_runs, [experiment_id], max_results=1000, filter_string=(
        f"tags.`{PARENT_RUN_TAG}` = '{parent_id}' AND tags.`{STAGE_TAG}` = '{stage}'"))
    for run in earlier:
        if run.info.run_id != run_id and not (run.info.status == "RUNNING" and _owner_alive(run.data.tags)):
            _set_tags(client, run.info.run_id, {SUPERSEDED_TAG: run_id})
            _retry_locked(client.delete_run, run.info.run_id)


def close_runs_of_dead_processes(client: MlflowClient, experiment_id: str) -> list[str]:
    """Mark KILLED every RUNNING stage run whose process on this host has ended, and their parents
    when no stage of theirs is still running; returns the ids of the stage runs so closed."""
    running = _retry_locked(client.search_runs, [experiment_id], filter_string="attributes.status = 'RUNNING'",
                            max_results=1000)
    dead = [run for run in running if PID_TAG in run.data.tags and not _owner_alive(run.data.tags)]
    now = _now_ms()
    for run in dead:
        tags = run.data.tags
        _set_tags(client, run.info.run_id, {
            END_REASON_TAG: f"process {tags[PID_TAG]} on {tags.get(HOST_TAG)} ended without closing its run"})
        _retry_locked(client.set_terminated, run.info.run_id, "KILLED", now)
    still_running = {run.data.tags.get(PARENT_RUN_TAG) for run in running if run not in dead}
    for parent_id in {run.data.tags.get(PARENT_RUN_TAG) for run in dead} - still_running - {None}:
        stage = next(run.data.tags.get(STAGE_TAG) for run in dead if run.data.tags.get(PARENT_RUN_TAG) == parent_id)
        _set_tags(client, parent_id, {END_REASON_TAG: f"{stage}: its process ended without closing its run"})
        _retry_locked(client.set_terminated, parent_id, "KILLED", now)
    return [run.info.run_id for run in dead]


def _process_tags() -> dict[str, str]:
    pid = os.getpid()
    return {PID_TAG: str(pid), PID_START_TAG: _process_start(pid) or "", HOST_TAG: socket.gethostname()}


def _owner_alive(tags: Mapping[str, str]) -> bool:
    """Whether the process that opened a run may still run: True unless it is known to have ended
    (its pid is gone on this host, or now belongs to a process started at another time)."""
    if tags.get(HOST_TAG) != socket.gethostname() or not tags.get(PID_TAG, "").isdigit():
        return True
    pid = int(tags[PID_TAG])
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: it exists
        pass
    started = tags.get(PID_START_TAG)
    return not started or _process_start(pid) in (None, started)


def _process_start(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (``/proc/<pid>/stat`` field 22), if readable."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


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
