"""Params composition and the pipeline's error paths; the end-to-end `dvc repro` + experiments flow is tests/test_experiments.py."""
import json
import shutil
import sys

import pytest
import yaml

from tests.helpers import ROOT, clone_project, compose, copy_sources, run

@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A clone of this project with the smoke profile composed into params.yaml."""
    # one thread per process: torchrun's two ranks would otherwise each spin a thread per core
    return clone_project(tmp_path_factory.mktemp("project"), "profile=smoke", "device=cpu", "threads=1")


def test_committed_params_are_the_composed_default(tmp_path):
    """The COMMITTED params.yaml: after `dvc exp run`, the workspace file holds the experiment's params."""
    from dvc.utils.hydra import compose_and_dump
    compose_and_dump(tmp_path / "params.yaml", str(ROOT / "conf"), None, "config", str(ROOT), [])
    committed = run(["git", "show", "HEAD:params.yaml"], ROOT).stdout
    assert yaml.safe_load((tmp_path / "params.yaml").read_text()) == yaml.safe_load(committed)


def test_every_profile_composes_to_valid_params(tmp_path):
    from rnas.tasks import load_params
    for profile in sorted(p.stem for p in (ROOT / "conf/profile").glob("*.yaml")):
        from dvc.utils.hydra import compose_and_dump
        compose_and_dump(tmp_path / "params.yaml", str(ROOT / "conf"), None, "config", str(ROOT),
                         [f"profile={profile}", "++data.search.root=/data/some-root",
                          "++data.final.root=/data/other-root"])
        load_params(tmp_path / "params.yaml")


def _leaves(tree, prefix=""):
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            yield from _leaves(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", list(value) if isinstance(value, tuple) else value


@pytest.mark.parametrize("group", sorted(p.stem for p in (ROOT / "conf/task").glob("*.yaml")))
def test_params_defaults_are_the_conf_files(tmp_path, group):
    """The params dataclass of each task and space, built with no keys, equals conf/config.yaml + the
    conf/task/ file that selects them."""
    import dataclasses
    from dvc.utils.hydra import compose_and_dump
    from rnas.tasks import get_task
    compose_and_dump(tmp_path / "params.yaml", str(ROOT / "conf"), None, "config", str(ROOT), ["~profile", f"task={group}"])
    composed = dict(_leaves(yaml.safe_load((tmp_path / "params.yaml").read_text())))
    defaults = dict(_leaves(dataclasses.asdict(get_task(composed["task"]).params[composed["space"]]())))
    assert {key: defaults.get(key, "(no such field)") for key in composed} == composed


def test_nb201_networks_take_their_own_settings_and_a_nao_key_names_the_conf_group():
    from rnas.errors import ConfigError
    from rnas.networks import NB201Config
    from rnas.tasks import parse_params
    params = parse_params({"space": "nb201", "retrain": {"child": {"channels": 8}}})
    assert type(params.retrain.child) is NB201Config and params.retrain.child.channels == 8
    with pytest.raises(ConfigError) as e:  # the image task's NAO settings, with the space changed alone
        parse_params({"space": "nb201", "warmup": {"supernet": {"stem_multiplier": 3}}})
    assert str(e.value) == ("unknown parameter warmup.supernet.stem_multiplier (known: cells_per_stage, channels, "
                            "classifier_dropout); space nb201 has settings of its own: select them with its conf "
                            "group (-S task=nb201, or a profile that does)")


def test_every_space_of_every_task_has_a_conf_group():
    from rnas.tasks import available_tasks, get_task
    conf = [yaml.safe_load(p.read_text()) for p in sorted((ROOT / "conf/task").glob("*.yaml"))]
    assert sorted((c["task"], c["space"]) for c in conf) == sorted(
        (task, space) for task in available_tasks() for space in get_task(task).params)


@pytest.mark.slow
def test_bad_parameter_stops_before_any_work(project, tmp_path):
    copy_sources(project, tmp_path / "p")
    params = yaml.safe_load((tmp_path / "p/params.yaml").read_text())
    params["search"]["n_new"] = 10_000
    (tmp_path / "p/params.yaml").write_text(yaml.safe_dump(params))
    result = run([sys.executable, "-m", "stages.warmup"], tmp_path / "p", check=False)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: search.n_new: n_new + n_random (10000 + 2) must be smaller than warmup.pool_size (12)"]
    assert not (tmp_path / "p/artifacts").exists()


def test_more_ranks_than_gpus_stop_before_any_starts(tmp_path, monkeypatch):
    """trainer.nproc = 2 on one GPU: the stage names the key, and starts no rank nor any work."""
    import torch
    from rnas import pipeline

    shutil.copytree(ROOT / "conf", tmp_path / "conf")
    compose(tmp_path, "device=cuda", "trainer.nproc=2")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(pipeline, "_run_ranks", lambda *a: pytest.fail("a rank was started"))
    with pytest.raises(ValueError, match="^trainer.nproc: 2 processes on device 'cuda' need one GPU each"):
        pipeline._run_stage("warmup", lambda ctx: pytest.fail("the stage ran"), True, pipeline.trainer_processes)


@pytest.mark.slow
def test_missing_data_is_a_clear_error(project, tmp_path):
    copy_sources(project, tmp_path / "p")
    params = yaml.safe_load((tmp_path / "p/params.yaml").read_text())
    params["data"]["search"].update(dataset="imagefolder", root=str(tmp_path / "nowhere.tar.gz"))
    params["tracking"]["enabled"] = False
    (tmp_path / "p/params.yaml").write_text(yaml.safe_dump(params))
    result = run([sys.executable, "-m", "stages.prepare"], tmp_path / "p", check=False)
    assert result.returncode == 2
    assert "data.search.root" in result.stderr and "nowhere.tar.gz" in result.stderr
    assert not (tmp_path / "p/data/prepared").exists()


@pytest.mark.slow
def test_warmup_and_retrain_under_torchrun_match_one_process(project, tmp_path):
    """trainer.nproc = 2: the stages relaunch under torchrun (gloo on CPU) with the same effective batch."""
    import pandas as pd

    run(["dvc", "repro", "retrain"], project)  # the one-process reference (up to date after the repro test)
    copy_sources(project, tmp_path / "p")
    shutil.copytree(project / "data", tmp_path / "p/data")
    for stage in ("sample", "rerank"):
        shutil.copytree(project / f"artifacts/{stage}", tmp_path / f"p/artifacts/{stage}")
    params = yaml.safe_load((tmp_path / "p/params.yaml").read_text())
    params["trainer"]["nproc"] = 2
    params["tracking"]["enabled"] = False
    (tmp_path / "p/params.yaml").write_text(yaml.safe_dump(params))
    for stage in ("warmup", "retrain"):
        result = run([sys.executable, "-m", f"stages.{stage}"], tmp_path / "p")
        assert "running on 2 processes" in result.stderr
    # the same pool, and the same losses up to the noise of batch-norm statistics (each rank normalises its
    # half batch) and of per-rank drop-path masks
    assert (pd.read_csv(project / "artifacts/warmup/pool.csv")["arch"].tolist()
            == pd.read_csv(tmp_path / "p/artifacts/warmup/pool.csv")["arch"].tolist())
    for stage, loss in (("warmup", "loss"), ("retrain", "train_loss")):
        one = pd.read_csv(project / f"artifacts/{stage}/history.csv")[loss]
        two = pd.read_csv(tmp_path / f"p/artifacts/{stage}/history.csv")[loss]
        assert len(one) == len(two) and (one - two).abs().max() < 0.1, (stage, one.tolist(), two.tolist())


@pytest.mark.slow
def test_rerank_on_two_processes_trains_each_cell_once_and_picks_the_same_winner(project, tmp_path):
    """rerank.processes = 2: the ranks split rerank's trainings (two per candidate, rerank.repeats); rank 0
    gathers the same rows as one process. Each repeat trains from its own seed."""
    import pandas as pd

    run(["dvc", "repro", "sample"], project)
    results = {}
    for nproc in (1, 2):
        folder = tmp_path / f"nproc{nproc}"
        copy_sources(project, folder)
        shutil.copytree(project / "data", folder / "data")
        shutil.copytree(project / "artifacts/sample", folder / "artifacts/sample")
        params = yaml.safe_load((folder / "params.yaml").read_text())
        params.update(threads=1, device="cpu")
        params["rerank"].update(top=2, epochs=1, repeats=2, processes=nproc)
        params["tracking"]["enabled"] = False
        (folder / "params.yaml").write_text(yaml.safe_dump(params))
        result = run([sys.executable, "-m", "stages.rerank"], folder)
        results[nproc] = pd.read_csv(folder / "artifacts/rerank/rerank.csv").drop(columns=["seconds"])
        assert result.stderr.count(": training ") == 4  # each training once, on one of the ranks
    assert "on rank 1/2" in result.stderr
    pd.testing.assert_frame_equal(results[1], results[2])
    stored = [json.loads(f.read_text()) for f in (folder / "artifacts/rerank_state/measured").glob("*.json")]
    loss = {e["arch"]: e["record"]["train_loss"] for e in stored}
    for arch in results[2]["arch"]:  # the second training of a cell is not a copy of the first
        assert loss[f"{arch}#1"] != loss[arch]
    mean = (results[2]["validation_score_0"] + results[2]["validation_score_1"]) / 2
    assert results[2]["validation_score"].tolist() == pytest.approx(mean.tolist())
