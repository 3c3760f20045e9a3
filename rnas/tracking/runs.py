"""The tags and limits of the runs RNAS writes to MLflow, and the batched writes that respect the limits."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping

from rnas.tracking.store import now_ms, retry_locked

if TYPE_CHECKING:
    from mlflow import MlflowClient

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
HEARTBEAT_TAG = "rnas.heartbeat_ms"     # on a stage run: when its process last said it was alive (ms)
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


def log_params(client: MlflowClient, run_id: str, params: dict[str, str]) -> None:
    from mlflow.entities import Param

    entries = [Param(key, value if len(value) <= MAX_PARAM_LENGTH else value[:MAX_PARAM_LENGTH - 3] + "...")
               for key, value in params.items()]
    for start in range(0, len(entries), MAX_PARAMS_PER_BATCH):
        retry_locked(client.log_batch, run_id, params=entries[start:start + MAX_PARAMS_PER_BATCH])


def log_metrics(client: MlflowClient, run_id: str, metrics: Mapping[str, float], step: int | None = None) -> None:
    if not metrics:
        return
    from mlflow.entities import Metric

    timestamp = now_ms()
    entries = [Metric(key, float(value), timestamp, step or 0) for key, value in metrics.items()]
    for start in range(0, len(entries), MAX_METRICS_PER_BATCH):
        retry_locked(client.log_batch, run_id, metrics=entries[start:start + MAX_METRICS_PER_BATCH])


def set_tags(client: MlflowClient, run_id: str, tags: Mapping[str, str]) -> None:
    if not tags:
        return
    from mlflow.entities import RunTag

    retry_locked(client.log_batch, run_id, tags=[RunTag(key, str(value)) for key, value in tags.items()])
