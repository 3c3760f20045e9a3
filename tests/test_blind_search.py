"""A supernet that scores every cell alike leaves the search blind: warmup and sample say so in one
warning line, their metrics flag it, the MLflow parent is tagged with the reason, and the predictor's
Kendall tau is NaN with that reason. The stages run in this process on the smoke profile, with the
supernet's scores replaced: all equal (the degenerate case), or all different (the normal one)."""
import json
import math
import random

import pytest

from rnas.search.pool import BLIND_SPREAD, ArchPool
from rnas.spaces import get_space
from rnas.tasks.base import Supernet
from rnas.tracking import BLIND_SEARCH_TAG, PIPELINE_KEY_TAG
from tests.helpers import clone_project, run

BLIND_WARNING = "warning: blind search: the supernet scores all"


@pytest.fixture
def prepared(tmp_path):
    project = clone_project(tmp_path, "profile=smoke", "device=cpu", "threads=1")
    run(["python", "-m", "stages.prepare"], project)
    return project


def run_stage(name: str, capsys) -> list[str]:
    """The stage ``name`` in this process; its stderr lines."""
    module = __import__(f"stages.{name}", fromlist=["main"])
    with pytest.raises(SystemExit) as exit_:
        module.main()
    err = capsys.readouterr().err
    assert exit_.value.code == 0, err
    return err.splitlines()


def search_with_scores(project, monkeypatch, capsys, score) -> dict:
    """warmup, embed and sample with the supernet's scores replaced by ``score(arch)``."""
    monkeypatch.chdir(project)
    monkeypatch.setattr(Supernet, "score", lambda self, archs, label="score": [score(a) for a in archs])
    return {stage: run_stage(stage, capsys) for stage in ("warmup", "embed", "sample")}


def metrics(project, stage: str) -> dict:
    return json.loads((project / "artifacts" / stage / "metrics.json").read_text())


def parent_run(project):
    from mlflow import MlflowClient
    client = MlflowClient(tracking_uri=f"sqlite:///{project / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("rnas").experiment_id])
    return next(r for r in runs if PIPELINE_KEY_TAG in r.data.tags)


def test_a_pool_scored_within_the_tolerance_is_blind():
    space = get_space("nb201")
    archs = space.sample_unique(3, random.Random(0))
    assert ArchPool(space, archs, [0.25, 0.25, 0.25]).blind_reason() == (
        "the supernet scores all 3 cells of the pool alike (spread of the scores 0 < 1e-06)")
    assert ArchPool(space, archs, [0.25, 0.25, 0.25 + BLIND_SPREAD / 2]).blind_reason() is not None
    assert ArchPool(space, archs, [0.25, 0.25, 0.25 + 2 * BLIND_SPREAD]).blind_reason() is None
    assert ArchPool(space, archs, [0.25, math.nan, 0.5]).blind_reason() is None  # unscored cells do not count


@pytest.mark.slow
def test_a_blind_supernet_is_reported_by_warmup_and_sample_and_tau_is_nan_with_the_reason(prepared, monkeypatch,
                                                                                          capsys):
    stderr = search_with_scores(prepared, monkeypatch, capsys, lambda arch: 0.09375)
    for stage in ("warmup", "sample"):
        warnings = [line for line in stderr[stage] if BLIND_WARNING in line]
        assert warnings == [f"[{stage}] warning: blind search: the supernet scores all 12 cells of the pool alike "
                            "(spread of the scores 0 < 1e-06), so the search cannot tell good cells from bad; train "
                            "the supernet longer (warmup.train.epochs, search.epochs_per_round) or on more data "
                            "(data.search)"], stderr[stage]
        assert metrics(prepared, stage)["supernet_blind"] == 1
    embed = metrics(prepared, "embed")
    assert math.isnan(embed["kendall_tau"]) and embed["kendall_tau_reason"].startswith("the supernet scores all 12")
    parent = parent_run(prepared)
    assert parent.data.tags[BLIND_SEARCH_TAG].startswith("the supernet scores all 12 cells of the pool alike")
    assert math.isnan(parent.data.metrics["predictor_tau"])


@pytest.mark.slow
def test_a_supernet_that_tells_cells_apart_gives_a_real_tau_and_no_warning(prepared, monkeypatch, capsys):
    stderr = search_with_scores(prepared, monkeypatch, capsys, lambda arch: sum(arch) / 100)
    assert not [line for lines in stderr.values() for line in lines if BLIND_WARNING in line]
    assert metrics(prepared, "warmup")["supernet_blind"] == 0 and metrics(prepared, "sample")["supernet_blind"] == 0
    embed = metrics(prepared, "embed")
    assert -1 <= embed["kendall_tau"] <= 1 and "kendall_tau_reason" not in embed
    parent = parent_run(prepared)
    assert BLIND_SEARCH_TAG not in parent.data.tags and -1 <= parent.data.metrics["predictor_tau"] <= 1
