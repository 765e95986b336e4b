"""Data-parallel training across processes (one per device), launched with torchrun:

    torchrun --nproc_per_node 2 -m interp.cli train --preset attn-only-2l --output_dir runs/a2 ...

Each process holds the whole model and trains on its own slice of every global micro-batch:
rank r takes sequences [position + r*batch, position + (r+1)*batch) of the data stream, so the
union over ranks is exactly the batch a single process would take with n_devices x the
per-device batch. After the accumulation steps the gradients are averaged across processes
(all-reduce, then divided by the world size) before clipping and the optimizer step, which keeps
every replica identical. Only rank 0 evaluates, logs and writes checkpoints; checkpoints hold the
global data position, so a run resumes with the same number of processes.

NCCL carries the all-reduce on CUDA, gloo on CPU (which is how the tests check it).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from interp.errors import WorkbenchError


@dataclass
class DataParallel:
    rank: int
    world: int
    device: torch.device
    owns_group: bool  # this process group was created here (and is destroyed at the end)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def broadcast_parameters(self, params) -> None:
        """Every replica starts from rank 0's weights."""
        for p in params:
            dist.broadcast(p.data, src=0)

    def average_gradients(self, params) -> None:
        grads = [p.grad for p in params if p.grad is not None]
        if not grads:
            return
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat)
        flat /= self.world
        offset = 0
        for g in grads:
            g.copy_(flat[offset : offset + g.numel()].view_as(g))
            offset += g.numel()

    def mean(self, value: torch.Tensor) -> torch.Tensor:
        value = value.clone()
        dist.all_reduce(value)
        return value / self.world

    def close(self) -> None:
        if self.owns_group and dist.is_initialized():
            dist.barrier()
            dist.destroy_process_group()


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def setup(n_devices: int, device: torch.device) -> DataParallel | None:
    """The data-parallel context of this process, or None for single-process training.
    `n_devices` must be 1 (take the launcher's world size) or equal to it."""
    world = world_size()
    if world == 1:
        if n_devices != 1:
            raise WorkbenchError(f"n_devices={n_devices} needs one process per device: launch with "
                                 f"`torchrun --nproc_per_node {n_devices} -m interp.cli train ...`")
        return None
    if n_devices not in (1, world):
        raise WorkbenchError(f"n_devices={n_devices} but torchrun started {world} processes; drop n_devices "
                             f"or launch --nproc_per_node {n_devices}")
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        if local >= torch.cuda.device_count():
            raise WorkbenchError(f"process {local} has no GPU: {torch.cuda.device_count()} visible; "
                                 f"launch --nproc_per_node {torch.cuda.device_count()} or fewer")
        torch.cuda.set_device(local)
        device = torch.device("cuda", local)
    owns = not dist.is_initialized()
    if owns:
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return DataParallel(rank=dist.get_rank(), world=dist.get_world_size(), device=device, owns_group=owns)
