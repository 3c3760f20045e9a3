"""Acceptance of the README's experiment flow: `dvc repro`, commit the baseline, two `dvc exp run -S`
variants; then MLflow holds one summary parent per experiment and `dvc exp show` compares them readably."""
import csv
import json
import math

import pytest
import yaml

from rnas.tracking import BLIND_SEARCH_TAG, CHANGED_TAG, PIPELINE_KEY_TAG, REUSED_TAG_PREFIX, STAGE_TAG, flatten_params
from tests.helpers import clone_project, run

pytestmark = pytest.mark.slow  # every test here runs the pipeline

STAGES = ("prepare", "warmup", "embed", "sample", "rerank", "retrain", "evaluate")
PROFILE = ("-S", "profile=smoke", "-S", "device=cpu", "-S", "threads=1")  # as the project was committed
VARIANTS = {"strategy-random": "search.strategy=random", "retrain-1-epoch": "retrain.train.epochs=1"}
# the README's command for comparing experiments
EXP_SHOW = ["dvc", "exp", "show", "--only-changed", "--keep", "test_(accuracy|ppl)|params_m",
            "--drop", "Created|arch|.*/|test_(error|loss)|mflops|latency_ms|sample_"]


@pytest.fixture(scope="module")
def experiments(tmp_path_factory):
    """The README's flow in a scratch clone; returns the project and each experiment's params."""
    project = clone_project(tmp_path_factory.mktemp("project"), "profile=smoke", "device=cpu", "threads=1")
    outputs = {"repro": run(["dvc", "repro"], project).stdout}
    run(["git", "add", "-A"], project)
    run(["git", "commit", "-qm", "Baseline run"], project)
    branch = run(["git", "rev-parse", "--abbrev-ref", "HEAD"], project).stdout.strip()
    commit = run(["git", "rev-parse", "HEAD~1"], project).stdout.strip()
    params = {f"{branch}@{commit[:7]}": yaml.safe_load((project / "params.yaml").read_text())}
    for name, override in VARIANTS.items():
        outputs[name] = run(["dvc", "exp", "run", *PROFILE, "-S", override, "-n", name], project).stdout
        params[name] = yaml.safe_load((project / "params.yaml").read_text())
    return project, params, outputs


def parent_runs(project):
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{project / 'mlflow.db'}")
    experiment_id = client.get_experiment_by_name("rnas").experiment_id
    runs = client.search_runs([experiment_id], max_results=1000)
    return client, runs, {r.info.run_name: r for r in runs if PIPELINE_KEY_TAG in r.data.tags}


def test_each_experiment_is_one_mlflow_parent_with_full_params_results_and_stage_times(experiments):
    project, params, _ = experiments
    client, runs, parents = parent_runs(project)
    assert sorted(parents) == sorted(params)
    baseline = next(name for name in params if name not in VARIANTS)
    for name, parent in parents.items():
        assert parent.info.status == "FINISHED", name
        assert flatten_params(params[name]).items() <= parent.data.params.items(), name  # and the defaults
        assert 0 <= parent.data.metrics["test_accuracy"] <= 1 and parent.data.metrics["params_m"] > 0
        # a real tau, unless the supernet told no cells apart, and then NaN with the reason (tests/test_blind_search.py)
        tau, blind = parent.data.metrics["predictor_tau"], parent.data.tags.get(BLIND_SEARCH_TAG)
        assert (-1 <= tau <= 1 and blind is None) or (math.isnan(tau) and blind), (tau, blind)
        assert "supernet_best_score" in parent.data.metrics
        seconds = [parent.data.metrics[f"seconds_{stage}"] for stage in STAGES]
        assert parent.data.metrics["seconds_total"] == pytest.approx(sum(seconds), abs=0.1)
        assert parent.data.tags[CHANGED_TAG] == VARIANTS.get(name, "baseline")
        pictures = {a.path for a in client.list_artifacts(parent.info.run_id)}
        assert {"training_curves.png", "search_curve.png", "predictor_scatter.png"} <= pictures
    assert all(r.info.status == "FINISHED" for r in runs), "a run left open"

    # search.strategy=random reran sample, rerank, retrain and evaluate; the stages before came from DVC's cache
    random_parent = parents["strategy-random"]
    children = {r.data.tags[STAGE_TAG]: r for r in runs
                if r.data.tags.get("mlflow.parentRunId") == random_parent.info.run_id}
    assert sorted(children) == ["evaluate", "rerank", "retrain", "sample"]
    baseline_children = {r.data.tags[STAGE_TAG]: r.info.run_id for r in runs
                         if r.data.tags.get("mlflow.parentRunId") == parents[baseline].info.run_id}
    for stage in ("prepare", "warmup", "embed"):
        assert random_parent.data.tags[REUSED_TAG_PREFIX + stage] == baseline_children[stage]
    assert random_parent.data.metrics["predictor_tau"] == pytest.approx(parents[baseline].data.metrics["predictor_tau"],
                                                                        nan_ok=True)
    assert random_parent.data.tags.get(BLIND_SEARCH_TAG) == parents[baseline].data.tags.get(BLIND_SEARCH_TAG)


def test_rnas_compare_lists_one_row_per_experiment(experiments, tmp_path):
    project, params, _ = experiments
    result = run(["python", "-m", "rnas.compare", "--csv", str(tmp_path / "runs.csv")], project)
    assert all(name in result.stdout for name in params), result.stdout
    with open(tmp_path / "runs.csv") as file:
        rows = {row["name"]: row for row in csv.DictReader(file)}
    assert sorted(rows) == sorted(params)
    variant = rows["retrain-1-epoch"]
    assert variant["changed"] == "retrain.train.epochs=1" and 0 <= float(variant["test_accuracy"]) <= 1


def test_the_readme_exp_show_command_shows_test_accuracy_and_changed_params_in_120_columns(experiments):
    project, params, _ = experiments
    shown = run(EXP_SHOW, project, COLUMNS="120").stdout
    assert max(len(line) for line in shown.splitlines()) <= 120, shown
    for text in ("test_accuracy", "search.strategy", "retrain.train.epochs", *VARIANTS):
        assert text in shown, f"{text} missing from:\n{shown}"
    rows = [line for line in shown.splitlines() if any(name in line for name in VARIANTS)]
    assert len(rows) == len(VARIANTS) and all("random" in row for row in rows if "strategy-random" in row), shown


def test_repro_runs_every_stage_and_an_experiment_reruns_only_what_changed(experiments):
    project, params, outputs = experiments
    for stage in STAGES:
        assert f"Running stage '{stage}'" in outputs["repro"]
    for stage in ("prepare", "warmup", "embed"):
        assert f"Stage '{stage}' didn't change, skipping" in outputs["strategy-random"], outputs["strategy-random"]
    assert "Running stage 'sample'" in outputs["strategy-random"]
    for name in ("cells.png", "training_curves.png", "search_curve.png", "predictor_scatter.png"):
        assert (project / "artifacts/evaluate" / name).read_bytes()[:4] == b"\x89PNG"
    provenance = json.loads((project / "artifacts/sample/provenance.json").read_text())
    assert provenance["seed"] == 0 and provenance["params"]["search"]["strategy"] == "rnas"  # the workspace: baseline
    shown = json.loads(run(["dvc", "exp", "show", "--json"], project).stdout)
    revs = {rev["name"]: rev for branch in shown for exp in branch.get("experiments") or [] for rev in exp["revs"]}
    evaluated = revs["strategy-random"]["data"]["metrics"]["artifacts/evaluate/metrics.json"]
    assert 0 <= evaluated["data"]["test_accuracy"] <= 1  # the experiment carries its test metrics
