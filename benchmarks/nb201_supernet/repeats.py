"""Which of two trainings of rerank's candidates ranks them better, and does their mean? On tuning runs only.

    python benchmarks/nb201_supernet/repeats.py --table ../shared/data/nb201/cifar10.csv \
        --set RUN_DIR FIRST.csv SECOND.csv [--set ...] > benchmarks/nb201_supernet/tuning/repeats.jsonl
    python benchmarks/nb201_supernet/repeats.py ... --labels "10,000 images x 20 epochs" "20,000 images x 10 epochs"

Each ``--set`` is a tuning run (a folder with its ``artifacts/sample/provenance.json``, whose seed must
be a tuning seed) and two ``standalone.py --from-rerank`` files that trained the same candidates with
two seeds (``--seed S`` and ``--train-seed S+1000``: rerank's repeats 0 and 1). Each rule ranks the
candidates the two files share by their final validation accuracy (the first training's, the second's,
or the mean: ``rerank.repeats: 2``); its pick's true accuracy on the table's validation column and its
Kendall tau against that column are its result. Prints one JSON line per rule, then one with the
Kendall tau between the two trainings (how far one seed's noise moves the ranking). With ``--labels``
the two files are two recipes rather than two seeds of one (another fidelity at the same cost): the
rules are named by the labels, and their mean, which no rerank setting computes, is left out.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import pandas as pd

from benchmarks.nb201_supernet.standalone import validated_epochs
from benchmarks.nb201_supernet.tuning_run import tuning_oracle
from rnas.judging.rank_stats import kendall_tau
from rnas.judging.truth import true_accuracies
from rnas.spaces.nb201 import NB201Space


def final_accuracy(path: Path, held_out: int | None = None) -> pd.Series:
    """Each cell's validation accuracy after the file's last epoch, by arch; with ``held_out``, the
    accuracy on the validation images and the first ``held_out`` held-out images together."""
    return final_accuracy_of(pd.read_csv(path).set_index("arch"), held_out, path)


def final_accuracy_of(frame: pd.DataFrame, held_out: int | None, source: str | Path) -> pd.Series:
    """``final_accuracy`` of a standalone.py table already read (indexed by arch) from ``source``."""
    last = validated_epochs(frame)[-1]
    if held_out is None:
        return frame[f"valid_acc_{last}"]
    if f"held_out_acc_{held_out}" not in frame.columns:
        raise SystemExit(f"{source}: no held_out_acc_{held_out} column (standalone.py --held-out {held_out})")
    n_valid = frame["valid_images"]
    return (frame[f"valid_acc_{last}"] * n_valid + frame[f"held_out_acc_{held_out}"] * held_out) / (n_valid + held_out)


def load_set(run: Path, first: Path, second: Path, table: str,
             second_held_out: int | None = None) -> tuple[int, pd.DataFrame]:
    """The run's seed and a frame of the shared candidates (in the first file's order): ``first``,
    ``second`` and ``truth`` (the table's tuning column)."""
    oracle, seed = tuning_oracle(run, table, "rerank's repeats")
    a, b = final_accuracy(first), final_accuracy(second, second_held_out)
    frame = pd.DataFrame({"first": a, "second": b}).loc[[arch for arch in a.index if arch in b.index]]
    if len(frame) < 2:
        raise SystemExit(f"{first} and {second} share {len(frame)} cells; at least 2 are needed")
    space = NB201Space()
    frame["truth"] = true_accuracies(oracle, [space.from_str(arch) for arch in frame.index])
    return seed, frame


def rules(frame: pd.DataFrame, labels: list[str] | None) -> dict[str, list[float]]:
    if labels:
        return {labels[0]: frame["first"].tolist(), labels[1]: frame["second"].tolist()}
    return {"one training (seed S)": frame["first"].tolist(), "one training (seed S+1000)": frame["second"].tolist(),
            "mean of two trainings (rerank.repeats: 2)": ((frame["first"] + frame["second"]) / 2).tolist()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--table", required=True)
    parser.add_argument("--set", nargs=3, action="append", required=True, type=Path, metavar=("RUN_DIR", "FIRST", "SECOND"))
    parser.add_argument("--labels", nargs=2, metavar=("FIRST", "SECOND"),
                        help="the two files are two recipes, named so (no mean)")
    parser.add_argument("--second-held-out", type=int, metavar="N",
                        help="score the second file on its validation images plus its first N held-out ones")
    args = parser.parse_args()
    if args.second_held_out is not None and not args.labels:
        parser.error("--second-held-out compares two scores of the same trainings: name them with --labels")
    sets = [load_set(*paths, args.table, args.second_held_out) for paths in args.set]
    seeds = [seed for seed, _ in sets]
    by_set = [rules(frame, args.labels) for _, frame in sets]
    for name in by_set[0]:
        picks, taus = [], []
        for (_, frame), values_by_rule in zip(sets, by_set):
            values = values_by_rule[name]
            picks.append(float(frame["truth"].iloc[max(range(len(values)), key=lambda i: (values[i], -i))]))
            taus.append(kendall_tau(values, frame["truth"].tolist()))
        print(json.dumps({"rule": name, "seeds": seeds, "column": "valid_acc_200ep", "cells": [len(f) for _, f in sets],
                          "pick_mean": round(statistics.mean(picks), 3), "pick": picks,
                          "kendall_tau_mean": round(statistics.mean(taus), 3), "kendall_tau": [round(t, 3) for t in taus],
                          "best": [float(f["truth"].max()) for _, f in sets]}))
    agreement = [kendall_tau(f["first"].tolist(), f["second"].tolist()) for _, f in sets]
    print(json.dumps({"between the two trainings": "kendall_tau", "seeds": seeds,
                      "kendall_tau": [round(t, 3) for t in agreement], "mean": round(statistics.mean(agreement), 3)}))


if __name__ == "__main__":
    main()
