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
from a chunk by `linreg_pl.regression.batches.gather`, as for data in memory. Generation overlaps training; on a
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
from typing import Any, Literal

import numpy as np
import torch
from lightning.pytorch import LightningDataModule
from lightning.pytorch.trainer.states import TrainerFn
from torch import Tensor
from typing_extensions import override

from linreg_pl.errors import ConfigError
from linreg_pl.regression.batches import RowBatch, gather, shard
from linreg_pl.regression.closed_form import NormalEquations
from linreg_pl.regression.data import (
    RegressionDataModule,
    check_split_arguments,
    feature_columns,
    is_null_or_nan,
    model_encoding,
    split_sizes,
    synthetic_truth,
    training_dtype,
)
from linreg_pl.regression.encoding import (
    Encoding,
    check_levels,
    column_counts,
    describe,
    encode,
    input_names,
    is_text,
    levels_in,
    target_values,
)
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
            (see `linreg_pl.regression.batches.shard`).
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
    model_arguments = RegressionDataModule.model_arguments  # linked into the model's init arguments by the CLI
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
    chunks to the processes with `linreg_pl.regression.batches.shard`: disjoint strided shares. Chunks hold different
    numbers of rows, so shares may differ in batches; every chunk's row count is known (footers, the CSV's
    first pass, or the rows the statistics pass kept), so with `pad` each process computes every share's
    batch count without any communication and wraps around its own share, from its first chunk on, until it
    has as many batches as the largest share: every process takes the same number of steps, as DDP needs.
    The batches repeated are the process's own first ones of the epoch; evaluation shares are not padded.

    A chunk is encoded as in memory (`linreg_pl.regression.encoding.encode`): number columns as they are,
    text columns as indicator columns of `encoding`'s levels. A row with a missing value or a level the
    encoding does not hold is left out (`unusable="drop"`), refused (`"error"`, missing values only), or
    kept with NaN features, so that its prediction is an empty cell (`"blank"`, counted in `unpredictable`), or
    left out and counted there (`"skip"`: scoring a labelled table of its own).

    Args:
        table: the `ParquetRowGroups` or `CSVByteRanges` to read.
        encoding: the feature columns in the model's order, each with its levels (text) or None (numbers).
        target: the label column; None reads features only (predict).
        chunks: the split's chunk indices into `table`, ascending.
        batch_size: rows per batch; a chunk's last batch may be shorter.
        shuffle: shuffle the chunk order and the rows in each chunk, anew each epoch.
        seed: seeds the shuffles.
        rank: this process's rank among `num_replicas`.
        num_replicas: processes sharing the chunks.
        pad: pad every share to the batches of the largest (training under DDP).
        row_numbers: end each batch with the rows' 0-based positions in the table (predict).
        unusable: what becomes of a row with a missing value or an unseen level: `drop`, `error`, `blank` or
            `skip`.
        row_counts: rows each chunk gives after dropping (the statistics pass counts them); None: the table's.
        dtype: the batches' floating-point type (float64 under `--trainer.precision 64-true`).
    """

    def __init__(
        self,
        table: ParquetRowGroups | CSVByteRanges,
        encoding: Encoding,
        target: str | None,
        chunks: Sequence[int],
        batch_size: int,
        shuffle: bool = False,
        seed: int = 0,
        rank: int = 0,
        num_replicas: int = 1,
        pad: bool = False,
        row_numbers: bool = False,
        unusable: Literal["drop", "error", "blank"] = "drop",
        row_counts: Sequence[int] | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        super().__init__(seed, batch_size, shuffle, rank, num_replicas)
        self.table, self.encoding, self.target = table, dict(encoding), target
        self.chunks, self.pad, self.row_numbers = list(chunks), pad, row_numbers
        self.unusable, self.dtype = unusable, dtype
        self.row_counts = list(row_counts if row_counts is not None else table.row_counts)
        self.first_rows = np.cumsum([0, *table.row_counts]).tolist()
        # a CSV chunk's types are pyarrow's inference: number columns are fixed, so that every chunk agrees
        numbers = [name for name, levels in self.encoding.items() if levels is None]
        self.types = float64_types([*numbers, *([target] if target is not None else [])])
        self.unpredictable: dict[str, dict[str, int]] = {"missing": {}, "unseen": {}}
        self.num_unpredictable = 0
        self._lock = threading.Lock()

    def encoded(self, index: int) -> tuple[np.ndarray, np.ndarray | None, np.ndarray, dict[str, int]]:
        """Chunk `index` as float64 `(features, targets or None, usable rows, missing values by column)`;
        with `unusable="error"` a missing value is a one-line error."""
        columns = [*self.encoding, self.target] if self.target is not None else list(self.encoding)
        table = self.table.read_arrow(index, columns, self.types)
        where = chunk_name(self.table, index)
        encoded = encode(table, self.encoding, where)
        missing = dict(encoded.missing)
        targets = None
        if self.target is not None:
            targets = target_values(table, self.target, where)
            missing[self.target] = np.isnan(targets)
        counts = column_counts(missing)
        if counts and self.unusable == "error":
            raise self._missing_error(index, table, counts)
        usable = ~encoded.unusable()
        if self.target is not None:
            usable &= ~missing[self.target]
        if self.unusable in ("blank", "skip") and not usable.all():
            with self._lock:  # reading threads count together
                self.num_unpredictable += int(np.count_nonzero(~usable))
                for reason, masks in (("missing", missing), ("unseen", encoded.unseen)):
                    for name, count in column_counts(masks).items():
                        self.unpredictable[reason][name] = self.unpredictable[reason].get(name, 0) + count
        return encoded.features, targets, usable, counts

    def _missing_error(self, index: int, table: Any, counts: dict[str, int]) -> ConfigError:
        """The strict number reader's error for a number column's missing value, else one of our own."""
        numeric = [name for name in counts if name == self.target or self.encoding.get(name, ...) is None]
        if numeric:
            try:
                self.table.read(index, numeric[:1], np.float64)
            except ConfigError as error:
                return error
        name = next(iter(counts))
        row = self.first_rows[index] + int(np.argmax(is_null_or_nan(table.column(name)))) + 1
        where = self.table.path
        return ConfigError(f"{where}: column {name!r} has a missing value in data row {row}; or give missing: drop")

    @override
    def chunk(self, index: int) -> Chunk:
        features, targets, usable, _ = self.encoded(index)
        if self.unusable == "blank":
            features[~usable] = np.nan  # the model's prediction is NaN: an empty cell in the predictions file
            kept = None
        else:
            kept = None if usable.all() else np.flatnonzero(usable)
        if kept is not None:
            features = features[kept]
        tensors = [torch.from_numpy(features).to(self.dtype)]
        if targets is not None:
            tensors.append(torch.from_numpy(targets if kept is None else targets[kept]).to(self.dtype))
        if self.row_numbers:
            rows = torch.arange(self.first_rows[index], self.first_rows[index + 1])
            tensors.append(rows if kept is None else rows[torch.from_numpy(kept)])
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


def float64_types(columns: list[str]) -> dict[str, Any]:
    """pyarrow types fixing these CSV columns as float64 numbers."""
    import pyarrow as pa

    return dict.fromkeys(columns, pa.float64())


def chunk_name(table: ParquetRowGroups | CSVByteRanges, index: int) -> str:
    """Where chunk `index` is, for errors: a Parquet file's row group, or a CSV's first line of the range."""
    if isinstance(table, ParquetRowGroups):
        group = table.row_groups[index]
        return f"{group.file}: row group {group.index}"
    return f"{table.path} (the range from line {table.ranges[index].first_line})"


class TableStreamDataModule(LightningDataModule):
    """A Parquet or CSV table bigger than memory, read chunk by chunk while training runs: the table of
    `TableRegressionDataModule` (same `path`, `target`, `features`, encoding, missing values and errors),
    never held whole.

    Chunks: a Parquet table's row groups (counted from the footers, nothing read), or a CSV's byte ranges
    of about `chunk_bytes` (one pass at start-up finds their line breaks and counts their rows; see
    `linreg_pl.regression.tables.CSVByteRanges`). Memory holds a few chunks at a time.

    Splits: whole chunks; a permutation of the chunk indices seeded with `seed` picks the val and test
    chunks (`split_sizes` of the chunk count), the rest train. Each epoch shuffles the training chunks'
    order and the rows inside each; under DDP the processes get disjoint shares of chunks, padded to equal
    step counts (see `TableChunks`).

    Encoding: text, category and yes/no columns become indicator columns of the levels the training rows
    hold, as in memory (`linreg_pl.regression.encoding`); finding them takes one pass over the training
    chunks (only when there are text columns). A column's kind is the Parquet schema's, or pyarrow's
    inference on a CSV's first chunk (a later cell that is not a number in a number column is an error).
    `encoding` and `feature_names` are linked into the model, so validate, test and predict take them from
    the checkpoint; predict on `predict_path` reads that file alone, never `path`.

    Statistics: one streaming pass over the training chunks, in float64, gathers `normal_equations`
    (`linreg_pl.regression.closed_form.NormalEquations`) of the encoded rows, done when first needed (when
    the CLI reads `standardization`, else in `setup`). It gives the standardisation, the closed-form
    yardstick, and each training chunk's usable rows: a row with a missing value is left out of training
    (`missing: drop`; one line says how many, by column) or refused (`missing: error`). Validation and test
    leave out such rows, and rows of a level the training rows did not hold, without a line.

    Predict: `predict_path` (Parquet or CSV, features only needed), or else the test split, batched as
    (features, row numbers) chunk by chunk in input order; a row with a missing value or an unseen level
    gets an empty prediction, and one line counts them.

    Args:
        path: a Parquet file, folder of part files or glob, or a CSV file.
        target: name of the label column.
        features: names of the feature columns; None means every column but `target`.
        predict_path: a Parquet or CSV table of raw features to predict on; None predicts on the test split.
        test_path: a labelled Parquet or CSV table that `validate` and `test` score on all its rows, streamed,
            with the model's columns and levels, never reading `path`; rows with a missing value or an unseen
            level are left out and counted in one line. None scores the val and test splits.
        batch_size: rows per batch (a chunk's last batch may be shorter).
        val_fraction: share of the chunks held out for validation, in [0, 1).
        test_fraction: share of the chunks held out for test, in [0, 1).
        seed: seeds the split and the per-epoch shuffle.
        num_workers: background threads reading chunks ahead of training; 0 reads in the training thread.
        standardize: standardise features and target with training-split statistics.
        chunk_bytes: bytes per CSV chunk, about (Parquet chunks are its row groups).
        missing: `drop` leaves training rows with a missing value (in a feature used or the target) out, as
            R's na.omit; `error` refuses the table at the first one.
    """

    model_arguments = RegressionDataModule.model_arguments  # linked into the model's init arguments by the CLI

    def __init__(
        self,
        path: str,
        target: str,
        features: list[str] | None = None,
        predict_path: str | None = None,
        test_path: str | None = None,
        batch_size: int = 32,
        val_fraction: float = 0.0,
        test_fraction: float = 0.0,
        seed: int = 0,
        num_workers: int = 1,
        standardize: bool = True,
        chunk_bytes: int = 1 << 24,
        missing: Literal["drop", "error"] = "drop",
    ) -> None:
        super().__init__()
        name = type(self).__name__
        check_split_arguments(name, batch_size, val_fraction, test_fraction)
        if not isinstance(num_workers, int) or num_workers < 0:
            raise ConfigError(f"{name}: num_workers must be an integer >= 0, got {num_workers!r}")
        if not isinstance(chunk_bytes, int) or chunk_bytes < 1:
            raise ConfigError(f"{name}: chunk_bytes must be an integer >= 1, got {chunk_bytes!r}")
        if missing not in ("drop", "error"):
            raise ConfigError(f"{name}: missing must be 'drop' or 'error', got {missing!r}")
        self.path, self.target, self.predict_path, self.test_path = path, target, predict_path, test_path
        self.batch_size, self.seed, self.num_workers = batch_size, seed, num_workers
        self.standardize, self.chunk_bytes, self.missing = standardize, chunk_bytes, missing
        self.fractions = (val_fraction, test_fraction)
        # `path` is opened when first needed (the CLI's links, or setup): from a checkpoint, predict on
        # `predict_path` never opens it
        self._features, self._feature_columns = features, None
        self._encoding: Encoding | None = None
        self._table: ParquetRowGroups | CSVByteRanges | None = None
        self._chunk_splits: dict[str, list[int]] | None = None
        self._normal_equations: NormalEquations | None = None
        self._kept_rows: list[int] | None = None
        self._loaders: list[StreamingLoader] = []

    @property
    def features(self) -> list[str]:
        """The feature columns: the model's encoding's, else `features` or every column but `target`."""
        if self._encoding is not None:
            return list(self._encoding)
        if self._feature_columns is None:
            self._feature_columns = feature_columns(self.path, self.target, self._features)
        return self._feature_columns

    @property
    def table(self) -> ParquetRowGroups | CSVByteRanges:
        if self._table is None:
            self._table = chunked_table(self.path, [*self.features, self.target], self.chunk_bytes)
        return self._table

    @property
    def chunk_splits(self) -> dict[str, list[int]]:
        """Each split's chunk indices, ascending."""
        if self._chunk_splits is None:
            chunks = [i for i, rows in enumerate(self.table.row_counts) if rows]  # empty row groups hold nothing
            if not chunks:
                raise ConfigError(f"{self.path}: the table holds no data rows")
            remedy = "write smaller row groups (Parquet) or lower chunk_bytes (CSV) to get more chunks"
            sizes = split_sizes(type(self).__name__, len(chunks), *self.fractions, 1, "chunks", remedy)
            order = torch.randperm(len(chunks), generator=torch.Generator().manual_seed(self.seed)).tolist()
            parts = (order[: sizes[0]], order[sizes[0] : sizes[0] + sizes[1]], order[sizes[0] + sizes[1] :])
            # each split keeps the input order: evaluation and predictions go through it
            names = ("train", "val", "test")
            self._chunk_splits = {
                split: sorted(chunks[i] for i in part) for split, part in zip(names, parts, strict=True)
            }
        return self._chunk_splits

    @property
    def encoding(self) -> Encoding:
        """Each feature column's levels (text) or None (numbers), in input order (linked into the model)."""
        if self._encoding is None:
            self._encoding = self._find_encoding()
        return self._encoding

    @property
    def feature_names(self) -> list[str]:
        """The model's inputs by name, `column=level` for indicators (linked into the model by the CLI)."""
        return input_names(self.encoding)

    @property
    def num_inputs(self) -> int:
        """The model's inputs: one per number column, one per level but the first of each text column."""
        return len(self.feature_names)

    @property
    def normal_equations(self) -> NormalEquations:
        """Float64 statistics of the training split's usable rows, from one pass over its chunks (then kept)."""
        if self._normal_equations is None:
            chunks = self._split_chunks("train", unusable=self.missing, row_counts=None)
            statistics, kept, left_out, total = NormalEquations(), list(chunks.row_counts), {}, 0
            for index in chunks.chunks:
                features, targets, usable, counts = chunks.encoded(index)
                statistics.update(torch.from_numpy(features[usable]), torch.from_numpy(targets[usable]))
                kept[index], total = int(usable.sum()), total + len(usable)
                for name, count in counts.items():
                    left_out[name] = left_out.get(name, 0) + count
            if left_out:
                dropped = total - sum(kept[i] for i in chunks.chunks)
                print(
                    f"{self.path}: left out {dropped} of {total} training rows with a missing value "
                    f"({describe(left_out)})",
                    flush=True,
                )
            self._normal_equations, self._kept_rows = statistics, kept
        return self._normal_equations

    def training_blocks(self) -> Iterator[tuple[Tensor, Tensor]]:
        """The training split's usable rows, chunk by chunk, as read (float64): another pass over them, for the
        report's HC3 errors (each row's leverage and residual)."""
        chunks = self._split_chunks("train", unusable=self.missing, row_counts=None)
        for index in chunks.chunks:
            features, targets, usable, _ = chunks.encoded(index)
            yield torch.from_numpy(features[usable]), torch.from_numpy(targets[usable])

    @property
    def standardization(self) -> dict[str, list] | None:
        """Statistics of the training split for `LinearRegression(standardization=...)`, or None."""
        return self.normal_equations.standardization() if self.standardize else None

    def _find_encoding(self) -> Encoding:
        """Number columns as they are; a text column's levels from one pass over the training chunks' rows
        that miss no value (bounded memory: a text column of almost as many levels as rows is refused)."""
        import pyarrow as pa

        kinds = self._column_kinds()
        text = [name for name in self.features if kinds[name]]
        if not text:
            return dict.fromkeys(self.features)
        columns = [*self.features, self.target]
        numbers = [name for name in columns if not kinds.get(name, False)]
        types = float64_types(numbers)
        levels: dict[str, set[str]] = {name: set() for name in text}
        rows = 0
        for index in self.chunk_splits["train"]:
            table = self.table.read_arrow(index, columns, types)
            missing = np.zeros(table.num_rows, dtype=bool)
            for name in columns:
                missing |= is_null_or_nan(table.column(name))
            rows += int(np.count_nonzero(~missing))
            usable = table.filter(pa.array(~missing)) if missing.any() else table
            for name in text:
                levels[name].update(levels_in(usable.column(name)))
                if rows >= 10_000:  # an identifier, refused before its levels fill memory
                    check_levels(name, sorted(levels[name]), rows, f"{self.path} (training split)")
        for name in text:
            check_levels(name, sorted(levels[name]), rows, f"{self.path} (training split)")
        return {name: sorted(levels[name]) if kinds[name] else None for name in self.features}

    def _column_kinds(self) -> dict[str, bool]:
        """Whether each column is text: from the Parquet schema, or pyarrow's inference on a CSV's first chunk."""
        columns = [*self.features, self.target]
        if isinstance(self.table, ParquetRowGroups):
            import pyarrow.parquet as pq

            schema = pq.read_schema(self.table.files[0])
        else:
            schema = self.table.read_arrow(0, columns).schema
        return {name: is_text(schema.field(name).type) for name in columns}

    def _loader(self, chunks: TableChunks) -> StreamingLoader:
        trainer = self.trainer
        device = trainer.strategy.root_device if trainer is not None else None
        loader = StreamingLoader(chunks, self.num_workers, device)
        self._loaders.append(loader)
        return loader

    def _split_chunks(
        self, split: str, table: ParquetRowGroups | CSVByteRanges | None = None, **options: object
    ) -> TableChunks:
        """A split's chunks of this table (or every non-empty chunk of `table`) for this process."""
        trainer = self.trainer
        rank, world = (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)
        chunks = self.chunk_splits[split] if table is None else [i for i, rows in enumerate(table.row_counts) if rows]
        if 0 < len(chunks) < world:  # a process without a batch: Lightning stops the run at that loop's start
            what = f"the {'training' if split == 'train' else split} split" if table is None else str(table.path)
            raise ConfigError(
                f"{what}: {len(chunks)} chunks cannot be shared among {world} processes; write smaller row groups "
                "(Parquet) or lower chunk_bytes (CSV) to get at least one chunk each"
            )
        options = {
            "target": self.target,
            "seed": self.seed,
            "rank": rank,
            "num_replicas": world,
            "dtype": training_dtype(trainer),
            **options,
        }
        return TableChunks(table or self.table, self.encoding, chunks=chunks, batch_size=self.batch_size, **options)

    @override
    def setup(self, stage: str) -> None:
        if self._encoding is None:  # validate, test, predict from a checkpoint: the model's encoding
            self._encoding = model_encoding(self.trainer)
        if stage == "fit":
            self.normal_equations  # noqa: B018 (the one pass: each training chunk's usable rows)

    @override
    def train_dataloader(self) -> StreamingLoader:
        self.normal_equations  # noqa: B018 (its pass counts each training chunk's usable rows)
        return self._loader(self._split_chunks("train", shuffle=True, pad=True, row_counts=self._kept_rows))

    @override
    def val_dataloader(self) -> StreamingLoader:
        return self._scoring_loader("val")

    @override
    def test_dataloader(self) -> StreamingLoader:
        return self._scoring_loader("test")

    def _scoring_loader(self, split: str) -> StreamingLoader:
        """The split's chunks, or under validate and test every chunk of `test_path` (`fit` validates on `path`)."""
        command = self.trainer.state.fn if self.trainer is not None else None
        if self.test_path is None or command not in (TrainerFn.VALIDATING, TrainerFn.TESTING):
            return self._loader(self._split_chunks(split, unusable=self.missing))
        table = chunked_table(self.test_path, [*self.encoding, self.target], self.chunk_bytes)
        return self._loader(self._split_chunks(split, table, unusable="skip"))

    @override
    def predict_dataloader(self) -> StreamingLoader:
        # (features, row numbers), each process's rows ascending: the prediction writer merges the shares
        table = None
        if self.predict_path is not None:
            table = chunked_table(self.predict_path, list(self.encoding), self.chunk_bytes)
        return self._loader(self._split_chunks("test", table, target=None, row_numbers=True, unusable="blank"))

    @override
    def teardown(self, stage: str) -> None:
        for loader in self._loaders:  # no reading thread outlives fit/validate/test/predict
            loader.close()
            chunks = loader.chunks
            if isinstance(chunks, TableChunks) and chunks.num_unpredictable:
                reasons = [
                    f"{what} ({describe(chunks.unpredictable[key])})"
                    for key, what in (("missing", "a missing value"), ("unseen", "a level not seen in training"))
                    if chunks.unpredictable[key]
                ]
                if chunks.unusable == "skip":
                    total = sum(chunks.table.row_counts)
                    line = f"left out {chunks.num_unpredictable} of {total} rows: {'; '.join(reasons)}"
                    print(f"{self.test_path}: {line}", flush=True)
                    continue
                where = self.predict_path or self.path
                print(f"{where}: {chunks.num_unpredictable} rows get no prediction: {'; '.join(reasons)}", flush=True)
        self._loaders.clear()
