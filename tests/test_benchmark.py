"""The search loop, its budget accounting and the ``python -m rnas.judging.benchmark`` command."""
from __future__ import annotations

import itertools
import json
import random
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import pandas as pd
import pytest
import torch
import yaml

from rnas.judging import benchmark, table_search
from rnas.judging.benchmark import main
from rnas.judging.table_search import Budget, RunTask, TableSpec, run_one, search
from rnas.judging.oracle import TableOracle
from rnas.spaces.base import Arch
from rnas.spaces.nb201 import NB201Space
from rnas.strategies import make_strategy
from rnas.strategies.base import Observation, SearchStrategy

TARGET = (3, 3, 1, 2, 3, 4)


def smooth_table(seed: int = 0) -> pd.DataFrame:
    """Every NB201 cell; the closer (in Hamming distance) to TARGET, the better, plus noise.

    Costs grow with the number of convolutions, so a seconds budget buys a varying number of queries.
    """
    space, rng = NB201Space(), random.Random(seed)
    rows = []
    for arch in itertools.product(range(5), repeat=6):
        distance = sum(a != t for a, t in zip(arch, TARGET))
        valid = 90.0 - 5.0 * distance + rng.gauss(0, 0.5)
        rows.append({"arch_str": space.to_str(arch), "valid": valid, "test": valid + rng.gauss(0, 0.5),
                     "seconds": 10.0 + 5.0 * sum(op in (2, 3) for op in arch)})
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def table(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("table") / "smooth.csv"
    smooth_table().to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def oracle(table) -> TableOracle:
    return TableOracle.from_csv(table, NB201Space(), "valid", "test", "seconds")


@dataclass(frozen=True)
class ScriptConfig:
    batch_size: int = 1


class Scripted(SearchStrategy):
    """Proposes a fixed list of architectures in order; records each request size."""
    name = "scripted"
    Config = ScriptConfig

    def __init__(self, space, archs: Sequence[Arch], batch_size: int = 1):
        super().__init__(space, ScriptConfig(batch_size))
        self.archs, self.requests = list(archs), []

    def propose(self, history: Sequence[Observation], n: int) -> list[Arch]:
        self.requests.append(n)
        return self.archs[len(history):len(history) + n]


def archs_costing(oracle: TableOracle, costs: Sequence[float]) -> list[Arch]:
    """Distinct architectures whose query costs are ``costs``, in that order."""
    pool = list(zip(oracle.archs, oracle.cost))
    picked = []
    for cost in costs:
        arch = next(a for a, c in pool if c == cost and a not in picked)
        picked.append(arch)
    return picked


# --- the search loop ----------------------------------------------------------------------
def test_a_query_past_the_seconds_budget_ends_the_run(oracle):
    # 20 + 20 = 40; the third (30) would reach 70 > 60: the run ends there, though a 10 would fit
    archs = archs_costing(oracle, [20, 20, 30, 10])
    records = search(Scripted(oracle.space, archs), oracle, Budget(seconds=60))
    assert [r.spent for r in records] == [20, 40]
    records = search(Scripted(oracle.space, archs), oracle, Budget(seconds=70))
    assert [r.spent for r in records] == [20, 40, 70]


def test_a_query_budget_is_exact_and_the_last_batch_is_trimmed(oracle):
    strategy = Scripted(oracle.space, oracle.archs[:50], batch_size=4)
    records = search(strategy, oracle, Budget(queries=10))
    assert len(records) == 10 and strategy.requests == [4, 4, 2]


def test_the_answer_is_the_best_by_select_and_its_report(oracle):
    archs = oracle.archs[:30]
    records = search(Scripted(oracle.space, archs), oracle, Budget(queries=30))
    results = [oracle.query(a) for a in archs]
    for i, record in enumerate(records, start=1):
        best = max(results[:i], key=lambda r: r.select)
        assert (record.best_select, record.best_report) == (best.select, best.report)


def test_a_run_ends_when_the_strategy_has_nothing_new(oracle):
    records = search(Scripted(oracle.space, oracle.archs[:3]), oracle, Budget(queries=10))
    assert len(records) == 3


def test_the_strategy_contract_is_enforced(oracle):
    repeat = [oracle.archs[0], oracle.archs[1], oracle.archs[0]]
    with pytest.raises(ValueError, match="proposed .* twice"):
        search(Scripted(oracle.space, repeat, batch_size=3), oracle, Budget(queries=3))


@pytest.mark.parametrize("name", ["random", "evolution"])
def test_spent_seconds_add_up_and_stay_within_budget(oracle, name):
    strategy = make_strategy(name, oracle.space, seed=0)
    records = search(strategy, oracle, Budget(seconds=500))
    costs = [oracle.query(oracle.space.from_str(r.arch)).cost for r in records]
    assert [r.spent for r in records] == pytest.approx(list(itertools.accumulate(costs)))
    assert records[-1].spent <= 500 and len(records) >= 500 / 40


def test_evolution_beats_random_on_a_smooth_table(oracle):
    def mean_final(name: str) -> float:
        finals = [search(make_strategy(name, oracle.space, seed=s), oracle, Budget(queries=60))[-1].best_report
                  for s in range(20)]
        return sum(finals) / len(finals)

    # random's best of 60 is typically 2-3 slots from the target (5 points each); evolution climbs
    assert mean_final("evolution") > mean_final("random") + 2.5


class TorchRandom(SearchStrategy):
    """Draws from torch's global RNG, as dropout in a learned strategy does."""
    name = "torch_random"
    Config = ScriptConfig

    def propose(self, history: Sequence[Observation], n: int) -> list[Arch]:
        seen = self.seen(history)
        while (arch := tuple(torch.randint(5, (6,)).tolist())) in seen:
            pass
        return [arch]


def test_each_run_reseeds_torch_and_restores_the_callers_rng(table, monkeypatch):
    monkeypatch.setattr(table_search, "make_strategy",
                        lambda name, space, options, seed, key: TorchRandom(space, ScriptConfig(), seed))
    task = RunTask(TableSpec("nb201", str(table), "valid", "test"), Budget(queries=5), "torch_random", {}, 0)
    torch.manual_seed(1)
    first = run_one(task)
    after_first = torch.rand(1)
    torch.manual_seed(2)
    assert run_one(task).queries == first.queries
    torch.manual_seed(1)
    assert torch.rand(1) == after_first


# --- the command ------------------------------------------------------------------------------
def run_command(table: Path, out: Path, *extra: str) -> int:
    return main(["nb201", "--table", str(table), "--select-col", "valid", "--report-col", "test",
                 "--strategies", "random,evolution", "--seeds", "3", "--out", str(out), *extra])


def test_command_writes_every_output(table, tmp_path, capsys):
    out = tmp_path / "out"
    assert run_command(table, out, "--cost-col", "seconds", "--budget-seconds", "400") == 0
    progress = capsys.readouterr().err
    assert "[6/6] evolution seed 2" in progress and "ETA" in progress
    assert sorted(p.name for p in out.iterdir()) == [".rnas-benchmark", "curves.csv", "curves.png", "metrics.json",
                                                      "summary.csv"]
    summary = pd.read_csv(out / "summary.csv")
    assert list(summary.columns) == ["strategy", "seeds", "mean_report", "std_report", "ci95", "best_other",
                                     "p_vs_best_other", "mean_queries", "wall_seconds"]
    assert summary.strategy.tolist() == ["random", "evolution"] and (summary.seeds == 3).all()
    curves = pd.read_csv(out / "curves.csv")
    assert set(curves.columns) >= {"strategy", "seed", "query", "spent", "best_report"}
    assert curves.spent.max() <= 400
    finals = curves.groupby(["strategy", "seed"], sort=False).best_report.last()
    assert summary.set_index("strategy").mean_report.to_dict() == pytest.approx(
        finals.groupby("strategy").mean().to_dict())
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["strategies"]) == {"random", "evolution"}
    assert metrics["strategies"]["random"]["mean_report"] == pytest.approx(summary.mean_report[0])


def test_same_command_same_curves_in_one_process_or_two(table, tmp_path):
    outputs = []
    for name, jobs in [("a", "1"), ("b", "1"), ("c", "2")]:
        run_command(table, tmp_path / name, "--budget-queries", "25", "--jobs", jobs)
        outputs.append((tmp_path / name / "curves.csv").read_bytes())
    assert outputs[0] == outputs[1] == outputs[2]


def test_strategy_options_from_yaml_and_json(table, tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"other_stage": {"x": 1},
                                      "strategies": {"evolution": {"population": 5, "batch_size": 5}}}))
    run_command(table, tmp_path / "yaml", "--budget-queries", "20", "--config", str(params))
    run_command(table, tmp_path / "json", "--budget-queries", "20",
                "--strategy-options", '{"evolution": {"population": 5, "batch_size": 5}}')
    run_command(table, tmp_path / "both", "--budget-queries", "20", "--config", str(params),
                "--strategy-options", '{"evolution": {"population": 10}}')
    default = tmp_path / "default"
    run_command(table, default, "--budget-queries", "20")
    curves = {name: pd.read_csv(tmp_path / name / "curves.csv").query("strategy == 'evolution'").arch.tolist()
              for name in ["yaml", "json", "both", "default"]}
    assert curves["yaml"] == curves["json"] != curves["default"]
    assert curves["both"] != curves["yaml"]


def test_json_options_merge_into_nested_yaml_options():
    from_yaml = {"rnas": {"mras": {"iterations": 5, "samples": 50}, "top_k": 20}}
    from_json = {"rnas": {"mras": {"iterations": 9}}, "random": {"batch_size": 2}}
    assert table_search.merge_options(from_yaml, from_json) == {
        "rnas": {"mras": {"iterations": 9, "samples": 50}, "top_k": 20}, "random": {"batch_size": 2}}


@pytest.mark.parametrize("extra, message", [
    (["--budget-seconds", "100"], "a seconds budget needs a cost column"),
    (["--budget-queries", "10", "--cost-col", "secs"], "no column 'secs'"),
    (["--budget-queries", "10", "--strategy-options", '{"evolution": {"size": 3}}'],
     "unknown parameter strategies.evolution.size"),
    (["--budget-queries", "10", "--strategy-options", '{"genetic": {}}'], "unknown strategy 'genetic'"),
    (["--budget-queries", "10", "--strategy-options", "{evolution: 3}"], "not JSON"),
])
def test_command_errors_name_the_problem(table, tmp_path, capsys, extra, message):
    try:
        code = run_command(table, tmp_path / "out", *extra)
    except SystemExit as e:
        code = e.code
    assert code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_diagnosis_judges_each_embedding_move_against_the_table(table):
    from benchmarks.nb201.diagnose import diagnose, summarise
    options = {"controller": {"token_embedding": 8, "hidden": 16, "mlp_hidden": 16},
               "train": {"epochs": 5, "refit_epochs": 2}, "batch_size": 5, "initial_random": 10,
               "mras": {"iterations": 2, "samples": 20}}
    spec = TableSpec("nb201", str(table), "valid", "test", None)
    frame = diagnose("rnas", options, spec, Budget(None, 25), seeds=[0])
    assert len(frame) == 3  # calls after the 10 random cells: at 10, 15 and 20 observed
    assert frame.observed.tolist() == [10, 15, 20]
    for column in ("generated", "percentile", "beats_best", "recon_seen", "recon_random"):
        assert frame[column].between(0, 1).all(), column
    assert (frame.hamming >= 0).all() and (frame.hamming <= 6).all()
    assert list(summarise(frame).index)[-1] == "all"


def test_summary_statistics_against_a_hand_computation():
    def run(strategy, seed, report):
        return table_search.RunResult(strategy, seed, [table_search.QueryRecord("a", 0.0, report, 0.0, 0.0, report)], 1.0)

    a, b, c = [90.0, 91.0, 92.0, 93.0], [91.0, 91.5, 92.5], [80.0, 81.0]
    results = [run("a", i, v) for i, v in enumerate(a)] + [run("b", i, v) for i, v in enumerate(b)] + \
        [run("c", i, v) for i, v in enumerate(c)]
    summary = benchmark.summary_frame(results).set_index("strategy")
    # a: mean 91.5, sample std sqrt(5/3); t(0.975, 3) = 3.182446
    assert summary.loc["a", "ci95"] == pytest.approx(3.182446 * (5 / 3) ** 0.5 / 2, rel=1e-6)
    # the best other of a is b (mean 91.67) and of b and c is a (91.5); Welch by hand for a vs b:
    va, vb = 5 / 3, 0.5833333333333334            # sample variances
    se2a, se2b = va / 4, vb / 3
    t = (91.5 - 91.66666666666667) / (se2a + se2b) ** 0.5
    dof = (se2a + se2b) ** 2 / (se2a ** 2 / 3 + se2b ** 2 / 2)
    from scipy.stats import t as student
    assert summary.best_other.to_dict() == {"a": "b", "b": "a", "c": "b"}
    assert summary.loc["a", "p_vs_best_other"] == pytest.approx(2 * student.sf(abs(t), dof), rel=1e-9)
    assert summary.loc["b", "p_vs_best_other"] == pytest.approx(summary.loc["a", "p_vs_best_other"])


def test_a_variant_label_runs_its_strategy_with_its_own_options_on_top(table, tmp_path):
    options = {"evolution": {"population": 5, "tournament": 2}, "evolution-big": {"population": 20}}
    config = table_search.BenchmarkConfig(table=TableSpec("nb201", str(table), "valid", "test"),
                                       budget=Budget(queries=30), strategies=["evolution", "evolution-big"],
                                       seeds=1, strategy_options=options)
    config.check()
    assert config.options("evolution-big") == {"population": 20, "tournament": 2}
    assert config.options("evolution") == {"population": 5, "tournament": 2}
    plain, big = table_search.run_benchmark(config)
    assert (plain.strategy, big.strategy) == ("evolution", "evolution-big")
    assert plain.queries[:5] == big.queries[:5]          # the same seed: the same random start
    assert plain.queries != big.queries                  # children from the 5th, not from the 20th on
    with pytest.raises(Exception, match="unknown strategy 'nope-x'"):
        table_search.BenchmarkConfig(table=config.table, budget=config.budget, strategies=["nope-x"], seeds=1).check()


def test_outputs_of_disjoint_seed_ranges_merge_into_those_of_one_command(table, tmp_path, monkeypatch):
    from benchmarks.nb201 import merge
    for name, extra in [("a", ["--seeds", "2"]), ("b", ["--seeds", "3", "--seed-offset", "2"]), ("all", ["--seeds", "5"])]:
        assert main(["nb201", "--table", str(table), "--select-col", "valid", "--report-col", "test",
                     "--budget-queries", "15", "--strategies", "random,evolution", "--out", str(tmp_path / name),
                     *extra]) == 0
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"table": str(table), "p": {"select_col": "valid", "report_col": "test",
                                                                 "budget_queries": 15}}))
    monkeypatch.setattr("sys.argv", ["merge", str(tmp_path / "b"), str(tmp_path / "a"), "--protocol", "p",
                                     "--params", str(params), "--out", str(tmp_path / "merged")])
    assert merge.main() == 0
    assert (tmp_path / "merged/curves.csv").read_bytes() == (tmp_path / "all/curves.csv").read_bytes()
    merged, whole = (pd.read_csv(tmp_path / d / "summary.csv") for d in ("merged", "all"))
    pd.testing.assert_frame_equal(merged.drop(columns="wall_seconds"), whole.drop(columns="wall_seconds"))
    assert merged.wall_seconds.sum() > 0


@pytest.mark.parametrize("module", ["rnas.judging.benchmark", "rnas.evaluate", "rnas.compare"])
def test_the_library_commands_run_as_modules(module):
    result = subprocess.run([sys.executable, "-m", module, "--help"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.startswith("usage: "), result.stderr[-2000:]


def test_repeats_tuning_refuses_a_reported_run_and_ranks_by_the_mean(tmp_path):
    """benchmarks/nb201_supernet/repeats.py: rules on a hand case, and no reported seed in tuning."""
    from benchmarks.nb201_supernet.repeats import final_accuracy, load_set, rules
    from rnas.artifacts import write_json

    first, second = tmp_path / "first.csv", tmp_path / "second.csv"
    pd.DataFrame({"arch": ["a", "b", "c"], "valid_acc_1": [0.1, 0.1, 0.1], "valid_acc_2": [0.5, 0.7, 0.6]}).to_csv(first)
    pd.DataFrame({"arch": ["c", "a"], "valid_acc_1": [0.0, 0.0], "valid_acc_2": [0.2, 0.8]}).to_csv(second)
    assert final_accuracy(first).to_dict() == {"a": 0.5, "b": 0.7, "c": 0.6}  # the last epoch's
    frame = pd.DataFrame({"first": [0.5, 0.6], "second": [0.8, 0.2]}, index=["a", "c"])
    assert rules(frame, None)["mean of two trainings (rerank.repeats: 2)"] == pytest.approx([0.65, 0.4])
    assert rules(frame, ["10k x 20", "20k x 10"]) == {"10k x 20": [0.5, 0.6], "20k x 10": [0.8, 0.2]}  # two recipes: no mean
    write_json(tmp_path / "run/artifacts/sample/provenance.json", {"seed": 3})
    with pytest.raises(SystemExit, match="seed 3 is a reported seed"):
        load_set(tmp_path / "run", first, second, "unused.csv")


def test_ablation_baseline_picks_among_the_cells_its_budget_trains(tmp_path):
    """benchmarks/nb201_supernet/ablation.py: the budget cuts by cost, and held_out picks on both image sets."""
    from benchmarks.nb201_supernet.ablation import baseline_rows, baseline_spec, within_budget

    table = tmp_path / "random_seed3.csv"
    pd.DataFrame({"arch": ["a", "b", "c"], "truth": [91.0, 92.0, 93.0], "cpu_seconds": [10.0, 10.0, 10.0],
                  "valid_images": [100] * 3, "valid_acc_20": [0.50, 0.60, 0.90],
                  "held_out_acc_300": [0.70, 0.50, 0.90]}).to_csv(table, index=False)
    assert list(within_budget(pd.read_csv(table), 15.0)["arch"]) == ["a", "b"]  # b starts at 10 s < 15 s
    assert list(within_budget(pd.read_csv(table), 10.0)["arch"]) == ["a"]
    # a: (0.5 * 100 + 0.7 * 300) / 400 = 0.65 beats b: (0.6 * 100 + 0.5 * 300) / 400 = 0.525; c is past the budget
    (label, by_seed), = baseline_rows(*baseline_spec([str(table), "held_out=300", "budget_cpu_seconds=15"])).items()
    assert by_seed == {3: (91.0, pytest.approx(-1.0))} and "on 400 images, 15 CPU-s (~2 cells)" in label
    (_, by_seed), = baseline_rows(str(table), None, 15.0).items()  # validation alone picks b
    assert by_seed[3][0] == 92.0
    with pytest.raises(SystemExit, match="unknown"):
        baseline_spec([str(table), "budget=15"])
