"""Choose how rerank picks its winner among the trained candidates, on tuning runs only.

    python benchmarks/nb201_supernet/rerank_rules.py --table ../shared/data/nb201/cifar10.csv \
        RUN_DIR [RUN_DIR ...] > benchmarks/nb201_supernet/tuning/rerank_rules.jsonl

Each RUN_DIR holds a tuning run's ``rerank.csv`` (its candidates with the search's ranking and the
short training's validation accuracy and loss) and ``artifacts/sample/provenance.json``. Each rule
picks one candidate per run; the pick's true accuracy on the table's validation column is the rule's
result (mean over the runs), beside the best and median candidate. Rules: the validation accuracy
(what rerank does), the validation loss, the search's ranking alone (no training), weighted means of
the ranking's and the validation accuracy's rank percentiles, and the validation accuracy among the
ranking's first k. Prints one JSON line per rule, best mean first. A run of a reported seed is refused.
"""
from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import pandas as pd

from benchmarks.nb201_supernet.tuning_run import runs_arguments, tuning_oracle
from rnas.judging.rank_stats import kendall_tau
from rnas.search.ranking import rank_percentiles
from rnas.spaces.nb201 import NB201Space
from rnas.judging.truth import true_accuracies


def rules(frame: pd.DataFrame) -> dict[str, list[float]]:
    """Rule name -> each candidate's value under it (the pick is the largest; ties: the first)."""
    ranking, accuracy = rank_percentiles(frame["ranking"].tolist()), rank_percentiles(frame["valid_accuracy"].tolist())
    out = {"validation accuracy": frame["valid_accuracy"].tolist(),
           "validation loss": (-frame["valid_loss"]).tolist(), "ranking (no training)": frame["ranking"].tolist()}
    for w in (0.25, 0.5, 0.75):
        out[f"{w} ranking + {1 - w} accuracy"] = [w * r + (1 - w) * a for r, a in zip(ranking, accuracy)]
    order = sorted(range(len(frame)), key=lambda i: -frame["ranking"][i])
    for k in (5, 10):
        first = set(order[:k])
        out[f"accuracy among the ranking's first {k}"] = [v if i in first else -1.0
                                                        for i, v in enumerate(frame["valid_accuracy"])]
    return out


def load_run(folder: Path, table: str) -> tuple[pd.DataFrame, int]:
    oracle, seed = tuning_oracle(folder, table, "rules")
    space = NB201Space()
    frame = pd.read_csv(folder / "rerank.csv")
    frame["truth"] = true_accuracies(oracle, [space.from_str(a) for a in frame["arch"]])
    return frame, seed


def main() -> None:
    args = runs_arguments(__doc__.splitlines()[0])
    runs = [load_run(folder, args.table) for folder in args.runs]
    by_run = [rules(frame) for frame, _ in runs]
    rows = []
    for name in by_run[0]:
        picks, taus = [], []
        for (frame, _), values_by_rule in zip(runs, by_run):
            values = values_by_rule[name]
            picks.append(frame["truth"][max(range(len(values)), key=lambda i: (values[i], -i))])
            taus.append(kendall_tau(values, frame["truth"].tolist()))
        rows.append({"rule": name, "seeds": [seed for _, seed in runs], "pick_mean": round(statistics.mean(picks), 3),
                     "pick": picks, "kendall_tau": [round(t, 3) for t in taus],
                     "best": [frame["truth"].max() for frame, _ in runs],
                     "median": [frame["truth"].median() for frame, _ in runs]})
    for row in sorted(rows, key=lambda r: -r["pick_mean"]):
        print(json.dumps(row))


if __name__ == "__main__":
    main()
