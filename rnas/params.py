"""The pipeline's parameters (params.yaml), typed and validated before any work starts.

Each block is the config dataclass of the library part that uses it, so what a stage reads
is exactly what the library takes. The blocks that differ between tasks (``data.search``,
``data.final``, ``warmup.supernet``, ``warmup.train``, ``retrain.child``, ``retrain.train``) are
typed with the config classes of the task that ``task`` names (``rnas.tasks``): ``PipelineParams``
with those of the default task, image; ``params_class(task)`` with any task's.
``load_params`` reports the first bad key in one line.
"""
from __future__ import annotations

import dataclasses
import functools
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml

from rnas.config import ConfigError, from_dict, require
from rnas.controller import ControllerConfig, ControllerTrainConfig
from rnas.data.prepare import DataConfig
from rnas.networks.child_cnn import ChildConfig
from rnas.networks.supernet_cnn import SupernetConfig
from rnas.ranking import RankingConfig
from rnas.spaces import get_space
from rnas.strategies import available_strategies, strategy_class
from rnas.tasks import available_tasks, get_task
from rnas.tracking import TrackingConfig
from rnas.training.child import ChildTrainConfig
from rnas.training.supernet import SupernetTrainConfig
from rnas.truth import MAX_REFERENCE_CELLS, TruthConfig


@dataclass
class DataParams:
    search: DataConfig = field(default_factory=DataConfig)
    #: retrain/evaluate on another dataset (transfer, e.g. CINIC-10); null = the search dataset
    final: DataConfig | None = None


@dataclass
class WarmupParams:
    pool_size: int = 1000
    supernet: SupernetConfig = field(default_factory=SupernetConfig)
    train: SupernetTrainConfig = field(default_factory=SupernetTrainConfig)

    def check(self):
        require(self.pool_size >= 2, "pool_size", "must be at least 2")


@dataclass
class EmbedParams:
    controller: ControllerConfig = field(default_factory=ControllerConfig)
    train: ControllerTrainConfig = field(default_factory=ControllerTrainConfig)
    #: share of the pool held out to measure the predictor (Kendall tau) and the decoder
    holdout_fraction: float = 0.1

    def check(self):
        require(0 <= self.holdout_fraction < 1, "holdout_fraction", "must be in [0, 1)")


@dataclass
class SearchParams:
    strategy: str = "rnas"
    rounds: int = 4
    n_new: int = 300               # architectures proposed per round
    n_random: int = 50             # fresh random architectures per round (exploration)
    epochs_per_round: int = 30     # supernet training on each refreshed pool
    top: int = 5                   # architectures reported at the end
    #: the search's own seed (strategies, fresh random cells); null: ``seed``. A search seed
    #: changes only the sample stage, so searches on one trained supernet can be repeated.
    seed: int | None = None
    #: fixed random cells (the same in every run) scored by the final supernet and written to
    #: artifacts/sample/reference.csv, for judging its ranking (evaluate.truth); the search never uses them
    reference_cells: int = 0
    #: cheap signals computed for the final pool and the reference cells, and the ranking that picks
    #: the search's top (and rerank's candidates) from the supernet's score and them
    ranking: RankingConfig = field(default_factory=RankingConfig)
    #: per-strategy options, e.g. ``rnas: {mras: {iterations: 50}}`` (the controller comes from `embed`)
    strategies: dict[str, dict[str, Any]] = field(default_factory=dict)

    def check(self):
        require(self.strategy in available_strategies(), "strategy",
                f"{self.strategy!r} is not one of {', '.join(available_strategies())}")
        for key in ("rounds", "top"):
            require(getattr(self, key) > 0, key, "must be positive")
        for key in ("n_new", "n_random", "epochs_per_round", "reference_cells"):
            require(getattr(self, key) >= 0, key, "must be >= 0")
        require(self.reference_cells <= MAX_REFERENCE_CELLS, "reference_cells", f"must be at most {MAX_REFERENCE_CELLS}")
        for name, options in self.strategies.items():
            require(name in available_strategies(), f"strategies.{name}", "is not a known strategy")
            require(isinstance(options, dict), f"strategies.{name}", "must be a mapping")

    def strategy_options(self, embed: EmbedParams) -> dict[str, Any]:
        """The chosen strategy's options, with the embedding's controller settings where it takes them."""
        options = dict(self.strategies.get(self.strategy) or {})
        fields = strategy_class(self.strategy).Config.__dataclass_fields__
        if "controller" in fields:
            options["controller"] = vars(embed.controller)
        if "train" in fields:
            options["train"] = vars(embed.train)
        return options


@dataclass
class RerankParams:
    """docs/algorithm.md §5, "optionally re-rank the top 5 by a short stand-alone training": the final
    pool's ``top`` cells by supernet score (``min_distance`` slots apart), each trained from scratch for ``epochs`` with the retrain
    network and recipe (``retrain.child``, ``retrain.train``) on the search data's training split,
    ranked by the validation split. 0: no re-ranking, the supernet's pick goes to retrain."""
    top: int = 0
    epochs: int = 10
    #: each candidate differs from every better-scored one in at least this many slots (1: the plain top)
    min_distance: int = 1

    def check(self):
        require(self.top >= 0, "top", "must be >= 0 (0: keep the supernet's pick)")
        require(self.min_distance >= 1, "min_distance", "must be >= 1 (1: the plain top by supernet score)")
        require(self.epochs > 0, "epochs", "must be positive")


@dataclass
class RetrainParams:
    child: ChildConfig = field(default_factory=ChildConfig)
    train: ChildTrainConfig = field(default_factory=ChildTrainConfig)
    #: retrain this architecture (space string) instead of the search's winner
    arch: str | None = None
    #: also train on the search's validation split (the paper trains the final net on all 50k)
    train_on_valid: bool = True


@dataclass
class EvaluateParams:
    batch_size: int = 256
    latency_batch_size: int = 1
    latency_repeats: int = 20
    #: ground truth to judge the search by (a table of every cell's true accuracy); never read by the search
    truth: TruthConfig = field(default_factory=TruthConfig)

    def check(self):
        for key in ("batch_size", "latency_batch_size", "latency_repeats"):
            require(getattr(self, key) > 0, key, "must be positive")


@dataclass
class TrainerParams:
    #: processes for warmup and retrain: > 1 relaunches those stages under torchrun
    #: (one process per GPU with NCCL, or CPU processes with gloo); same effective batch
    nproc: int = 1

    def check(self):
        require(self.nproc >= 1, "nproc", "must be at least 1")


@dataclass
class PipelineParams:
    seed: int = 0
    device: str = "auto"
    #: CPU threads per stage process; 0: torch's default, one per core. On cores shared with other
    #: jobs, 1 is several times faster (threads of one op wait for each other's time slices).
    #: Speed only: no stage depends on it, so changing it reruns nothing.
    threads: int = 0
    task: str = "image"            # image | language: see rnas.tasks
    space: str = "nao_cnn"         # one of the task's spaces
    trainer: TrainerParams = field(default_factory=TrainerParams)
    data: DataParams = field(default_factory=DataParams)
    warmup: WarmupParams = field(default_factory=WarmupParams)
    embed: EmbedParams = field(default_factory=EmbedParams)
    search: SearchParams = field(default_factory=SearchParams)
    rerank: RerankParams = field(default_factory=RerankParams)
    retrain: RetrainParams = field(default_factory=RetrainParams)
    evaluate: EvaluateParams = field(default_factory=EvaluateParams)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)

    def check(self):
        require(self.threads >= 0, "threads", "must be >= 0 (0: one per core)")
        require(self.seed >= 0, "seed", "must be >= 0")
        require(self.device == "auto" or _device_type(self.device) in ("cpu", "cuda"), "device",
                f"{self.device!r} is not a device: use auto, cpu, cuda or cuda:N")
        check_task(self.task)
        task = get_task(self.task)
        require(self.space in task.spaces, "space",
                f"{self.space!r} is not one of {', '.join(task.spaces)} (the spaces of task {self.task!r})")
        task.check(self)
        require(task.has_signals or not self.search.ranking.signals, "search.ranking.signals",
                f"the zero-cost signals score image classifiers: task {self.task!r} has none (set it to [])")
        if self.retrain.arch is not None:  # checked now, not after the whole search
            try:
                get_space(self.space).from_str(self.retrain.arch)
            except ValueError as e:
                raise ConfigError(f"retrain.arch: {e}") from None
        for key, batch in (("warmup.train.batch_size", self.warmup.train.batch_size),
                           ("retrain.train.batch_size", self.retrain.train.batch_size)):
            require(batch % self.trainer.nproc == 0, key,
                    f"{batch} must be a multiple of trainer.nproc ({self.trainer.nproc}): ranks split each batch")
        s, pool = self.search, self.warmup.pool_size
        require(s.n_new + s.n_random < pool, "search.n_new",
                f"n_new + n_random ({s.n_new} + {s.n_random}) must be smaller than warmup.pool_size ({pool})")
        require(s.top <= pool, "search.top", f"must be at most warmup.pool_size ({pool})")
        require(self.rerank.top <= pool, "rerank.top", f"must be at most warmup.pool_size ({pool})")
        # validate the chosen strategy's options now, not rounds into the search
        from_dict(strategy_class(s.strategy).Config, s.strategy_options(self.embed),
                  f"search.strategies.{s.strategy}")


def _device_type(name: str) -> str | None:
    try:
        return torch.device(name).type
    except RuntimeError:
        return None


@functools.cache
def params_class(task: str) -> type[PipelineParams]:
    """``PipelineParams`` with the task-specific blocks typed by ``task``'s config classes."""
    configs = get_task(task).configs
    data = _retyped(DataParams, search=(configs.data, field(default_factory=configs.data)),
                    final=(configs.data | None, field(default=None)))
    warmup = _retyped(WarmupParams, supernet=(configs.supernet, field(default_factory=configs.supernet)),
                      train=(configs.supernet_train, field(default_factory=configs.supernet_train)))
    retrain = _retyped(RetrainParams, child=(configs.network, field(default_factory=configs.network)),
                       train=(configs.train, field(default_factory=configs.train)))
    return _retyped(PipelineParams, data=(data, field(default_factory=data)),
                    warmup=(warmup, field(default_factory=warmup)), retrain=(retrain, field(default_factory=retrain)))


def _retyped(base: type, **fields: tuple[Any, Any]) -> type:
    """A subclass of the dataclass ``base`` whose ``fields`` (name -> (type, default)) are retyped."""
    cls = dataclasses.make_dataclass(base.__name__, [(name, tp, default) for name, (tp, default) in fields.items()],
                                     bases=(base,))
    cls.__module__ = base.__module__
    return cls


def parse_params(data: Any) -> PipelineParams:
    """Validated parameters from the nested dict of params.yaml (ConfigError naming the first bad key)."""
    task = data.get("task", PipelineParams.task) if isinstance(data, dict) else PipelineParams.task
    check_task(task)
    return from_dict(params_class(task), data)


def check_task(name: Any) -> None:
    require(name in available_tasks(), "task", f"{name!r} is not one of {', '.join(available_tasks())}")


def load_params(path: str | os.PathLike = "params.yaml") -> PipelineParams:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"parameters file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ConfigError(f"{path} is not valid YAML ({' '.join(str(e).split())})") from None
    return parse_params(data or {})

