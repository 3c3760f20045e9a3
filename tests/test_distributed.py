"""Two gloo processes on CPU train the supernet and a final network as one process would."""
from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from torch import nn

from rnas.data.images import AugmentConfig
from rnas.training.child import ChildTrainConfig, child_batches, train_child
from rnas.training.distributed import DistributedContext
from rnas.training.supernet import SupernetTrainConfig, SupernetTrainer
from tests.synthetic import N_CLASSES, TinyChild, brightness_split

CPU = torch.device("cpu")
WORLD = 2
ARCHS = [(0, 0), (1, 0), (0, 1), (1, 1)]
SUPERNET = SupernetTrainConfig(epochs=2, batch_size=16, lr_max=0.1, lr_min=0.01, eval_batches=2,
                               eval_batch_size=16, augment=AugmentConfig(crop_padding=1))
CHILD = ChildTrainConfig(epochs=2, batch_size=16, lr_max=0.05, drop_path_prob=0.0,
                         augment=AugmentConfig(crop_padding=1, cutout=2))


class TinySupernet(nn.Module):
    """``arch[i]`` picks layer i's conv (0: 3x3, 1: 1x1). No batch norm, so that sharded gradients
    average to exactly the full batch's and the 1- and 2-process runs must agree closely."""

    def __init__(self, channels: int = 8):
        super().__init__()
        self.stem = nn.Conv2d(1, channels, 3, padding=1)
        self.layers = nn.ModuleList(nn.ModuleList([nn.Conv2d(channels, channels, 3, padding=1),
                                                   nn.Conv2d(channels, channels, 1)]) for _ in range(2))
        self.head = nn.Linear(channels, N_CLASSES)

    def forward(self, x: torch.Tensor, arch: tuple[int, ...]) -> torch.Tensor:
        x = torch.relu(self.stem(x))
        for choices, op in zip(self.layers, arch):
            x = torch.relu(choices[op](x))
        return self.head(x.mean((2, 3)))


def train_both(dist: DistributedContext, out_dir: Path) -> dict:
    """Supernet: 2 epochs and a scoring; final network: 2 epochs with validation and checkpoints."""
    train, valid = brightness_split(64, seed=0), brightness_split(32, seed=1)
    torch.manual_seed(0)
    trainer = SupernetTrainer(TinySupernet(), SUPERNET, CPU, total_epochs=2, seed=0, dist=dist)
    batches = trainer.train_batches(train, seed=0)
    local_batch_size = len(next(iter(batches))[1])
    supernet_history = trainer.train_epochs(ARCHS, 2, batches)
    scores = trainer.score(ARCHS, trainer.score_batches(valid))
    torch.manual_seed(0)
    child = TinyChild()
    child_history = train_child(child, CHILD, child_batches(train, CHILD, dist, train=True),
                                child_batches(valid, CHILD, dist, train=False), CPU, out_dir / "child.pt",
                                "fingerprint", dist=dist)
    return {"local_batch_size": local_batch_size, "supernet_loss": [r["loss"] for r in supernet_history],
            "scores": scores, "supernet": trainer.model.state_dict(), "child": child.state_dict(),
            "child_loss": [r["train_loss"] for r in child_history],
            "valid_loss": [r["valid_loss"] for r in child_history]}


def worker(rank: int, port: int, out_dir: Path) -> None:
    """One torchrun-like process: the environment torchrun would set, then the shared training code."""
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(WORLD),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist = DistributedContext.from_env(CPU)
    try:
        torch.save(train_both(dist, out_dir), out_dir / f"rank{rank}.pt")
        dist.barrier()
    finally:
        dist.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_single_process_context_is_a_no_op(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    dist = DistributedContext.from_env(CPU)
    assert (dist.rank, dist.world_size, dist.is_main, dist.is_distributed, dist.shard) == (0, 1, True, False, (0, 1))
    model = nn.Linear(2, 1)
    model(torch.ones(1, 2)).sum().backward()
    grad = model.weight.grad.clone()
    dist.all_reduce_gradients(model)
    assert torch.equal(model.weight.grad, grad)


def test_two_processes_match_one(tmp_path):
    context = mp.spawn(worker, args=(free_port(), tmp_path), nprocs=WORLD, join=False)
    deadline = time.monotonic() + 180
    try:
        # join returns False on a timeout and also each time one process ends; it raises on a failure
        while not context.join(timeout=max(deadline - time.monotonic(), 0.1)):
            if time.monotonic() > deadline:
                pytest.fail("the 2-process run did not finish in 180 s")
    finally:
        for process in context.processes:
            if process.is_alive():
                process.terminate()
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(WORLD)]
    assert torch.load(tmp_path / "child.pt", weights_only=True)["epoch"] == 2  # written by rank 0
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        single = train_both(DistributedContext(device=CPU), tmp_path / "single")
    finally:
        torch.set_num_threads(threads)

    assert [r["local_batch_size"] for r in ranks] == [8, 8] and single["local_batch_size"] == 16
    # every rank ends with the same weights (batch-norm running statistics included) and numbers
    for key in ("supernet", "child"):
        for name, tensor in ranks[0][key].items():
            assert torch.equal(tensor, ranks[1][key][name]), f"{key}.{name}"
    for key in ("supernet_loss", "scores", "child_loss", "valid_loss"):
        assert ranks[0][key] == ranks[1][key], key

    # without batch norm, sharded gradients average to the full batch's: the runs agree closely
    assert ranks[0]["supernet_loss"] == pytest.approx(single["supernet_loss"], rel=1e-5)
    for name, tensor in single["supernet"].items():
        torch.testing.assert_close(ranks[0]["supernet"][name], tensor, rtol=1e-4, atol=1e-5)
    assert ranks[0]["scores"] == pytest.approx(single["scores"], abs=1 / 32 + 1e-9)  # at most one image flips
    # with batch norm, each rank normalises its half batch: close, not equal
    assert ranks[0]["child_loss"] == pytest.approx(single["child_loss"], rel=0.05)
    assert ranks[0]["valid_loss"] == pytest.approx(single["valid_loss"], rel=0.1)
