"""The RNN track end to end: `dvc exp run -S profile=ptb-smoke` on a generated corpus, from a
checkout whose params.yaml is the image default, and the track's parameter and data errors."""
import copy
import json
import math
import random
import shutil
import sys
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

from rnas.config import ConfigError
from rnas.tasks import parse_params
from tests.helpers import ROOT, clone_project, copy_sources, run

pytestmark = pytest.mark.slow  # every test here runs the pipeline

STAGES = ("prepare", "warmup", "embed", "sample", "rerank", "retrain", "evaluate")
NOUNS, VERBS, ADJECTIVES = ("cat", "dog", "bird", "fish", "cow"), ("sees", "eats", "likes", "chases"), ("big", "red")
VOCAB_SIZE = len(NOUNS) + len(VERBS) + len(ADJECTIVES) + 2  # and "the", "<eos>"


def write_tiny_corpus(folder: Path, seed: int = 0) -> Path:
    """Sentences of a small grammar ("the red dog sees the cow"); every word of valid and test is in train."""
    rng = random.Random(seed)
    folder.mkdir(parents=True)
    for split, sentences in (("train", 600), ("valid", 120), ("test", 120)):
        lines = (f" the {rng.choice(ADJECTIVES)} {rng.choice(NOUNS)} {rng.choice(VERBS)} the {rng.choice(NOUNS)} \n"
                 for _ in range(sentences))
        (folder / f"{split}.txt").write_text("".join(lines))
    return folder


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    return write_tiny_corpus(tmp_path_factory.mktemp("corpus") / "ptb")


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """A clone of this project's tracked files, params.yaml as committed (the image task's default)."""
    return clone_project(tmp_path_factory.mktemp("project"))


def read_json(path: Path):
    return json.loads(path.read_text())


def unigram_perplexity(corpus: Path) -> float:
    """Test perplexity of the training corpus's word frequencies: what a model that ignores context gets."""
    def words(split: str) -> list[str]:
        return [w for line in (corpus / f"{split}.txt").read_text().splitlines() for w in line.split() + ["<eos>"]]
    counts, test = Counter(words("train")), words("test")
    total = sum(counts.values())
    return math.exp(-sum(math.log(counts[w] / total) for w in test) / len(test))


@pytest.mark.trained
def test_dvc_exp_run_with_a_ptb_profile_runs_the_rnn_track(project, corpus, seed, bound):
    # one thread by default: the tiny matmuls of the smoke model only lose by splitting them
    result = run(["dvc", "exp", "run", "-S", "profile=ptb-smoke", "-S", "device=cpu", "-S", f"seed={seed}",
                  "-S", f"threads={torch.get_num_threads()}", "-S", f"data.search.root={corpus}", "-n", "ptb-smoke"],
                 project)
    for stage in STAGES:
        assert f"Running stage '{stage}'" in result.stdout
    params = yaml.safe_load((project / "params.yaml").read_text())
    assert (params["task"], params["space"]) == ("language", "rnn") and "channels" not in params["warmup"]["supernet"]
    artifacts = project / "artifacts"

    # the search maximises -valid_loss; the metrics report perplexities
    pool = pd.read_csv(artifacts / "warmup/pool.csv")
    warmup = read_json(artifacts / "warmup/metrics.json")
    assert (pool["score"] < 0).all() and warmup["score_best"] == pool["score"].max()
    assert warmup["best_ppl"] == pytest.approx(math.exp(-warmup["score_best"]))
    assert warmup["best_ppl"] <= warmup["median_ppl"] <= warmup["worst_ppl"]
    best = read_json(artifacts / "sample/best.json")
    top = pd.read_csv(artifacts / "sample/top.csv")
    assert best["arch"] == top["arch"][0] and best["score"] == top["score"].max() and best["space"] == "rnn"

    # the retrain delivers the weights of its best validation epoch, and says which
    history = pd.read_csv(artifacts / "retrain/history.csv")
    assert history["epoch"].tolist() == [1, 2, 3, 4]
    assert history["valid_ppl"].tolist() == pytest.approx([math.exp(x) for x in history["valid_loss"]])
    best_epoch = int(history["valid_loss"].idxmin()) + 1
    assert history["best_epoch"].iloc[-1] == best_epoch
    retrained = read_json(artifacts / "retrain/metrics.json")
    assert retrained["delivered_epoch"] == best_epoch
    assert retrained["delivered_valid_loss"] == history["valid_loss"].min()
    metrics = read_json(artifacts / "evaluate/metrics.json")
    assert metrics["test_ppl"] == pytest.approx(math.exp(metrics["test_loss"]))
    assert metrics["test_is_valid"] is False and metrics["test_ppl"] > 1
    bound("test perplexity", metrics["test_ppl"], "<", unigram_perplexity(corpus))  # the model uses context
    assert metrics["arch"] == best["arch"] and "sample_best_ppl" in metrics
    for name in ("cells.png", "training_curves.png", "search_curve.png", "predictor_scatter.png"):
        assert (artifacts / "evaluate" / name).read_bytes()[:4] == b"\x89PNG"
    for stage in STAGES[1:]:
        assert read_json(artifacts / stage / "provenance.json")["params"]["task"] == "language"

    from rnas.export import load_model
    model, card = load_model(artifacts / "retrain/model.pt")
    assert card["task"] == "language" and len(card["vocab"]) == VOCAB_SIZE and type(model).__name__ == "RNNModel"
    evaluated = run([sys.executable, "-m", "rnas.evaluate", "--model", "artifacts/retrain/model.pt", "--dataset", "ptb",
                     "--root", str(corpus), "--batch-size", str(params["evaluate"]["batch_size"])], project)
    assert json.loads(evaluated.stdout)["perplexity"] == pytest.approx(metrics["test_ppl"])

    from mlflow import MlflowClient
    client = MlflowClient(tracking_uri=f"sqlite:///{project / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("rnas").experiment_id])
    logged = {r.data.tags.get("rnas.stage"): set(r.data.metrics) for r in runs}
    assert {"best_ppl", "median_ppl"} <= logged["warmup"] and "best_ppl" in logged["sample"]
    assert {"valid_ppl", "train_ppl"} <= logged["retrain"] and "test_ppl" in logged["evaluate"]


@pytest.fixture(scope="module")
def ptb_smoke_params(corpus, tmp_path_factory) -> dict:
    """The ptb-smoke profile composed for ``corpus`` (a fresh copy for each test)."""
    from dvc.utils.hydra import compose_and_dump
    path = tmp_path_factory.mktemp("params") / "params.yaml"
    compose_and_dump(path, str(ROOT / "conf"), None, "config", str(ROOT),
                     ["profile=ptb-smoke", f"data.search.root={corpus}"])
    return yaml.safe_load(path.read_text())


@pytest.fixture
def params(ptb_smoke_params) -> dict:
    return copy.deepcopy(ptb_smoke_params)


@pytest.mark.parametrize("change, message", [
    (lambda p: p.update(task="text"), "task: 'text' is not one of image, language"),
    (lambda p: p.update(space="nao_cnn"), "space: 'nao_cnn' is not one of rnn (the spaces of task 'language')"),
    (lambda p: p["warmup"]["supernet"].update(channels=4),
     "unknown parameter warmup.supernet.channels (known: dropout, dropoute, dropouth, dropouti, dropoutx, "
     "hidden_size)"),
    (lambda p: p["retrain"]["train"].update(lr_max=0.1), "unknown parameter retrain.train.lr_max"),
    (lambda p: p["data"]["search"].update(max_train=10), "unknown parameter data.search.max_train"),
    (lambda p: p["warmup"]["train"].update(bptt="35"), "warmup.train.bptt: expected int, got '35'"),
    (lambda p: p["trainer"].update(nproc=2), "trainer.nproc: the language task trains in one process"),
    (lambda p: p["retrain"].update(train_on_valid=True), "retrain.train_on_valid: must be false for the language"),
])
def test_language_parameters_are_typed_by_the_task(params, change, message):
    parse_params(params)
    change(params)
    with pytest.raises(ConfigError) as error:
        parse_params(params)
    assert str(error.value).startswith(message)


def stage_in_copy(project: Path, to: Path, stage: str, params: dict):
    copy_sources(project, to)
    (to / "params.yaml").write_text(yaml.safe_dump({**params, "tracking": {"enabled": False}}))
    return run([sys.executable, "-m", f"stages.{stage}"], to, check=False)


def test_bad_parameter_stops_before_any_work(project, params, tmp_path):
    params["warmup"]["supernet"]["channels"] = 4
    result = stage_in_copy(project, tmp_path / "p", "warmup", params)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: unknown parameter warmup.supernet.channels (known: dropout, dropoute, dropouth, dropouti, dropoutx, "
        "hidden_size)"]
    assert not (tmp_path / "p/artifacts").exists()


def test_unknown_word_is_a_one_line_error(project, corpus, params, tmp_path):
    broken = shutil.copytree(corpus, tmp_path / "broken")
    (broken / "test.txt").write_text(" the zebra sees the cat \n")
    params["data"]["search"]["root"] = str(broken)
    result = stage_in_copy(project, tmp_path / "p", "prepare", params)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"error: data.search.root: {broken / 'test.txt'}: word 'zebra' is not in the training vocabulary"]
    assert not (tmp_path / "p/data/prepared").exists()
