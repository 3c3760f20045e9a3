"""Multi-process data-parallel training under ``torchrun`` (one process per GPU, or per CPU share).

Every rank holds a full model, takes its shard of each batch and averages gradients before the
optimizer step, so all ranks stay identical. Gradients are averaged by hand rather than by DDP:
a supernet step trains one sampled path, and DDP insists on one fixed set of used parameters.
All ranks sample the same path (same seeded RNG), so the set of parameters with a gradient
matches across ranks, which is all the hand-made all-reduce needs.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field

import torch
import torch.distributed as dist
from torch import nn

#: where the ranks meet (an ``init_method`` URL); the pipeline's own launcher sets a ``file://`` store.
#: Unset (under torchrun), the ranks meet at torchrun's MASTER_ADDR:MASTER_PORT (``env://``).
RENDEZVOUS_ENV = "RNAS_RENDEZVOUS"


@dataclass(frozen=True)
class DistributedContext:
    """This process's place in the job; the default is a single process, where every call is a no-op."""
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @classmethod
    def from_env(cls, device: torch.device) -> "DistributedContext":
        """Read RANK / WORLD_SIZE / LOCAL_RANK (set by the pipeline's launcher, or torchrun) and join
        the process group.

        NCCL on CUDA (each rank on ``cuda:LOCAL_RANK``), gloo on CPU. Without torchrun
        (no WORLD_SIZE, or WORLD_SIZE=1) nothing is initialised.
        """
        world_size = int(os.environ.get("WORLD_SIZE", "1"))
        if world_size == 1:
            return cls(device=device)
        rank, local_rank = int(os.environ["RANK"]), int(os.environ["LOCAL_RANK"])
        if device.type == "cuda":
            device = torch.device("cuda", local_rank)
            torch.cuda.set_device(device)
            backend = "nccl"
        else:
            backend = "gloo"
        if not dist.is_initialized():
            dist.init_process_group(backend, init_method=os.environ.get(RENDEZVOUS_ENV, "env://"), rank=rank,
                                    world_size=world_size, device_id=device if device.type == "cuda" else None)
        return cls(rank, world_size, local_rank, device)

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that writes checkpoints, artifacts and progress lines."""
        return self.rank == 0

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1

    @property
    def shard(self) -> tuple[int, int]:
        """``(rank, world_size)``, as ``ImageBatches(shard=...)`` takes it."""
        return self.rank, self.world_size

    def barrier(self) -> None:
        if self.is_distributed:
            dist.barrier()

    def sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """Sum ``tensor`` over ranks, in place; returns it."""
        if self.is_distributed:
            dist.all_reduce(tensor)
        return tensor

    def all_reduce_gradients(self, model: nn.Module) -> None:
        """Average the gradients of the parameters that have one, in a single collective."""
        if not self.is_distributed:
            return
        grads = [p.grad for p in model.parameters() if p.grad is not None]
        if not grads:
            return
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat)
        flat /= self.world_size
        offset = 0
        for g in grads:
            g.copy_(flat[offset:offset + g.numel()].view(g.shape))
            offset += g.numel()

    def average_buffers(self, model: nn.Module) -> None:
        """Average floating-point buffers (batch-norm running statistics), which each rank
        estimates from its own shard, so that every rank (and the checkpoint) holds the same model."""
        if not self.is_distributed:
            return
        for buffer in model.buffers():
            if buffer.is_floating_point():
                dist.all_reduce(buffer)
                buffer /= self.world_size

    def close(self) -> None:
        if self.is_distributed and dist.is_initialized():
            dist.destroy_process_group()
