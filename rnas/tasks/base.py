"""The interface between the pipeline's stages and a task.

A task says which search spaces it builds networks for, which parameter class types its own
blocks (``params``: a ``PipelineParams`` subclass typing ``data.search``/``data.final``,
``warmup.supernet``, ``warmup.train``, ``retrain.child``, ``retrain.train`` and checking what only
the task needs), what a supernet score means (its ``Objective``), and does
the work that differs between tasks: prepare a dataset, build the supernet that trains and scores
architectures, retrain one architecture from scratch (resumably), evaluate the result. Pools,
strategies, the controller, tracking and artifacts are the same for every task.
"""
from __future__ import annotations

import dataclasses
import os
import random
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ClassVar, Generic, Sequence

import torch
from torch import nn

from rnas.data.prepare import Progress
from rnas.params import DataT, EvaluateParams, NetworkT, PipelineParams, SupernetT, SupernetTrainT, TrainT
from rnas.spaces.base import Arch, SearchSpace
from rnas.training.distributed import DistributedContext

EpochCallback = Callable[[dict[str, Any]], None]


@dataclass(frozen=True)
class Objective:
    """What a supernet score is. Scores are higher-is-better everywhere in the search (pool,
    strategies, MRAS, ranking): ``score`` makes one from what the supernet measures, negated
    when lower is better. ``to_metric`` turns a score into the quantity metrics and plots report
    (``metric``; None when that is the score itself)."""
    measured: str                  # what the supernet trainer's ``score`` returns
    higher_is_better: bool         # of ``measured``
    metric: str | None
    metric_label: str
    to_metric: Callable[[float], float] = float

    def score(self, measured: float) -> float:
        return measured if self.higher_is_better else -measured

    @property
    def score_label(self) -> str:
        return f"supernet {self.measured}" if self.higher_is_better else f"supernet score (-{self.measured})"

    def report(self, scores: dict[str, float]) -> dict[str, float]:
        """``{name: score}`` as ``{name_<metric>: value}`` (nothing when the score is the metric)."""
        if self.metric is None:
            return {}
        return {f"{name}_{self.metric}": self.to_metric(score) for name, score in scores.items()}

    def with_report(self, scores: dict[str, float]) -> dict[str, float]:
        """``scores`` and their ``report``."""
        return {**scores, **self.report(scores)}

    def report_text(self, scores: dict[str, float]) -> str:
        """``report`` to append to a log line: ``, best_ppl 123.4`` (empty when the score is the metric)."""
        return "".join(f", {name} {value:.1f}" for name, value in self.report(scores).items())


class Supernet:
    """A supernet trainer bound to the data it trains and scores on: what warmup and sample use.

    ``trainer`` is a ``SupernetTrainer`` or an ``LMSupernetTrainer`` (one interface:
    ``train_epochs``, ``score``, ``save``, ``load``); ``score`` returns search scores."""

    def __init__(self, trainer: Any, train_data: Any, score_data: Any, objective: Objective):
        self.trainer, self.train_data, self.score_data, self.objective = trainer, train_data, score_data, objective

    def train_epochs(self, archs: Sequence[Arch], n_epochs: int, on_epoch: EpochCallback | None = None,
                     label: str = "supernet") -> list[dict[str, Any]]:
        return self.trainer.train_epochs(archs, n_epochs, self.train_data, on_epoch=on_epoch, label=label)

    def score(self, archs: Sequence[Arch], label: str = "score") -> list[float]:
        return [self.objective.score(m) for m in self.trainer.score(archs, self.score_data, label=label)]

    def save(self, path: str | os.PathLike) -> None:
        self.trainer.save(path)

    def load(self, path: str | os.PathLike) -> None:
        self.trainer.load(path)


@dataclass(frozen=True)
class RunEnv:
    """What a task's training needs from the run around it, and nothing of DVC: the space, the
    device, the processes (``dist``), the run's seed and the provenance recorded with a model."""
    space: SearchSpace
    device: torch.device
    seed: int
    provenance: dict[str, Any]
    dist: DistributedContext     # this process's place among the ranks

    def alone(self) -> RunEnv:
        """This environment as one process's own: for trainings that each rank runs whole (rerank's cells)."""
        return dataclasses.replace(self, dist=DistributedContext(device=self.device))


@dataclass
class Retrained:
    model: nn.Module
    card: dict[str, Any]           # JSON-able description saved with the weights (rnas.export)
    history: list[dict[str, Any]]  # one record per epoch
    delivered_epoch: int           # 1-based: the epoch whose weights ``model`` holds

    @property
    def delivered(self) -> dict[str, Any]:
        """The record of the delivered epoch."""
        return self.history[self.delivered_epoch - 1]


@dataclass
class Evaluation:
    metrics: dict[str, Any]
    summary: str                   # one line for the log


class Task(ABC, Generic[DataT, SupernetT, SupernetTrainT, NetworkT, TrainT]):
    name: ClassVar[str]
    #: the task's parameters per search space it builds networks for (the first: the default space)
    params: ClassVar[dict[str, type[PipelineParams]]]
    #: what a prepared split's size counts ("images", "tokens")
    data_unit: ClassVar[str]
    #: columns of the retraining history drawn per epoch, and their axis label
    curves: ClassVar[tuple[tuple[str, ...], str]]

    @abstractmethod
    def objective(self, params: PipelineParams) -> Objective:
        """What the supernet's scores measure under these parameters."""

    @abstractmethod
    def prepare(self, cfg: DataT, out_dir: Path, key: str, progress: Progress) -> dict[str, Any]:
        """Write the prepared dataset of ``cfg`` (at ``key`` in the parameters) into ``out_dir``;
        return its meta, whose ``counts`` are per split and ``fingerprint`` identifies it."""

    @abstractmethod
    def supernet(self, env: RunEnv, data: Path, *, network: SupernetT, train: SupernetTrainT, total_epochs: int,
                 objective: Objective) -> Supernet:
        """A fresh supernet (``network``, recipe ``train``: the task's warmup configs) for the prepared
        data in ``data``, its learning-rate schedule spanning ``total_epochs`` (``supernet_epochs``)."""

    @abstractmethod
    def retrain(self, env: RunEnv, arch: str, data: Path, *, child: NetworkT, train: TrainT, train_on_valid: bool,
                checkpoint: Path, fingerprint: str, on_epoch: EpochCallback | None = None) -> Retrained:
        """Train ``arch`` from scratch (network ``child``, recipe ``train``: the task's retrain
        configs), checkpointing to ``checkpoint`` every epoch and resuming from it when it carries
        ``fingerprint``. ``train_on_valid``: also train on the validation split, where the task can.
        Which epoch's weights are delivered is the task's recipe (``Retrained.delivered_epoch``)."""

    def measure(self, env: RunEnv, arch: str, data: Path, *, child: NetworkT, train: TrainT, checkpoint: Path,
                fingerprint: str) -> dict[str, Any]:
        """A short training of ``arch`` from scratch on the training split alone (``retrain`` with
        ``train_on_valid`` false), seeded with ``env.seed`` whatever ran before, as rerank measures its
        candidates: the delivered epoch's ``validation_score``, its number and its ``train_*``/``valid_*``
        records. The checkpoint is removed once the training is done."""
        random.seed(env.seed)
        torch.manual_seed(env.seed)
        record = self.retrain(env, arch, data, child=child, train=train, train_on_valid=False, checkpoint=checkpoint,
                              fingerprint=fingerprint).delivered
        checkpoint.unlink(missing_ok=True)
        measured = {key: value for key, value in record.items() if key.startswith(("train_", "valid_"))}
        return {"validation_score": self.validation_score(record), "delivered_epoch": record["epoch"], **measured}

    @abstractmethod
    def validation_score(self, record: dict[str, Any]) -> float:
        """A retraining's quality on the validation split, higher is better, from the record of the
        epoch it delivered (``Retrained.delivered``)."""

    @abstractmethod
    def evaluate(self, model: nn.Module, card: dict[str, Any], data: Path, cfg: EvaluateParams,
                 device: Any) -> Evaluation:
        """The retrained model on the test split of the prepared data in ``data``."""

    def cheap_signals(self, params: PipelineParams, space_name: str, data: Path, archs: Sequence[str],
                      device: Any, seed: int, progress: Callable[[int, int], None] | None = None
                      ) -> dict[str, list[float]]:
        """The zero-cost signals ``params.search.ranking.signals`` of each cell of ``archs`` (space
        strings), on one batch of the training split of the prepared data in ``data``."""
        raise NotImplementedError(f"task {self.name} has no cheap signals")
