"""Splitting a run's samples across processes: ``--shard I/K`` (e.g. Slurm arrays) or torchrun.

A sample belongs to shard ``int(sha256(sample id)[:16], 16) % K``: deterministic, independent
of dataset order, listing or worker count, and the same in every process. Each shard writes its
own store shards and run record into the shared run directory; the union of K shards is the
whole run, so scoring it gives the numbers of one process (metrics see rows sorted by sample id).

Under ``torchrun`` (``WORLD_SIZE`` > 1 in the environment) the shard is (``RANK``,
``WORLD_SIZE``); :func:`init_distributed` joins the process group (gloo on CPU, nccl on CUDA)
so that rank 0 can wait for every rank (:func:`barrier`) before it scores.
"""

from __future__ import annotations

import datetime
import hashlib
import os
import re
from dataclasses import dataclass

from bench.errors import UserError

BARRIER_TIMEOUT = datetime.timedelta(hours=24)
"""How long rank 0 waits for the slowest rank (torchrun stops every rank when one fails)."""


@dataclass(frozen=True)
class Shard:
    """Shard ``index`` of ``count`` (0-based)."""

    index: int = 0
    count: int = 1

    def __post_init__(self) -> None:
        if self.count < 1 or not 0 <= self.index < self.count:
            raise UserError(f"Expected a shard I/K with 0 <= I < K, got {self.index}/{self.count}")

    def owns(self, sample_id: str) -> bool:
        """Whether this shard predicts ``sample_id``."""
        if self.count == 1:
            return True
        return int(hashlib.sha256(sample_id.encode()).hexdigest()[:16], 16) % self.count == self.index

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def parse_shard(text: str) -> Shard:
    """``"I/K"`` → :class:`Shard` (one line naming the mistake otherwise)."""
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
    if not match:
        raise UserError(f"--shard must be I/K (shard I of K, 0-based), got {text!r}")
    return Shard(int(match.group(1)), int(match.group(2)))


def torchrun_shard() -> Shard | None:
    """The (RANK, WORLD_SIZE) shard when launched by torchrun with more than one process."""
    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if world <= 1:
        return None
    return Shard(int(os.environ.get("RANK", "0")), world)


def init_distributed(device: str) -> None:
    """Join torchrun's process group: nccl when running on CUDA, gloo otherwise."""
    import torch
    import torch.distributed as dist

    if dist.is_initialized():
        return
    cuda = device != "cpu" and torch.cuda.is_available()
    if cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group("nccl" if cuda else "gloo", timeout=BARRIER_TIMEOUT)


def barrier() -> None:
    """Wait until every rank reached this point."""
    import torch.distributed as dist

    dist.barrier()


def close_distributed() -> None:
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()
