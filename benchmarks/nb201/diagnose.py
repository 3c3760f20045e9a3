"""Why an embedding strategy (rnas, nao) finds what it finds on NAS-Bench-201.

    python benchmarks/nb201/diagnose.py rnas --protocol paper --seeds 10 --seed-offset 1000
        [--config benchmarks/nb201/params.yaml] [--strategy-options JSON]

Runs the benchmark's search (``rnas.judging.table_search.search``, same budget and seeds) and, at each call
that moves in the embedding, judges the proposals with the whole table. The strategy never sees
the table: it is only used here, after the strategy has chosen.

- ``generated``: share of the proposals that came from the moves (the rest is random fill);
- ``percentile``: the proposals' rank in the table by the select column (0 best, 0.5 random);
- ``beats_best``: share of calls with a proposal better than the best observed so far;
- ``tau``: Kendall tau of the fitted predictor on the proposals (held out at fit time) against
  their select values;
- ``hamming``: slots in which a proposal differs from the best cell observed so far;
- ``recon_seen`` / ``recon_random``: exact reconstructions by the decoder of the observed cells
  and of 100 random cells (encode, then decode).

Prints one row per stage of the search (by cells observed) and the overall mean.
"""
from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import torch
import yaml

from rnas.judging.table_search import Budget, TableSpec, search
from rnas.search.controller import evaluate_controller
from rnas.judging.rank_stats import kendall_tau
from rnas.judging.oracle import TableOracle
from rnas.spaces.base import Arch
from rnas.strategies import make_strategy
from rnas.strategies.base import EmbeddingStrategy, Observation, SearchStrategy

STAGES = [0, 40, 70, 1000]  # cells observed: early, middle, late


class Diagnosed(SearchStrategy):
    """Proposes what ``inner`` proposes; records one row of diagnostics per embedding call."""
    name = "diagnosed"

    def __init__(self, inner: EmbeddingStrategy, oracle: TableOracle):
        super().__init__(inner.space, inner.config, inner.seed)
        self.inner, self.oracle = inner, oracle
        ranked = np.argsort(-np.asarray(oracle.select))
        self.percentile = {oracle.archs[row]: rank / len(ranked) for rank, row in enumerate(ranked)}
        self.probe = inner.space.sample_unique(100, random.Random(0))
        self.rows: list[dict] = []

    def propose(self, history: Sequence[Observation], n: int) -> list[Arch]:
        proposals = self.inner.propose(history, n)
        if self.inner.fits and proposals:
            self.rows.append(self._judge(history, proposals))
        return proposals

    def _judge(self, history: Sequence[Observation], proposals: list[Arch]) -> dict:
        controller = self.inner.controller
        best = max(history, key=lambda o: o.score)
        select = [self.oracle.query(a).select for a in proposals]
        with torch.no_grad():
            predicted = controller.predict(controller.encode(controller.tokens(proposals))).tolist()
        return {
            "observed": len(history),
            "generated": self.inner.last_generated / len(proposals),
            "percentile": float(np.mean([self.percentile[a] for a in proposals])),
            "beats_best": float(max(select) > best.score),
            "tau": kendall_tau(predicted, select) if len(proposals) > 2 else float("nan"),
            "hamming": float(np.mean([sum(x != y for x, y in zip(a, best.arch)) for a in proposals])),
            "recon_seen": _reconstruction(controller, [o.arch for o in history]),
            "recon_random": _reconstruction(controller, self.probe),
        }


def _reconstruction(controller, archs: Sequence[Arch]) -> float:
    return evaluate_controller(controller, archs, [0.0] * len(archs))["reconstruction_arch_acc"]


def diagnose(strategy: str, options: dict, spec: TableSpec, budget: Budget, seeds: Sequence[int]) -> pd.DataFrame:
    oracle = spec.load()
    rows = []
    for seed in seeds:
        torch.manual_seed(seed)
        diagnosed = Diagnosed(make_strategy(strategy, oracle.space, options, seed=seed), oracle)
        records = search(diagnosed, oracle, budget)
        rows += [{"seed": seed, "final_report": records[-1].best_report, **row} for row in diagnosed.rows]
    return pd.DataFrame(rows)


def summarise(frame: pd.DataFrame) -> pd.DataFrame:
    stage = pd.cut(frame.observed, STAGES, right=False, labels=["<40", "40-69", ">=70"])
    columns = ["generated", "percentile", "beats_best", "tau", "hamming", "recon_seen", "recon_random"]
    by_stage = frame.groupby(stage, observed=True)[columns].mean()
    overall = frame[columns].mean().to_frame("all").T
    return pd.concat([by_stage, overall])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("strategy", choices=["rnas", "nao", "predictor"])
    parser.add_argument("--protocol", default="paper", help="a protocol block of the config (paper, queries100)")
    parser.add_argument("--config", default="benchmarks/nb201/params.yaml")
    parser.add_argument("--strategy-options", help="JSON options; replace the config's options for the strategy")
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--seed-offset", type=int, default=0)
    args = parser.parse_args(argv)
    params = yaml.safe_load(Path(args.config).read_text())
    protocol = params[args.protocol]
    spec = TableSpec("nb201", params["table"], protocol["select_col"], protocol["report_col"],
                     protocol.get("cost_col"))
    budget = Budget(protocol.get("budget_seconds"), protocol.get("budget_queries"))
    options = (json.loads(args.strategy_options) if args.strategy_options is not None
               else params["strategies"].get(args.strategy, {}))
    torch.set_num_threads(1)
    frame = diagnose(args.strategy, options, spec, budget, range(args.seed_offset, args.seed_offset + args.seeds))
    print(summarise(frame).to_string(float_format=lambda v: f"{v:.2f}"))
    finals = frame.groupby("seed").final_report.first()
    print(f"final report {finals.mean():.2f} +- {finals.std():.2f} over {len(finals)} seeds")
    return 0


if __name__ == "__main__":
    sys.exit(main())
