"""MRAS sampler throughput with a predictor of the pipeline's size: one JSON line.

    python benchmarks/bench_mras.py --T 20 --d 96 --N 100 --K 50 [--device cpu]
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from benchmarks.common import base_parser, peak_memory, print_result, setup, synchronize
from rnas.search.controller import ControllerConfig, build_controller
from rnas.spaces import get_space
from rnas.strategies.rnas import MRASConfig, mras_search


def main() -> None:
    parser = base_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--T", type=int, default=20, help="encoder steps (CNN space: 20)")
    parser.add_argument("--d", type=int, default=96, help="encoder hidden size")
    parser.add_argument("--N", type=int, default=100, help="samples per iteration")
    parser.add_argument("--K", type=int, default=50, help="iterations")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    device, _ = setup(args)
    space = get_space("nao_cnn")
    if args.T != space.n_steps:
        parser.error(f"--T must be {space.n_steps} for the nao_cnn space's encoder")
    controller = build_controller(space, ControllerConfig(hidden=args.d), seed=args.seed).to(device).eval()
    init = torch.randn(args.N, args.T * args.d, device=device)
    cfg = MRASConfig(iterations=args.K, samples=args.N, max_samples=args.N)  # fixed N: comparable throughput

    @torch.no_grad()
    def objective(x: torch.Tensor) -> torch.Tensor:
        return controller.predict(x.view(-1, args.T, args.d))

    times, scored = [], 0
    for repeat in range(args.repeats + 1):  # the first run warms up
        synchronize(device)
        start = time.perf_counter()
        result = mras_search(objective, init, cfg, torch.Generator().manual_seed(repeat))
        synchronize(device)
        if repeat:
            times.append(time.perf_counter() - start)
            scored = sum(row["n_samples"] + 1 for row in result.trace)
    seconds = min(times)
    print_result({"benchmark": "mras", "device": str(device), "T": args.T, "d": args.d, "N": args.N, "K": args.K,
                  "threads": torch.get_num_threads(), "seconds": round(seconds, 4),
                  "samples_scored_per_s": round(scored / seconds), **peak_memory(device)})


if __name__ == "__main__":
    main()
