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

A tracking server (an ``http(s)://`` store)
    is asked for ``/health`` before a stage's work: one that does not answer stops the stage in one
    line naming it. Its HTTP calls are retried for about 15 s, not minutes (``HTTP_RETRY_DEFAULTS``,
    unless the environment sets them); a server that stops answering during a stage fails the stage
    in one line, its checkpoints kept (docs/team.md says why it fails rather than buffers).

Modules: ``store`` (where the store is, its lock, retries), ``runs`` (tags, limits, batched
writes), ``identity`` (which pipeline run), ``liveness`` (runs of ended processes), ``stage_run``.
"""
from rnas.tracking.identity import PipelineIdentity, params_changes
from rnas.tracking.liveness import close_runs_of_dead_processes
from rnas.tracking.runs import (BLIND_SEARCH_TAG, CHANGED_TAG, DESCRIPTION_TAG, END_REASON_TAG, PARENT_RUN_TAG,
                                PIPELINE_KEY_TAG, REUSED_TAG_PREFIX, SECONDS_PREFIX, STAGE_TAG, SUPERSEDED_TAG,
                                flatten_params)
from rnas.tracking.stage_run import StageRun, StageTerminated, folder_digest, stage_run
from rnas.tracking.store import TrackingConfig, tracking_uri

__all__ = ["BLIND_SEARCH_TAG", "CHANGED_TAG", "DESCRIPTION_TAG", "END_REASON_TAG", "PARENT_RUN_TAG", "PIPELINE_KEY_TAG",
           "REUSED_TAG_PREFIX", "SECONDS_PREFIX", "STAGE_TAG", "SUPERSEDED_TAG", "PipelineIdentity", "StageRun",
           "StageTerminated", "TrackingConfig", "close_runs_of_dead_processes", "flatten_params", "folder_digest",
           "params_changes", "stage_run", "tracking_uri"]
