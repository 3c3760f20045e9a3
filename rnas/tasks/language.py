"""Word-level language modelling, the RNN track (docs/algorithm.md §7): the recurrent cell space on a
prepared corpus (Penn Treebank). The supernet measures each architecture's validation loss, and
lower is better: the search score is ``-valid_loss``; metrics and plots report perplexities."""
from __future__ import annotations

from pathlib import Path

from rnas.config import require
from rnas.data.text import TextDataConfig, load_prepared_corpus, prepare_corpus
from rnas.evaluate import evaluate_text_model
from rnas.export import build_language_model, language_model_card
from rnas.networks.rnn import RNNModelConfig, RNNSupernet, RNNSupernetConfig
from rnas.tasks.base import Evaluation, Objective, Retrained, Supernet, Task, TaskConfigs
from rnas.training.language_model import LMTrainConfig, perplexity, train_language_model
from rnas.training.language_supernet import LMSupernetTrainConfig, LMSupernetTrainer


OBJECTIVE = Objective(measured="validation loss", higher_is_better=False, metric="ppl",
                      metric_label="supernet validation perplexity", to_metric=lambda score: perplexity(-score))


class LanguageTask(Task):
    name = "language"
    spaces = ("rnn",)
    configs = TaskConfigs(data=TextDataConfig, supernet=RNNSupernetConfig, supernet_train=LMSupernetTrainConfig,
                          network=RNNModelConfig, train=LMTrainConfig)
    data_unit = "tokens"
    curves = (("train_ppl", "valid_ppl"), "perplexity")

    def check(self, params):
        require(params.trainer.nproc == 1, "trainer.nproc",
                "the language task trains in one process (its trainers do not run under torchrun)")
        require(not params.retrain.train_on_valid, "retrain.train_on_valid",
                "must be false for the language task: validation decides the switch to averaged SGD")

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
