"""Running one evaluation over several processes (`torchrun`), on one or many machines.

`torchrun --nproc-per-node N` (plus `--nnodes`/`--rdzv-*` for several machines) sets RANK, WORLD_SIZE,
LOCAL_RANK, MASTER_ADDR and MASTER_PORT for every process. `init_distributed` reads them, starts
`torch.distributed` (NCCL on CUDA, gloo on the CPU) and picks this process's device (`cuda:LOCAL_RANK`).
Videos are sharded deterministically: sorted ids, `ids[rank::world_size]`. Scores are gathered to every
process with `all_gather_object`; rank 0 prints and writes them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

from ..errors import ReferDinoError

# Ranks finish their shards at different times and wait at the barrier; allow for slow, uneven shards.
BARRIER_TIMEOUT = timedelta(hours=3)


@dataclass(frozen=True)
class DistributedContext:
    """Where this process stands: `rank` of `world_size` processes, `local_rank` on its machine."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def context_from_env(environ=None) -> DistributedContext:
    """RANK, WORLD_SIZE and LOCAL_RANK as torchrun sets them; a single process when they are absent."""
    environ = os.environ if environ is None else environ
    try:
        context = DistributedContext(int(environ.get("RANK", 0)), int(environ.get("WORLD_SIZE", 1)),
                                     int(environ.get("LOCAL_RANK", 0)))
    except ValueError as err:
        raise ReferDinoError(f"RANK, WORLD_SIZE and LOCAL_RANK must be integers ({err}); launch with torchrun "
                             "or unset them") from err
    if not 0 <= context.rank < context.world_size:
        raise ReferDinoError(f"RANK={context.rank} is not in 0..WORLD_SIZE-1 (WORLD_SIZE={context.world_size})")
    return context


def init_distributed(device: str | None = None) -> tuple[DistributedContext, torch.device]:
    """Start `torch.distributed` when WORLD_SIZE > 1 and return (context, this process's device).

    device: None picks `cuda:LOCAL_RANK` when CUDA is available, else the CPU; "cuda" means
    `cuda:LOCAL_RANK`; anything else is used as given. The backend is NCCL for CUDA devices, gloo otherwise.
    """
    context = context_from_env()
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    chosen = torch.device(device)
    if chosen.type == "cuda":
        if not torch.cuda.is_available():
            raise ReferDinoError(f"device {device!r} was requested but CUDA is not available; use --device cpu")
        if chosen.index is None:
            chosen = torch.device("cuda", context.local_rank % torch.cuda.device_count())
        torch.cuda.set_device(chosen)
    if context.world_size > 1 and not dist.is_initialized():
        for name in ("MASTER_ADDR", "MASTER_PORT"):
            if name not in os.environ:
                raise ReferDinoError(f"WORLD_SIZE={context.world_size} but {name} is not set; launch with "
                                     "`torchrun --nproc-per-node N -m referdino_demo.evaluation ...`")
        dist.init_process_group("nccl" if chosen.type == "cuda" else "gloo", timeout=BARRIER_TIMEOUT)
    return context, chosen


def shutdown() -> None:
    """Tear down the process group started by `init_distributed` (no-op for one process)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def shard(video_ids: list[str], rank: int, world_size: int) -> list[str]:
    """This process's videos: sorted ids, every `world_size`-th from `rank`."""
    return sorted(video_ids)[rank::world_size]


def check_group(world_size: int) -> None:
    """Raise unless a process group of `world_size` processes is running (or there is one process)."""
    if world_size == 1:
        return
    if not (dist.is_available() and dist.is_initialized()):
        raise ReferDinoError(f"world_size={world_size} but torch.distributed is not initialised; call "
                             "init_distributed() first (under torchrun) or pass world_size=1")
    if dist.get_world_size() != world_size:
        raise ReferDinoError(f"world_size={world_size} but the process group has {dist.get_world_size()} "
                             "processes")


def barrier(world_size: int) -> None:
    if world_size > 1:
        dist.barrier()


def gather(obj, world_size: int) -> list:
    """Every process's `obj` (picklable), in rank order, on every process."""
    if world_size == 1:
        return [obj]
    gathered = [None] * world_size
    dist.all_gather_object(gathered, obj)
    return gathered
