"""A stage's nested MLflow run under its pipeline run's parent: opened, logged into, and closed with
the truth (FINISHED, FAILED or KILLED); the parent's summary kept current (see rnas.tracking)."""
from __future__ import annotations

import hashlib
import signal
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, Mapping

from rnas.tracking.identity import PipelineIdentity
from rnas.tracking.liveness import Heartbeat, close_runs_of_dead_processes, owner_alive, process_tags
from rnas.tracking.runs import (END_REASON_TAG, MAX_PARAM_LENGTH, OUTPUT_TAG, PARENT_RUN_TAG, PIPELINE_KEY_TAG,
                                REUSED_TAG_PREFIX, SECONDS_PREFIX, STAGE_TAG, SUMMARY_TAG, SUMMARY_TAGS_TAG,
                                SUPERSEDED_TAG, TOTAL_SECONDS, flatten_params, log_metrics, log_params, set_tags)
from rnas.errors import TrackingError
from rnas.tracking.store import (TrackingConfig, is_server, now_ms, require_server, retry_locked, server_silence,
                                 sqlite_path, store_lock, tracking_uri)

if TYPE_CHECKING:
    from mlflow import MlflowClient


class StageTerminated(SystemExit):
    """SIGTERM, raised in the stage's main thread so that its run ends KILLED (exit status 143)."""

    def __init__(self) -> None:
        super().__init__(128 + signal.SIGTERM)


class StageRun:
    """Logs into one nested MLflow run. Made without a client (tracking off), it ignores every call."""

    def __init__(self, client: MlflowClient | None = None, run_id: str | None = None, parent_id: str | None = None):
        self._client = client
        self.run_id, self.parent_id = run_id, parent_id
        self.summary: dict[str, float] = {}
        self.summary_tags: dict[str, str] = {}

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        if self._client is not None:
            log_metrics(self._client, self.run_id, metrics, step)

    def log_summary(self, metrics: Mapping[str, float]) -> None:
        """Key results: logged to this stage's run and to the parent (and to later parents reusing the stage)."""
        if self._client is None:
            return
        self.log_metrics(metrics)
        log_metrics(self._client, self.parent_id, metrics)
        self.summary.update({key: float(value) for key, value in metrics.items()})

    def tag_summary(self, tags: Mapping[str, str]) -> None:
        """Key facts as tags: on this stage's run and on the parent (and on later parents reusing the stage)."""
        if self._client is None:
            return
        for run_id in (self.run_id, self.parent_id):
            set_tags(self._client, run_id, tags)
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
                retry_locked(self._client.log_artifacts, run_id, str(path), artifact_path=path.name)
            else:
                retry_locked(self._client.log_artifact, run_id, str(path))

    def set_tags(self, tags: dict[str, str]) -> None:
        if self._client is not None:
            set_tags(self._client, self.run_id, tags)


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
    propagates. A tracking server that does not answer is a ``TrackingError`` before the block runs;
    one that stops answering while it runs fails the stage with a ``TrackingError``: the block's
    checkpoints stay, so a rerun resumes, and the run is left to be marked KILLED by its heartbeat's
    age. Failing, rather than finishing untracked, keeps DVC's record and MLflow's from disagreeing.
    """
    if not cfg.enabled:
        yield StageRun()
        return
    from mlflow import MlflowClient

    project_root = Path(project_root)
    uri = tracking_uri(cfg, project_root)
    if is_server(uri):
        require_server(uri)
    pipeline = PipelineIdentity.of(project_root)
    with store_lock(uri):
        client = MlflowClient(tracking_uri=uri)
        experiment_id = _experiment_id(client, cfg.experiment, uri)
        close_runs_of_dead_processes(client, experiment_id, cfg.heartbeat_timeout_seconds)
        parent_id = _parent_run_id(client, experiment_id, pipeline)
        tags = {STAGE_TAG: stage, PARENT_RUN_TAG: parent_id, **pipeline.source_tags(), **process_tags()}
        run_id = retry_locked(client.create_run, experiment_id, tags=tags, run_name=stage).info.run_id
        _supersede_earlier_runs(client, experiment_id, parent_id, stage, run_id, cfg.heartbeat_timeout_seconds)
    run = StageRun(client, run_id, parent_id)
    status, reason, store_gone = "FAILED", None, False
    try:
        with _sigterm_raises(), Heartbeat(client, run_id, cfg.heartbeat_seconds):
            flat = flatten_params(params)
            for target in (run_id, parent_id):
                log_params(client, target, flat)
            _link_reused(client, experiment_id, parent_id, stage, upstream or {})
            yield run
        if output is not None and output.is_dir():
            set_tags(client, run_id, {OUTPUT_TAG: folder_digest(output), SUMMARY_TAG: ",".join(run.summary),
                                       SUMMARY_TAGS_TAG: ",".join(run.summary_tags)})
        status = "FINISHED"
    except (KeyboardInterrupt, StageTerminated) as error:
        status, reason = "KILLED", "interrupted (Ctrl-C)" if isinstance(error, KeyboardInterrupt) else "SIGTERM"
        raise
    except BaseException as error:
        reason = f"{type(error).__name__}: {error}"
        why = server_silence(uri) if is_server(uri) else None
        if why is not None:
            store_gone = True
            raise TrackingError(f"tracking store {uri} stopped answering during stage {stage} ({why}); start the "
                                "server again and rerun: a stage that checkpoints (rerank, retrain) resumes") from None
        raise
    finally:
        if not store_gone:
            _close(client, stage, (run_id, parent_id), status, reason)


def _close(client: MlflowClient, stage: str, runs: tuple[str, str], status: str, reason: str | None) -> None:
    """End the stage's run and its parent with ``status``, tagged with ``reason`` if there is one."""
    _update_total_seconds(client, runs[1])
    for target in runs:
        if reason is not None:
            set_tags(client, target, {END_REASON_TAG: f"{stage}: {reason}"[:MAX_PARAM_LENGTH]})
        retry_locked(client.set_terminated, target, status, now_ms())


def _link_reused(client: MlflowClient, experiment_id: str, parent_id: str, stage: str,
                 upstream: Mapping[str, Path]) -> None:
    """Tag the parent with the runs that wrote the upstream folders as they are now, when those runs
    belong to another parent (DVC reused their outputs), and copy their summaries to it; this stage,
    running now, is no longer reused."""
    for upstream_stage, folder in upstream.items():
        if not folder.is_dir():
            continue
        made = retry_locked(client.search_runs, [experiment_id], max_results=1,
                             order_by=["attributes.start_time DESC"], filter_string=(
                                 f"tags.`{STAGE_TAG}` = '{upstream_stage}' AND "
                                 f"tags.`{OUTPUT_TAG}` = '{folder_digest(folder)}' AND attributes.status = 'FINISHED'"))
        if made and made[0].data.tags.get(PARENT_RUN_TAG) != parent_id:
            run = made[0]
            set_tags(client, parent_id, {REUSED_TAG_PREFIX + upstream_stage: run.info.run_id})
            keys = [key for key in run.data.tags.get(SUMMARY_TAG, "").split(",") if key in run.data.metrics]
            log_metrics(client, parent_id, {key: run.data.metrics[key] for key in keys})
            tags = [key for key in run.data.tags.get(SUMMARY_TAGS_TAG, "").split(",") if key in run.data.tags]
            set_tags(client, parent_id, {key: run.data.tags[key] for key in tags})
    if REUSED_TAG_PREFIX + stage in retry_locked(client.get_run, parent_id).data.tags:
        retry_locked(client.delete_tag, parent_id, REUSED_TAG_PREFIX + stage)


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
    metrics = retry_locked(client.get_run, parent_id).data.metrics
    stages = [value for key, value in metrics.items() if key.startswith(SECONDS_PREFIX) and key != TOTAL_SECONDS]
    if stages:
        log_metrics(client, parent_id, {TOTAL_SECONDS: round(sum(stages), 1)})


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


def _experiment_id(client: MlflowClient, name: str, uri: str) -> str:
    experiment = retry_locked(client.get_experiment_by_name, name)
    if experiment is not None:
        return experiment.experiment_id
    database = sqlite_path(uri)
    # MLflow's default artifact root is relative to the cwd, i.e. inside a DVC temp copy
    # that is deleted after the run: keep artifacts beside the database instead.
    location = (database.parent / "mlartifacts").as_uri() if database is not None else None
    from mlflow.exceptions import MlflowException

    try:
        return retry_locked(client.create_experiment, name, artifact_location=location)
    except MlflowException as error:  # created meanwhile by a process not sharing our lock
        if error.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
        return retry_locked(client.get_experiment_by_name, name).experiment_id


def _parent_run_id(client: MlflowClient, experiment_id: str, pipeline: PipelineIdentity) -> str:
    runs = retry_locked(client.search_runs, [experiment_id],
                         filter_string=f"tags.`{PIPELINE_KEY_TAG}` = '{pipeline.key}'", max_results=1000)
    if runs:
        parent = min(runs, key=lambda run: (run.info.start_time, run.info.run_id))
        retry_locked(client.update_run, parent.info.run_id, status="RUNNING")
        if END_REASON_TAG in parent.data.tags:  # of an earlier failure: the pipeline run goes on
            retry_locked(client.delete_tag, parent.info.run_id, END_REASON_TAG)
        return parent.info.run_id
    return retry_locked(client.create_run, experiment_id, tags=pipeline.parent_tags(),
                         run_name=pipeline.name).info.run_id


def _supersede_earlier_runs(client: MlflowClient, experiment_id: str, parent_id: str, stage: str, run_id: str,
                            timeout_seconds: float) -> None:
    """Soft-delete the earlier runs of ``stage`` under ``parent_id`` unless a live process still owns one."""
    earlier = retry_locked(client.search_runs, [experiment_id], max_results=1000, filter_string=(
        f"tags.`{PARENT_RUN_TAG}` = '{parent_id}' AND tags.`{STAGE_TAG}` = '{stage}'"))
    for run in earlier:
        alive = run.info.status == "RUNNING" and owner_alive(run.data.tags, timeout_seconds)
        if run.info.run_id != run_id and not alive:
            set_tags(client, run.info.run_id, {SUPERSEDED_TAG: run_id})
            retry_locked(client.delete_run, run.info.run_id)
