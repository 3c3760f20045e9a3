"""Shared benchmark helpers: command-line options, timing, peak memory, FLOPs, one JSON line."""
from __future__ import annotations

import argparse
import json
import os
import time
from typing import Callable

import torch
from torch.utils.flop_counter import FlopCounterMode

from rnas.device import peak_memory, resolve_device, reuse_freed_memory


def base_parser(description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--device", default="auto", help="auto (CUDA if available), cpu, cuda or cuda:N")
    parser.add_argument("--threads", type=int, default=0,
                        help="CPU intra-op threads (default 0: torch's default, one per core, as the stages "
                             "run; 1 is steadier on a CPU shared with other jobs)")
    parser.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=True,
                        help="NHWC model and inputs (default: on)")
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tune-allocator", action=argparse.BooleanOptionalAction, default=True,
                        help="keep freed memory in the heap for reuse (default: on; see reuse_freed_memory)")
    return parser


def setup(args: argparse.Namespace) -> tuple[torch.device, torch.memory_format]:
    """Tune the allocator if asked, seed, and pick the device and memory format asked for."""
    args.tune_allocator = args.tune_allocator and reuse_freed_memory()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    device = resolve_device(args.device)
    return device, torch.channels_last if args.channels_last else torch.contiguous_format


def random_batch(args: argparse.Namespace, device: torch.device,
                 memory_format: torch.memory_format) -> tuple[torch.Tensor, torch.Tensor]:
    """A CIFAR-shaped batch of noise (``--batch``, ``--image-size``, ``--classes``) on ``device``."""
    images = torch.randn(args.batch, 3, args.image_size, args.image_size, device=device)
    labels = torch.randint(args.classes, (args.batch,), device=device)
    return images.contiguous(memory_format=memory_format), labels


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def images_per_second(step: Callable[[int], None], steps: int, warmup: int, batch: int,
                      device: torch.device) -> tuple[float, float]:
    """Run ``step(i)`` ``warmup`` times untimed, then ``steps`` times. Returns images per
    second of wall time and per second of this process's CPU time: on a shared CPU, the latter
    with one thread is what one quiet core would do."""
    for i in range(warmup):
        step(i)
    synchronize(device)
    wall, cpu = time.perf_counter(), time.process_time()
    for i in range(warmup, warmup + steps):
        step(i)
    synchronize(device)
    images = steps * batch
    return images / (time.perf_counter() - wall), images / (time.process_time() - cpu)


def gflops(fn: Callable[[], None]) -> float:
    """GFLOPs of one call of ``fn`` (matmuls and convolutions, forward and backward)."""
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops() / 1e9


def print_result(result: dict) -> None:
    """One JSON line; the 1-minute load average says how shared the machine was."""
    print(json.dumps({**result, "load_avg_1min": round(os.getloadavg()[0], 2)}), flush=True)
