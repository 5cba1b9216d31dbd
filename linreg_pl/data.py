"""Data modules: synthetic linear-regression data and tables read from files, split and batched.

    python -m linreg_pl fit --config configs/default.yaml
    python -m linreg_pl fit --config configs/csv.yaml

Both keep every split in memory (on the training device when it is a GPU) and batch it through
`linreg_pl.batches`, which gathers a whole batch with one index operation. `num_examples` is the total;
`val_fraction` and `test_fraction` are shares of it held out, chosen by a seeded permutation.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import LightningDataModule
from torch import Tensor
from typing_extensions import override

from linreg_pl.batches import BatchIndexSampler, TensorBatchLoader
from linreg_pl.errors import ConfigError
from linreg_pl.streaming import StreamingLoader, SyntheticChunks

Split = tuple[Tensor, ...]


class RegressionDataModule(LightningDataModule):
    """Splits `(features, targets)` from `load_tensors()` into train/val/test and serves fast batches.

    Subclasses implement `load_tensors` (and may set `true_w`/`true_b` when the truth is known).

    Args:
        batch_size: examples per batch (the last batch of an epoch may be smaller).
        val_fraction: share of the examples held out for validation, in [0, 1).
        test_fraction: share held out for test, in [0, 1); with `val_fraction` it must leave a
            training set of at least one batch.
        seed: seeds the split and the per-epoch shuffle (and, for synthetic data, the data).
        num_workers: worker processes for data made on the fly; in-memory tensors need none, since a
            batch is one index operation that a worker would only add inter-process copies to.
        standardize: standardise features (and targets) with statistics of the training split; the
            model stores them, so it takes raw features and predicts in the original units.
    """

    def __init__(
        self,
        batch_size: int = 10,
        val_fraction: float = 0.1,
        test_fraction: float = 0.1,
        seed: int = 0,
        num_workers: int = 0,
        standardize: bool = False,
    ) -> None:
        super().__init__()
        name = type(self).__name__
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ConfigError(f"{name}: batch_size must be an integer >= 1, got {batch_size!r}")
        for field, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
            if not (isinstance(value, (int, float)) and 0.0 <= value < 1.0):
                raise ConfigError(f"{name}: {field} must be in [0, 1), got {value!r}")
        if val_fraction + test_fraction >= 1.0:
            raise ConfigError(
                f"{name}: val_fraction + test_fraction must be < 1 to leave training data, "
                f"got {val_fraction} + {test_fraction}"
            )
        if not isinstance(num_workers, int) or num_workers < 0:
            raise ConfigError(f"{name}: num_workers must be an integer >= 0, got {num_workers!r}")
        self.batch_size = batch_size
        self.val_fraction = val_fraction
        self.test_fraction = test_fraction
        self.seed = seed
        self.num_workers = num_workers
        self.standardize = standardize
        self.true_w: Tensor | None = None
        self.true_b: float | None = None
        self.standardization: dict[str, Tensor] | None = None
        self.splits: dict[str, Split] = {}

    def load_tensors(self) -> tuple[Tensor, Tensor]:
        """All examples as `(features [n, d] float32, targets [n] float32)`."""
        raise NotImplementedError

    def load_predict_tensors(self) -> tuple[Tensor, Tensor] | None:
        """Features to predict on and their row numbers; None means the test split."""
        return None

    def split_sizes(self, num_examples: int) -> tuple[int, int, int]:
        """(train, val, test) sizes, each non-empty where its fraction asks for examples."""
        name = type(self).__name__
        num_val = round(num_examples * self.val_fraction)
        num_test = round(num_examples * self.test_fraction)
        num_train = num_examples - num_val - num_test
        if num_train < self.batch_size:
            raise ConfigError(
                f"{name}: {num_examples} examples leave {num_train} for training after the val/test "
                f"splits, fewer than one batch of {self.batch_size}; use more examples or a smaller "
                "batch_size"
            )
        for field, fraction, size in (("val", self.val_fraction, num_val), ("test", self.test_fraction, num_test)):
            if fraction > 0 and size == 0:
                raise ConfigError(
                    f"{name}: {field}_fraction {fraction} of {num_examples} examples is no example; "
                    f"use more examples, a larger {field}_fraction, or 0 to have no {field} split"
                )
        return num_train, num_val, num_test

    @override
    def setup(self, stage: str) -> None:
        device = self._device()
        if not self.splits:
            features, targets = self.load_tensors()
            num_train, num_val, _ = self.split_sizes(len(features))
            order = torch.randperm(len(features), generator=torch.Generator().manual_seed(self.seed))
            parts = torch.split(order, [num_train, num_val, len(features) - num_train - num_val])
            for split, rows in zip(("train", "val", "test"), parts, strict=True):
                # rows stay sorted so that a split keeps the input order (predictions come out in it)
                rows = rows.sort().values
                self.splits[split] = (features[rows].to(device), targets[rows].to(device), rows.to(device))
            if self.standardize:
                self.standardization = standardization_of(*self.splits["train"][:2])
        if stage == "predict" and "predict" not in self.splits:
            given = self.load_predict_tensors()
            if given is None:
                features, _, rows = self.splits["test"]
            else:
                features, rows = given
            self.splits["predict"] = (features.to(device), rows.to(device))

    def _device(self) -> torch.device:
        # Data live on the GPU once, not copied there each batch; CPU tensors stay where they are.
        trainer = self.trainer
        if trainer is not None and trainer.strategy.root_device.type == "cuda":
            return trainer.strategy.root_device
        return torch.device("cpu")

    def _loader(self, split: str, shuffle: bool, even_shards: bool) -> Iterable:
        """The batches of one split; predict batches are (features, row numbers), the others
        (features, targets)."""
        tensors = self.splits[split] if split == "predict" else self.splits[split][:2]
        return self._tensor_loader(tensors, shuffle, even_shards)

    def _tensor_loader(self, tensors: Split, shuffle: bool, even_shards: bool) -> TensorBatchLoader:
        trainer = self.trainer
        rank, world = (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)
        sampler = BatchIndexSampler(
            len(tensors[0]),
            self.batch_size,
            shuffle=shuffle,
            seed=self.seed,
            rank=rank,
            num_replicas=world,
            even_shards=even_shards,
            device=tensors[0].device,
        )
        return TensorBatchLoader(tensors, sampler)

    @override
    def transfer_batch_to_device(self, batch: Any, device: torch.device, dataloader_idx: int) -> Any:
        # Batches gathered from tensors already on the training device need no move: skip Lightning's
        # walk through the batch structure, which costs more than a small model's whole step.
        if isinstance(batch, tuple) and all(isinstance(t, Tensor) and t.device == device for t in batch):
            return batch
        return super().transfer_batch_to_device(batch, device, dataloader_idx)

    @override
    def train_dataloader(self) -> Iterable:
        return self._loader("train", shuffle=True, even_shards=True)

    @override
    def val_dataloader(self) -> Iterable:
        return self._loader("val", shuffle=False, even_shards=False)

    @override
    def test_dataloader(self) -> Iterable:
        return self._loader("test", shuffle=False, even_shards=False)

    @override
    def predict_dataloader(self) -> Iterable:
        # batches carry row numbers: the prediction writer puts rows back in input order
        return self._loader("predict", shuffle=False, even_shards=False)


def standardization_of(features: Tensor, targets: Tensor) -> dict[str, Tensor]:
    """Mean and scale of each feature and of the target; a constant column gets scale 1."""

    def scale(values: Tensor) -> Tensor:
        std = values.std(dim=0, unbiased=False)
        return torch.where(std > 0, std, torch.ones_like(std))

    return {
        "feature_mean": features.mean(dim=0).cpu(),
        "feature_scale": scale(features).cpu(),
        "target_mean": targets.mean().cpu(),
        "target_scale": scale(targets).cpu(),
    }


class SyntheticRegressionDataModule(RegressionDataModule):
    """y = X·true_w + true_b + noise with X ~ N(0, 1): the classic concise linear-regression data.

    The data are a pure function of the arguments: they come from a `torch.Generator` seeded with
    `seed`, never from the global RNG.

    Args:
        num_inputs: number of features (linked into the model by the CLI).
        num_examples: examples generated in total, before the val/test splits.
        true_w: the true weights, one per feature; None draws them from N(0, 1) with `seed`.
        true_b: the true bias.
        noise_std: standard deviation of the Gaussian label noise, >= 0.
        batch_size: examples per batch.
        val_fraction: share of `num_examples` held out for validation, in [0, 1).
        test_fraction: share of `num_examples` held out for test, in [0, 1).
        seed: seeds the data, the split and the per-epoch shuffle.
        num_workers: worker processes that generate streamed data while the main process trains
            (unused in memory; see the base class).
        streaming: generate examples chunk by chunk on demand instead of holding them in memory, for
            data larger than memory (`linreg_pl.streaming`). The splits then fall on chunk boundaries,
            and the values differ from the in-memory data of the same seed.
        chunk_size: examples per generated chunk when streaming, rounded up to a multiple of batch_size.
    """

    def __init__(
        self,
        num_inputs: int = 2,
        num_examples: int = 1000,
        true_w: Sequence[float] | None = (2.0, -3.4),
        true_b: float = 4.2,
        noise_std: float = 0.01,
        batch_size: int = 10,
        val_fraction: float = 0.1,
        test_fraction: float = 0.1,
        seed: int = 0,
        num_workers: int = 0,
        streaming: bool = False,
        chunk_size: int = 65536,
    ) -> None:
        super().__init__(batch_size, val_fraction, test_fraction, seed, num_workers)
        name = type(self).__name__
        if not isinstance(num_inputs, int) or num_inputs < 1:
            raise ConfigError(f"{name}: num_inputs must be an integer >= 1, got {num_inputs!r}")
        if not isinstance(num_examples, int) or num_examples < 1:
            raise ConfigError(f"{name}: num_examples must be an integer >= 1, got {num_examples!r}")
        if true_w is not None and len(true_w) != num_inputs:
            raise ConfigError(
                f"{name}: true_w has {len(true_w)} values but num_inputs is {num_inputs}; "
                f"give {num_inputs} values, or true_w: null to draw them from the seed"
            )
        if not (math.isfinite(noise_std) and noise_std >= 0):
            raise ConfigError(f"{name}: noise_std must be a finite number >= 0, got {noise_std!r}")
        if not isinstance(chunk_size, int) or chunk_size < 1:
            raise ConfigError(f"{name}: chunk_size must be an integer >= 1, got {chunk_size!r}")
        self.streaming = streaming
        self._streaming_loaders: list[StreamingLoader] = []
        self.chunk_size = math.ceil(chunk_size / batch_size) * batch_size
        if streaming:
            self.chunk_ranges = self._chunk_ranges(num_examples)  # fail now, not after the Trainer has started
        else:
            self.split_sizes(num_examples)
        self.num_inputs = num_inputs
        self.num_examples = num_examples
        self.noise_std = noise_std
        if true_w is None:  # a stream of its own, apart from the one that draws the examples
            self.true_w = torch.randn(num_inputs, generator=torch.Generator().manual_seed(seed + 1))
        else:
            self.true_w = torch.tensor(true_w, dtype=torch.float32)
        self.true_b = float(true_b)

    def _chunk_ranges(self, num_examples: int) -> dict[str, range]:
        """Chunk indices of each split when streaming; splits fall on chunk boundaries."""
        total = math.ceil(num_examples / self.chunk_size)
        num_val, num_test = round(total * self.val_fraction), round(total * self.test_fraction)
        name = type(self).__name__
        if total - num_val - num_test < 1:
            raise ConfigError(
                f"{name}: {num_examples} examples make {total} chunks of {self.chunk_size}, none left for "
                "training after the val/test splits; use more examples or a smaller chunk_size"
            )
        for field, fraction, size in (("val", self.val_fraction, num_val), ("test", self.test_fraction, num_test)):
            if fraction > 0 and size == 0:
                raise ConfigError(
                    f"{name}: {field}_fraction {fraction} of {total} chunks is no chunk; use more examples, "
                    f"a smaller chunk_size, or {field}_fraction 0"
                )
        train_end = total - num_val - num_test
        if train_end == total and num_examples % self.chunk_size:
            # a short chunk in training would give processes unequal step counts under DDP
            raise ConfigError(
                f"{name}: when streaming without val/test splits, num_examples must be a multiple of "
                f"chunk_size ({self.chunk_size}), got {num_examples}"
            )
        return {
            "train": range(train_end),
            "val": range(train_end, train_end + num_val),
            "test": range(train_end + num_val, total),
        }

    @override
    def setup(self, stage: str) -> None:
        if not self.streaming:
            super().setup(stage)

    def _streaming_loader(self, split: str, shuffle: bool, even_shards: bool) -> StreamingLoader:
        trainer = self.trainer
        rank, world = (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)
        chunks = self.chunk_ranges[split]
        total = math.ceil(self.num_examples / self.chunk_size)
        # only the data's very last chunk can be short
        last_chunk_size = (
            self.num_examples - (total - 1) * self.chunk_size if chunks[-1] == total - 1 else self.chunk_size
        )
        dataset = SyntheticChunks(
            self.true_w,
            self.true_b,
            self.noise_std,
            self.seed,
            self.chunk_size,
            self.batch_size,
            chunks,
            last_chunk_size,
            shuffle=shuffle,
            rank=rank,
            num_replicas=world,
            even_shards=even_shards,
        )
        loader = StreamingLoader(dataset, self.num_workers, self._device())
        self._streaming_loaders.append(loader)
        return loader

    @override
    def teardown(self, stage: str) -> None:
        for loader in self._streaming_loaders:  # no generating thread outlives fit/validate/test
            loader.close()
        self._streaming_loaders.clear()

    @override
    def _loader(self, split: str, shuffle: bool, even_shards: bool) -> Iterable:
        if not self.streaming:
            return super()._loader(split, shuffle, even_shards)
        if split == "predict":
            raise ConfigError("SyntheticRegressionDataModule: predict needs data in memory; set streaming: false")
        return self._streaming_loader(split, shuffle, even_shards)

    @override
    def load_tensors(self) -> tuple[Tensor, Tensor]:
        generator = torch.Generator().manual_seed(self.seed)
        features = torch.randn(self.num_examples, self.num_inputs, generator=generator)
        noise = torch.randn(self.num_examples, generator=generator) * self.noise_std
        targets = features @ self.true_w + self.true_b + noise
        return features, targets


class CSVRegressionDataModule(RegressionDataModule):
    """A table from a file: CSV with a header row, `.npz` (one array per column) or `.npy` (2-D).

    Features are standardised with training-split statistics that the model stores, so `predict`
    on a new file of raw features gives predictions in the original units.

    Args:
        path: the table. In a `.npy` file the columns are named "0", "1", ...
        target: name of the label column.
        features: names of the feature columns; None means every column but `target`.
        predict_path: a table of raw features to predict on (the target column may be missing);
            None predicts on the test split of `path`.
        batch_size: examples per batch.
        val_fraction: share of the rows held out for validation, in [0, 1).
        test_fraction: share of the rows held out for test, in [0, 1).
        seed: seeds the split and the per-epoch shuffle.
        num_workers: unused: the table is in memory (see the base class).
        standardize: standardise features and target with training-split statistics.
    """

    def __init__(
        self,
        path: str,
        target: str,
        features: list[str] | None = None,
        predict_path: str | None = None,
        batch_size: int = 10,
        val_fraction: float = 0.1,
        test_fraction: float = 0.1,
        seed: int = 0,
        num_workers: int = 0,
        standardize: bool = True,
    ) -> None:
        super().__init__(batch_size, val_fraction, test_fraction, seed, num_workers, standardize)
        self.path = path
        self.target = target
        self.predict_path = predict_path
        # Read now: a bad file is reported before training starts, and num_inputs is known for the model.
        columns = read_table(path)
        if target not in columns:
            raise ConfigError(f"{path}: no target column {target!r}; columns are {sorted(columns)}")
        self.features = list(features) if features is not None else [c for c in columns if c != target]
        missing = [c for c in self.features if c not in columns]
        if missing:
            raise ConfigError(f"{path}: no feature column(s) {missing}; columns are {sorted(columns)}")
        if not self.features:
            raise ConfigError(f"{path}: no feature columns besides the target {target!r}")
        self._features = torch.stack([columns[c] for c in self.features], dim=1)
        self._targets = columns[target]
        self.split_sizes(len(self._targets))
        self.num_inputs = len(self.features)

    @override
    def load_tensors(self) -> tuple[Tensor, Tensor]:
        return self._features, self._targets

    @override
    def load_predict_tensors(self) -> tuple[Tensor, Tensor] | None:
        if self.predict_path is None:
            return None
        columns = read_table(self.predict_path)
        missing = [c for c in self.features if c not in columns]
        if missing:
            raise ConfigError(f"{self.predict_path}: no feature column(s) {missing}; columns are {sorted(columns)}")
        features = torch.stack([columns[c] for c in self.features], dim=1)
        return features, torch.arange(len(features))


def read_table(path: str) -> dict[str, Tensor]:
    """Columns of a CSV/.npz/.npy file as float32 tensors; every cell must be a finite number."""
    file = Path(path)
    if not file.is_file():
        raise ConfigError(f"data file {path!r} does not exist")
    suffix = file.suffix.lower()
    if suffix == ".npz" or suffix == ".npy":
        import numpy as np  # only file data need numpy

        try:
            loaded = np.load(file, allow_pickle=False)
        except (ValueError, OSError) as error:
            raise ConfigError(f"{path}: not a readable {suffix} file ({error})") from None
        if suffix == ".npz":
            raw = {key: loaded[key] for key in loaded.files}
        elif loaded.ndim == 2:
            raw = {str(i): loaded[:, i] for i in range(loaded.shape[1])}
        else:
            raise ConfigError(f"{path}: a .npy table must be 2-D (rows x columns), got shape {loaded.shape}")
        columns = {}
        for name, values in raw.items():
            if values.ndim != 1 or not np.issubdtype(values.dtype, np.number):
                raise ConfigError(
                    f"{path}: column {name!r} must be a 1-D numeric array, got {values.dtype} {values.shape}"
                )
            columns[name] = torch.from_numpy(values.astype(np.float32))
    else:
        columns = _read_csv(file)
    lengths = {len(v) for v in columns.values()}
    if not columns or lengths == {0}:
        raise ConfigError(f"{path}: the file holds no data rows")
    if len(lengths) > 1:
        raise ConfigError(f"{path}: columns have different lengths {sorted(lengths)}")
    for name, values in columns.items():
        bad = (~torch.isfinite(values)).nonzero()
        if len(bad):
            row = int(bad[0])
            raise ConfigError(
                f"{path}: column {name!r} has a NaN or infinite value in data row {row + 1}; "
                "every cell must be a finite number"
            )
    return columns


def _read_csv(file: Path) -> dict[str, Tensor]:
    with file.open(newline="") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if not header:
            raise ConfigError(f"{file}: the file is empty; expected a header row of column names and data rows")
        header = [name.strip() for name in header]
        values: list[list[float]] = [[] for _ in header]
        for line, row in enumerate(reader, start=2):
            if not row:
                continue
            if len(row) != len(header):
                raise ConfigError(f"{file}: line {line} has {len(row)} cells, the header has {len(header)}")
            for name, column, cell in zip(header, values, row, strict=True):
                try:
                    column.append(float(cell))
                except ValueError:
                    raise ConfigError(f"{file}: line {line}, column {name!r}: {cell!r} is not a number") from None
    return {name: torch.tensor(column, dtype=torch.float32) for name, column in zip(header, values, strict=True)}
