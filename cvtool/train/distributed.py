"""Training under torchrun: one process per rank, DistributedDataParallel, rank 0 writes.

`torchrun --nproc_per_node N -m cvtool train TASK ...` (or `cvtool train TASK --nproc-per-node
N`, which launches it) starts N copies of the same command; torchrun's environment (RANK,
WORLD_SIZE, LOCAL_RANK, the rendezvous) says which one each is. Every rank builds the same
model from the same seed, trains on its part of each global batch (`RankShare`: a seeded
per-epoch permutation, as DistributedSampler draws it) and DDP averages the gradients, so one
step is the step one process takes on the whole batch. Rank 0 alone evaluates (over the whole
val set), writes the run directory and logs; it broadcasts what it decided (figures, errors) so
every rank stops, resumes and fails together. One process (no torchrun) is a world of one and
nothing here changes what it does.
"""

from __future__ import annotations

import datetime
import warnings
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import Sampler

from cvtool.core.status import CvtoolError, CvtoolWarning, UsageError
from cvtool.train.world import World, from_environment

T = TypeVar("T")
TIMEOUT = datetime.timedelta(minutes=30)  # a rank waiting on rank 0's evaluation or writes


WORLD = World()  # this process's, once `start` has run; read it as `distributed.WORLD`
_ALONE = False  # rank 0 is running work the other ranks do not (no collectives then)


def start(device: str) -> torch.device:
    """Join torchrun's process group (gloo on CPU, NCCL on CUDA, each rank on the GPU of its
    LOCAL_RANK) and return this rank's device; without torchrun, the device as asked."""
    global WORLD
    from cvtool.core.device import resolve_device

    WORLD = from_environment()
    if not WORLD.distributed:
        return resolve_device(device)
    target = resolve_device(device)
    if target.type == "cuda":
        if WORLD.local_rank >= torch.cuda.device_count():
            raise CvtoolError(f"LOCAL_RANK {WORLD.local_rank} has no GPU: this machine has "
                              f"{torch.cuda.device_count()}; use --nproc-per-node at most that")
        target = torch.device("cuda", WORLD.local_rank)
        torch.cuda.set_device(target)
    elif target.type != "cpu":
        raise UsageError(f"distributed training runs on cpu or cuda, not {target.type}")
    if not dist.is_initialized():
        dist.init_process_group("nccl" if target.type == "cuda" else "gloo", store=_store(),
                                rank=WORLD.rank, world_size=WORLD.size, timeout=TIMEOUT)
    return target


def _store() -> dist.Store:
    """torch's own store for the env:// rendezvous, under a prefix of its own for each of
    torchrun's restarts. torchrun's agent keeps one store for the whole job (torch 2.14), so
    without it a restarted rank can read the address a dead rank published in an earlier
    attempt and wait on it for ever; `init_process_group(init_method="env://")` adds no such
    prefix. Every agent of a one-node job restarts its group together, so they agree on
    TORCHELASTIC_RESTART_COUNT (`WORLD.restarts`)."""
    from torch.distributed.rendezvous import rendezvous

    store, _, _ = next(rendezvous("env://", WORLD.rank, WORLD.size, timeout=TIMEOUT))
    store.set_timeout(TIMEOUT)
    return dist.PrefixStore(f"cvtool/attempt-{WORLD.restarts}", store)


def stop() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    if WORLD.distributed:
        dist.barrier()


def on_main(work: Callable[[], T]) -> T:
    """`work()` on rank 0 only; its result, or the CvtoolError it raised, on every rank (so a
    refused run directory stops all of them with the same one-line error)."""
    if not WORLD.distributed:
        return work()
    global _ALONE
    outcome: list[Any] = [None]
    if WORLD.main:
        _ALONE = True  # the sanity checks' forward passes, say, must not sync batch norm
        try:
            outcome[0] = ("ok", work())
        except CvtoolError as error:
            outcome[0] = ("error", (type(error), error.message))
        finally:
            _ALONE = False
    dist.broadcast_object_list(outcome, src=0)
    kind, value = outcome[0]
    if kind == "error":
        error_type, message = value
        raise error_type(message)
    return value


def broadcast(value: T) -> T:
    """Rank 0's `value` on every rank."""
    if not WORLD.distributed:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def sum_over_ranks(values: dict[str, float]) -> dict[str, float]:
    """Each key's sum over every rank (float64; the same keys on every rank)."""
    if not WORLD.distributed or not values:
        return values
    keys = sorted(values)
    tensor = torch.tensor([values[key] for key in keys], dtype=torch.float64)
    dist.all_reduce(tensor)
    reduced = dict(zip(keys, tensor.tolist()))
    return {key: reduced[key] for key in values}


def local_batch_size(global_batch: int) -> int:
    """This rank's share of the global batch, which must split evenly."""
    if global_batch % WORLD.size:
        raise UsageError(f"--batch-size {global_batch} does not split across {WORLD.size} "
                         f"ranks; give a multiple of {WORLD.size} (it is the global batch)")
    return global_batch // WORLD.size


class RankShare(Sampler[int]):
    """This rank's part of an epoch: one permutation of the dataset seeded by `seed + epoch`
    (a DistributedSampler's), of which the rank takes every WORLD.size-th example, so that
    its local batch k holds its share of the global batch k one process takes. Nothing is
    padded or repeated; an epoch's last global batch, when it holds fewer examples than there
    are ranks, is left out (ranks must take equally many steps). A world of one takes it all."""

    def __init__(self, size: int, global_batch: int, seed: int, epoch: int) -> None:
        self.size, self.global_batch, self.seed, self.epoch = size, global_batch, seed, epoch
        remainder = size % global_batch
        self.used = size - remainder if 0 < remainder < WORLD.size else size

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        order = torch.randperm(self.size, generator=generator)[:self.used]
        return iter(order[WORLD.rank::WORLD.size].tolist())

    def __len__(self) -> int:
        return len(range(WORLD.rank, self.used, WORLD.size))

    def loss_share(self, batch: int, local_size: int) -> float:
        """What this rank's mean loss on its local batch `batch` is weighted by, so that DDP's
        average over ranks is the mean over global batch `batch`, also where the ranks' shares
        of it differ (an epoch's last batch). 1 in a world of one."""
        global_size = min(self.global_batch, self.used - batch * self.global_batch)
        return local_size * WORLD.size / global_size


UNUSED_PARAMETERS = "cvtool_unused_parameters"


def replicate(model: nn.Module, device: torch.device) -> nn.Module:
    """The module every rank trains through: DDP over `model` (its parameters and buffers
    broadcast from rank 0 first)."""
    from torch.nn.parallel import DistributedDataParallel

    ids = [device.index] if device.type == "cuda" else None
    # A model marked UNUSED_PARAMETERS holds parameters its forward never uses (an smp encoder
    # cut to --encoder-depth 3 keeps its deeper stages): DDP must look for them each step. For
    # every other model that search costs each step and makes torch warn that it found none.
    unused = bool(getattr(model, UNUSED_PARAMETERS, False))
    return DistributedDataParallel(model, device_ids=ids, find_unused_parameters=unused)


def convert_sync_batch_norm(model: nn.Module, device: torch.device) -> nn.Module:
    """Every batch norm layer, in place, becomes a `SyncBatchNorm`: normalised with the
    statistics of the whole global batch. (torch's own nn.SyncBatchNorm refuses CPU tensors;
    this one runs on any device gloo or NCCL reduces, so CPU tests check the GPU path too.)"""
    for name, child in model.named_children():
        if type(child) in PLAIN_BATCH_NORMS:
            setattr(model, name, SyncBatchNorm.like(child).to(device))
        elif isinstance(child, nn.modules.batchnorm._BatchNorm):
            # A subclass does more than normalise (timm's BatchNormAct2d applies its
            # activation too); replacing it would drop that, so it stays per rank.
            warnings.warn(f"--sync-bn: {type(child).__name__} layers are not batch norms "
                          "cvtool can synchronise; they normalise each rank's part",
                          CvtoolWarning, stacklevel=2)
        else:
            convert_sync_batch_norm(child, device)
    return model


PLAIN_BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


class SyncBatchNorm(nn.modules.batchnorm._BatchNorm):
    """Batch norm over the global batch: each rank's per-channel sum, sum of squares and count
    are all-reduced (differentiably), so the normalisation and the running statistics are the
    ones one process computes on the whole batch. Its state dict is a BatchNorm's."""

    @classmethod
    def like(cls, layer: nn.modules.batchnorm._BatchNorm) -> SyncBatchNorm:
        synced = cls(layer.num_features, layer.eps, layer.momentum, layer.affine,
                     layer.track_running_stats)
        synced.load_state_dict(layer.state_dict())
        return synced

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {input.dim()}D input)")

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if not (self.training and WORLD.distributed and dist.is_initialized()) or _ALONE:
            return super().forward(input)
        channels = input.shape[1]
        dims = [0, *range(2, input.dim())]
        count = torch.tensor([input.numel() / channels], dtype=input.dtype, device=input.device)
        totals = _SumOverRanks.apply(torch.cat([input.sum(dims), (input * input).sum(dims),
                                                count]))
        total = totals[-1]
        mean = totals[:channels] / total
        var = totals[channels:2 * channels] / total - mean * mean
        if self.track_running_stats and self.running_mean is not None:
            with torch.no_grad():
                self.num_batches_tracked += 1
                momentum = (1.0 / float(self.num_batches_tracked) if self.momentum is None
                            else self.momentum)
                unbiased = var * total / max(float(total) - 1.0, 1.0)
                self.running_mean.mul_(1 - momentum).add_(mean.detach(), alpha=momentum)
                self.running_var.mul_(1 - momentum).add_(unbiased.detach(), alpha=momentum)
        shape = [1, channels] + [1] * (input.dim() - 2)
        normalised = (input - mean.view(shape)) / torch.sqrt(var.view(shape) + self.eps)
        if self.affine:
            normalised = normalised * self.weight.view(shape) + self.bias.view(shape)
        return normalised


class _SumOverRanks(torch.autograd.Function):
    """All-reduce (sum) whose gradient is the all-reduced gradient: every rank's loss depends
    on every rank's input through the sum."""

    @staticmethod
    def forward(ctx: Any, tensor: torch.Tensor) -> torch.Tensor:
        total = tensor.clone()
        dist.all_reduce(total)
        return total

    @staticmethod
    def backward(ctx: Any, gradient: torch.Tensor) -> torch.Tensor:
        total = gradient.clone()
        dist.all_reduce(total)
        return total
