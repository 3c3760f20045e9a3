"""The found network outside the pipeline: build it from an architecture, or load a trained one.

    from rnas.export import load_model
    model, card = load_model("artifacts/retrain/model.pt")          # trained weights
    model, card = load_model("artifacts/retrain/model.pt", weights=False)  # architecture only

A model file holds plain tensors and a JSON-able card (space, architecture string, network
config, and the classes and normalisation of an image model or the vocabulary of a language
model): it loads with ``torch.load(weights_only=True)``.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Any, Sequence

import torch
from torch import nn

from rnas.artifacts import load_checkpoint, save_checkpoint
from rnas.config import from_dict
from rnas.errors import ArtifactError
from rnas.networks import NETWORK_CONFIGS, NETWORKS, ChildConfig, NB201Config
from rnas.networks.rnn import RNNModel, RNNModelConfig
from rnas.spaces import get_space


def build_network(arch: str, child: ChildConfig | NB201Config | dict[str, Any] | None = None, num_classes: int = 10,
                  in_channels: int = 3, space: str = "nao_cnn") -> nn.Module:
    """A freshly initialised final network for ``arch`` (the string form of ``space``, an image space);
    ``child``: the space's network config, or a mapping of it."""
    if space not in NETWORKS:
        raise ValueError(f"no final image network for space {space!r}; known: {', '.join(NETWORKS)}")
    search_space = get_space(space)
    if not isinstance(child, NETWORK_CONFIGS[space]):
        child = from_dict(NETWORK_CONFIGS[space], child or {}, "child")
    return NETWORKS[space](search_space, search_space.from_str(arch), child, num_classes, in_channels)


def build_language_model(arch: str, child: RNNModelConfig | dict[str, Any] | None, vocab_size: int) -> RNNModel:
    """A freshly initialised language model of the recurrent cell ``arch`` (the rnn space's string form)."""
    space = get_space("rnn")
    if not isinstance(child, RNNModelConfig):
        child = from_dict(RNNModelConfig, child or {}, "child")
    return RNNModel(space, space.from_str(arch), child, vocab_size)


def save_model(path: str | os.PathLike, model: nn.Module, card: dict[str, Any]) -> None:
    save_checkpoint(path, {"card": card, "state_dict": model.state_dict()})


def model_card(space: str, arch: str, child: ChildConfig | NB201Config, num_classes: int, in_channels: int,
               classes: list[str], mean, std, provenance: dict[str, Any]) -> dict[str, Any]:
    return {"space": space, "arch": arch, "child": dataclasses.asdict(child), "num_classes": num_classes,
            "in_channels": in_channels, "classes": list(classes), "mean": list(mean), "std": list(std),
            "provenance": provenance}


def language_model_card(arch: str, child: RNNModelConfig, vocab: Sequence[str], bptt: int,
                        provenance: dict[str, Any]) -> dict[str, Any]:
    """``vocab``: word of each id; ``bptt``: the window length it was trained (and is evaluated) with."""
    return {"task": "language", "space": "rnn", "arch": arch, "child": dataclasses.asdict(child),
            "vocab": list(vocab), "bptt": bptt, "provenance": provenance}


def network_of_card(card: dict[str, Any]) -> nn.Module:
    """The freshly initialised network a card describes (cards without a task are image models)."""
    if card.get("task") == "language":
        return build_language_model(card["arch"], card["child"], len(card["vocab"]))
    return build_network(card["arch"], card["child"], card["num_classes"], card["in_channels"], card["space"])


def load_model(path: str | os.PathLike, weights: bool = True,
               device: str | torch.device = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    if not os.path.exists(path):
        raise FileNotFoundError(f"model file not found: {path}")
    payload = load_checkpoint(path, map_location=device, keys=("card", "state_dict"))
    card = payload["card"]
    try:
        model = network_of_card(card)
        if weights:
            model.load_state_dict(payload["state_dict"])
    except (KeyError, TypeError, ValueError, RuntimeError) as e:  # a card or weights that do not fit
        raise ArtifactError(f"{path}: not a model this version can build ({' '.join(str(e).split())[:160]}); "
                            "rerun the stage that writes it (retrain)") from None
    return model.to(device).eval(), card
