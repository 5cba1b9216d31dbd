"""Data larger than memory, chunk by chunk, made or read on demand by background threads: synthetic
examples (`SyntheticStreamDataModule`) or a Parquet/CSV table on disk (`TableStreamDataModule`).

    python -m linreg_pl fit --config configs/stream.yaml --data.num_examples 50000000 \\
        --data.num_inputs 100 --data.true_w null --data.batch_size 4096
    python -m linreg_pl fit --config configs/table-stream.yaml --data.path data/parts/ --data.target y

Example i lives in chunk i // chunk_size, and a chunk is drawn from its own generator seeded with
(seed, chunk index): memory does not grow with `num_examples`, the same example always has the same
value, and any process can make any chunk. Each epoch shuffles the order of the chunks (from
seed + epoch) and the examples inside each; the chunks are dealt out to processes and, within a
process, to its generating threads, so every share is disjoint.

`num_workers` background threads generate whole chunks ahead; the training thread gathers each batch
from a chunk by `linreg_pl.batches.gather`, as for data in memory. Generation overlaps training; on a
few CPU cores, making the data is what bounds the speed (README, "Speed").

A table streams the same way, with its row groups (Parquet) or byte ranges (CSV) as chunks: see
`TableStreamDataModule` for its splits, its padding under DDP and its one pass for the statistics.
`StreamingLoader` serves any `ChunkSource`: one split's chunks, this process's share of them, and how
a chunk becomes batches.
"""

from __future__ import annotations

import itertools
import math
import queue
import threading
from collections.abc import Iterator, Sequence

import numpy as np
import torch
from lightning.pytorch import LightningDataModule
from torch import Tensor
from typing_extensions import override

from linreg_pl.batches import RowBatch, gather, shard
from linreg_pl.errors import ConfigError
from linreg_pl.regression.closed_form import NormalEquations
from linreg_pl.regression.data import check_split_arguments, feature_columns, split_sizes, synthetic_truth
from linreg_pl.regression.tables import CSVByteRanges, ParquetRowGroups, chunked_table

Chunk = tuple[Tensor, ...]  # the tensors of one chunk, e.g. (features, targets), of equal first dimension


class ChunkSource:
    """What `StreamingLoader` streams: one split's chunks, this process's share of them in this epoch, and
    how a chunk becomes batches. Subclasses make a chunk (`chunk`, called in a background thread), say
    how many rows it has (`rows_in`) and which chunks this process takes (`process_chunks`).

    Args:
        seed: seeds the chunk order of each epoch (with the epoch) and the row order inside each chunk.
        batch_size: rows per batch; a chunk's last batch may be shorter.
        shuffle: shuffle the chunk order and the rows in each chunk, anew each epoch.
        rank: this process's rank among `num_replicas`.
        num_replicas: processes sharing the chunks.
    """

    def __init__(self, seed: int, batch_size: int, shuffle: bool, rank: int = 0, num_replicas: int = 1) -> None:
        self.seed, self.batch_size, self.shuffle = seed, batch_size, shuffle
        self.rank, self.num_replicas = rank, num_replicas
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def chunk(self, index: int) -> Chunk:
        """The tensors of chunk `index`, made or read whole."""
        raise NotImplementedError

    def rows_in(self, index: int) -> int:
        raise NotImplementedError

    def process_chunks(self) -> list[int]:
        """This process's chunks for the current epoch, in the order they are consumed."""
        raise NotImplementedError

    def num_batches(self) -> int:
        return sum(math.ceil(self.rows_in(c) / self.batch_size) for c in self.process_chunks())

    def epoch_order(self, chunks: Sequence[int]) -> Tensor:
        """`chunks` in this epoch's order: shuffled from seed + epoch, or as given."""
        order = torch.tensor(list(chunks), dtype=torch.long)
        if self.shuffle:
            order = order[torch.randperm(len(order), generator=torch.Generator().manual_seed(self.seed + self.epoch))]
        return order

    def batch_order(self, index: int, size: int) -> Tensor | None:
        """The order of a chunk's rows in this epoch (None: as made)."""
        if not self.shuffle:
            return None
        seed = (self._chunk_seed(index) * 0x85EBCA6B + self.epoch + 1) & 0xFFFFFFFF
        return torch.randperm(size, generator=torch.Generator().manual_seed(seed))

    def _chunk_seed(self, index: int) -> int:
        # torch's CPU generator keeps 32 bits of a seed: within one `seed`, distinct chunks get distinct
        # seeds (index plus a constant, modulo 2**32); the odd multiplier spreads different `seed`s apart
        return (index + self.seed * 0x9E3779B1) & 0xFFFFFFFF

    def batches(self, chunks: Iterator[tuple[int, Chunk]]) -> Iterator[Chunk]:
        """Batches of the given chunks, each gathered at once (or sliced, in order)."""
        size = self.batch_size
        for index, tensors in chunks:
            order = self.batch_order(index, len(tensors[0]))
            if order is not None:
                order = order.to(tensors[0].device)
            for start in range(0, len(tensors[0]), size):
                yield gather(tensors, slice(start, start + size) if order is None else order[start : start + size])


class SyntheticChunks(ChunkSource):
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
        super().__init__(seed, batch_size, shuffle, rank, num_replicas)
        self.true_w, self.true_b, self.noise_std = true_w, true_b, noise_std
        self.chunk_size, self.chunks, self.last_chunk_size = chunk_size, chunks, last_chunk_size
        self.even_shards = even_shards

    @override
    def chunk(self, index: int) -> tuple[Tensor, Tensor]:
        """Features and targets of one chunk: a pure function of (seed, index)."""
        size = self.rows_in(index)
        generator = torch.Generator().manual_seed(self._chunk_seed(index))
        features = torch.randn(size, len(self.true_w), generator=generator)
        noise = torch.randn(size, generator=generator)
        return features, noise.mul_(self.noise_std).add_(self.true_b).addmv_(features, self.true_w)

    @override
    def process_chunks(self) -> list[int]:
        return shard(self.epoch_order(self.chunks), self.rank, self.num_replicas, self.even_shards).tolist()

    @override
    def rows_in(self, index: int) -> int:
        return self.last_chunk_size if index == self.chunks[-1] else self.chunk_size


class StreamingLoader:
    """Batches of a `ChunkSource` (`SyntheticChunks`, `TableChunks`), with chunks made ahead by background
    threads.

    Threads, not worker processes: torch releases the GIL while it generates, and pyarrow while it reads
    and parses, so `num_workers` threads make chunks while the training thread trains, with no
    inter-process copies or shared memory.
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

    def __init__(self, chunks: ChunkSource, num_workers: int, device: torch.device | None = None) -> None:
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

    def __iter__(self) -> Iterator[Chunk]:
        # An iteration left unfinished (e.g. Lightning's two sanity-check batches) stops here at the
        # latest, and `close()` at teardown: no thread outlives the run or generates for nothing.
        self.close()
        order = self.chunks.process_chunks()
        made = self._generate_ahead(order) if self.num_workers else ((i, self.chunks.chunk(i)) for i in order)
        if self.device is not None:
            made = ((index, tuple(t.to(self.device, non_blocking=True) for t in tensors)) for index, tensors in made)
        return self.chunks.batches(made)

    def _generate_ahead(self, order: list[int]) -> Iterator[tuple[int, Chunk]]:
        workers = self.num_workers
        queues = [queue.Queue(maxsize=self.chunks_ahead) for _ in range(workers)]
        stop = self._stop = threading.Event()

        def produce(k: int) -> None:
            try:
                for index in order[k::workers]:
                    item = (index, self.chunks.chunk(index))
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

    # what the CLI links into the model: synthetic columns have no names, N(0, 1) features need no standardising
    feature_names: list[str] | None = None
    encoding: dict[str, list[str] | None] | None = None  # synthetic inputs are all numbers
    standardization: dict[str, list[float]] | None = None

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
        self.true_w = synthetic_truth(name, num_inputs, num_examples, true_w, true_b, noise_std, seed)
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


class TableChunks(ChunkSource):
    """One split of a table's chunks (Parquet row groups or CSV byte ranges) and this process's share.

    Each epoch shuffles the chunk order (from seed + epoch) and the rows in each chunk, and deals the
    chunks to the processes with `linreg_pl.batches.shard`: disjoint strided shares. Chunks hold different
    numbers of rows, so shares may differ in batches; every chunk's row count is known (footers, or the
    CSV's first pass), so with `pad` each process computes every share's batch count without any
    communication and wraps around its own share, from its first chunk on, until it has as many batches
    as the largest share: every process takes the same number of steps, as DDP needs. The batches
    repeated are the process's own first ones of the epoch; evaluation shares are not padded.

    Args:
        table: the `ParquetRowGroups` or `CSVByteRanges` to read.
        features: the feature columns, in the model's order.
        target: the label column; None reads features only (predict).
        chunks: the split's chunk indices into `table`, ascending.
        batch_size: rows per batch; a chunk's last batch may be shorter.
        shuffle: shuffle the chunk order and the rows in each chunk, anew each epoch.
        seed: seeds the shuffles.
        rank: this process's rank among `num_replicas`.
        num_replicas: processes sharing the chunks.
        pad: pad every share to the batches of the largest (training under DDP).
        row_numbers: end each batch with the rows' 0-based positions in the table (predict).
    """

    def __init__(
        self,
        table: ParquetRowGroups | CSVByteRanges,
        features: list[str],
        target: str | None,
        chunks: Sequence[int],
        batch_size: int,
        shuffle: bool = False,
        seed: int = 0,
        rank: int = 0,
        num_replicas: int = 1,
        pad: bool = False,
        row_numbers: bool = False,
    ) -> None:
        super().__init__(seed, batch_size, shuffle, rank, num_replicas)
        self.table, self.features, self.target = table, list(features), target
        self.chunks, self.pad, self.row_numbers = list(chunks), pad, row_numbers
        self.row_counts = table.row_counts
        self.first_rows = np.cumsum([0, *self.row_counts]).tolist()
        if len(self.chunks) < num_replicas and pad:
            raise ConfigError(
                f"{len(self.chunks)} training chunks cannot be shared among {num_replicas} processes; write "
                "smaller row groups (Parquet) or lower chunk_bytes (CSV) to get at least one chunk each"
            )

    @override
    def chunk(self, index: int) -> Chunk:
        columns = [*self.features, self.target] if self.target is not None else self.features
        values = self.table.read(index, columns, np.float32)
        tensors = [torch.from_numpy(np.stack([values[name] for name in self.features], axis=1))]
        if self.target is not None:
            tensors.append(torch.tensor(values[self.target]))  # a copy: pyarrow's arrays may be read-only
        if self.row_numbers:
            tensors.append(torch.arange(self.first_rows[index], self.first_rows[index + 1]))
        return tuple(tensors)

    @override
    def rows_in(self, index: int) -> int:
        return self.row_counts[index]

    def shares(self) -> list[list[int]]:
        """Every process's chunks for this epoch, unpadded."""
        order = self.epoch_order(self.chunks)
        return [shard(order, rank, self.num_replicas, even=False).tolist() for rank in range(self.num_replicas)]

    def _batches_in(self, chunks: list[int]) -> int:
        return sum(math.ceil(self.row_counts[c] / self.batch_size) for c in chunks)

    @override
    def num_batches(self) -> int:
        shares = self.shares()
        return max(map(self._batches_in, shares)) if self.pad else self._batches_in(shares[self.rank])

    @override
    def process_chunks(self) -> list[int]:
        shares = self.shares()
        mine = shares[self.rank]
        if not self.pad:
            return mine
        wanted, have, padded = max(map(self._batches_in, shares)), self._batches_in(mine), list(mine)
        for index in itertools.cycle(mine):  # wrap around: the share's first chunks again
            if have >= wanted:
                break
            padded.append(index)
            have += self._batches_in([index])
        return padded

    @override
    def batches(self, chunks: Iterator[tuple[int, Chunk]]) -> Iterator[Chunk]:
        # a wrapped-around chunk may hold more batches than the padding needs
        batches = itertools.islice(super().batches(chunks), self.num_batches())
        return (RowBatch(*batch) for batch in batches) if self.row_numbers and self.target is None else batches


class TableStreamDataModule(LightningDataModule):
    """A Parquet or CSV table bigger than memory, read chunk by chunk while training runs: the table of
    `TableRegressionDataModule` (same `path`, `target`, `features` and errors), never held whole.

    Chunks: a Parquet table's row groups (counted from the footers, nothing read), or a CSV's byte ranges
    of about `chunk_bytes` (one pass at start-up finds their line breaks and counts their rows; see
    `linreg_pl.regression.tables.CSVByteRanges`). Memory holds a few chunks at a time.

    Splits: whole chunks; a permutation of the chunk indices seeded with `seed` picks the val and test
    chunks (`split_sizes` of the chunk count), the rest train. Each epoch shuffles the training chunks'
    order and the rows inside each; under DDP the processes get disjoint shares of chunks, padded to equal
    step counts (see `TableChunks`).

    Statistics: one streaming pass over the training chunks, in float64, gathers `normal_equations`
    (`linreg_pl.regression.closed_form.NormalEquations`), done when first needed: when the CLI reads
    `standardization` to link it into the model, or else when the end-of-fit report asks for the
    closed form. They give the standardisation and the closed-form least-squares yardstick.

    Predict: `predict_path` (Parquet or CSV, features only needed), or else the test split, batched as
    (features, row numbers) chunk by chunk in input order.

    Args:
        path: a Parquet file, folder of part files or glob, or a CSV file.
        target: name of the label column.
        features: names of the feature columns; None means every column but `target`.
        predict_path: a Parquet or CSV table of raw features to predict on; None predicts on the test split.
        batch_size: rows per batch (a chunk's last batch may be shorter).
        val_fraction: share of the chunks held out for validation, in [0, 1).
        test_fraction: share of the chunks held out for test, in [0, 1).
        seed: seeds the split and the per-epoch shuffle.
        num_workers: background threads reading chunks ahead of training; 0 reads in the training thread.
        standardize: standardise features and target with training-split statistics (one extra pass).
        chunk_bytes: bytes per CSV chunk, about (Parquet chunks are its row groups).
    """

    def __init__(
        self,
        path: str,
        target: str,
        features: list[str] | None = None,
        predict_path: str | None = None,
        batch_size: int = 32,
        val_fraction: float = 0.0,
        test_fraction: float = 0.0,
        seed: int = 0,
        num_workers: int = 1,
        standardize: bool = True,
        chunk_bytes: int = 1 << 24,
    ) -> None:
        super().__init__()
        name = type(self).__name__
        check_split_arguments(name, batch_size, val_fraction, test_fraction)
        if not isinstance(num_workers, int) or num_workers < 0:
            raise ConfigError(f"{name}: num_workers must be an integer >= 0, got {num_workers!r}")
        if not isinstance(chunk_bytes, int) or chunk_bytes < 1:
            raise ConfigError(f"{name}: chunk_bytes must be an integer >= 1, got {chunk_bytes!r}")
        self.path, self.target, self.predict_path = path, target, predict_path
        self.features = feature_columns(path, target, features)
        self.num_inputs = len(self.features)
        self.batch_size, self.seed, self.num_workers = batch_size, seed, num_workers
        self.standardize, self.chunk_bytes = standardize, chunk_bytes
        self.table = chunked_table(path, [*self.features, target], chunk_bytes)
        self.chunk_splits = self._split(val_fraction, test_fraction)  # fail now, before the Trainer starts
        self._normal_equations: NormalEquations | None = None
        self._loaders: list[StreamingLoader] = []

    def _split(self, val_fraction: float, test_fraction: float) -> dict[str, list[int]]:
        chunks = [i for i, rows in enumerate(self.table.row_counts) if rows]  # empty row groups hold nothing
        if not chunks:
            raise ConfigError(f"{self.path}: the table holds no data rows")
        remedy = "write smaller row groups (Parquet) or lower chunk_bytes (CSV) to get more chunks"
        sizes = split_sizes(type(self).__name__, len(chunks), val_fraction, test_fraction, 1, "chunks", remedy)
        order = torch.randperm(len(chunks), generator=torch.Generator().manual_seed(self.seed)).tolist()
        parts = (order[: sizes[0]], order[sizes[0] : sizes[0] + sizes[1]], order[sizes[0] + sizes[1] :])
        # each split keeps the input order: evaluation and predictions go through it
        return {
            split: sorted(chunks[i] for i in part) for split, part in zip(("train", "val", "test"), parts, strict=True)
        }

    @property
    def normal_equations(self) -> NormalEquations:
        """Float64 statistics of the training split, from one pass over its chunks (then kept)."""
        if self._normal_equations is None:
            statistics = NormalEquations()
            columns = [*self.features, self.target]
            for index in self.chunk_splits["train"]:
                values = self.table.read(index, columns, np.float64)
                features = torch.from_numpy(np.stack([values[name] for name in self.features], axis=1))
                statistics.update(features, torch.tensor(values[self.target]))
            self._normal_equations = statistics
        return self._normal_equations

    @property
    def standardization(self) -> dict[str, list] | None:
        """Statistics of the training split for `LinearRegression(standardization=...)`, or None."""
        return self.normal_equations.standardization() if self.standardize else None

    @property
    def feature_names(self) -> list[str]:
        """The feature columns in the model's input order (linked into the model by the CLI)."""
        return self.features

    @property
    def encoding(self) -> dict[str, list[str] | None]:
        """Every feature a number column (a streamed table's text columns are not encoded yet)."""
        return dict.fromkeys(self.features)

    def _loader(self, chunks: TableChunks) -> StreamingLoader:
        trainer = self.trainer
        device = trainer.strategy.root_device if trainer is not None else None
        loader = StreamingLoader(chunks, self.num_workers, device)
        self._loaders.append(loader)
        return loader

    def _chunks(
        self, split: str, table: ParquetRowGroups | CSVByteRanges | None = None, **options: object
    ) -> TableChunks:
        """A split's chunks of this table (or every non-empty chunk of `table`) for this process."""
        trainer = self.trainer
        rank, world = (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)
        chunks = self.chunk_splits[split] if table is None else [i for i, rows in enumerate(table.row_counts) if rows]
        options = {"target": self.target, "seed": self.seed, "rank": rank, "num_replicas": world, **options}
        return TableChunks(table or self.table, self.features, chunks=chunks, batch_size=self.batch_size, **options)

    @override
    def train_dataloader(self) -> StreamingLoader:
        return self._loader(self._chunks("train", shuffle=True, pad=True))

    @override
    def val_dataloader(self) -> StreamingLoader:
        return self._loader(self._chunks("val"))

    @override
    def test_dataloader(self) -> StreamingLoader:
        return self._loader(self._chunks("test"))

    @override
    def predict_dataloader(self) -> StreamingLoader:
        # (features, row numbers), each process's rows ascending: the prediction writer merges the shares
        table = None if self.predict_path is None else chunked_table(self.predict_path, self.features, self.chunk_bytes)
        return self._loader(self._chunks("test", table, target=None, row_numbers=True))

    @override
    def teardown(self, stage: str) -> None:
        for loader in self._loaders:  # no reading thread outlives fit/validate/test/predict
            loader.close()
        self._loaders.clear()
