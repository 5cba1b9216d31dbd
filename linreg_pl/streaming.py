"""Synthetic data larger than memory: examples generated chunk by chunk, on demand, by background threads.

    python -m linreg_pl fit --config configs/stream.yaml --data.num_examples 50000000 \\
        --data.num_inputs 100 --data.true_w null --data.batch_size 4096

Example i lives in chunk i // chunk_size, and a chunk is drawn from its own generator seeded with
(seed, chunk index): memory does not grow with `num_examples`, the same example always has the same
value, and any process can make any chunk. Each epoch shuffles the order of the chunks (from
seed + epoch) and the examples inside each; the chunks are dealt out to processes and, within a
process, to its generating threads, so every share is disjoint.

`num_workers` background threads generate whole chunks ahead; the training thread gathers each batch
from a chunk with one index operation, as for data in memory. Generation overlaps training, which is
what makes streaming about as fast as data in memory.
"""

from __future__ import annotations

import math
import queue
import threading
from collections.abc import Iterator

import torch
from lightning.pytorch import LightningDataModule
from torch import Tensor
from typing_extensions import override

from linreg_pl.batches import shard
from linreg_pl.data import check_split_arguments, split_sizes, synthetic_truth
from linreg_pl.errors import ConfigError


class SyntheticChunks:
    """The chunks of `y = X·true_w + true_b + noise` in one split, and this process's share of them.

    Args:
        true_w: the true weights [num_inputs].
        true_b: the true bias.
        noise_std: standard deviation of the label noise.
        seed: with the chunk index, seeds each chunk's generator.
        chunk_size: examples per chunk, a multiple of `batch_size`.
        batch_size: examples per batch.
        chunks: the chunk indices of this split.
        last_chunk_size: examples in the split's last chunk (the end of the data may cut it short).
        shuffle: shuffle the chunk order and the examples in each chunk, anew each epoch.
        rank: this process's rank among `num_replicas`.
        num_replicas: processes sharing the chunks.
        even_shards: give every process as many chunks, hence as many batches, as the others
            (see `linreg_pl.batches.shard`).
    """

    def __init__(
        self,
        true_w: Tensor,
        true_b: float,
        noise_std: float,
        seed: int,
        chunk_size: int,
        batch_size: int,
        chunks: range,
        last_chunk_size: int,
        shuffle: bool,
        rank: int = 0,
        num_replicas: int = 1,
        even_shards: bool = False,
    ) -> None:
        self.true_w, self.true_b, self.noise_std, self.seed = true_w, true_b, noise_std, seed
        self.chunk_size, self.batch_size = chunk_size, batch_size
        self.chunks, self.last_chunk_size = chunks, last_chunk_size
        self.shuffle, self.rank, self.num_replicas, self.even_shards = shuffle, rank, num_replicas, even_shards
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def chunk(self, index: int) -> tuple[Tensor, Tensor]:
        """Features and targets of one chunk: a pure function of (seed, index)."""
        size = self._size(index)
        generator = torch.Generator().manual_seed(self._chunk_seed(index))
        features = torch.randn(size, len(self.true_w), generator=generator)
        noise = torch.randn(size, generator=generator)
        return features, noise.mul_(self.noise_std).add_(self.true_b).addmv_(features, self.true_w)

    def batch_order(self, index: int, size: int) -> Tensor | None:
        """The order of a chunk's examples in this epoch (None: as generated)."""
        if not self.shuffle:
            return None
        seed = (self._chunk_seed(index) * 0x85EBCA6B + self.epoch + 1) & 0xFFFFFFFF
        return torch.randperm(size, generator=torch.Generator().manual_seed(seed))

    def _chunk_seed(self, index: int) -> int:
        # torch's CPU generator keeps 32 bits of a seed: within one `seed`, distinct chunks get distinct
        # seeds (index plus a constant, modulo 2**32); the odd multiplier spreads different `seed`s apart
        return (index + self.seed * 0x9E3779B1) & 0xFFFFFFFF

    def process_chunks(self) -> list[int]:
        """This process's chunks for the current epoch."""
        order = torch.tensor(self.chunks)
        if self.shuffle:
            order = order[torch.randperm(len(order), generator=torch.Generator().manual_seed(self.seed + self.epoch))]
        return shard(order, self.rank, self.num_replicas, self.even_shards).tolist()

    def num_batches(self) -> int:
        return sum(math.ceil(self._size(c) / self.batch_size) for c in self.process_chunks())

    def _size(self, index: int) -> int:
        return self.last_chunk_size if index == self.chunks[-1] else self.chunk_size

    def batches(self, chunks: Iterator[tuple[int, Tensor, Tensor]]) -> Iterator[tuple[Tensor, Tensor]]:
        """Batches of the given chunks, each gathered with one index operation (or sliced, in order)."""
        size = self.batch_size
        for index, features, targets in chunks:
            order = self.batch_order(index, len(features))
            if order is not None:
                order = order.to(features.device)
            for start in range(0, len(features), size):
                if order is None:
                    yield features[start : start + size], targets[start : start + size]
                else:
                    rows = order[start : start + size]
                    yield features[rows], targets[rows]


class StreamingLoader:
    """Batches of `SyntheticChunks`, with chunks generated ahead by background threads.

    Threads, not worker processes: torch releases the GIL while it generates, so `num_workers` threads
    draw chunks while the training thread trains, with no inter-process copies or shared memory.
    Thread k generates chunks k, k + num_workers, ... of this process's share, and the chunks are
    consumed in their fixed order, so a run is reproducible whatever the timing. Lightning calls
    `loader.sampler.set_epoch(epoch)` before each epoch, as for a DataLoader.

    Args:
        chunks: the chunks of one split for this process.
        num_workers: generating threads; 0 generates in the training thread (no overlap).
        device: where batches are gathered: each chunk is copied to a GPU once, whole, not batch by batch.
    """

    batch_sampler = None  # Lightning reads it wherever a loader has a `sampler`, as a DataLoader does
    chunks_ahead = 2  # per thread: generation stays ahead of training, memory stays a few chunks

    def __init__(self, chunks: SyntheticChunks, num_workers: int, device: torch.device | None = None) -> None:
        self.chunks = chunks
        self.sampler = chunks
        self.num_workers = num_workers
        self.device = device if device is not None and device.type == "cuda" else None
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def __len__(self) -> int:
        return self.chunks.num_batches()

    def close(self) -> None:
        """Stop and join the generating threads of an iteration that was left unfinished."""
        self._stop.set()
        for thread in self._threads:
            thread.join()
        self._threads = []

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        # An iteration left unfinished (e.g. Lightning's two sanity-check batches) stops here at the
        # latest, and `close()` at teardown: no thread outlives the run or generates for nothing.
        self.close()
        order = self.chunks.process_chunks()
        made = self._generate_ahead(order) if self.num_workers else ((i, *self.chunks.chunk(i)) for i in order)
        if self.device is not None:
            made = (
                (index, features.to(self.device, non_blocking=True), targets.to(self.device, non_blocking=True))
                for index, features, targets in made
            )
        return self.chunks.batches(made)

    def _generate_ahead(self, order: list[int]) -> Iterator[tuple[int, Tensor, Tensor]]:
        workers = self.num_workers
        queues = [queue.Queue(maxsize=self.chunks_ahead) for _ in range(workers)]
        stop = self._stop = threading.Event()

        def produce(k: int) -> None:
            try:
                for index in order[k::workers]:
                    item = (index, *self.chunks.chunk(index))
                    while not stop.is_set():  # a full queue: wait, unless the epoch was abandoned
                        try:
                            queues[k].put(item, timeout=0.1)
                            break
                        except queue.Full:
                            continue
            except BaseException as error:  # surfaces in the training thread
                queues[k].put(error)

        self._threads = [threading.Thread(target=produce, args=(k,), daemon=True) for k in range(workers)]
        for thread in self._threads:
            thread.start()
        try:
            for position in range(len(order)):
                item = queues[position % workers].get()
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:  # also when training stops mid-epoch
            stop.set()


class SyntheticStreamDataModule(LightningDataModule):
    """The synthetic data of `SyntheticRegressionDataModule`, generated on demand: memory does not grow
    with `num_examples`.

    The splits fall on chunk boundaries, and the values differ from the in-memory data of the same
    seed. There is no predict split: predict on data in memory.

    Args:
        num_inputs: number of features (linked into the model by the CLI).
        num_examples: examples in total, before the val/test splits.
        true_w: the true weights, one per feature; None draws them from N(0, 1) with `seed`.
        true_b: the true bias.
        noise_std: standard deviation of the Gaussian label noise, >= 0.
        batch_size: examples per batch.
        val_fraction: share of the chunks held out for validation, in [0, 1).
        test_fraction: share of the chunks held out for test, in [0, 1).
        seed: seeds the data and the per-epoch shuffle.
        num_workers: background threads generating chunks ahead of training; 0 generates in the
            training thread.
        chunk_size: examples per chunk, rounded up to a multiple of `batch_size`.
    """

    feature_names: list[str] | None = None  # synthetic columns have no names (the CLI links this)

    def __init__(
        self,
        num_inputs: int = 1,
        num_examples: int = 1_000_000,
        true_w: list[float] | None = None,
        true_b: float = 0.0,
        noise_std: float = 0.0,
        batch_size: int = 32,
        val_fraction: float = 0.0,
        test_fraction: float = 0.0,
        seed: int = 0,
        num_workers: int = 1,
        chunk_size: int = 65536,
    ) -> None:
        super().__init__()
        name = type(self).__name__
        check_split_arguments(name, batch_size, val_fraction, test_fraction)
        self.true_w = synthetic_truth(name, num_inputs, true_w, true_b, noise_std, seed)
        if not isinstance(num_examples, int) or num_examples < 1:
            raise ConfigError(f"{name}: num_examples must be an integer >= 1, got {num_examples!r}")
        if not isinstance(num_workers, int) or num_workers < 0:
            raise ConfigError(f"{name}: num_workers must be an integer >= 0, got {num_workers!r}")
        if not isinstance(chunk_size, int) or chunk_size < 1:
            raise ConfigError(f"{name}: chunk_size must be an integer >= 1, got {chunk_size!r}")
        self.num_inputs, self.num_examples = num_inputs, num_examples
        self.true_b, self.noise_std = float(true_b), noise_std
        self.batch_size, self.seed, self.num_workers = batch_size, seed, num_workers
        self.chunk_size = math.ceil(chunk_size / batch_size) * batch_size
        self.chunk_ranges = self._chunk_ranges(val_fraction, test_fraction)  # fail now, before the Trainer starts
        self._loaders: list[StreamingLoader] = []
        # what the CLI links into `LinearRegression(standardization=...)`: streamed data are not standardised
        self.standardization = None

    def _chunk_ranges(self, val_fraction: float, test_fraction: float) -> dict[str, range]:
        name = type(self).__name__
        total = math.ceil(self.num_examples / self.chunk_size)
        remedy = "use more examples or a smaller chunk_size"
        num_train, num_val, _ = split_sizes(name, total, val_fraction, test_fraction, 1, "chunks", remedy)
        if num_train == total and self.num_examples % self.chunk_size:
            # a short chunk in training would give processes unequal step counts under DDP
            raise ConfigError(
                f"{name}: without val/test splits, num_examples must be a multiple of chunk_size "
                f"({self.chunk_size}), got {self.num_examples}"
            )
        return {
            "train": range(num_train),
            "val": range(num_train, num_train + num_val),
            "test": range(num_train + num_val, total),
        }

    def _loader(self, split: str, shuffle: bool = False, even_shards: bool = False) -> StreamingLoader:
        trainer = self.trainer
        rank, world = (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)
        chunks = self.chunk_ranges[split]
        total = math.ceil(self.num_examples / self.chunk_size)
        # only the data's very last chunk can be short
        last_size = (
            self.num_examples - (total - 1) * self.chunk_size if chunks and chunks[-1] == total - 1 else self.chunk_size
        )
        split_chunks = SyntheticChunks(
            self.true_w,
            self.true_b,
            self.noise_std,
            self.seed,
            self.chunk_size,
            self.batch_size,
            chunks,
            last_size,
            shuffle=shuffle,
            rank=rank,
            num_replicas=world,
            even_shards=even_shards,
        )
        device = trainer.strategy.root_device if trainer is not None else None
        loader = StreamingLoader(split_chunks, self.num_workers, device)
        self._loaders.append(loader)
        return loader

    @override
    def train_dataloader(self) -> StreamingLoader:
        return self._loader("train", shuffle=True, even_shards=True)

    @override
    def val_dataloader(self) -> StreamingLoader:
        return self._loader("val")

    @override
    def test_dataloader(self) -> StreamingLoader:
        return self._loader("test")

    @override
    def teardown(self, stage: str) -> None:
        for loader in self._loaders:  # no generating thread outlives fit/validate/test
            loader.close()
        self._loaders.clear()
