"""The pipeline's parameters (params.yaml): the blocks every task shares, typed and validated.

The blocks whose contents differ between tasks (``data.search``/``data.final``,
``warmup.supernet``/``warmup.train``, ``retrain.child``/``retrain.train``) are generic here: each
task declares, in its own module, the ``PipelineParams`` subclass that types them with its config
classes (``rnas.tasks.image.ImageParams``) and checks what only it needs. This module imports no
task, network or training code; ``rnas.tasks.parse_params`` picks the class that ``task`` names.
Every default here and in the tasks' subclasses equals conf/config.yaml and the task's
conf/task/<task>.yaml, which are the quickstart's settings (a test keeps them equal); the library's
config classes (``ChildTrainConfig``, ``MRASConfig``...) keep the published recipes as their own.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Generic, TypeVar

import torch

from rnas.config import ConfigError, from_dict, require
from rnas.search.controller import ControllerConfig, ControllerTrainConfig
from rnas.search.ranking import RankingConfig
from rnas.spaces import get_space
from rnas.strategies import available_strategies, strategy_class
from rnas.tracking import TrackingConfig
from rnas.judging.truth import MAX_REFERENCE_CELLS, TruthConfig

#: a task's config classes: its dataset, supernet, supernet training, final network, final training
DataT = TypeVar("DataT")
SupernetT = TypeVar("SupernetT")
SupernetTrainT = TypeVar("SupernetTrainT")
NetworkT = TypeVar("NetworkT")
TrainT = TypeVar("TrainT")


@dataclass(kw_only=True)
class DataParams(Generic[DataT]):
    search: DataT
    #: retrain/evaluate on another dataset (transfer, e.g. CINIC-10); null = the search dataset
    final: DataT | None = None


@dataclass(kw_only=True)
class WarmupParams(Generic[SupernetT, SupernetTrainT]):
    supernet: SupernetT
    train: SupernetTrainT
    pool_size: int = 100

    def check(self):
        require(self.pool_size >= 2, "pool_size", "must be at least 2")


@dataclass
class EmbedParams:
    controller: ControllerConfig = field(default_factory=ControllerConfig)
    train: ControllerTrainConfig = field(default_factory=lambda: ControllerTrainConfig(
        epochs=300, refit_epochs=100, batch_size=20, unlabelled=20))
    #: share of the pool held out to measure the predictor (Kendall tau) and the decoder
    holdout_fraction: float = 0.2

    def check(self):
        require(0 <= self.holdout_fraction < 1, "holdout_fraction", "must be in [0, 1)")


@dataclass
class SearchParams:
    strategy: str = "rnas"
    rounds: int = 2
    n_new: int = 20                # architectures proposed per round
    n_random: int = 5              # fresh random architectures per round (exploration)
    epochs_per_round: int = 5      # supernet training on each refreshed pool
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
    strategies: dict[str, dict[str, Any]] = field(default_factory=lambda: {
        "rnas": {"top_k": 20, "final_samples": 299,
                 "mras": {"weighting": "ce", "iterations": 50, "samples": 100, "rho": 0.05, "r": 0.1,
                          "ess_min": 0.5, "mixture": 0.0, "smoothing": 0.7}},
        "nao": {"top_k": 20, "step": 1.0}})

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
    #: trainings per candidate, each from its own seed, ranked by their mean validation score
    repeats: int = 1
    #: processes that share the trainings (each trains whole cells); None: trainer.nproc. Unlike
    #: trainer.nproc it leaves warmup and retrain on one process (on a CPU: one per core)
    processes: int | None = None

    def check(self):
        require(self.top >= 0, "top", "must be >= 0 (0: keep the supernet's pick)")
        require(self.min_distance >= 1, "min_distance", "must be >= 1 (1: the plain top by supernet score)")
        require(self.epochs > 0, "epochs", "must be positive")
        require(self.repeats >= 1, "repeats", "must be >= 1 (1: one training per candidate)")
        require(self.processes is None or self.processes >= 1, "processes", "must be >= 1, or null for trainer.nproc")


@dataclass(kw_only=True)
class RetrainParams(Generic[NetworkT, TrainT]):
    child: NetworkT
    train: TrainT
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


@dataclass(kw_only=True)
class PipelineParams(Generic[DataT, SupernetT, SupernetTrainT, NetworkT, TrainT]):
    """What every task's parameters hold. A task's subclass types ``data``, ``warmup`` and ``retrain``,
    names its ``spaces`` and adds its own checks to ``check``."""
    data: DataParams[DataT]
    warmup: WarmupParams[SupernetT, SupernetTrainT]
    retrain: RetrainParams[NetworkT, TrainT]
    seed: int = 0
    device: str = "auto"
    #: CPU threads per stage process; 0: torch's default, one per core. On cores shared with other
    #: jobs, 1 is several times faster (threads of one op wait for each other's time slices).
    #: Speed only: no stage depends on it, so changing it reruns nothing.
    threads: int = 0
    task: str = "image"            # image | language: see rnas.tasks
    space: str = "nao_cnn"         # one of the task's spaces
    trainer: TrainerParams = field(default_factory=TrainerParams)
    embed: EmbedParams = field(default_factory=EmbedParams)
    search: SearchParams = field(default_factory=SearchParams)
    rerank: RerankParams = field(default_factory=RerankParams)
    evaluate: EvaluateParams = field(default_factory=EvaluateParams)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)

    #: the task's name and search spaces (set by each task's subclass)
    TASK: ClassVar[str]
    SPACES: ClassVar[tuple[str, ...]]

    def check(self):
        require(self.task == self.TASK, "task", f"must be {self.TASK!r} for {type(self).__name__}")
        require(self.space in self.SPACES, "space",
                f"{self.space!r} is not one of {', '.join(self.SPACES)} (the spaces of task {self.task!r})")
        require(self.threads >= 0, "threads", "must be >= 0 (0: one per core)")
        require(self.seed >= 0, "seed", "must be >= 0")
        require(self.device == "auto" or _device_type(self.device) in ("cpu", "cuda"), "device",
                f"{self.device!r} is not a device: use auto, cpu, cuda or cuda:N")
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
