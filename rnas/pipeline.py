"""What every pipeline stage does around its own work.

A stage script is ``@stage_main("name") def main(ctx): ...``: parameters are loaded and
validated before any work, seeds are set, the device is resolved, the stage is tracked, and
a bad parameter or missing input ends the stage with one line naming it.
"""
from __future__ import annotations

import dataclasses
import functools
import random
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from rnas.artifacts import write_json
from rnas.config import ConfigError
from rnas.data.images import ImageSplit
from rnas.device import resolve_device
from rnas.networks.supernet_cnn import SupernetCIFAR
from rnas.params import PipelineParams, load_params
from rnas.spaces import SearchSpace, get_space
from rnas.tracking import StageRun, stage_run
from rnas.training.supernet import SupernetTrainer

PREPARED = Path("data/prepared")
ARTIFACTS = Path("artifacts")


@dataclass
class StageContext:
    name: str
    params: PipelineParams
    device: torch.device
    space: SearchSpace
    run: StageRun

    @property
    def out(self) -> Path:
        return ARTIFACTS / self.name

    def provenance(self) -> dict[str, Any]:
        """Recorded in every artifact: the full params and seed that made it."""
        return {"stage": self.name, "seed": self.params.seed, "params": dataclasses.asdict(self.params)}

    def write_provenance(self, folder: Path) -> None:
        write_json(folder / "provenance.json", self.provenance())


def prepared_dir(params: PipelineParams, final: bool) -> Path:
    """Where prepare wrote a dataset: ``final`` is the retrain/evaluate one (the search one by default)."""
    return PREPARED / ("final" if final and params.data.final is not None else "search")


def build_supernet_trainer(ctx: StageContext, train_split: ImageSplit) -> SupernetTrainer:
    """The supernet and its trainer, with one lr schedule spanning warmup and every search round."""
    p = ctx.params
    supernet = SupernetCIFAR(ctx.space, p.warmup.supernet, num_classes=len(train_split.classes),
                             in_channels=train_split.images.shape[1])
    total = p.warmup.train.epochs + p.search.rounds * p.search.epochs_per_round
    return SupernetTrainer(supernet, p.warmup.train, ctx.device, total_epochs=total, seed=p.seed)


def require_inputs(*paths: Path) -> None:
    missing = [str(p) for p in paths if not Path(p).exists()]
    if missing:
        raise FileNotFoundError(f"missing input {missing[0]} (run the stage that makes it: `dvc repro`)")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)


def stage_main(name: str) -> Callable[[Callable[[StageContext], None]], Callable[[], None]]:
    def decorate(body: Callable[[StageContext], None]) -> Callable[[], None]:
        @functools.wraps(body)
        def main() -> None:
            try:
                params = load_params("params.yaml")
                device = resolve_device(params.device)
                space = get_space(params.space)
                seed_everything(params.seed)
                with stage_run(name, params.tracking, Path.cwd(), dataclasses.asdict(params)) as run:
                    body(StageContext(name, params, device, space, run))
            except (ConfigError, FileNotFoundError) as e:
                print(f"error: {e}", file=sys.stderr)
                raise SystemExit(2) from None
        return main
    return decorate
