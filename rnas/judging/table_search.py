"""Search strategies run against a tabular oracle under a budget (the NAS-Bench-201 protocol): the
loop that ``python -m rnas.judging.benchmark`` and the tuning scripts share. What a query reveals, the budget
rule and the seeding are described in rnas.judging.benchmark."""
from __future__ import annotations

import functools
import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Sequence

import torch

from rnas.config import from_dict, require
from rnas.judging.oracle import TableOracle
from rnas.spaces import get_space
from rnas.strategies import available_strategies, make_strategy, strategy_class
from rnas.strategies.base import Observation, SearchStrategy


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
        return merge_options(base, self.strategy_options.get(label, {})) if label != strategy_name(label) else base


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
def load_table(spec: TableSpec) -> TableOracle:
    """Each worker process reads the table once, however many runs it is given."""
    return spec.load()


def run_one(task: RunTask) -> RunResult:
    oracle = load_table(task.table)
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


def merge_options(base: dict, override: dict) -> dict:
    """``override`` on top of ``base``, nested mappings merged key by key."""
    merged = dict(base)
    for key, value in override.items():
        both_mappings = isinstance(value, dict) and isinstance(base.get(key), dict)
        merged[key] = merge_options(base[key], value) if both_mappings else value
    return merged
