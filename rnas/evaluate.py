"""Evaluate a trained model on a prepared split: accuracy, size, FLOPs and latency of an image
model; loss, perplexity, size and latency of a language model.

Also a command, for any dataset the prepare stage understands (an image model uses its own
normalisation, whatever the data's statistics; a language model needs the corpus it was trained on):

    python -m rnas.evaluate --model artifacts/retrain/model.pt --dataset imagefolder --root DIR [--split test]
    python -m rnas.evaluate --model artifacts/retrain/model.pt --dataset ptb --root DIR [--split test]
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Sequence

import torch

from rnas.config import from_dict
from rnas.data.images import ImageBatches, ImageSplit, load_split
from rnas.data.prepare import DataConfig, prepare_dataset
from rnas.data.text import TextDataConfig, load_prepared_corpus, prepare_corpus
from rnas.device import resolve_device
from rnas.errors import DataError, run_command
from rnas.export import load_model
from rnas.networks import count_parameters, flops_per_image
from rnas.training.child import evaluate_classifier
from rnas.training.language_model import evaluate_language_model


def with_model_normalisation(split: ImageSplit, card: dict) -> ImageSplit:
    if list(split.classes) != list(card["classes"]):
        raise DataError(f"the data's classes {split.classes} differ from the model's {card['classes']}")
    return ImageSplit(split.images, split.labels, split.classes, tuple(card["mean"]), tuple(card["std"]))


@torch.no_grad()
def latency_ms(model: Callable[[torch.Tensor], object], example: torch.Tensor, repeats: int) -> float:
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


def evaluate_text_model(model: torch.nn.Module, card: dict, vocab: Sequence[str], ids: torch.Tensor,
                        device: torch.device, batch_size: int = 10, latency_batch_size: int = 1,
                        latency_repeats: int = 20) -> dict:
    """A language model (``rnas.export`` card) on the word stream ``ids`` of a corpus with ``vocab``;
    latency is of one window of the model's ``bptt`` words in ``latency_batch_size`` columns."""
    if list(vocab) != list(card["vocab"]):
        raise DataError("the corpus's vocabulary differs from the model's: evaluate on the corpus it was trained on")
    model = model.to(device).eval()
    quality = evaluate_language_model(model, ids, batch_size, card["bptt"])
    window = ids[:card["bptt"] * latency_batch_size].view(latency_batch_size, -1).t().to(device)
    return {"loss": quality["loss"], "perplexity": quality["perplexity"], "tokens": len(ids),
            "params_m": count_parameters(model) / 1e6,
            "latency_ms": latency_ms(lambda tokens: model(tokens, model.init_hidden(latency_batch_size)), window,
                                     latency_repeats),
            "latency_batch_size": latency_batch_size, "window": card["bptt"]}


def _image_metrics(model: torch.nn.Module, card: dict, args: argparse.Namespace, folder: Path) -> dict:
    prepare_dataset(from_dict(DataConfig, {"dataset": args.dataset, "root": args.root}, "data"), folder)
    return evaluate_model(model, card, load_split(folder, args.split), resolve_device(args.device), args.batch_size)


def _text_metrics(model: torch.nn.Module, card: dict, args: argparse.Namespace, folder: Path) -> dict:
    data_cfg = from_dict(TextDataConfig, {"dataset": args.dataset, "root": args.root, "allow_missing_test": True},
                         "data")
    prepare_corpus(data_cfg, folder)
    corpus = load_prepared_corpus(folder)
    return {**evaluate_text_model(model, card, corpus.vocab, getattr(corpus, args.split),
                                  resolve_device(args.device), args.batch_size),
            "test_is_valid": corpus.test_is_valid}


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rnas.evaluate", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="a model file written by the retrain stage")
    parser.add_argument("--dataset", required=True, choices=["digits", "cifar10", "imagefolder", "ptb"])
    parser.add_argument("--root", help="the dataset's folder or .tar.gz (cifar10, imagefolder, ptb)")
    parser.add_argument("--split", default="test", choices=["train", "valid", "test"])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batch-size", type=positive_int, default=None,
                        help="default: 256 images, or 10 columns of text")
    args = parser.parse_args(argv)

    def evaluate() -> None:
        model, card = load_model(args.model)
        language = card.get("task") == "language"
        args.batch_size = args.batch_size or (10 if language else 256)
        with tempfile.TemporaryDirectory() as tmp:
            metrics = (_text_metrics if language else _image_metrics)(model, card, args, Path(tmp) / "data")
        print(json.dumps({"model": args.model, "dataset": args.dataset, "split": args.split, **metrics}))

    return run_command(evaluate)


if __name__ == "__main__":
    sys.exit(main())
