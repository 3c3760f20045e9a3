"""Throughput of the weight-sharing supernet: one architecture sampled per step.

    python benchmarks/bench_supernet.py --batch 64 --cells-per-stage 3 --channels 20

Prints one JSON line: train_images_per_s (forward, backward, grad clip, SGD step),
eval_images_per_s (forward without gradients), both also per second of CPU time (see
common.images_per_second), peak memory, and the GFLOPs of one step of the
first sampled architecture (FlopCounterMode: convolutions and matmuls, recomputation included).
"""
from __future__ import annotations

import random
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch
import torch.nn.functional as F

from benchmarks.common import (base_parser, gflops, images_per_second, peak_memory, print_result,
                               random_batch, setup)
from rnas.device import autocast
from rnas.networks import SupernetCIFAR, SupernetConfig
from rnas.spaces.nao_cnn import NAOCellSpace


def main() -> None:
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--cells-per-stage", type=int, default=3)
    parser.add_argument("--channels", type=int, default=20)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--steps", type=int, default=12, help="timed training steps (eval: 3x as many)")
    parser.add_argument("--warmup", type=int, default=2)
    args = parser.parse_args()
    device, memory_format = setup(args)

    space = NAOCellSpace()
    cfg = SupernetConfig(cells_per_stage=args.cells_per_stage, channels=args.channels)
    model = SupernetCIFAR(space, cfg, args.classes).to(device, memory_format=memory_format)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.025, momentum=0.9, weight_decay=3e-4)
    rng = random.Random(args.seed)
    n_archs = args.warmup + 3 * args.steps
    archs = [space.random(rng) for _ in range(n_archs)]
    images, labels = random_batch(args, device, memory_format)

    def train_step(i: int) -> None:
        # gradients freed before the forward pass leave no holes among its activations
        optimizer.zero_grad(set_to_none=True)
        with autocast(device):
            loss = F.cross_entropy(model(images, archs[i]), labels)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        optimizer.step()

    @torch.no_grad()
    def eval_step(i: int) -> None:
        with autocast(device):
            model(images, archs[i])

    model.train()
    train_ips, train_ips_cpu = images_per_second(train_step, args.steps, args.warmup, args.batch, device)
    eval_ips, eval_ips_cpu = images_per_second(eval_step, 3 * args.steps, args.warmup, args.batch, device)
    train_gflops = gflops(lambda: train_step(0))
    eval_gflops = gflops(lambda: eval_step(0))
    print_result({
        "benchmark": "supernet",
        "config": {**vars(args), "device": str(device), "threads": torch.get_num_threads()},
        "train_images_per_s": round(train_ips, 1),
        "train_images_per_cpu_s": round(train_ips_cpu, 1),
        "eval_images_per_s": round(eval_ips, 1),
        "eval_images_per_cpu_s": round(eval_ips_cpu, 1),
        "train_gflops_per_step": round(train_gflops, 2),
        "eval_gflops_per_step": round(eval_gflops, 2),
        **peak_memory(device),
    })


if __name__ == "__main__":
    main()
