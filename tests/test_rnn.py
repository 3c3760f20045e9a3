"""The RNN track: the recurrent cell space, the supernet and final language model, their training."""
from __future__ import annotations

import copy
import itertools
import math
import random
import re

import pytest
import torch

from rnas.config import ConfigError, from_dict
from rnas.networks.rnn import RNNModel, RNNModelConfig, RNNSupernet, RNNSupernetConfig
from rnas.spaces import get_space
from rnas.spaces.rnn import NAONET_WS_PTB, RNAS_PTB, RNNCellSpace
from rnas.training import language_model
from rnas.training.language_model import LMTrainConfig, evaluate_language_model, train_language_model, window_length
from rnas.training.language_supernet import LMSupernetTrainConfig, LMSupernetTrainer

CPU = torch.device("cpu")
VOCAB = 10
HIDDEN = 16
# the period of the tiny corpus: each word's successor is fixed given the word before it
PATTERN = torch.tensor([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 3, 1, 7])
SMALL_DROPOUT = dict(dropout=0.1, dropouth=0.1, dropoutx=0.1, dropouti=0.1, dropoute=0.1)


@pytest.fixture(scope="module")
def space() -> RNNCellSpace:
    return get_space("rnn")


def stream(n_words: int, reverse: bool = False) -> torch.Tensor:
    pattern = PATTERN.flip(0) if reverse else PATTERN
    return pattern.repeat(n_words // len(pattern) + 1)[:n_words]


def every_activation_archs(space: RNNCellSpace, n: int, seed: int = 0) -> list[tuple[int, ...]]:
    """Random architectures whose nodes together use every activation."""
    rng = random.Random(seed)
    archs = [space.random(rng) for _ in range(n)]
    assert {act for arch in archs for _, act in space.nodes(arch)} == set(range(len(space.activations)))
    return archs


def reference_cell_outputs(model, arch, tokens: torch.Tensor, hidden: torch.Tensor, weight_of) -> torch.Tensor:
    """The cell of docs/algorithm.md §7 written out node by node, no dropout: outputs [T, B, H]."""
    acts = {"tanh": torch.tanh, "relu": torch.relu, "sigmoid": torch.sigmoid, "identity": lambda x: x}
    outputs = []
    for x in model.embedding(tokens):
        c0, h0 = (x @ model.input_weight + hidden @ model.hidden_weight).chunk(2, dim=-1)
        states = [hidden + torch.sigmoid(c0) * (torch.tanh(h0) - hidden)]
        for node, (pred, act) in enumerate(model.space.nodes(arch), start=1):
            c, h = (states[pred] @ weight_of(node, pred, act)).chunk(2, dim=-1)
            f = acts[model.space.activations[act]]
            states.append(states[pred] + torch.sigmoid(c) * (f(h) - states[pred]))
        hidden = torch.stack(states[1:]).mean(0)
        outputs.append(hidden)
    return torch.stack(outputs)


# --- space --------------------------------------------------------------------------------------
def test_token_layout(space):
    assert (space.name, space.seq_len, space.vocab_size) == ("rnn", 22, 16)
    assert (space.tokens_per_step, space.n_steps) == (2, 11)
    mask = space.legal_token_mask()
    assert mask[0].nonzero().flatten().tolist() == [1]                  # node 1 reads s0 only
    assert mask[1].nonzero().flatten().tolist() == [12, 13, 14, 15]     # activations
    assert mask[20].nonzero().flatten().tolist() == list(range(1, 12))  # node 11 reads s0..s10
    assert not mask[:, 0].any()


@pytest.mark.parametrize("text", [RNAS_PTB, NAONET_WS_PTB])
def test_published_cells_round_trip(space, text):
    arch = space.from_str(text)
    assert space.to_str(arch) == text
    assert space.from_tokens(space.to_tokens(arch)) == arch
    assert space.canonical(arch) == arch
    assert all(pred < node for node, (pred, _) in enumerate(space.nodes(arch), start=1))
    # read as (act, pred) pairs instead, the RNAS cell would be invalid
    swapped = [v for pair in zip(arch[1::2], arch[0::2]) for v in pair]
    assert text != RNAS_PTB or not space.is_valid(swapped)


def test_random_and_decoded_architectures_are_valid(space):
    rng = random.Random(0)
    archs = [space.random(rng) for _ in range(500)]
    assert all(space.is_valid(a) for a in archs)
    for pos, slot in enumerate(space.slots):
        assert {a[pos] for a in archs} == set(range(slot.n_choices))
    # any token sequence drawn from the legal mask decodes into a valid architecture
    mask = space.legal_token_mask()
    generator = torch.Generator().manual_seed(0)
    for _ in range(100):
        tokens = torch.multinomial(mask.float(), 1, generator=generator).flatten().tolist()
        assert space.to_tokens(space.from_tokens(tokens)) == tokens


def test_invalid_architectures_are_rejected(space):
    arch = list(space.from_str(RNAS_PTB))
    arch[2] = 2  # node 2 cannot read itself
    with pytest.raises(ValueError, match="position 2"):
        space.validate(arch)
    with pytest.raises(ValueError, match="expected 22"):
        space.validate(arch[:-2])
    with pytest.raises(ValueError, match="not a list of integers"):
        space.from_str("0 2 x")


def test_cell_graph(space):
    (graph,) = space.cell_graphs(space.from_str(RNAS_PTB))
    assert graph.inputs == ("x_t", "h_{t-1}") and graph.output == "h_t" and len(graph.nodes) == 12
    node_edges = [e for e in graph.edges if e[2] not in ("highway", "mean")]
    assert node_edges[:3] == [("0", "1", "sigmoid"), ("1", "2", "sigmoid"), ("2", "3", "relu")]
    assert len(node_edges) == 11 and node_edges[-1] == ("6", "11", "tanh")
    assert {e[0] for e in graph.edges if e[2] == "mean"} == {str(n) for n in range(1, 12)}


# --- networks -----------------------------------------------------------------------------------
def make_supernet(space, seed: int = 0, **dropouts) -> RNNSupernet:
    torch.manual_seed(seed)
    return RNNSupernet(space, RNNSupernetConfig(hidden_size=HIDDEN, **dropouts), VOCAB)


def test_supernet_matches_the_cell_written_out_and_the_final_model(space):
    supernet = make_supernet(space).eval()
    tokens = torch.randint(0, VOCAB, (5, 3), generator=torch.Generator().manual_seed(1))
    hidden = torch.randn(3, HIDDEN, generator=torch.Generator().manual_seed(2))
    for arch in every_activation_archs(space, 4) + [space.from_str(RNAS_PTB)]:
        with torch.no_grad():
            logits, last = supernet(tokens, hidden, arch)
            expected = reference_cell_outputs(supernet, arch, tokens, hidden, supernet.slice_of)
            # the final model with the path's slices computes the same function
            model = RNNModel(space, arch, RNNModelConfig(hidden_size=HIDDEN), VOCAB).eval()
            model.load_state_dict({k: v for k, v in supernet.state_dict().items() if not k.startswith("node_")},
                                  strict=False)
            for node, (pred, act) in enumerate(space.nodes(arch), start=1):
                model.node_weights[node - 1].copy_(supernet.slice_of(node, pred, act))
            model_logits, model_last = model(tokens, hidden)
        assert torch.allclose(last, expected[-1], atol=1e-6)
        assert torch.allclose(logits, expected @ supernet.embedding.weight.T + supernet.decoder_bias, atol=1e-5)
        assert torch.allclose(model_logits, logits, atol=1e-6) and torch.allclose(model_last, last, atol=1e-6)


def test_supernet_backward_reaches_only_the_path(space):
    supernet = make_supernet(space, **SMALL_DROPOUT).train()
    tokens = torch.randint(0, VOCAB, (6, 4))
    for arch in every_activation_archs(space, 4, seed=3):
        supernet.zero_grad(set_to_none=True)
        logits, hidden, states = supernet(tokens, supernet.init_hidden(4), arch, return_states=True)
        assert logits.shape == (6, 4, VOCAB) and hidden.shape == (4, HIDDEN) and states.shape == (6, 4, HIDDEN)
        logits.logsumexp(-1).mean().backward()
        path = {(node, pred, act) for node, (pred, act) in enumerate(space.nodes(arch), start=1)}
        for node in range(1, space.n_nodes + 1):
            for pred in range(node):
                for act in range(len(space.activations)):
                    grad = supernet.slice_of(node, pred, act).grad
                    if (node, pred, act) in path:
                        assert grad is not None and grad.abs().sum() > 0, (node, pred, act)
                    else:
                        assert grad is None, (node, pred, act)
        shared = [supernet.embedding.weight, supernet.input_weight, supernet.hidden_weight,
                  supernet.decoder_bias]
        assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in shared)


def test_dropout_only_in_training(space):
    model = RNNModel(space, space.from_str(NAONET_WS_PTB), RNNModelConfig(hidden_size=HIDDEN), VOCAB)
    tokens = torch.randint(0, VOCAB, (4, 2))
    hidden = model.init_hidden(2)
    model.train()
    assert not torch.equal(model(tokens, hidden)[0], model(tokens, hidden)[0])
    model.eval()
    assert torch.equal(model(tokens, hidden)[0], model(tokens, hidden)[0])


def test_evaluate_known_answer(space):
    model = RNNModel(space, space.from_str(RNAS_PTB), RNNModelConfig(hidden_size=HIDDEN), VOCAB)
    with torch.no_grad():
        model.embedding.weight.zero_()  # tied decoder: every logit is the bias
        model.decoder_bias.copy_(torch.log(torch.arange(1.0, VOCAB + 1)))
    ids = stream(200)
    metrics = evaluate_language_model(model, ids, batch_size=4, bptt=7)
    probabilities = torch.arange(1.0, VOCAB + 1) / sum(range(1, VOCAB + 1))
    targets = ids[:200 // 4 * 4].view(4, -1)[:, 1:]  # each column predicts all its words but the first
    assert metrics["loss"] == pytest.approx(-probabilities.log()[targets].mean().item(), rel=1e-5)
    assert metrics["perplexity"] == pytest.approx(math.exp(metrics["loss"]))
    assert model.training


def test_configs_validate_with_keys():
    with pytest.raises(ConfigError, match="rnn.dropoutx: must be in"):
        from_dict(RNNSupernetConfig, {"dropoutx": 1.0}, "rnn")
    with pytest.raises(ConfigError, match="unknown parameter train.clip"):
        from_dict(LMTrainConfig, {"clip": 0.25}, "train")
    with pytest.raises(ConfigError, match="eval_tokens"):
        from_dict(LMSupernetTrainConfig, {"eval_tokens": 10, "eval_batch_size": 8})
    assert from_dict(RNNModelConfig, {}).hidden_size == 850 and RNNSupernetConfig().hidden_size == 300


# --- supernet training --------------------------------------------------------------------------
SUPERNET_TRAIN = LMSupernetTrainConfig(epochs=2, batch_size=4, bptt=10, lr=2.0, grad_clip=2.5,
                                       eval_batch_size=4, eval_tokens=160)


def make_trainer(space, model_seed: int = 0, seed: int = 0, total_epochs: int = 6) -> LMSupernetTrainer:
    return LMSupernetTrainer(make_supernet(space, model_seed, **SMALL_DROPOUT), SUPERNET_TRAIN, CPU,
                             total_epochs, seed)


@pytest.mark.trained
def test_supernet_trains_and_scores(space, capsys, seed, bound):
    trainer = make_trainer(space, model_seed=seed, seed=seed)
    archs = every_activation_archs(space, 4)
    data, valid = trainer.train_data(stream(400)), trainer.score_data(stream(400))
    assert data.shape == (100, 4) and valid.shape == (40, 4)
    before = trainer.score(archs, valid)
    history = trainer.train_epochs(archs, 5, data, label="warmup")
    assert [r["epoch"] for r in history] == [1, 2, 3, 4, 5] and trainer.epoch == 5
    bound("last / first epoch's loss", history[-1]["loss"] / history[0]["loss"], "<", 0.6)
    assert all(r["tokens_per_s"] > 0 and r["perplexity"] == pytest.approx(math.exp(r["loss"])) for r in history)
    after = trainer.score(archs, valid)
    assert all(a < b for a, b in zip(after, before)), (before, after)
    assert after == trainer.score(archs, valid) and trainer.model.training  # deterministic, mode restored
    lines = capsys.readouterr().err.splitlines()
    epoch_line = [line for line in lines if line.startswith("[warmup]")][-1]
    assert re.fullmatch(r"\[warmup\] epoch 5/5 \(schedule 5/6\)  loss \d+\.\d{3}  acc \d+\.\d%  \d+ tok/s  ppl \d+\.\d  "
                        r"elapsed \d+s  ETA \d+s", epoch_line), epoch_line
    assert re.fullmatch(r"\[score\] scored 4/4 architectures  elapsed \d+s  ETA 0s", lines[-1]), lines[-1]
    with pytest.raises(ValueError, match="would run past the 6 epochs"):
        trainer.train_epochs(archs, 2, data)


def test_supernet_step_updates_only_the_sampled_path(space):
    trainer = make_trainer(space)
    data = trainer.train_data(stream(200))
    # the second round shows that a slice trained before gets no weight-decay update off the path
    for text in (RNAS_PTB, NAONET_WS_PTB):
        arch = space.from_str(text)
        before = copy.deepcopy(trainer.model)
        trainer.train_epochs([arch], 1, data)
        path = {(node, pred, act) for node, (pred, act) in enumerate(space.nodes(arch), start=1)}
        for node in range(1, space.n_nodes + 1):
            for pred in range(node):
                for act in range(len(space.activations)):
                    changed = not torch.equal(trainer.model.slice_of(node, pred, act),
                                              before.slice_of(node, pred, act))
                    assert changed == ((node, pred, act) in path), (text, node, pred, act)


def test_supernet_state_round_trip_continues_exactly(space, tmp_path):
    archs = every_activation_archs(space, 4)
    ids = stream(400)
    straight = make_trainer(space)
    straight_history = straight.train_epochs(archs, 2, straight.train_data(ids))

    first = make_trainer(space)
    first.train_epochs(archs, 1, first.train_data(ids))
    first.save(tmp_path / "supernet.pt")
    torch.manual_seed(123)  # the saved state carries torch's RNG (dropout masks)
    resumed = make_trainer(space, model_seed=99, seed=5)  # everything must come from the file
    resumed.load(tmp_path / "supernet.pt")
    assert resumed.epoch == 1
    history = resumed.train_epochs(archs, 1, resumed.train_data(ids))
    assert history[0]["epoch"] == 2 and history[0]["loss"] == straight_history[1]["loss"]
    for a, b in zip(resumed.model.parameters(), straight.model.parameters()):
        assert torch.equal(a, b)
    with pytest.raises(ValueError, match="made for 6 epochs"):
        make_trainer(space, total_epochs=5).load(tmp_path / "supernet.pt")


# --- final model --------------------------------------------------------------------------------
def lm_cfg(**overrides) -> LMTrainConfig:
    settings = dict(epochs=6, batch_size=4, bptt=10, grad_clip=0.1, eval_batch_size=2, nonmono=1)  # lr 20
    return LMTrainConfig(**{**settings, **overrides})


def run_lm(space, tmp_path, cfg: LMTrainConfig, valid: torch.Tensor, fingerprint: str = "run-a",
           on_epoch=None, init_seed: int = 0):
    torch.manual_seed(init_seed)
    model = RNNModel(space, space.from_str(NAONET_WS_PTB), RNNModelConfig(hidden_size=HIDDEN, **SMALL_DROPOUT),
                     VOCAB)
    history = train_language_model(model, cfg, stream(480), valid, CPU, tmp_path / "lm.pt", fingerprint,
                                   on_epoch=on_epoch)
    return model, history


@pytest.mark.trained
def test_language_model_learns_a_repetitive_corpus(space, tmp_path, seed, bound):
    model, history = run_lm(space, tmp_path, lm_cfg(epochs=8, nonmono=8), stream(120), init_seed=seed)
    assert [r["epoch"] for r in history] == list(range(1, 9))
    bound("last / first epoch's train loss", history[-1]["train_loss"] / history[0]["train_loss"], "<", 0.5)
    bound("last / first epoch's valid loss", history[-1]["valid_loss"] / history[0]["valid_loss"], "<", 0.5)
    assert all(r["optimizer"] == "sgd" and r["tokens_per_s"] > 0 for r in history)
    valid_loss = evaluate_language_model(model, stream(120), 2, 10)["loss"]  # the delivered weights: the best epoch's
    assert valid_loss == pytest.approx(min(r["valid_loss"] for r in history))


class Interrupted(Exception):
    pass


def untimed(records: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in ("seconds", "tokens_per_s")} for r in records]


def test_language_model_resumes_after_interruption_with_asgd_state(space, tmp_path):
    # validating on the pattern reversed, learning makes the validation loss worse: with
    # nonmono = 1, averaged SGD takes over once it is worse than two epochs before
    valid = stream(120, reverse=True)
    straight_model, straight = run_lm(space, tmp_path / "straight", lm_cfg(), valid)
    optimizers = [r["optimizer"] for r in straight]
    first_averaged = optimizers.index("asgd") + 1 if "asgd" in optimizers else None
    assert first_averaged is not None and first_averaged < len(straight), optimizers
    assert set(optimizers[first_averaged:]) == {"asgd"}
    # the model ends holding the weights the best validation scored
    valid_loss = evaluate_language_model(straight_model, valid, 2, 10)["loss"]
    assert valid_loss == pytest.approx(min(r["valid_loss"] for r in straight))

    def stop_after_the_first_averaged_epoch(record):  # the checkpoint holds ASGD's averages by then
        if record["epoch"] == first_averaged:
            raise Interrupted

    with pytest.raises(Interrupted):
        run_lm(space, tmp_path, lm_cfg(), valid, on_epoch=stop_after_the_first_averaged_epoch)
    model, history = run_lm(space, tmp_path, lm_cfg(), valid, init_seed=7)
    assert untimed(history) == untimed(straight)
    for a, b in zip(model.parameters(), straight_model.parameters()):
        assert torch.equal(a, b)


HAND_MADE_VALID_LOSSES = [3.0, 2.0, 2.5, 4.0]  # epoch 2 is the best; 3 and 4 are worse


@pytest.fixture
def hand_made_validation(monkeypatch):
    """Validation losses from ``HAND_MADE_VALID_LOSSES`` epoch by epoch (over again for the next run),
    whatever the weights."""
    losses = itertools.cycle(HAND_MADE_VALID_LOSSES)
    monkeypatch.setattr(language_model, "evaluate_language_model", lambda *args: {"loss": next(losses)})


def train_hand_made(space, path, on_epoch=None, init_seed: int = 0):
    """4 epochs; ``on_epoch(model)`` makes the callback."""
    torch.manual_seed(init_seed)
    model = RNNModel(space, space.from_str(NAONET_WS_PTB), RNNModelConfig(hidden_size=HIDDEN, **SMALL_DROPOUT),
                     VOCAB)
    history = train_language_model(model, lm_cfg(epochs=4, nonmono=8), stream(480), stream(120), CPU, path, "run",
                                   on_epoch=on_epoch and on_epoch(model))
    return model, history


def same_weights(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_language_model_delivers_the_best_validation_epoch_not_the_last(space, tmp_path, hand_made_validation):
    snapshots = []
    model, history = train_hand_made(space, tmp_path / "lm.pt",
                                     lambda m: lambda r: snapshots.append(copy.deepcopy(m.state_dict())))
    assert [r["valid_loss"] for r in history] == HAND_MADE_VALID_LOSSES
    assert [r["best_epoch"] for r in history] == [1, 2, 2, 2]
    assert same_weights(model.state_dict(), snapshots[1])  # after epoch 2
    assert not same_weights(model.state_dict(), snapshots[3])  # the last epoch's weights differ


def test_language_model_resumed_after_its_best_epoch_delivers_that_epoch(space, tmp_path, hand_made_validation):
    straight, _ = train_hand_made(space, tmp_path / "straight.pt")

    def stop_after_epoch_3(model):  # epoch 2, the best, is behind it
        def on_epoch(record):
            if record["epoch"] == 3:
                raise Interrupted
        return on_epoch

    with pytest.raises(Interrupted):
        train_hand_made(space, tmp_path / "lm.pt", stop_after_epoch_3)
    model, history = train_hand_made(space, tmp_path / "lm.pt", init_seed=7)  # the weights come from the checkpoint
    assert [r["epoch"] for r in history] == [1, 2, 3, 4] and [r["best_epoch"] for r in history] == [1, 2, 2, 2]
    assert same_weights(model.state_dict(), straight.state_dict())


def test_language_model_whose_validation_loss_is_never_finite_stops(space, tmp_path, monkeypatch):
    monkeypatch.setattr(language_model, "evaluate_language_model", lambda *args: {"loss": math.nan})
    with pytest.raises(ConfigError, match=r"the validation loss was not finite after any of the 4 epochs \(lr 20\)"):
        train_hand_made(space, tmp_path / "lm.pt")


def test_language_model_changed_fingerprint_starts_over(space, tmp_path, capsys):
    valid = stream(120)
    first, _ = run_lm(space, tmp_path, lm_cfg(epochs=2), valid, fingerprint="run-a")
    model, history = run_lm(space, tmp_path, lm_cfg(epochs=2), valid, fingerprint="run-b", init_seed=0)
    assert "lm.pt is stale: set aside as lm.pt.stale" in capsys.readouterr().err
    assert [r["epoch"] for r in history] == [1, 2]
    for a, b in zip(model.parameters(), first.parameters()):
        assert torch.equal(a, b)  # same seed, same run: trained from scratch, not continued


def test_window_lengths_follow_awd_lstm():
    torch.manual_seed(0)
    lengths = [window_length(35) for _ in range(2000)]
    assert 5 <= min(lengths) and max(lengths) <= 55
    assert 33 < sum(lengths) / len(lengths) < 35.5
    assert 0.02 < sum(n < 25 for n in lengths) / len(lengths) < 0.1  # the bptt / 2 draws
