"""Compare pipeline runs at a glance: one row per MLflow parent run (``rnas.tracking``).

    python -m rnas.compare                       # the table, oldest run first
    python -m rnas.compare --csv runs.csv        # and the same rows as CSV
    python -m rnas.compare --params seed,search.rounds --metrics latency_ms

Columns: the run's name (the DVC experiment, or ``<branch>@<commit>`` for ``dvc repro``), its
status, what changed against the baseline's params, the test metric (accuracy or perplexity),
the size of the found network, the predictor's Kendall tau, the best supernet score, and the
wall time of all stages (``seconds_total``, including stages reused from DVC's cache, at the
time they took when made). ``--params`` and ``--metrics`` add columns.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

import pandas as pd
import yaml

from rnas.config import ConfigError, from_dict
from rnas.tracking import CHANGED_TAG, PIPELINE_KEY_TAG, TrackingConfig, tracking_uri

METRIC_COLUMNS = ("test_accuracy", "test_ppl", "params_m", "predictor_tau", "supernet_best_score", "seconds_total")
PAGE = 1000


def pipeline_runs(uri: str, experiment: str, params: Sequence[str] = (), metrics: Sequence[str] = ()) -> pd.DataFrame:
    """The parent runs of ``experiment`` in the store at ``uri``, one row each, oldest first."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        raise ConfigError(f"tracking.experiment: no MLflow experiment {experiment!r} in {uri}")
    runs, token = [], None
    while True:
        page = client.search_runs([found.experiment_id], filter_string=f"tags.`{PIPELINE_KEY_TAG}` LIKE '%'",
                                  order_by=["attributes.start_time ASC"], max_results=PAGE, page_token=token)
        runs += page
        token = page.token
        if not token:
            break
    rows = [{"name": run.info.run_name, "status": run.info.status, "changed": run.data.tags.get(CHANGED_TAG, ""),
             **{name: run.data.metrics.get(name) for name in (*METRIC_COLUMNS, *metrics)},
             **{name: run.data.params.get(name) for name in params},
             "started": pd.Timestamp(run.info.start_time, unit="ms").strftime("%Y-%m-%d %H:%M"),
             "run_id": run.info.run_id} for run in runs]
    frame = pd.DataFrame(rows, columns=["name", "status", "changed", *METRIC_COLUMNS, *metrics, *params,
                                        "started", "run_id"])
    return frame.dropna(axis="columns", how="all")  # e.g. test_ppl in a store of image runs only


def default_tracking(project_root: Path) -> TrackingConfig:
    """The ``tracking`` section of the project's params.yaml, else the defaults."""
    params = project_root / "params.yaml"
    section = (yaml.safe_load(params.read_text()) or {}).get("tracking") if params.is_file() else None
    return from_dict(TrackingConfig, section, "tracking") if section else TrackingConfig()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rnas.compare", description=__doc__.split("\n\n")[0])
    parser.add_argument("--uri", help="tracking store (default: as the stages use it, from params.yaml)")
    parser.add_argument("--experiment", help="MLflow experiment (default: tracking.experiment of params.yaml)")
    parser.add_argument("--params", default="", help="comma-separated params to add as columns")
    parser.add_argument("--metrics", default="", help="comma-separated parent metrics to add as columns")
    parser.add_argument("--csv", type=Path, help="also write the rows to this CSV file")
    args = parser.parse_args(argv)
    try:
        tracking = default_tracking(Path.cwd())
        frame = pipeline_runs(args.uri or tracking_uri(tracking, Path.cwd()), args.experiment or tracking.experiment,
                              [p for p in args.params.split(",") if p], [m for m in args.metrics.split(",") if m])
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.csv is not None:
        frame.to_csv(args.csv, index=False)
    print(frame.drop(columns="run_id").to_string(index=False, float_format=lambda v: f"{v:.4g}")
          if len(frame) else "no pipeline runs yet")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
