"""Image classification, the CNN track (docs/algorithm.md §1-§6): the NAO cell space or the
NAS-Bench-201 cell space on prepared image splits; supernet score = accuracy on fixed validation
batches (higher is better)."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import torch

from rnas.config import from_dict, require
from rnas.data.images import AugmentConfig, ImageBatches, ImageSplit, load_split
from rnas.data.prepare import DataConfig, prepare_dataset
from rnas.evaluate import evaluate_model
from rnas.export import build_network, model_card
from rnas.networks.child_cnn import ChildConfig
from rnas.networks import SUPERNETS, NB201Config
from rnas.networks.supernet_cnn import SupernetConfig
from rnas.params import DataParams, PipelineParams, RetrainParams, WarmupParams
from rnas.search.ranking import signal_scores
from rnas.tasks.base import Evaluation, Objective, Retrained, Supernet, Task
from rnas.training.child import ChildTrainConfig, child_batches, train_child
from rnas.training.supernet import SupernetTrainConfig, SupernetTrainer


#: per ``warmup.train.score_by``
OBJECTIVES = {
    "accuracy": Objective(measured="validation accuracy", higher_is_better=True, metric=None,
                          metric_label="supernet validation accuracy"),
    "loss": Objective(measured="validation loss", higher_is_better=False, metric=None,
                      metric_label="supernet score (-validation loss)"),
}


def joined(a: ImageSplit, b: ImageSplit) -> ImageSplit:
    return ImageSplit(torch.cat([a.images, b.images]), torch.cat([a.labels, b.labels]), a.classes, a.mean, a.std)


# The defaults are the quickstart's (conf/task/image.yaml and, for the NB201 space, conf/task/nb201.yaml);
# the config classes keep the published recipes.
@dataclass(kw_only=True)
class ImageData(DataParams[DataConfig]):
    search: DataConfig = field(default_factory=lambda: DataConfig(valid_fraction=0.15, test_fraction=0.15))
    final: DataConfig | None = None


def quickstart_supernet_train() -> SupernetTrainConfig:
    return SupernetTrainConfig(epochs=20, batch_size=32, eval_batches=1, eval_batch_size=256,
                               augment=AugmentConfig(crop_padding=1, flip=False))


def quickstart_child_train() -> ChildTrainConfig:
    return ChildTrainConfig(epochs=15, batch_size=64, lr_max=0.05, drop_path_prob=0.1,
                            augment=AugmentConfig(crop_padding=1, flip=False))


@dataclass(kw_only=True)
class ImageWarmup(WarmupParams[SupernetConfig, SupernetTrainConfig]):
    supernet: SupernetConfig = field(default_factory=lambda: SupernetConfig(cells_per_stage=1, channels=16))
    train: SupernetTrainConfig = field(default_factory=quickstart_supernet_train)


@dataclass(kw_only=True)
class ImageRetrain(RetrainParams[ChildConfig, ChildTrainConfig]):
    child: ChildConfig = field(default_factory=lambda: ChildConfig(cells_per_stage=2, channels=16,
                                                                   classifier_dropout=0.0))
    train: ChildTrainConfig = field(default_factory=quickstart_child_train)


@dataclass(kw_only=True)
class NB201Warmup(WarmupParams[NB201Config, SupernetTrainConfig]):
    supernet: NB201Config = field(default_factory=lambda: NB201Config(cells_per_stage=1, channels=16))
    train: SupernetTrainConfig = field(default_factory=quickstart_supernet_train)


@dataclass(kw_only=True)
class NB201Retrain(RetrainParams[NB201Config, ChildTrainConfig]):
    child: NB201Config = field(default_factory=lambda: NB201Config(cells_per_stage=2, channels=16))
    # the NB201 network has neither drop-path nor an auxiliary head
    train: ChildTrainConfig = field(default_factory=lambda: dataclasses.replace(
        quickstart_child_train(), drop_path_prob=0.0, auxiliary_weight=0.0))


@dataclass(kw_only=True)
class ImageParams(PipelineParams[DataConfig, SupernetConfig, SupernetTrainConfig, ChildConfig, ChildTrainConfig]):
    """The NAO cell space (``space: nao_cnn``), conf/task/image.yaml."""
    TASK = "image"
    SPACES = ("nao_cnn",)
    data: ImageData = field(default_factory=ImageData)
    warmup: ImageWarmup = field(default_factory=ImageWarmup)
    retrain: ImageRetrain = field(default_factory=ImageRetrain)

    def check(self):
        super().check()
        check_image_search(self)


@dataclass(kw_only=True)
class NB201Params(PipelineParams[DataConfig, NB201Config, SupernetTrainConfig, NB201Config, ChildTrainConfig]):
    """The NAS-Bench-201 cell space (``space: nb201``), whose networks have their own config:
    conf/task/nb201.yaml."""
    TASK = "image"
    SPACES = ("nb201",)
    space: str = "nb201"
    data: ImageData = field(default_factory=ImageData)
    warmup: NB201Warmup = field(default_factory=NB201Warmup)
    retrain: NB201Retrain = field(default_factory=NB201Retrain)

    def check(self):
        super().check()
        require(self.retrain.train.drop_path_prob == 0, "retrain.train.drop_path_prob",
                "must be 0 for space nb201 (its network has no drop-path)")
        check_image_search(self)


def check_image_search(params: ImageParams | NB201Params) -> None:
    """What both spaces' searches need, checked before any work."""
    signal_network(params)  # a bad key in search.ranking.child is reported now, not after the search
    require(params.rerank.top == 0 or params.data.search.valid_fraction > 0, "rerank.top",
            "re-ranking needs a validation split: set data.search.valid_fraction > 0, or rerank.top: 0")


class ImageTask(Task[DataConfig, SupernetConfig | NB201Config, SupernetTrainConfig, ChildConfig | NB201Config,
                     ChildTrainConfig]):
    name = "image"
    params = {"nao_cnn": ImageParams, "nb201": NB201Params}
    data_unit = "images"
    curves = (("train_accuracy", "valid_accuracy"), "accuracy")

    def objective(self, params):
        return OBJECTIVES[params.warmup.train.score_by]

    def prepare(self, cfg, out_dir, key, progress):
        return prepare_dataset(cfg, out_dir, progress=progress, key=key)

    def supernet(self, env, data, *, network, train, total_epochs, objective):
        train_split, valid = load_split(data, "train"), load_split(data, "valid")
        model = SUPERNETS[env.space.name](env.space, network, num_classes=len(train_split.classes),
                                          in_channels=train_split.images.shape[1])
        trainer = SupernetTrainer(model, train, env.device, total_epochs=total_epochs, seed=env.seed, dist=env.dist)
        return Supernet(trainer, trainer.train_batches(train_split, env.seed), trainer.score_batches(valid), objective)

    def retrain(self, env, arch, data, *, child, train, train_on_valid, checkpoint, fingerprint, on_epoch=None):
        train_split = load_split(data, "train")
        valid = load_split(data, "valid") if (data / "valid.pt").exists() else None
        if train_on_valid and valid is not None:
            train_split, valid = joined(train_split, valid), None
        model = build_network(arch, child, len(train_split.classes), train_split.images.shape[1], env.space.name)
        history = train_child(model, train, child_batches(train_split, train, env.dist, train=True, seed=env.seed),
                              child_batches(valid, train, env.dist, train=False) if valid is not None else None,
                              env.device, checkpoint, fingerprint, dist=env.dist, on_epoch=on_epoch)
        card = model_card(env.space.name, arch, child, len(train_split.classes), train_split.images.shape[1],
                          train_split.classes, train_split.mean, train_split.std, env.provenance)
        return Retrained(model, card, history, delivered_epoch=len(history))  # the last epoch, as image recipes do

    def validation_score(self, record):
        return record["valid_accuracy"]

    def cheap_signals(self, params, space_name, data, archs, device, seed, progress=None):
        ranking = params.search.ranking
        train = load_split(data, "train")
        # one batch drawn by the seed, without augmentation: every cell sees the same images
        images, labels = next(iter(ImageBatches(train, ranking.batch_size, device, shuffle=True, seed=seed)))
        child = signal_network(params)
        return signal_scores(lambda arch: build_network(arch, child, len(train.classes), train.images.shape[1],
                                                        space_name).to(device),
                             archs, images, labels, ranking.signals, seed, progress)

    def evaluate(self, model, card, data: Path, cfg, device):
        test = evaluate_model(model, card, load_split(data, "test"), device, cfg.batch_size,
                              cfg.latency_batch_size, cfg.latency_repeats)
        metrics = {"test_accuracy": test["accuracy"], "test_error": test["error"], "test_loss": test["loss"],
                   "params_m": test["params_m"], "mflops": test["mflops"], "latency_ms": test["latency_ms"]}
        return Evaluation(metrics, f"test accuracy {test['accuracy']:.2%} on {test['images']} images, "
                                   f"{test['params_m']:.2f}M parameters, {test['mflops']:.1f} MFLOPs, "
                                   f"{test['latency_ms']:.1f} ms")


def signal_network(params: ImageParams | NB201Params) -> ChildConfig | NB201Config:
    """The network the signals score a cell in: ``retrain.child`` with ``search.ranking.child``'s keys replaced."""
    child = params.retrain.child
    return from_dict(type(child), {**dataclasses.asdict(child), **params.search.ranking.child}, "search.ranking.child")


TASK = ImageTask
