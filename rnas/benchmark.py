"""Benchmark search strategies on a tabular oracle (the NAS-Bench-201 protocol).

    python -m rnas.benchmark nb201 --table CSV --select-col COL --report-col COL
        [--cost-col COL --budget-seconds S | --budget-queries Q] --strategies rnas,nao,random,evolution
        --seeds N [--seed-offset S] --out DIR [--jobs J] [--strategy-options JSON] [--config FILE]

Each query reveals one architecture's ``select`` value to the strategy. A run's answer is its
best observed architecture by ``select`` (the first one on ties); its result is that
architecture's ``report`` value.

Budget rule (that of NB201's random search and REA code): each query is charged its cost; a
query whose cost would take the total past ``--budget-seconds`` is not revealed and ends the run,
so the total never exceeds the budget. With ``--budget-queries Q`` a run ends after exactly Q
queries. A run also ends when its strategy has nothing new to propose.

A run label is a strategy name, or ``name-variant`` (e.g. ``rnas-ce``): the strategy ``name``
with the options of ``name`` overridden by those given for ``name-variant``, so variants of one
strategy are compared side by side.

A strategy proposes ``batch_size`` architectures per call: the ``batch_size`` field of its
Config where it declares one, else 1. Run ``(strategy, seed)`` seeds the strategy and torch's
global RNG with ``seed`` (seeds S..S+N-1, the same for every strategy; S = 0 unless
``--seed-offset`` says otherwise, so options can be tuned on one set of seeds and reported on
another), so the same command gives identical curves.

Writes into ``DIR`` (each file replaced atomically; other files there are left alone; a non-empty
folder that the command did not make is refused unless ``--force``):
- ``summary.csv``: strategy, seeds, mean_report, std_report, ci95 (half-width of the 95%
  t-interval of the mean), best_other (the other strategy with the highest mean), p_vs_best_other
  (Welch's two-sided t-test of the final reports against it), mean_queries, wall_seconds;
- ``curves.csv``: one row per strategy, seed and query: the architecture, its select and report
  values, ``spent`` (cost so far) and the run's answer so far (``best_select``, ``best_report``);
- ``metrics.json``: the summary per strategy, for ``dvc exp show``;
- ``curves.png``: mean best-so-far report against queries, with a +-1 std band over seeds.
"""
from __future__ import annotations

import argparse
import functools
import json
import math
import multiprocessing
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import pandas as pd
import torch
import yaml
from scipy import stats

from rnas.artifacts import atomic_path, write_json
from rnas.config import ConfigError, from_dict, require
from rnas.errors import run_command
from rnas.oracle import TableOracle
from rnas.plots import plot_band
from rnas.spaces import get_space
from rnas.strategies import available_strategies, make_strategy, strategy_class
from rnas.strategies.base import Observation, SearchStrategy
from rnas.training.progress import format_duration


@dataclass(frozen=True)
class Budget:
    seconds: float | None = None
    queries: int | None = None

    def check(self) -> None:
        require((self.seconds is None) != (self.queries is None), "seconds",
                "give exactly one of seconds and queries")
        require(self.seconds is None or self.seconds > 0, "seconds", "must be positive")
        require(self.queries is None or self.queries > 0, "queries", "must be positive")


@dataclass(frozen=True)
class TableSpec:
    """Where a table oracle comes from: enough to load it again in a worker process."""
    space: str
    path: str
    select_col: str
    report_col: str
    cost_col: str | None = None
    #: the table holds only some of the space's architectures (``TableOracle.load``)
    subset: bool = False

    def load(self) -> TableOracle:
        return TableOracle.load(self.path, get_space(self.space), self.select_col, self.report_col,
                                self.cost_col, subset=self.subset)


@dataclass(frozen=True)
class BenchmarkConfig:
    table: TableSpec
    budget: Budget
    strategies: list[str]
    seeds: int
    jobs: int = 1
    #: runs use seeds seed_offset .. seed_offset + seeds - 1
    seed_offset: int = 0
    #: per-strategy options, validated against each strategy's Config
    strategy_options: dict[str, dict] = field(default_factory=dict)

    def check(self) -> None:
        require(bool(self.strategies), "strategies", "name at least one strategy")
        require(len(set(self.strategies)) == len(self.strategies), "strategies", "a strategy is named twice")
        require(self.seeds >= 1, "seeds", "must be at least 1")
        require(self.jobs >= 1, "jobs", "must be at least 1")
        require(self.seed_offset >= 0, "seed_offset", "must be >= 0")
        require(self.budget.seconds is None or self.table.cost_col is not None, "budget.seconds",
                "a seconds budget needs a cost column")
        known = available_strategies()
        for label in list(self.strategies) + list(self.strategy_options):
            require(strategy_name(label) in known, "strategies",
                    f"unknown strategy {label!r}; known: {', '.join(known)} (or name-variant)")
        for label in self.strategies:
            from_dict(strategy_class(strategy_name(label)).Config, self.options(label), f"strategies.{label}")

    def options(self, label: str) -> dict:
        """The options of a run label: its strategy's, overridden by the label's own (``name-variant``)."""
        base = self.strategy_options.get(strategy_name(label), {})
        return _merge(base, self.strategy_options.get(label, {})) if label != strategy_name(label) else base


def strategy_name(label: str) -> str:
    """The strategy a run label runs: ``rnas-ce`` -> ``rnas``."""
    return label.split("-", 1)[0]


@dataclass(frozen=True)
class QueryRecord:
    """One query of a run, with the run's answer so far (its best architecture by select)."""
    arch: str
    select: float
    report: float
    spent: float
    best_select: float
    best_report: float


@dataclass(frozen=True)
class RunResult:
    strategy: str
    seed: int
    queries: list[QueryRecord]
    wall_seconds: float

    @property
    def final_report(self) -> float:
        return self.queries[-1].best_report if self.queries else float("nan")


def batch_size(strategy: SearchStrategy) -> int:
    return getattr(strategy.config, "batch_size", 1)


def search(strategy: SearchStrategy, oracle: TableOracle, budget: Budget) -> list[QueryRecord]:
    """Query the strategy's proposals until the budget (see the module docstring) is spent."""
    history: list[Observation] = []
    records: list[QueryRecord] = []
    spent = 0.0
    best = None
    while budget.queries is None or len(history) < budget.queries:
        n = batch_size(strategy)
        if budget.queries is not None:
            n = min(n, budget.queries - len(history))
        proposals = strategy.propose(history, n)
        if not proposals:
            break
        _check_proposals(strategy, history, proposals, n)
        for arch in proposals:
            result = oracle.query(arch)
            if budget.seconds is not None and spent + result.cost > budget.seconds:
                return records
            spent += result.cost
            history.append(Observation(arch, result.select))
            if best is None or result.select > best.select:
                best = result
            records.append(QueryRecord(oracle.space.to_str(arch), result.select, result.report, spent,
                                       best.select, best.report))
    return records


def _check_proposals(strategy: SearchStrategy, history: Sequence[Observation], proposals: Sequence,
                     n: int) -> None:
    """The strategy contract (``SearchStrategy.propose``): at most n, distinct, none seen before."""
    if len(proposals) > n:
        raise ValueError(f"strategy {strategy.name!r} proposed {len(proposals)} architectures, asked for {n}")
    seen = strategy.seen(history)
    for arch in proposals:
        arch = strategy.space.canonical(strategy.space.validate(arch))
        if arch in seen:
            raise ValueError(f"strategy {strategy.name!r} proposed {strategy.space.to_str(arch)} twice "
                             "(already observed, or twice in one batch)")
        seen.add(arch)


@dataclass(frozen=True)
class RunTask:
    table: TableSpec
    budget: Budget
    strategy: str
    options: dict[str, Any]
    seed: int


@functools.cache
def _load_table(spec: TableSpec) -> TableOracle:
    """Each worker process reads the table once, however many runs it is given."""
    return spec.load()


def run_one(task: RunTask) -> RunResult:
    oracle = _load_table(task.table)
    # Each run starts from torch's global RNG seeded with its seed (restored afterwards), so a
    # strategy drawing from it (dropout, say) gives the same curve whichever process runs it.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(task.seed)
        strategy = make_strategy(strategy_name(task.strategy), oracle.space, task.options, seed=task.seed,
                                 key=f"strategies.{task.strategy}")
        start = time.perf_counter()
        queries = search(strategy, oracle, task.budget)
        wall_seconds = time.perf_counter() - start
    return RunResult(task.strategy, task.seed, queries, wall_seconds)


def run_benchmark(config: BenchmarkConfig,
                  on_result: Callable[[int, int, RunResult], None] | None = None) -> list[RunResult]:
    """All (strategy, seed) runs, in a process pool when ``jobs > 1``; ordered by strategy then seed.

    ``on_result(done, total, result)`` is called as each run finishes (in completion order).
    """
    tasks = [RunTask(config.table, config.budget, name, config.options(name), seed)
             for name in config.strategies
             for seed in range(config.seed_offset, config.seed_offset + config.seeds)]
    results = []
    for result in _execute(tasks, config.jobs):
        results.append(result)
        if on_result is not None:
            on_result(len(results), len(tasks), result)
    order = {name: i for i, name in enumerate(config.strategies)}
    return sorted(results, key=lambda r: (order[r.strategy], r.seed))


def _execute(tasks: list[RunTask], jobs: int) -> Iterable[RunResult]:
    if jobs == 1:
        yield from map(run_one, tasks)
        return
    # spawn, not fork: a forked torch process can inherit locked thread pools. One torch thread
    # per worker: the pool already keeps every core busy.
    with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn"),
                             initializer=torch.set_num_threads, initargs=(1,)) as pool:
        futures = [pool.submit(run_one, t) for t in tasks]
        try:
            for future in as_completed(futures):
                yield future.result()
        finally:  # after a failed run, do not wait for the queued ones
            for future in futures:
                future.cancel()


# --- outputs ------------------------------------------------------------------------------
OUTPUTS = ("summary.csv", "curves.csv", "metrics.json", "curves.png")
#: marks a folder this command made: it may write its OUTPUTS there again
MARKER = ".rnas-benchmark"


def curves_frame(results: Sequence[RunResult]) -> pd.DataFrame:
    rows = [{"strategy": r.strategy, "seed": r.seed, "query": i, **asdict(q)}
            for r in results for i, q in enumerate(r.queries, start=1)]
    return pd.DataFrame(rows, columns=["strategy", "seed", "query", *QueryRecord.__dataclass_fields__])


def summary_frame(results: Sequence[RunResult]) -> pd.DataFrame:
    """One row per strategy: the mean and sample std over seeds of the final report, the 95%
    confidence interval of the mean (Student t, half-width), Welch's test against the best other
    strategy, the mean number of queries, and the wall time of its runs summed over seeds (with
    jobs > 1 they overlap).
    """
    runs = pd.DataFrame({"strategy": [r.strategy for r in results],
                         "report": [r.final_report for r in results],
                         "queries": [len(r.queries) for r in results],
                         "wall_seconds": [r.wall_seconds for r in results]})
    summary = runs.groupby("strategy", sort=False).agg(
        seeds=("report", "size"), mean_report=("report", "mean"), std_report=("report", "std"),
        mean_queries=("queries", "mean"), wall_seconds=("wall_seconds", "sum")).reset_index()
    summary.insert(4, "ci95", stats.t.ppf(0.975, summary.seeds - 1) * summary.std_report / summary.seeds ** 0.5)
    reports = {name: group.report.to_numpy() for name, group in runs.groupby("strategy", sort=False)}
    best_other, p_values = [], []
    for name in summary.strategy:
        others = summary[summary.strategy != name]
        if others.empty:
            best_other.append(None)
            p_values.append(math.nan)
            continue
        rival = others.strategy[others.mean_report.idxmax()]
        best_other.append(rival)
        p_values.append(welch_p(reports[name], reports[rival]))
    summary.insert(5, "best_other", best_other)
    summary.insert(6, "p_vs_best_other", p_values)
    return summary


def welch_p(a: Sequence[float], b: Sequence[float]) -> float:
    """Two-sided p-value of Welch's t-test (unequal variances); NaN with fewer than 2 values a side."""
    if len(a) < 2 or len(b) < 2:
        return math.nan
    return float(stats.ttest_ind(a, b, equal_var=False).pvalue)


def band_frame(curves: pd.DataFrame) -> pd.DataFrame:
    """Mean and std over seeds of the best-so-far report at each query count.

    A run that ended early (its budget spent sooner) keeps its final answer for the rest of its
    strategy's axis, so every point averages over all seeds.
    """
    bands = []
    for strategy, runs in curves.groupby("strategy", sort=False):
        per_run = runs.pivot(index="query", columns="seed", values="best_report").ffill()
        bands.append(pd.DataFrame({"strategy": strategy, "query": per_run.index,
                                   "mean": per_run.mean(axis=1), "std": per_run.std(axis=1).fillna(0.0)}))
    return pd.concat(bands, ignore_index=True)


def write_outputs(results: Sequence[RunResult], config: BenchmarkConfig, out: str | Path,
                  best_possible: float) -> pd.DataFrame:
    """Write summary.csv, curves.csv, metrics.json and curves.png into ``out`` (atomically)."""
    curves, summary = curves_frame(results), summary_frame(results)
    budget = (f"{config.budget.seconds:g} s" if config.budget.seconds is not None
              else f"{config.budget.queries} queries")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / MARKER).write_text("written by python -m rnas.benchmark, which may replace its own outputs here\n")
    for name, frame in (("summary.csv", summary), ("curves.csv", curves)):
        with atomic_path(out / name) as tmp:
            frame.to_csv(tmp, index=False)
    write_json(out / "metrics.json", {"strategies": _metrics(summary), "best_possible_report": best_possible})
    plot_band(band_frame(curves), x="query", group="strategy", y_mean="mean", y_std="std",
              path=out / "curves.png",
              title=f"{config.table.space}: {config.table.select_col}, {budget}, {config.seeds} seeds",
              xlabel="queries", ylabel=f"{config.table.report_col} of best so far")
    return summary


def check_output_folder(out: Path, force: bool) -> None:
    """Writing into ``out`` replaces only this command's own files (``OUTPUTS``), each atomically. A
    non-empty folder that it did not make (no ``MARKER``) is refused unless ``force``: an --out
    typo must not mix results into, say, a data folder."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out}: exists and is not a folder")
    if not out.is_dir() or (out / MARKER).exists() or force:
        return
    others = sorted(p.name for p in out.iterdir() if p.name not in OUTPUTS)
    if others:
        raise ConfigError(f"--out {out}: a folder this command did not make, holding {others[0]!r}; "
                          "choose another folder, or pass --force to write beside its files (none is deleted)")


def _metrics(summary: pd.DataFrame) -> dict[str, dict[str, float | None]]:
    """The summary as {strategy: {column: value}}, NaN (a single seed's std) as null: JSON has no NaN."""
    table = summary.set_index("strategy").drop(columns=["seeds", "best_other"])
    return {name: {k: None if math.isnan(v) else float(v) for k, v in row.items()}
            for name, row in table.to_dict(orient="index").items()}


# --- command line ---------------------------------------------------------------------------
def parse_args(argv: Sequence[str] | None = None) -> tuple[BenchmarkConfig, Path, bool]:
    parser = argparse.ArgumentParser(prog="python -m rnas.benchmark", description=__doc__.split("\n\n")[0])
    parser.add_argument("space", help="search space, e.g. nb201")
    parser.add_argument("--table", required=True, help="CSV with an arch_str column and numeric columns")
    parser.add_argument("--select-col", required=True, help="the value a search sees (higher is better)")
    parser.add_argument("--report-col", required=True, help="the value reported for the chosen architecture")
    parser.add_argument("--cost-col", help="cost of one query, charged against --budget-seconds")
    budget = parser.add_mutually_exclusive_group(required=True)
    budget.add_argument("--budget-seconds", type=float, help="total cost per run")
    budget.add_argument("--budget-queries", type=int, help="queries per run")
    parser.add_argument("--strategies", required=True,
                        help="comma-separated run labels: strategy names, or name-variant (options of their own)")
    parser.add_argument("--seeds", type=int, required=True, help="runs per strategy (seeds S..S+N-1)")
    parser.add_argument("--seed-offset", type=int, default=0, help="S, the first seed (default 0)")
    parser.add_argument("--out", required=True, help="output folder (this command's files in it are replaced)")
    parser.add_argument("--force", action="store_true",
                        help="write into an existing non-empty folder that this command did not make")
    parser.add_argument("--subset-table", action="store_true",
                        help="the table holds only some of the space's architectures: random draws and "
                             "mutations are restricted to its rows")
    parser.add_argument("--jobs", type=int, default=1, help="worker processes")
    parser.add_argument("--config", help="YAML file whose 'strategies: {name: {...}}' gives strategy options "
                                         "(other keys are ignored, so a DVC params.yaml works)")
    parser.add_argument("--strategy-options", help="JSON {name: {...}}; overrides --config per option")
    args = parser.parse_args(argv)
    try:
        options = _strategy_options(args.config, args.strategy_options)
        config = from_dict(BenchmarkConfig, {
            "table": {"space": args.space, "path": args.table, "select_col": args.select_col,
                      "report_col": args.report_col, "cost_col": args.cost_col, "subset": args.subset_table},
            "budget": {"seconds": args.budget_seconds, "queries": args.budget_queries},
            "strategies": [s.strip() for s in args.strategies.split(",") if s.strip()],
            "seeds": args.seeds, "seed_offset": args.seed_offset, "jobs": args.jobs,
            "strategy_options": options})
    except (ConfigError, ValueError, OSError) as e:
        parser.error(str(e))
    return config, Path(args.out), args.force


def _strategy_options(config_file: str | None, options_json: str | None) -> dict[str, dict]:
    options: dict[str, dict] = {}
    if config_file is not None:
        document = yaml.safe_load(Path(config_file).read_text()) or {}
        if not isinstance(document, dict):
            raise ConfigError(f"{config_file}: expected a mapping with a 'strategies' key")
        options = _options_mapping(document.get("strategies"), f"{config_file}: strategies")
    if options_json is not None:
        try:
            extra = json.loads(options_json)
        except json.JSONDecodeError as e:
            raise ConfigError(f"--strategy-options: not JSON: {e}") from None
        options = _merge(options, _options_mapping(extra, "--strategy-options"))
    return options


def _merge(base: dict, override: dict) -> dict:
    """``override`` on top of ``base``, nested mappings merged key by key."""
    merged = dict(base)
    for key, value in override.items():
        both_mappings = isinstance(value, dict) and isinstance(base.get(key), dict)
        merged[key] = _merge(base[key], value) if both_mappings else value
    return merged


def _options_mapping(data: Any, where: str) -> dict[str, dict]:
    if data is None:
        return {}
    if not isinstance(data, dict) or not all(isinstance(v, dict) or v is None for v in data.values()):
        raise ConfigError(f"{where}: expected a mapping {{strategy: {{option: value}}}}")
    return {name: dict(values or {}) for name, values in data.items()}


def _progress_printer(start: float) -> Callable[[int, int, RunResult], None]:
    def report(done: int, total: int, result: RunResult) -> None:
        elapsed = time.perf_counter() - start
        eta = format_duration(elapsed / done * (total - done))
        print(f"[{done}/{total}] {result.strategy} seed {result.seed}: {result.final_report:.2f} "
              f"after {len(result.queries)} queries ({result.wall_seconds:.1f}s)  "
              f"elapsed {format_duration(elapsed)}  ETA {eta}", file=sys.stderr, flush=True)
    return report


def main(argv: Sequence[str] | None = None) -> int:
    config, out, force = parse_args(argv)

    def benchmark() -> None:
        start = time.perf_counter()
        oracle = _load_table(config.table)
        check_output_folder(out, force)
        results = run_benchmark(config, _progress_printer(start))
        summary = write_outputs(results, config, out, oracle.best_report)
        print(summary.to_string(index=False, float_format=lambda v: f"{v:.2f}",
                                formatters={"p_vs_best_other": lambda v: f"{v:.2g}"}), file=sys.stderr)
        print(f"total {format_duration(time.perf_counter() - start)}; wrote {out}", file=sys.stderr)

    return run_command(benchmark)


if __name__ == "__main__":
    sys.exit(main())
