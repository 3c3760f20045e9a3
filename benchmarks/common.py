"""Shared benchmark helpers: command-line options, timing, peak memory, FLOPs, one JSON line."""
from __future__ import annotations

import argparse
import ctypes
import json
import os
import resource
import sys
import time
from typing import Callable

import torch
from torch.utils.flop_counter import FlopCounterMode

from rnas.device import resolve_device


def base_parser(description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--device", default="auto", help="auto (CUDA if available), cpu, cuda or cuda:N")
    parser.add_argument("--threads", type=int, default=1,
                        help="CPU intra-op threads (default 1: on a CPU shared with other jobs, OpenMP "
                             "threads wait on each other; 0 keeps torch's default)")
    parser.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=True,
                        help="NHWC model and inputs (default: on)")
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tune-allocator", action=argparse.BooleanOptionalAction, default=True,
                        help="keep freed memory in the heap for reuse (default: on; see reuse_freed_memory)")
    return parser


def reuse_freed_memory() -> bool:
    """Ask glibc malloc to keep freed blocks up to 32 MB (its ceiling) in the heap for reuse.

    PyTorch allocates CPU activations with malloc; glibc serves large blocks with fresh mmaps
    and trims freed heap back to the OS, so activations are page-faulted in again and again
    (here a ReLU on a 16 MB tensor took 6.5 ms instead of 1 ms; a supernet training step ~7%
    longer). Returns whether glibc accepted.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3
    return bool(libc.mallopt(m_mmap_threshold, 32 * 2**20)) and bool(libc.mallopt(m_trim_threshold, 2**30))


def setup(args: argparse.Namespace) -> tuple[torch.device, torch.memory_format]:
    """Tune the allocator if asked, seed, and pick the device and memory format asked for."""
    args.tune_allocator = args.tune_allocator and reuse_freed_memory()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    device = resolve_device(args.device)
    return device, torch.channels_last if args.channels_last else torch.contiguous_format


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


def peak_memory(device: torch.device) -> dict[str, float]:
    """Peak resident memory of this process (MB) and, on CUDA, peak allocated device memory."""
    out = {"peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}
    if device.type == "cuda":
        out["cuda_peak_mb"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    return out


def print_result(result: dict) -> None:
    """One JSON line; the 1-minute load average says how shared the machine was."""
    print(json.dumps({**result, "load_avg_1min": round(os.getloadavg()[0], 2)}), flush=True)
