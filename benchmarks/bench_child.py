"""Training throughput of the final network of one architecture.

    python benchmarks/bench_child.py --batch 128 --cells-per-stage 6 --channels 36

The architecture is sampled with the seed (``--arch`` gives one instead). Prints one JSON
line: train_images_per_s (forward with auxiliary head, backward, grad clip, SGD step), also
per second of CPU time (see common.images_per_second), params_m (without the auxiliary
head), peak memory and the GFLOPs of one step.
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
from rnas.networks import ChildConfig, NetworkCIFAR, count_parameters
from rnas.spaces.nao_cnn import NAOCellSpace

AUXILIARY_WEIGHT = 0.4
DROP_PATH_PROB = 0.2


def main() -> None:
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--cells-per-stage", type=int, default=6)
    parser.add_argument("--channels", type=int, default=36)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--arch", default=None, help="architecture string (default: random with --seed)")
    parser.add_argument("--steps", type=int, default=4, help="timed training steps")
    parser.add_argument("--warmup", type=int, default=1)
    args = parser.parse_args()
    device, memory_format = setup(args)

    space = NAOCellSpace()
    arch = space.from_str(args.arch) if args.arch else space.random(random.Random(args.seed))
    cfg = ChildConfig(cells_per_stage=args.cells_per_stage, channels=args.channels)
    model = NetworkCIFAR(space, arch, cfg, args.classes).to(device, memory_format=memory_format)
    model.drop_path_prob = DROP_PATH_PROB
    optimizer = torch.optim.SGD(model.parameters(), lr=0.025, momentum=0.9, weight_decay=3e-4)
    images, labels = random_batch(args, device, memory_format)

    def train_step(_: int) -> None:
        optimizer.zero_grad(set_to_none=True)
        with autocast(device):
            logits, aux_logits = model(images)
            loss = F.cross_entropy(logits, labels) + AUXILIARY_WEIGHT * F.cross_entropy(aux_logits, labels)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        optimizer.step()

    model.train()
    train_ips, train_ips_cpu = images_per_second(train_step, args.steps, args.warmup, args.batch, device)
    train_gflops = gflops(lambda: train_step(0))
    print_result({
        "benchmark": "child",
        "config": {**vars(args), "arch": space.to_str(arch), "device": str(device),
                   "threads": torch.get_num_threads()},
        "train_images_per_s": round(train_ips, 1),
        "train_images_per_cpu_s": round(train_ips_cpu, 1),
        "params_m": round(count_parameters(model) / 1e6, 3),
        "train_gflops_per_step": round(train_gflops, 2),
        **peak_memory(device),
    })


if __name__ == "__main__":
    main()
