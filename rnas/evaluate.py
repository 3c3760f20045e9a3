"""Evaluate a trained model: accuracy on a prepared split, size, FLOPs and latency.

Also a command, for any dataset the prepare stage understands (the model's own normalisation
is used, whatever the data's statistics):

    python -m rnas.evaluate --model artifacts/retrain/model.pt --dataset imagefolder --root DIR [--split test]
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from rnas.config import ConfigError, from_dict
from rnas.data.images import ImageBatches, ImageSplit, load_split
from rnas.data.prepare import DataConfig, prepare_dataset
from rnas.device import resolve_device
from rnas.export import load_model
from rnas.networks.child_cnn import count_parameters
from rnas.training.child import evaluate_classifier


def with_model_normalisation(split: ImageSplit, card: dict) -> ImageSplit:
    if list(split.classes) != list(card["classes"]):
        raise ValueError(f"the data's classes {split.classes} differ from the model's {card['classes']}")
    return ImageSplit(split.images, split.labels, split.classes, tuple(card["mean"]), tuple(card["std"]))


@torch.no_grad()
def latency_ms(model: torch.nn.Module, example: torch.Tensor, repeats: int) -> float:
    """Median wall time of one forward pass over ``example`` (after a warm-up pass)."""
    model(example)
    times = []
    for _ in range(repeats):
        if example.device.type == "cuda":
            torch.cuda.synchronize(example.device)
        start = time.perf_counter()
        model(example)
        if example.device.type == "cuda":
            torch.cuda.synchronize(example.device)
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


@torch.no_grad()
def flops_per_image(model: torch.nn.Module, example: torch.Tensor) -> float:
    counter = FlopCounterMode(display=False)
    with counter:
        model(example[:1])
    return counter.get_total_flops()


def evaluate_model(model: torch.nn.Module, card: dict, split: ImageSplit, device: torch.device,
                   batch_size: int = 256, latency_batch_size: int = 1, latency_repeats: int = 20) -> dict:
    model = model.to(device).eval()
    split = with_model_normalisation(split, card)
    batches = ImageBatches(split, batch_size, device, shuffle=False)
    quality = evaluate_classifier(model, batches)
    example = next(iter(ImageBatches(split, latency_batch_size, device, shuffle=False)))[0]
    return {"accuracy": quality["accuracy"], "error": 1 - quality["accuracy"], "loss": quality["loss"],
            "images": len(split), "params_m": count_parameters(model) / 1e6,
            "mflops": flops_per_image(model, example) / 1e6,
            "latency_ms": latency_ms(model, example, latency_repeats), "latency_batch_size": latency_batch_size}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rnas.evaluate", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="a model file written by the retrain stage")
    parser.add_argument("--dataset", required=True, choices=["digits", "cifar10", "imagefolder"])
    parser.add_argument("--root", help="the dataset's folder or .tar.gz (cifar10, imagefolder)")
    parser.add_argument("--split", default="test", choices=["train", "valid", "test"])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batch-size", type=int, default=256)
    args = parser.parse_args(argv)
    try:
        data_cfg = from_dict(DataConfig, {"dataset": args.dataset, "root": args.root}, "data")
        model, card = load_model(args.model)
        with tempfile.TemporaryDirectory() as tmp:
            prepare_dataset(data_cfg, Path(tmp) / "data")
            split = load_split(Path(tmp) / "data", args.split)
        metrics = evaluate_model(model, card, split, resolve_device(args.device), args.batch_size)
    except (ConfigError, FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps({"model": args.model, "dataset": args.dataset, "split": args.split, **metrics}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
