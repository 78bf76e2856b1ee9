"""Training with several processes (``torchrun --nproc_per_node N -m advcore train ...``).

What makes N processes compute what one process computes on the same global batches:

* the loader cuts every global batch (``data.batch_size`` x N samples) into N chunks, one per
  rank, with augmentation drawn for the whole global batch (``data.Loader``);
* the training forwards run through DistributedDataParallel, so gradients are averaged, and
  the loss reduction divides by *global* denominators (``global_sums``), so means, masks and
  sample weights cover the global batch, not each rank's share;
* per-sample state rows written during a step are exchanged after it (``sync_state``): every
  rank holds the whole, global state at all times, a checkpoint written by rank 0 has it
  all, and a resume with another number of processes needs no conversion.

BatchNorm is the one exception: batch statistics are per rank (as with plain DDP), and the
running statistics are averaged over ranks at every epoch end (``average_buffers``).
"""

from __future__ import annotations

import atexit
import math
import os
import zlib
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn as nn

from ..errors import AdvcoreError

__all__ = ["Launch", "DistributedError", "from_env", "start", "wrap_ddp", "global_sums", "sync_state",
           "average_buffers", "any_rank"]


class DistributedError(AdvcoreError):
    """Multi-process training is set up inconsistently; the message names the fix."""


@dataclass(frozen=True)
class Launch:
    """This process's place in the job: rank, world size and the local rank (its GPU)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0


def from_env(env: dict[str, str] | None = None) -> Launch:
    """The launch described by torchrun's RANK / WORLD_SIZE / LOCAL_RANK (one process without them)."""
    env = os.environ if env is None else env
    if "WORLD_SIZE" not in env:
        return Launch()
    try:
        launch = Launch(int(env.get("RANK", 0)), int(env["WORLD_SIZE"]), int(env.get("LOCAL_RANK", 0)))
    except ValueError:
        raise DistributedError("RANK/WORLD_SIZE/LOCAL_RANK must be integers; start with torchrun "
                               "--nproc_per_node N -m advcore train ...") from None
    if not 0 <= launch.rank < launch.world_size:
        raise DistributedError(f"RANK={launch.rank} is outside WORLD_SIZE={launch.world_size}; start with torchrun")
    return launch


def start(launch: Launch, device: str) -> str:
    """Join the process group (nccl on CUDA, gloo on CPU) and return the device this rank uses.

    ``device`` is the config's; "auto"/"cuda" become ``cuda:LOCAL_RANK`` when CUDA is present.
    """
    cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    if cuda:
        if not torch.cuda.is_available():
            raise DistributedError("device: cuda requested but no CUDA device is available; use --set device=cpu")
        if launch.local_rank >= torch.cuda.device_count():
            raise DistributedError(f"LOCAL_RANK={launch.local_rank} but only {torch.cuda.device_count()} GPUs are "
                                   f"visible; lower --nproc_per_node")
        device = f"cuda:{launch.local_rank}"
        torch.cuda.set_device(launch.local_rank)
    else:
        device = "cpu"
    if not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo", rank=launch.rank, world_size=launch.world_size)
        atexit.register(_leave)
    elif dist.get_world_size() != launch.world_size:
        raise DistributedError(f"the process group has {dist.get_world_size()} processes but world_size is "
                               f"{launch.world_size}; pass the group's size")
    return device


def wait_for_all() -> None:
    """Block until every rank gets here. Ranks that end a run together leave together: with
    gloo, a rank whose peer has already closed its connections can abort at exit."""
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()


def _leave() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def wrap_ddp(module: nn.Module, device: torch.device) -> nn.Module:
    """DistributedDataParallel for the training forwards.

    Several forwards before one backward (TRADES' clean and adversarial passes) are fine
    because every parameter is used (``find_unused_parameters=False``). Buffers are not
    broadcast at each forward (a forward count that differs between ranks would hang);
    ``average_buffers`` syncs them at epoch ends instead.
    """
    from torch.nn.parallel import DistributedDataParallel

    ids = [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else None
    return DistributedDataParallel(module, device_ids=ids, broadcast_buffers=False)


def global_sums(values: torch.Tensor) -> torch.Tensor:
    """``values`` summed over all ranks (a detached copy; the identity with one process)."""
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return values.detach()
    total = values.detach().clone()
    dist.all_reduce(total)
    return total


def any_rank(flag: bool, device: torch.device | str = "cpu") -> bool:
    """True on every rank when ``flag`` is true on at least one (e.g. a stop signal)."""
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return flag
    t = torch.tensor([int(flag)], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def _gather(t: torch.Tensor) -> list[torch.Tensor]:
    parts = [torch.empty_like(t) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, t.contiguous())
    return parts


def _as_bytes(rows: torch.Tensor) -> torch.Tensor:
    """[n, ...] of any dtype as [n, bytes per row] uint8 (bool included), for one all_gather."""
    rows = rows.contiguous()
    if rows.dtype == torch.bool:
        rows = rows.view(torch.uint8)
    return rows.reshape(rows.shape[0], math.prod(rows.shape[1:])).view(torch.uint8)  # same width when empty


def _from_bytes(raw: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    dtype = torch.uint8 if like.dtype == torch.bool else like.dtype
    rows = raw.contiguous().view(dtype).reshape(raw.shape[0], *like.shape[1:])
    return rows.view(torch.bool) if like.dtype == torch.bool else rows


def sync_state(state, index: torch.Tensor) -> None:
    """Give every rank the per-sample rows each rank wrote in this step.

    Each rank sends the rows of ``index`` (its batch) of every tensor in ``state``; every
    rank writes the others' rows into its copy. Two collectives per step: the row counts
    (and a checksum of the tensor names, which must agree), then one byte matrix holding the
    indices and all rows. The rule for plugins: during a step, write per-sample state only
    at rows ``step.index``; anything else must be done identically on every rank.
    """
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return
    names = sorted(state)
    device = state.device
    index = torch.unique(index.to(device))
    checksum = zlib.crc32("\0".join(f"{n}:{tuple(state[n].shape)}:{state[n].dtype}" for n in names).encode())
    head = torch.tensor([index.numel(), checksum], dtype=torch.int64, device=device)
    heads = _gather(head)
    counts = [int(h[0]) for h in heads]
    if len({int(h[1]) for h in heads}) > 1:
        raise DistributedError(
            f"per-sample state differs between ranks (rank {dist.get_rank()} has {', '.join(names) or 'none'}); "
            f"create state tensors on every rank, e.g. in advcore_on_run_start, not only for some batches")
    if not names or max(counts) == 0:
        return
    parts = [_as_bytes(index[:, None])] + [_as_bytes(state[n][index]) for n in names]
    widths = [p.shape[1] for p in parts]
    payload = torch.zeros(max(counts), sum(widths), dtype=torch.uint8, device=device)
    payload[:index.numel()] = torch.cat(parts, dim=1)
    me = dist.get_rank()
    for rank, (count, got) in enumerate(zip(counts, _gather(payload))):
        if rank == me or count == 0:
            continue
        got = got[:count]
        cols = torch.split(got, widths, dim=1)
        rows_index = _from_bytes(cols[0], index[:, None]).reshape(-1)
        for name, col in zip(names, cols[1:]):
            target = state[name]
            target[rows_index] = _from_bytes(col, target)


def average_buffers(model: nn.Module) -> None:
    """Average BatchNorm running statistics over ranks (each rank saw only its share of batches)."""
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return
    world = dist.get_world_size()
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._NormBase) and module.track_running_stats:
            for buf in (module.running_mean, module.running_var):
                if buf is not None:
                    dist.all_reduce(buf)
                    buf.div_(world)
