"""Data-parallel training on ``torch.distributed``: one process per device, launched by ``torchrun`` or
``accelerate launch`` (``torchrun --nproc-per-node N -m laddertune train ...``).

LST suits data parallelism: only the small side network has gradients, so only its gradients are all-reduced.
Each rank holds the frozen backbone and a replica of the trainable model wrapped in PyTorch's
``DistributedDataParallel`` (DDP; not a hand-written all-reduce). The global batch (``--batch-size``) is the one a
single process would take from :func:`~laddertune.training.build.epoch_batches` (a shuffle seeded by seed and epoch
alone, so every rank computes the same order); rank ``r`` of ``N`` takes its examples ``r, r + N, ...``.

Equal to one process: each rank's loss is weighted by its share of the global batch's loss terms (examples, or
target tokens for LM heads; :func:`~laddertune.training.step.train_step`), so DDP's gradient average is the gradient
of the global batch's mean loss even when the last batch does not split evenly; the logged loss is that global mean
(all-reduced). With gradient accumulation the terms are counted over the step's micro-batches too, and gradients
are all-reduced once per step (DDP's ``no_sync`` in the other micro-batches). Evaluation splits the examples
the same way and gathers every rank's predictions before scoring. Rank 0 alone writes (metrics, checkpoints,
results); the others wait at barriers where they must read what it wrote. Checkpoints count global steps, so
``--resume`` continues with any number of ranks. Backends: NCCL on CUDA (one GPU per local rank), gloo on CPU.

A rank that dies: ``torchrun``/``accelerate`` end the other ranks and report the failed rank; a rank stuck in a
collective because its peer vanished gives up after :data:`TIMEOUT_S`. The last checkpoint is intact either way:
checkpoints are swapped in whole (:mod:`laddertune.training.checkpoint`), so ``--resume`` continues.
"""

from __future__ import annotations

import logging
import os
from datetime import timedelta

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from .checkpoint import resume_checkpoint

logger = logging.getLogger(__name__)

TIMEOUT_S = 600  # a collective waiting longer than this means a peer is gone (torch's default is 30 minutes)


def is_main_process() -> bool:
    """False on the ranks other than 0 of a ``torchrun``/``accelerate`` job (they print nothing)."""
    return int(os.environ.get("RANK", "0")) == 0


class Distributed:
    """This process's place in a data-parallel job, and the few collectives the training loop needs."""

    def __init__(self, rank: int, world_size: int, local_rank: int, backend: str) -> None:
        self.rank, self.world_size, self.local_rank, self.backend = rank, world_size, local_rank, backend
        self.device = torch.device("cuda", local_rank) if backend == "nccl" else torch.device("cpu")
        self.model = None  # the DDP-wrapped model, once wrap() ran

    @classmethod
    def from_env(cls) -> Distributed | None:
        """Join the job that ``torchrun``/``accelerate launch`` started (their ``RANK``, ``WORLD_SIZE``,
        ``LOCAL_RANK``, ``MASTER_ADDR``/``PORT`` variables); None for a single process."""
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world <= 1:
            return None
        backend = "nccl" if torch.cuda.is_available() and dist.is_nccl_available() else "gloo"
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        if backend == "nccl":
            torch.cuda.set_device(local_rank)
        if not dist.is_initialized():
            dist.init_process_group(backend, timeout=timedelta(seconds=TIMEOUT_S))
        ctx = cls(dist.get_rank(), dist.get_world_size(), local_rank, backend)
        logger.info("rank %d of %d (%s)", ctx.rank, ctx.world_size, backend)
        return ctx

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        dist.barrier(device_ids=[self.local_rank] if self.backend == "nccl" else None)

    def close(self) -> None:
        """Leave the job: release DDP's reducer, then destroy the process group.

        The order prevents a hang at exit. torch's gloo process group blocks in its destructor until its worker
        threads are done, and a worker may still be freeing the tensors of a finished collective, which takes the
        GIL. If DDP's reducer holds the group's last reference, the destructor runs from the reducer's, with the
        GIL held, and the two wait on each other for good (seen in this project's two-rank tests;
        pytorch/pytorch#56297). Released here, while the group is still registered, the reducer never holds the
        last reference; that goes with a Python-side handle of the group, whose destructor lets go of the GIL.
        """
        if self.model is not None:
            for name in ("logger", "reducer"):  # DDP's logger holds the reducer too
                self.model.__dict__.pop(name, None)
            self.model = None
        if dist.is_initialized():
            dist.destroy_process_group()

    # -- training ----------------------------------------------------------------------------------------------
    def wrap(self, model: torch.nn.Module) -> None:
        """Move ``model`` to this rank's device and wrap it in DDP (only parameters that train are all-reduced).

        ``forward_sync_buffers=False``: the frozen backbone's buffers are the same on every rank (same files, same
        seed) and never change, so there is nothing to broadcast before each forward.
        """
        model.to(self.device)
        ids = [self.local_rank] if self.backend == "nccl" else None
        self.model = DistributedDataParallel(model, device_ids=ids, forward_sync_buffers=False)

    def shard(self, items: list) -> list:
        """This rank's part of a global batch (or of an evaluation split): items r, r + N, r + 2N, ..."""
        return items[self.rank :: self.world_size]

    def sum(self, value: torch.Tensor) -> torch.Tensor:
        """``value`` summed over the ranks (a new tensor on this rank's device)."""
        value = value.detach().clone().to(self.device)
        dist.all_reduce(value)
        return value

    def gather(self, items: list) -> list:
        """Undo :meth:`shard`: every rank's items, back in the global order (on every rank)."""
        parts: list = [None] * self.world_size
        dist.all_gather_object(parts, items)
        out: list = [None] * sum(len(p) for p in parts)
        for rank, part in enumerate(parts):
            out[rank :: self.world_size] = part
        return out


class DataParallelHooks:
    """What :class:`~laddertune.training.loop.Run` asks of data parallelism (``self.dist``: a
    :class:`Distributed` or None). Kept here so that the loop reads the same with one process or many."""

    dist: Distributed | None

    @property
    def is_main(self) -> bool:
        """True in a single process and on rank 0: the one process that writes into the output folder."""
        return self.dist is None or self.dist.is_main

    def shard(self, indices: list[int]) -> list[int]:
        """This process's examples of a global batch (all of them in a single process)."""
        return indices if self.dist is None else self.dist.shard(indices)

    def resume_on_every_rank(self):
        """``resume_checkpoint`` on rank 0 first (it may repair a corrupt checkpoint-last), then on the others."""
        args = (self.out, self.model, self.method, self.optimizer, self.scheduler)
        # the schedule checks the saved data position (a hand-edited step or next_batch is refused)
        schedule = {
            "steps_per_epoch": self.schedule.steps_per_epoch,
            "epochs": self.schedule.epochs,
            "accumulation": self.config.optimization.gradient_accumulation_steps,
        }
        resumed = resume_checkpoint(*args, **schedule) if self.is_main else None
        if self.dist is not None:
            self.dist.barrier()
            if not self.is_main:
                resumed = resume_checkpoint(*args, **schedule)
        return resumed
