"""Ground truth (rnas.judging.truth) and the NAS-Bench-201 space end to end: ranking figures, the truth
parameter's validation, and a `dvc exp run` of the nb201 smoke profile on generated images with a
generated truth table, during whose search no process opens the table."""
from __future__ import annotations

import itertools
import json
import math
import textwrap
from pathlib import Path

import pandas as pd
import pytest
import yaml

from rnas.config import ConfigError
from rnas.judging.rank_stats import kendall_tau
from rnas.judging.oracle import TableOracle
from rnas.tasks import parse_params
from rnas.search.ranking import combined_scores
from rnas.spaces.nb201 import OPS, NB201Space
from rnas.judging.rank_stats import precision_at_top
from rnas.judging.truth import TruthConfig, judge, load_truth, percentile, ranking, reference_cells
from tests.helpers import clone_project, run, write_image_folder

SPACE = NB201Space()


def true_acc(arch) -> float:
    """A made-up truth: 3x3 convs help most, then 1x1 convs, `none` hurts (distinct per cell)."""
    return 60 + 5 * arch.count(OPS.index("nor_conv_3x3")) + 2 * arch.count(OPS.index("nor_conv_1x1")) \
        - 3 * arch.count(OPS.index("none")) + sum(v * 5 ** -(p + 1) for p, v in enumerate(arch))


def write_truth_table(path: Path) -> Path:
    archs = list(itertools.product(range(len(OPS)), repeat=6))
    pd.DataFrame({"arch_str": [SPACE.to_str(a) for a in archs], "valid_acc_200ep": [true_acc(a) - 1 for a in archs],
                  "test_acc_200ep": [true_acc(a) for a in archs]}).to_csv(path, index=False)
    return path


def test_ranking_figures():
    truth = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0]
    assert ranking(truth, truth) == {"kendall_tau": 1.0, "spearman": 1.0, "precision_at_10pct": 1.0, "n": 10}
    reverse = ranking(truth[::-1], truth)
    assert reverse["kendall_tau"] == pytest.approx(-1) and reverse["spearman"] == pytest.approx(-1)
    assert reverse["precision_at_10pct"] == 0.0
    # top 20% (2 of 10) by score: cells 9 and 0; by truth: 9 and 8
    assert precision_at_top([0.9, 0, 0, 0, 0, 0, 0, 0, 0.1, 1.0], truth, 0.2) == 0.5


def test_ranking_statistics_with_ties():
    # tau-b by hand: x = 1 1 2 3, y = 1 2 2 3: 4 concordant pairs, none discordant, one tie in each:
    # 4 / sqrt((6 - 1) * (6 - 1))
    assert kendall_tau([1, 1, 2, 3], [1, 2, 2, 3]) == pytest.approx(0.8)
    assert math.isnan(kendall_tau([1, 1, 1], [1, 2, 3]))
    truth = [float(t) for t in range(10, 0, -1)]  # the first two cells are the best
    # a ranking that ties everything is a random one: the top 2 holds each cell with chance 1/5
    assert precision_at_top([5.0] * 10, truth, 0.2) == pytest.approx(0.2)
    # the best cell on top, the other place shared by cells 2, 3 and 4 (the true second among them)
    assert precision_at_top([9, 1, 1, 1, 0, 0, 0, 0, 0, 0], truth, 0.2) == pytest.approx((1 + 1 / 3) / 2)
    # ties in the truth share their places the same way; NaN ranks lowest
    assert precision_at_top([3, 2, 1, float("nan")], [1, 1, 1, 1], 0.5) == pytest.approx(0.5)


def test_judge_looks_up_the_found_cell_and_ranks_each_scored_set():
    archs = [SPACE.random(__import__("random").Random(i)) for i in range(40)]
    archs = list(dict.fromkeys(archs))
    oracle = TableOracle(SPACE, archs, [true_acc(a) - 1 for a in archs], [true_acc(a) for a in archs])
    found = max(archs, key=true_acc)
    scores = [true_acc(a) for a in archs]  # a perfect supernet
    metrics = judge(oracle, found, archs[:3], {"supernet": (archs, scores), "predictor": (archs, [-s for s in scores])})
    assert metrics["truth_found_acc"] == true_acc(found) == metrics["truth_space_best_acc"]
    assert metrics["truth_found_select"] == true_acc(found) - 1
    assert metrics["truth_found_percentile"] == 100.0 == percentile(oracle, true_acc(found))
    assert metrics["truth_top_max_acc"] == max(true_acc(a) for a in archs[:3])
    assert metrics["truth_supernet_kendall_tau"] == pytest.approx(1) and metrics["truth_supernet_n"] == len(archs)
    assert metrics["truth_supernet_pick_acc"] == true_acc(found)
    assert metrics["truth_predictor_kendall_tau"] == pytest.approx(-1)
    assert metrics["truth_predictor_pick_acc"] == min(scores)


def test_reference_cells_are_fixed_and_distinct():
    assert reference_cells(SPACE, 200) == reference_cells(SPACE, 200)
    assert len(set(reference_cells(SPACE, 200))) == 200


def test_truth_parameter_is_validated(tmp_path):
    params = yaml.safe_load((Path(__file__).resolve().parents[1] / "params.yaml").read_text())
    params["evaluate"]["truth"]["table"] = str(tmp_path / "missing.csv")
    with pytest.raises(ConfigError, match="evaluate.truth.table: no such file"):
        parse_params(params)
    table = write_truth_table(tmp_path / "truth.csv")
    params["evaluate"]["truth"]["table"] = str(table)
    assert parse_params(params).evaluate.truth.table == str(table)
    with pytest.raises(ConfigError, match="evaluate.truth.report_col: no column 'test_acc_12ep'"):
        load_truth(TruthConfig(str(table), report_col="test_acc_12ep"), SPACE)
    with pytest.raises(ConfigError, match="evaluate.truth.table: .* nao_cnn"):
        from rnas.spaces import get_space
        load_truth(TruthConfig(str(table)), get_space("nao_cnn"))


# An audit hook in every Python process of the run (PYTHONPATH=<folder with this sitecustomize>)
# that records which script opened the truth table.
OPEN_RECORDER = textwrap.dedent('''
    import os, sys
    TABLE, LOG = os.environ["RNAS_TEST_TABLE"], os.environ["RNAS_TEST_OPENS"]
    def hook(event, args):
        if event == "open" and isinstance(args[0], (str, bytes, os.PathLike)) \\
                and os.path.abspath(os.fsdecode(args[0])) == TABLE:
            with open(LOG, "a") as log:
                log.write(os.path.basename(sys.argv[0]) + "\\n")
    sys.addaudithook(hook)
''')


@pytest.fixture(scope="module")
def nb201_run(tmp_path_factory):
    """`dvc exp run -S profile=nb201-smoke` on generated images with a generated truth table."""
    data = tmp_path_factory.mktemp("data")
    images = write_image_folder(data / "images", {"": 24})
    table = write_truth_table(data / "truth.csv")
    hooks = data / "hooks"
    hooks.mkdir()
    (hooks / "sitecustomize.py").write_text(OPEN_RECORDER)
    project = clone_project(tmp_path_factory.mktemp("project"))
    opens = data / "opens.log"
    overrides = ["-S", "profile=nb201-smoke", "-S", "device=cpu", "-S", "threads=1",
                 "-S", f"data.search.root={images}", "-S", f"evaluate.truth.table={table}"]
    result = run(["dvc", "exp", "run", *overrides, "-n", "nb201-smoke"],
                 project, PYTHONPATH=str(hooks), RNAS_TEST_TABLE=str(table), RNAS_TEST_OPENS=str(opens))
    return project, table, result, opens, overrides


@pytest.mark.slow
def test_nb201_run_is_judged_by_the_table_that_only_evaluate_opens(nb201_run):
    project, table, result, opens, _ = nb201_run
    for stage in ("prepare", "warmup", "embed", "sample", "rerank", "retrain", "evaluate"):
        assert f"Running stage '{stage}'" in result.stdout
    assert opens.read_text().split() == ["evaluate.py"]  # no search stage (nor DVC) read the truth

    artifacts = project / "artifacts"
    metrics = json.loads((artifacts / "evaluate/metrics.json").read_text())
    truth = pd.read_csv(table).set_index("arch_str")["test_acc_200ep"]
    # the final pool's top 3 by the combined ranking (the profile's: supernet, naswot and params),
    # re-ranked by a short training: the best validation wins
    reranked, pool = pd.read_csv(artifacts / "rerank/rerank.csv"), pd.read_csv(artifacts / "sample/pool_final.csv")
    assert pool["ranking"].tolist() == pytest.approx(combined_scores(
        {"supernet": pool["score"], "naswot": pool["signal_naswot"], "params": pool["signal_params"]},
        {"supernet": 1, "naswot": 1, "params": 1}))
    assert reranked["arch"].tolist() == pool.sort_values("ranking", ascending=False, kind="stable")["arch"][:3].tolist()
    assert (pool["origin"] == "screened").sum() == 4  # search.ranking.screen: fresh cells ranked with the pool
    found = json.loads((artifacts / "rerank/best.json").read_text())["arch"]
    assert found == reranked["arch"][reranked["validation_score"].idxmax()]
    assert (reranked["validation_score"] == reranked["valid_accuracy"]).all()
    assert metrics["truth_rerank_n"] == 3 and metrics["rerank_candidates"] == 3
    assert metrics["truth_rerank_pick_acc"] == pytest.approx(truth[found])
    assert metrics["truth_found_acc"] == pytest.approx(truth[found])
    assert metrics["truth_found_percentile"] == pytest.approx(100 * (truth <= truth[found]).mean())
    reference = pd.read_csv(artifacts / "sample/reference.csv")
    assert reference["arch"].tolist() == [SPACE.to_str(a) for a in reference_cells(SPACE, 20)]
    assert metrics["truth_supernet_n"] == 20 and -1 <= metrics["truth_supernet_kendall_tau"] <= 1
    assert (metrics["truth_role"], metrics["truth_column"]) == ("report", "test_acc_200ep")  # seed 0 reports
    for name in ("ranking", "params", "flops", "synflow", "naswot", "grad_norm", "snip"):
        assert metrics[f"truth_{name}_n"] == 20 and -1 <= metrics[f"truth_{name}_kendall_tau"] <= 1
    top_ranked = pool["arch"][pool["ranking"].idxmax()]
    assert metrics["truth_ranked_pool_pick_acc"] == pytest.approx(truth[top_ranked])
    assert json.loads((artifacts / "sample/best.json").read_text())["arch"] == top_ranked
    # the made-up truth rewards convolutions, which are the cells' parameters: no training involved
    assert metrics["truth_params_kendall_tau"] > 0.5
    assert metrics["truth_params_kendall_tau"] == pytest.approx(
        kendall_tau(reference["signal_params"].tolist(), truth[reference["arch"]].tolist()))
    for name in ("warmup", "pool", "predictor"):
        assert -1 <= metrics[f"truth_{name}_kendall_tau"] <= 1 or math.isnan(metrics[f"truth_{name}_kendall_tau"])
    assert (artifacts / "evaluate/truth_scatter.png").read_bytes()[:4] == b"\x89PNG"
    model = json.loads((artifacts / "retrain/metrics.json").read_text())
    assert model["params_m"] > 0

    from mlflow import MlflowClient
    client = MlflowClient(tracking_uri=f"sqlite:///{project / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("rnas").experiment_id],
                              filter_string="tags.`rnas.stage` = 'evaluate'")
    assert runs and runs[0].data.metrics["truth_found_acc"] == pytest.approx(truth[found])


@pytest.mark.slow
def test_a_larger_rerank_trains_only_the_new_candidates(nb201_run):
    project, _, _, _, overrides = nb201_run
    before = pd.read_csv(project / "artifacts/rerank/rerank.csv")
    assert not before["reused"].any()
    result = run(["dvc", "exp", "run", *overrides, "-S", "rerank.top=4", "-n", "nb201-rerank4"], project)
    assert "Stage 'sample' didn't change, skipping" in result.stdout
    after = pd.read_csv(project / "artifacts/rerank/rerank.csv")
    assert after["reused"].tolist() == [True, True, True, False]
    assert after.drop(columns="reused")[:3].equals(before.drop(columns="reused"))  # the same records


@pytest.mark.slow
def test_another_search_seed_reuses_the_trained_supernet(nb201_run):
    project, _, _, _, overrides = nb201_run
    # up to sample: the stages after it rerun as after any new sample (tests/test_experiments.py)
    result = run(["dvc", "exp", "run", "sample", *overrides, "-S", "search.seed=1", "-S", "search.strategy=random",
                  "-n", "nb201-seed1"], project)
    for stage in ("prepare", "warmup", "embed"):
        assert f"Stage '{stage}' didn't change, skipping" in result.stdout
    assert "Running stage 'sample'" in result.stdout
