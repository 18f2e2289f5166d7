"""Several processes (``torchrun``): the sums and broadcasts PGU needs, over ``torch.distributed``.

PGU's statistics are sums over samples (docs/method.md section 2), so with the data sharded over
ranks, each rank takes the statistics of its shard and a sum over ranks (all-reduce) gives those of
the union, to rounding. Everything here is a no-op in a single process (no process group, or a
group of one), so the same code runs with and without ``torchrun``.

Tensors travel on the CPU under gloo and on the current CUDA device under NCCL, and come back on
the device they left from. Checks that every rank holds the same thing compare a 63-bit hash with
an all-reduce of its minimum and maximum: nothing is pickled between processes.
"""

from __future__ import annotations

import hashlib
import os
from contextlib import contextmanager

import torch
import torch.distributed as dist

__all__ = ["world_size", "rank", "active", "all_reduce_sum_", "broadcast_", "check_same_everywhere",
           "DistributedMismatchError", "barrier", "launched"]


class DistributedMismatchError(RuntimeError):
    """Ranks that should hold the same thing (model, layers, settings) do not."""


def active(enabled: bool | None = None) -> bool:
    """Whether to reduce over processes: ``enabled`` if given (True needs a process group), else whether a
    process group of more than one rank is initialised."""
    initialised = dist.is_available() and dist.is_initialized()
    if enabled is None:
        return initialised and dist.get_world_size() > 1
    if enabled and not initialised:
        raise RuntimeError("distributed=True needs an initialised process group: run under torchrun and call "
                           "torch.distributed.init_process_group('gloo') (CPU) or ('nccl') (GPU) first")
    return bool(enabled) and dist.get_world_size() > 1


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def _comm_device(tensor: torch.Tensor) -> torch.device:
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def _buffer(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """``tensor`` itself when the backend can send it as it is (on ``device``, contiguous), else a copy that can:
    collectives send the storage in memory order, so a non-contiguous view (a channels-last gradient, a
    slice of eigenvectors) would arrive with its entries permuted."""
    if tensor.device == device and tensor.is_contiguous():
        return tensor
    return tensor.to(device).contiguous()


def all_reduce_sum_(tensor: torch.Tensor) -> torch.Tensor:
    """In place: ``tensor`` becomes its sum over ranks (returned for chaining)."""
    device = _comm_device(tensor)
    buffer = _buffer(tensor, device)
    dist.all_reduce(buffer, op=dist.ReduceOp.SUM)
    if buffer is not tensor:
        tensor.copy_(buffer)
    return tensor


def broadcast_(tensor: torch.Tensor, src: int) -> torch.Tensor:
    """In place: ``tensor`` becomes rank ``src``'s (returned for chaining)."""
    device = _comm_device(tensor)
    buffer = _buffer(tensor, device)
    dist.broadcast(buffer, src=src)
    if buffer is not tensor:
        tensor.copy_(buffer)
    return tensor


def check_same_everywhere(signature: str, what: str) -> None:
    """Raise :class:`DistributedMismatchError` on every rank unless all ranks pass the same ``signature``."""
    value = int.from_bytes(hashlib.sha256(signature.encode()).digest()[:8], "big") >> 1
    lo = torch.tensor([value], dtype=torch.int64)
    hi = torch.tensor([-value], dtype=torch.int64)  # max as -min(-x): one op kind for every backend
    all_reduce_min_(lo)
    all_reduce_min_(hi)
    if int(lo) != value or -int(hi) != value:
        raise DistributedMismatchError(
            f"the processes disagree on {what}: every rank must run the same model and settings "
            f"(rank {rank()} of {world_size()} has {signature[:200]!r})")


def all_reduce_min_(tensor: torch.Tensor) -> torch.Tensor:
    device = _comm_device(tensor)
    buffer = _buffer(tensor, device)
    dist.all_reduce(buffer, op=dist.ReduceOp.MIN)
    if buffer is not tensor:
        tensor.copy_(buffer)
    return tensor


def barrier() -> None:
    """Wait for every rank (nothing in a single process)."""
    if active():
        dist.barrier()


@contextmanager
def launched():
    """Inside a ``torchrun`` launch (``WORLD_SIZE`` > 1 in the environment), the process group for the block:
    NCCL when CUDA is there (each rank on its ``LOCAL_RANK`` GPU), else gloo; destroyed on exit. Elsewhere a
    no-op. Yields whether this process is one of several."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1 or (dist.is_available() and dist.is_initialized()):
        yield active()
        return
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        backend = "nccl"
    else:
        backend = "gloo"
    dist.init_process_group(backend)
    try:
        yield True
    finally:
        dist.destroy_process_group()
