"""Word-level language modelling, the RNN track (docs/algorithm.md §7): the recurrent cell space on a
prepared corpus (Penn Treebank). The supernet measures each architecture's validation loss, and
lower is better: the search score is ``-valid_loss``; metrics and plots report perplexities."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from rnas.config import require
from rnas.data.text import TextDataConfig, load_prepared_corpus, prepare_corpus
from rnas.evaluate import evaluate_text_model
from rnas.export import build_language_model, language_model_card
from rnas.networks.rnn import RNNModelConfig, RNNSupernet, RNNSupernetConfig
from rnas.params import DataParams, EvaluateParams, PipelineParams, RetrainParams, WarmupParams
from rnas.tasks.base import Evaluation, Objective, Retrained, Supernet, Task
from rnas.training.language_model import LMTrainConfig, perplexity, train_language_model
from rnas.training.language_supernet import LMSupernetTrainConfig, LMSupernetTrainer


OBJECTIVE = Objective(measured="validation loss", higher_is_better=False, metric="ppl",
                      metric_label="supernet validation perplexity", to_metric=lambda score: perplexity(-score))


@dataclass(kw_only=True)
class LanguageData(DataParams[TextDataConfig]):
    search: TextDataConfig = field(default_factory=TextDataConfig)
    final: TextDataConfig | None = None


@dataclass(kw_only=True)
class LanguageWarmup(WarmupParams[RNNSupernetConfig, LMSupernetTrainConfig]):
    supernet: RNNSupernetConfig = field(default_factory=RNNSupernetConfig)
    train: LMSupernetTrainConfig = field(default_factory=LMSupernetTrainConfig)


@dataclass(kw_only=True)
class LanguageRetrain(RetrainParams[RNNModelConfig, LMTrainConfig]):
    child: RNNModelConfig = field(default_factory=RNNModelConfig)
    train: LMTrainConfig = field(default_factory=LMTrainConfig)
    train_on_valid: bool = False   # valid decides the switch to averaged SGD


@dataclass(kw_only=True)
class LanguageParams(PipelineParams[TextDataConfig, RNNSupernetConfig, LMSupernetTrainConfig, RNNModelConfig,
                                    LMTrainConfig]):
    TASK = "language"
    SPACES = ("rnn",)
    data: LanguageData = field(default_factory=LanguageData)
    warmup: LanguageWarmup = field(default_factory=LanguageWarmup)
    retrain: LanguageRetrain = field(default_factory=LanguageRetrain)
    task: str = "language"
    space: str = "rnn"
    evaluate: EvaluateParams = field(default_factory=lambda: EvaluateParams(batch_size=1))  # one test column

    def check(self):
        super().check()
        require(self.trainer.nproc == 1, "trainer.nproc",
                "the language task trains in one process (its trainers do not run under torchrun)")
        require(not self.retrain.train_on_valid, "retrain.train_on_valid",
                "must be false for the language task: validation decides the switch to averaged SGD")
        require(not self.search.ranking.signals, "search.ranking.signals",
                f"the zero-cost signals score image classifiers: task {self.task!r} has none (set it to [])")


class LanguageTask(Task[TextDataConfig, RNNSupernetConfig, LMSupernetTrainConfig, RNNModelConfig, LMTrainConfig]):
    name = "language"
    params = {"rnn": LanguageParams}
    data_unit = "tokens"
    curves = (("train_ppl", "valid_ppl"), "perplexity")

    def objective(self, params):
        return OBJECTIVE

    def prepare(self, cfg, out_dir, key, progress):
        return prepare_corpus(cfg, out_dir, progress=progress, key=key)

    def supernet(self, env, data, *, network, train, total_epochs, objective):
        corpus = load_prepared_corpus(data)
        model = RNNSupernet(env.space, network, len(corpus.vocab))
        trainer = LMSupernetTrainer(model, train, env.device, total_epochs=total_epochs, seed=env.seed)
        return Supernet(trainer, trainer.train_data(corpus.train), trainer.score_data(corpus.valid), objective)

    def retrain(self, env, arch, data, *, child, train, train_on_valid, checkpoint, fingerprint, on_epoch=None):
        corpus = load_prepared_corpus(data)  # valid is never trained on: it decides the switch to averaged SGD
        model = build_language_model(arch, child, len(corpus.vocab))
        history = train_language_model(model, train, corpus.train, corpus.valid, env.device, checkpoint,
                                       fingerprint, on_epoch=on_epoch)
        card = language_model_card(arch, child, corpus.vocab, train.bptt, env.provenance)
        return Retrained(model, card, history, delivered_epoch=history[-1]["best_epoch"])  # the best validation

    def validation_score(self, record):
        return -record["valid_loss"]

    def evaluate(self, model, card, data: Path, cfg, device):
        corpus = load_prepared_corpus(data)
        test = evaluate_text_model(model, card, corpus.vocab, corpus.test, device, cfg.batch_size,
                                   cfg.latency_batch_size, cfg.latency_repeats)
        metrics = {"test_loss": test["loss"], "test_ppl": test["perplexity"], "test_is_valid": corpus.test_is_valid,
                   "params_m": test["params_m"], "latency_ms": test["latency_ms"]}
        split = "valid (no test file)" if corpus.test_is_valid else "test"
        return Evaluation(metrics, f"{split} perplexity {test['perplexity']:.1f} (loss {test['loss']:.3f}) on "
                                   f"{test['tokens']} words, {test['params_m']:.2f}M parameters, "
                                   f"{test['latency_ms']:.1f} ms per window of {test['window']} words")


TASK = LanguageTask
