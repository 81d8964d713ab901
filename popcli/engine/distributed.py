"""Many processes, one search: torch.distributed as launched by torchrun.

``setup(device_name)`` reads torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR...),
joins the process group (NCCL for CUDA, gloo on CPU) and returns a ``Dist`` handle and the device
of this rank; outside torchrun it returns the single-process handle, whose collectives do
nothing. The search uses it to shard batches, reduce metrics, agree on stopping, broadcast a
resumed checkpoint, check that every rank holds the same masks, and let only rank 0 write.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from ..errors import PopcliError, RunError


@dataclass(frozen=True)
class Dist:
    """This process's place in the job. ``world == 1``: a plain single-process search."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    def sum(self, values: list[float], device: torch.device | str = "cpu") -> list[float]:
        """Element-wise sum over ranks (float64)."""
        if self.world == 1:
            return list(values)
        tensor = torch.tensor(values, dtype=torch.float64, device=device)
        dist.all_reduce(tensor)
        return tensor.tolist()

    def any(self, flag: bool) -> bool:
        """True on every rank if ``flag`` is true on any."""
        return bool(flag) if self.world == 1 else self.sum([float(flag)])[0] > 0

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank (any picklable object)."""
        if self.world == 1:
            return obj
        box = [obj if self.main else None]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()

    def check_same(self, digest: str, what: str) -> None:
        """RunError on every rank unless all ranks computed the same ``digest`` of ``what``."""
        if self.world == 1:
            return
        digests: list[Any] = [None] * self.world
        dist.all_gather_object(digests, digest)
        if len(set(digests)) != 1:
            raise RunError(f"ranks disagree on the {what} ({len(set(digests))} different versions across "
                           f"{self.world} ranks); this is a popcli bug, please report it")

    def shard(self) -> tuple[int, int]:
        return self.rank, self.world


def setup(device_name: str = "auto") -> tuple[Dist, str]:
    """(this process's Dist, the device name it should use); joins the process group under torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist(), device_name
    rank, local_rank = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = device_name in ("auto", "cuda") and torch.cuda.is_available()
    if device_name.startswith("cuda:"):
        raise PopcliError("under torchrun each rank takes cuda:LOCAL_RANK; use --device cuda (or auto)")
    if device_name == "mps":
        raise PopcliError("torch.distributed does not run on MPS; use --device cpu under torchrun")
    if use_cuda:
        torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        try:
            dist.init_process_group("nccl" if use_cuda else "gloo")
        except (RuntimeError, ValueError) as err:
            raise PopcliError(f"could not join the torchrun process group ({str(err).splitlines()[0][:160]}); "
                              "check MASTER_ADDR/MASTER_PORT and that every node runs the same command") from None
    return Dist(rank, world, local_rank), (f"cuda:{local_rank}" if use_cuda else "cpu")


def teardown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def masks_digest(model: torch.nn.Module) -> str:
    """SHA-256 of every subnet layer's packed mask, in layer order (what must agree across ranks)."""
    from ..models import masked_layers, refresh_global_masks

    refresh_global_masks(model)
    digest = hashlib.sha256()
    for name, layer in masked_layers(model):
        digest.update(name.encode())
        digest.update(layer.mask().detach().cpu().numpy().tobytes())
    return digest.hexdigest()
