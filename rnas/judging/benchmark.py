"""Benchmark search strategies on a tabular oracle (the NAS-Bench-201 protocol): the command, its
outputs and statistics; the search loop itself is rnas.judging.table_search.

    python -m rnas.judging.benchmark nb201 --table CSV --select-col COL --report-col COL
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
import json
import math
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable, Sequence

import pandas as pd
import yaml
from scipy import stats

from rnas.artifacts import atomic_path, write_json
from rnas.config import ConfigError, from_dict
from rnas.errors import run_command
from rnas.plots import plot_band
from rnas.judging.rank_stats import welch_p
from rnas.judging.table_search import BenchmarkConfig, QueryRecord, RunResult, load_table, merge_options, run_benchmark
from rnas.training.progress import format_duration


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
    (out / MARKER).write_text("written by python -m rnas.judging.benchmark, which may replace its own outputs here\n")
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
    parser = argparse.ArgumentParser(prog="python -m rnas.judging.benchmark", description=__doc__.split("\n\n")[0])
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
        options = merge_options(options, _options_mapping(extra, "--strategy-options"))
    return options


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
        oracle = load_table(config.table)
        check_output_folder(out, force)
        results = run_benchmark(config, _progress_printer(start))
        summary = write_outputs(results, config, out, oracle.best_report)
        print(summary.to_string(index=False, float_format=lambda v: f"{v:.2f}",
                                formatters={"p_vs_best_other": lambda v: f"{v:.2g}"}), file=sys.stderr)
        print(f"total {format_duration(time.perf_counter() - start)}; wrote {out}", file=sys.stderr)

    return run_command(benchmark)


if __name__ == "__main__":
    sys.exit(main())
