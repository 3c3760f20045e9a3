"""How well the zero-cost signals (rnas.search.signals) rank NAS-Bench-201 cells, judged by the table.

    python benchmarks/signals_nb201.py --data ../shared/data/cifar10-train-jpg.tar.gz \
        --table ../shared/data/nb201/cifar10.csv --cells 200 --seed 100

Takes the pipeline's reference cells of --seed (rnas.judging.truth.reference_cells: for a tuning seed, 100
and up, the tuning cells; or, with --random, --cells random cells drawn with --seed), builds each as the table's network (rnas.networks.nb201, by default at
the published size, C=16 and N=5, at --resolution, initialised as the pipeline does:
rnas.search.ranking.cell_seed), scores it with every signal on one batch of --batch-size CIFAR-10
training images (drawn with --seed, no augmentation, normalised with the prepared training split's
mean and std as the pipeline does; the data is prepared once into --cache, shared with levers.py),
and prints one JSON line: each signal's Kendall tau, Spearman rho, precision at the top 10% and the
true accuracy of the cell it scores best (``pick_acc``: a search by that signal alone over these
cells), and the same for every equal-weight rank ensemble (rnas.search.ranking.combined_scores) of 2 or 3
signals, with the cells' mean and best true accuracy, N, the seed and the seconds per cell.

The protocol is enforced (rnas.judging.truth.Judging): a tuning seed is judged against the validation
column, any other seed against the test column, so settings chosen here on tuning seeds never
see a reported number.
"""
from __future__ import annotations

import argparse
import itertools
import json
import random
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pandas as pd
import torch

from benchmarks.nb201_supernet.levers import add_data_arguments, load_resized, nb201_signals, prepared
from rnas.networks.nb201 import NB201Config
from rnas.judging.oracle import TableOracle
from rnas.search.ranking import combined_scores, rank_percentiles
from rnas.search.signals import SIGNALS
from rnas.spaces.nb201 import NB201Space
from rnas.judging.truth import Judging, TruthConfig, ranking, reference_cells, true_accuracies


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_data_arguments(parser)
    parser.add_argument("--cells", type=int, default=200)
    parser.add_argument("--random", action="store_true", help="random cells drawn with --seed, not the reference cells")
    parser.add_argument("--seed", type=int, default=100,
                        help="the cells' weights and the batch; a tuning seed (100 and up) judges on validation")
    parser.add_argument("--batch-size", type=int, default=128, help="NASWOT's batch in Mellor et al.")
    parser.add_argument("--channels", type=int, default=16)
    parser.add_argument("--cells-per-stage", type=int, default=5)
    parser.add_argument("--resolution", type=int, default=32, help="images resized to this side")
    parser.add_argument("--signals", nargs="+", default=list(SIGNALS), choices=list(SIGNALS))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--scores-out", help="also write each cell's signals and accuracy here (CSV)")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    space = NB201Space()
    judging = Judging.of(args.seed, TruthConfig())
    oracle = TableOracle.from_csv(args.table, space, judging.column, judging.column)
    train = load_resized(prepared(args), "train", args.resolution)
    drawn = (space.sample_unique(args.cells, random.Random(args.seed)) if args.random
             else reference_cells(space, args.cells, args.seed))
    cells = [space.to_str(c) for c in drawn]
    child = NB201Config(cells_per_stage=args.cells_per_stage, channels=args.channels)
    start, cpu_start = time.perf_counter(), time.process_time()
    scores = nb201_signals(train, cells, child, args.batch_size, args.signals, args.seed)
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    truth = true_accuracies(oracle, [space.from_str(c) for c in cells])
    if args.scores_out:
        pd.DataFrame(scores).assign(arch=cells, truth=truth).to_csv(args.scores_out, index=False)
    # percentiles, not scores: naswot's -inf (a singular kernel) is then the lowest rank, not a NaN in tau
    ranked = {name: rank_percentiles(values) for name, values in scores.items()}
    ensembles = {"+".join(members): combined_scores(ranked, dict.fromkeys(members, 1.0))
                 for size in (2, 3) for members in itertools.combinations(args.signals, size)}
    quality = {name: {**{k: round(v, 4) for k, v in ranking(values, truth).items() if k != "n"},
                      "pick_acc": truth[max(range(len(values)), key=values.__getitem__)]}
               for name, values in {**ranked, **ensembles}.items()}
    print(json.dumps({"n": len(cells), "cells": "random" if args.random else "reference", "seed": args.seed,
                      "role": judging.role, "column": judging.column,
                      "mean_acc": round(sum(truth) / len(truth), 3), "max_acc": max(truth),
                      "channels": args.channels, "cells_per_stage": args.cells_per_stage,
                      "resolution": args.resolution, "batch_size": args.batch_size, "threads": args.threads,
                      "seconds_per_cell": round(seconds / len(cells), 3),
                      "cpu_seconds_per_cell": round(cpu_seconds / len(cells), 3), "signals": quality}))

if __name__ == "__main__":
    main()
