"""The batch path: whole batches gathered from tensors by `gather`, no per-sample work.

A `torch.utils.data.DataLoader` over a `TensorDataset` indexes and collates one sample at a time,
which costs more than the whole step of a small model. Here a sampler yields one index tensor per
batch (shuffled from `(seed, epoch)`, sharded by process rank) and the loader gathers every tensor
with it. Lightning calls `loader.sampler.set_epoch(epoch)` at the start of each epoch, exactly as it
does for a `DataLoader`, so a run resumed from a checkpoint sees the same order as one never stopped.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from typing import Any, NamedTuple

import torch
from torch import Tensor


class RowBatch(NamedTuple):
    """A predict batch that carries each row's number: `PredictionWriter` writes it in the `row` column, so the
    predictions file names the input rows whatever the order or the process that predicted them."""

    features: Tensor
    row: Tensor


def gather(tensors: Sequence[Tensor], index: Tensor | slice) -> tuple[Tensor, ...]:
    """Rows of each tensor: views for a `slice`, else copies of the rows a 1-D tensor of row numbers
    (int64 or int32, on any device) names, in its order.

    `index_select` copies whole rows; `t[index]` (advanced indexing) takes the same rows through torch's
    general indexing kernel, 3-4x slower for a batch of 4096 rows of 100 float32 features
    (`python benchmarks/throughput.py --sections loops` measures both).
    """
    if isinstance(index, slice):
        return tuple(t[index] for t in tensors)
    return tuple(t.index_select(0, index.to(t.device)) for t in tensors)


def shard(order: Tensor, rank: int, num_replicas: int, even: bool) -> Tensor:
    """This process's strided share of `order` (example or chunk indices).

    With `even`, the order is first padded by wrapping around so every process gets the same number
    of items (DDP training needs equal step counts; `DistributedSampler` pads the same way); without
    it, shares differ by at most one item and nothing repeats (evaluation).
    """
    if num_replicas == 1:
        return order
    if even:
        padded = math.ceil(len(order) / num_replicas) * num_replicas
        order = order.repeat(math.ceil(padded / len(order)))[:padded]
    return order[rank::num_replicas]


class BatchIndexSampler:
    """Index tensors (or slices) of one epoch's batches for one process.

    Args:
        num_samples: how many samples the tensors hold.
        batch_size: samples per batch; every batch but the last of an epoch has exactly this many.
        shuffle: draw a fresh permutation each epoch from `seed + epoch` (as `DistributedSampler` does).
        seed: base seed of the permutations.
        rank: this process's rank among `num_replicas`.
        num_replicas: how many processes share the samples; each gets a disjoint strided share.
        even_shards: give every process the same number of samples (see `shard`).
        device: where the index tensors live (the device of the data).
        passes: passes over the samples in one epoch, each a fresh permutation when shuffling (the first is
            the one a single pass would take): an epoch of a small training set can hold enough steps.
    """

    def __init__(
        self,
        num_samples: int,
        batch_size: int,
        shuffle: bool = False,
        seed: int = 0,
        rank: int = 0,
        num_replicas: int = 1,
        even_shards: bool = False,
        device: torch.device | None = None,
        passes: int = 1,
    ) -> None:
        self.num_samples = num_samples
        self.passes = passes
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.rank = rank
        self.num_replicas = num_replicas
        self.even_shards = even_shards
        self.device = device
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def shard_size(self) -> int:
        total = self.num_samples * self.passes
        if self.even_shards:
            return math.ceil(total / self.num_replicas)
        return len(range(self.rank, total, self.num_replicas))

    def __len__(self) -> int:
        return math.ceil(self.shard_size() / self.batch_size)

    def indices(self) -> Tensor | None:
        """This process's sample indices for the current epoch; None means 0..n-1 in order."""
        if not self.shuffle and self.num_replicas == 1 and self.passes == 1:
            return None
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed + self.epoch)
            orders = [torch.randperm(self.num_samples, generator=generator) for _ in range(self.passes)]
            order = orders[0] if self.passes == 1 else torch.cat(orders)
        else:
            order = torch.arange(self.num_samples).repeat(self.passes)
        order = shard(order, self.rank, self.num_replicas, self.even_shards)
        return order.to(self.device) if self.device is not None else order

    def __iter__(self) -> Iterator[Tensor | slice]:
        order = self.indices()
        size = self.shard_size()
        for start in range(0, size, self.batch_size):
            stop = min(start + self.batch_size, size)
            # contiguous, in-order batches are views: no copy at all
            yield slice(start, stop) if order is None else order[start:stop]


class TensorBatchLoader:
    """Iterates `gather(tensors, index)` for each index the sampler yields.

    Lightning accepts any iterable with `__len__` as a dataloader and leaves it as it is (no sampler
    injection, no worker checks), so sharding is the sampler's job. Like a `DataLoader`, it has a
    `sampler` with `set_epoch`, and like a stateful loader a `state_dict`, which Lightning saves in
    checkpoints.

    Args:
        tensors: tensors of equal first dimension, e.g. `(features, targets)`.
        sampler: the batch indices; Lightning finds it as `loader.sampler` to set the epoch.
        batch_type: what each batch is made into from the gathered tensors (e.g. `RowBatch`); None: a tuple.
    """

    batch_sampler = None  # Lightning reads it wherever a loader has a `sampler`, as a DataLoader does

    def __init__(
        self, tensors: Sequence[Tensor], sampler: BatchIndexSampler, batch_type: Callable[..., Any] | None = None
    ) -> None:
        self.tensors = tuple(tensors)
        self.sampler = sampler
        self.batch_type = batch_type
        self._handed_out = 0  # batches of the current epoch handed out so far
        self._resume_from = 0

    def __len__(self) -> int:
        return len(self.sampler)

    def __iter__(self) -> Iterator[Any]:
        start, self._resume_from = self._resume_from, 0
        self._handed_out = start
        tensors, batch_type = self.tensors, self.batch_type
        for position, index in enumerate(self.sampler):
            if position < start:
                continue
            self._handed_out += 1
            yield gather(tensors, index) if batch_type is None else batch_type(*gather(tensors, index))

    def state_dict(self) -> dict[str, int]:
        """Where this epoch stands; Lightning saves it in checkpoints so a mid-epoch resume is exact.

        Lightning fetches no batch ahead from a loader with a length, and saves checkpoints only between
        steps (at a batch's or an epoch's end, or when it stops on SIGTERM), so every batch handed out
        has been trained on.
        """
        return {"epoch": self.sampler.epoch, "position": self._handed_out}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.sampler.set_epoch(state["epoch"])
        self._resume_from = state["position"] if state["position"] < len(self) else 0
