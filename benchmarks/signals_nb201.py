"""How well the zero-cost signals (rnas.signals) rank NAS-Bench-201 cells, judged by the table.

    python benchmarks/signals_nb201.py --data ../shared/data/cifar10-train-jpg.tar.gz \
        --table ../shared/data/nb201/cifar10.csv --cells 200 --seed 0

Draws --cells random cells with --seed, builds each as the table's network (rnas.networks.nb201 at
the published size, C=16 and N=5, freshly initialised from the seed and the cell's index), scores
it with every signal on one batch of --batch-size CIFAR-10 training images (drawn with --seed, no
augmentation, normalised with the prepared training split's mean and std as the pipeline does; the
data is prepared once into --cache, shared with levers.py), and prints one JSON line: each signal's
Kendall tau, Spearman rho and precision at the top 10% against --column, with N, the seed and the
seconds per cell (wall and CPU). The default column is the one a search may select on; settings
must never be chosen on ``test_acc_200ep``.
"""
from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pandas as pd
import torch

from benchmarks.nb201_supernet.levers import add_data_arguments, prepared
from rnas.data.images import ImageBatches, epoch_seed, load_split
from rnas.export import build_network
from rnas.networks.child_cnn import ChildConfig
from rnas.oracle import TableOracle
from rnas.signals import SIGNALS, score_networks
from rnas.spaces.nb201 import NB201Space
from rnas.truth import ranking, true_accuracies


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_data_arguments(parser)
    parser.add_argument("--column", default="valid_acc_200ep", help="the table's accuracy to rank against")
    parser.add_argument("--cells", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0, help="draws the cells, their weights and the batch")
    parser.add_argument("--batch-size", type=int, default=128, help="NASWOT's batch in Mellor et al.")
    parser.add_argument("--channels", type=int, default=16)
    parser.add_argument("--cells-per-stage", type=int, default=5)
    parser.add_argument("--signals", nargs="+", default=list(SIGNALS), choices=list(SIGNALS))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--scores-out", help="also write each cell's signals and accuracy here (CSV)")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    space, device = NB201Space(), torch.device("cpu")
    oracle = TableOracle.from_csv(args.table, space, args.column, args.column)
    train = load_split(prepared(args), "train")
    images, labels = next(iter(ImageBatches(train, args.batch_size, device, shuffle=True, seed=args.seed)))
    cells = space.sample_unique(args.cells, random.Random(args.seed))
    child = ChildConfig(cells_per_stage=args.cells_per_stage, channels=args.channels, stem_multiplier=1,
                        auxiliary=False, classifier_dropout=0.0)

    def networks():
        for index, cell in enumerate(cells):
            torch.manual_seed(epoch_seed(args.seed, index))  # a cell's weights do not depend on the cells before it
            yield build_network(space.to_str(cell), child, len(train.classes), train.images.shape[1], "nb201")

    start, cpu_start = time.perf_counter(), time.process_time()
    scores = pd.DataFrame(score_networks(networks(), images, labels, args.signals))
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    truth = true_accuracies(oracle, cells)
    if args.scores_out:
        scores.assign(arch=[space.to_str(c) for c in cells], truth=truth).to_csv(args.scores_out, index=False)
    # ranks, not scores: naswot's -inf (a singular kernel) is then the lowest rank, not a NaN in tau
    quality = {name: {k: round(v, 4) for k, v in ranking(scores[name].rank().tolist(), truth).items() if k != "n"}
               for name in args.signals}
    print(json.dumps({"n": len(cells), "seed": args.seed, "column": args.column, "channels": args.channels,
                      "cells_per_stage": args.cells_per_stage, "batch_size": len(labels), "threads": args.threads,
                      "seconds_per_cell": round(seconds / len(cells), 2),
                      "cpu_seconds_per_cell": round(cpu_seconds / len(cells), 2), "signals": quality}))


if __name__ == "__main__":
    main()
