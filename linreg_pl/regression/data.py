"""Data modules: synthetic linear-regression data and tables read from files, held in memory.

    python -m linreg_pl fit --config configs/default.yaml
    python -m linreg_pl fit --config configs/csv.yaml --data.path my_table.csv --data.target price

`RegressionDataModule` splits whatever `load_tensors()` returns into train/val/test (shares of the
examples chosen by a seeded permutation) and batches each split through `linreg_pl.regression.batches`, which
gathers a whole batch at once (`linreg_pl.regression.batches.gather`). Data larger than memory stream from
`linreg_pl.regression.streaming` (`SyntheticStreamDataModule`, `TableStreamDataModule`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import torch
from lightning.pytorch import LightningDataModule
from torch import Tensor
from typing_extensions import override

from linreg_pl.errors import ConfigError
from linreg_pl.regression.batches import BatchIndexSampler, RowBatch, TensorBatchLoader, gather
from linreg_pl.regression.closed_form import NormalEquations
from linreg_pl.regression.encoding import (
    Encoded,
    Encoding,
    column_counts,
    describe,
    encode,
    find_encoding,
    input_names,
    is_text,
    target_values,
    texts,
)
from linreg_pl.regression.inference import largest_leverage
from linreg_pl.regression.tables import column_names, read_arrow, read_table

Split = tuple[Tensor, ...]


MIN_SCORED_ROWS = 2  # the fewest rows a split or file scored in memory may have: torchmetrics' R² needs two


def check_split_arguments(owner: str, batch_size: int, val_fraction: float, test_fraction: float) -> None:
    """The checks every data module makes of its batch size and held-out fractions."""
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"{owner}: batch_size must be an integer >= 1, got {batch_size!r}")
    for field, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not (isinstance(value, (int, float)) and 0.0 <= value < 1.0):
            raise ConfigError(f"{owner}: {field} must be in [0, 1), got {value!r}")
    if val_fraction + test_fraction >= 1.0:
        raise ConfigError(
            f"{owner}: val_fraction + test_fraction must be < 1 to leave training data, "
            f"got {val_fraction} + {test_fraction}"
        )


def split_sizes(
    owner: str,
    total: int,
    val_fraction: float,
    test_fraction: float,
    min_train: int,
    unit: str,
    remedy: str,
    min_held_out: int = 1,
) -> tuple[int, int, int]:
    """(train, val, test) counts of `total` units (examples, or chunks when streaming).

    Training keeps at least `min_train` units; a split whose fraction is > 0 gets at least `min_held_out` (2
    examples: the R² a split reports needs two). `remedy` names what the user can change to get more units.
    """
    num_val, num_test = round(total * val_fraction), round(total * test_fraction)
    num_train = total - num_val - num_test
    if num_train < min_train:
        raise ConfigError(
            f"{owner}: {total} {unit} leave {num_train} for training after the val/test splits, "
            f"fewer than {min_train}; {remedy}"
        )
    for field, fraction, size in (("val", val_fraction, num_val), ("test", test_fraction, num_test)):
        if fraction > 0 and size < min_held_out:
            got = "none" if size == 0 else f"{size}, and its R² needs at least {min_held_out}"
            raise ConfigError(
                f"{owner}: {field}_fraction {fraction} of {total} {unit} is {got}; {remedy}, "
                f"a larger {field}_fraction, or 0 to have no {field} split"
            )
    return num_train, num_val, num_test


def synthetic_truth(
    owner: str,
    num_inputs: int,
    num_examples: int,
    true_w: Sequence[float] | None,
    true_b: float,
    noise_std: float,
    seed: int,
) -> Tensor:
    """Checks the arguments of synthetic data and returns the true weight (drawn from `seed` if None)."""
    if not isinstance(num_inputs, int) or num_inputs < 1:
        raise ConfigError(f"{owner}: num_inputs must be an integer >= 1, got {num_inputs!r}")
    if true_w is not None and len(true_w) != num_inputs:
        raise ConfigError(
            f"{owner}: true_w has {len(true_w)} values but num_inputs is {num_inputs}; "
            f"give {num_inputs} values, or true_w: null to draw them from the seed"
        )
    if not math.isfinite(true_b):
        raise ConfigError(f"{owner}: true_b must be a finite number, got {true_b!r}")
    if not (math.isfinite(noise_std) and noise_std >= 0):
        raise ConfigError(f"{owner}: noise_std must be a finite number >= 0, got {noise_std!r}")
    if not isinstance(num_examples, int) or num_examples < 1:
        raise ConfigError(f"{owner}: num_examples must be an integer >= 1, got {num_examples!r}")
    if true_w is None:  # a stream of its own, apart from the one that draws the examples
        return torch.randn(num_inputs, generator=torch.Generator().manual_seed(seed + 1))
    return torch.tensor(true_w, dtype=torch.float32)


def feature_columns(path: str, target: str, features: list[str] | None) -> list[str]:
    """The feature columns of a table (`features`, or every column but `target`), checked against its header."""
    available = column_names(path)
    if target not in available:
        raise ConfigError(f"{path}: no target column {target!r}; columns are {available}")
    features = list(features) if features is not None else [c for c in available if c != target]
    if target in features:
        raise ConfigError(f"{path}: the target {target!r} is also listed in features; list only the inputs")
    if not features:
        raise ConfigError(f"{path}: no feature columns besides the target {target!r}")
    return features


def training_dtype(trainer: Any) -> torch.dtype:
    """float64 under `--trainer.precision 64-true` (the data keep what the file holds), else float32."""
    return torch.float64 if trainer is not None and str(trainer.precision).startswith("64") else torch.float32


def _for_training(tensor: Tensor, device: torch.device, dtype: torch.dtype = torch.float32) -> Tensor:
    """Values as `dtype` on the training device; row numbers stay integers."""
    return tensor.to(device, dtype) if tensor.is_floating_point() else tensor.to(device)


class RegressionDataModule(LightningDataModule):
    """Splits `(features, targets)` from `load_tensors()` into train/val/test and serves fast batches.

    Subclasses implement `load_tensors` (and may set `true_w`/`true_b` when the truth is known, for
    the end-of-fit report). `splits` maps each split to `(features, targets, row numbers)`, rows in
    input order; it is filled on first use, on the CPU, and moved to the training device in `setup`.

    Args:
        batch_size: examples per batch (the last batch of an epoch may be smaller).
        val_fraction: share of the examples held out for validation, in [0, 1).
        test_fraction: share held out for test, in [0, 1); with `val_fraction` it must leave a
            training set of at least one batch.
        seed: seeds the split and the per-epoch shuffle (and, for synthetic data, the data).
        standardize: give the model the training split's feature and target statistics
            (`standardization`, linked into the model by the CLI), so it trains on standardised values.
        min_batches_per_epoch: an epoch passes over the training split as many times as it takes to make at
            least this many batches (per process), each pass reshuffled; 0 or 1: one pass. Schedules,
            checkpoints and averaging count epochs and steps as usual, so a 16-row table trains as many steps
            as a large one without `max_steps`.
    """

    # what the model takes from the data: the CLI links these attributes into its init arguments of the same name
    model_arguments = ("num_inputs", "standardization", "feature_names", "encoding")
    feature_names: list[str] | None = None  # column names, for tables
    encoding: dict[str, list[str] | None] | None = None  # a table's columns and levels

    def __init__(
        self,
        batch_size: int = 32,
        val_fraction: float = 0.0,
        test_fraction: float = 0.0,
        seed: int = 0,
        standardize: bool = False,
        min_batches_per_epoch: int = 0,
    ) -> None:
        super().__init__()
        check_split_arguments(type(self).__name__, batch_size, val_fraction, test_fraction)
        if isinstance(min_batches_per_epoch, bool) or not isinstance(min_batches_per_epoch, int):
            raise ConfigError(
                f"{type(self).__name__}: min_batches_per_epoch must be an integer >= 0, got {min_batches_per_epoch!r}"
            )
        self.min_batches_per_epoch = max(min_batches_per_epoch, 0)
        self.batch_size = batch_size
        self.val_fraction = val_fraction
        self.test_fraction = test_fraction
        self.seed = seed
        self.standardize = standardize
        self.true_w: Tensor | None = None
        self.true_b: float | None = None
        self.splits: dict[str, Split] = {}
        # the training split as read (float64 for tables), on the CPU, kept when `setup` converts `splits` to the
        # training precision and device: the report's least squares and inference are the table's, in any precision
        self.training_rows: tuple[Tensor, Tensor] | None = None

    def load_tensors(self) -> tuple[Tensor, Tensor]:
        """All examples as `(features [n, d], targets [n])`, float32 or float64 (trained on as float32, or as
        float64 under `--trainer.precision 64-true`)."""
        raise NotImplementedError

    def load_predict_tensors(self) -> tuple[Tensor, Tensor] | None:
        """Features to predict on and their row numbers; None means the test split."""
        return None

    def load_scoring_tensors(self) -> Split | None:
        """A labelled table of its own that validate and test score, `(features, targets, row numbers)`; None
        means the val and test splits."""
        return None

    def split_sizes(self, num_examples: int) -> tuple[int, int, int]:
        """(train, val, test) sizes; training keeps at least one example (a split smaller than `batch_size` is
        one batch, as a `DataLoader` without `drop_last` gives it: configs/csv.yaml's batch suits large tables
        and small ones alike)."""
        return split_sizes(
            type(self).__name__,
            num_examples,
            self.val_fraction,
            self.test_fraction,
            min_train=1,
            unit="examples",
            remedy="use more examples",
            min_held_out=MIN_SCORED_ROWS,
        )

    @property
    def standardization(self) -> dict[str, list] | None:
        """Statistics of the training split for `LinearRegression(standardization=...)`. Not standardising, the
        design's factor alone: the model neither standardises nor whitens with it, but finishes a lasso with it
        (its `_lasso_step`), so that the checkpoint's weights are exactly sparse where the exact lasso is."""
        statistics = NormalEquations()
        features, targets = self._load_splits()["train"][:2]
        statistics.update(features, targets)
        if not self.standardize:
            return {"factor": statistics.standardization()["factor"]}
        # the model keeps SGD's steps stable along the direction of the row of largest leverage (see its
        # `_step_scale`): a second pass, over the rows in memory
        return {**statistics.standardization(), "largest_leverage": [largest_leverage(statistics, features)]}

    def split_rows(self, num_examples: int) -> dict[str, Tensor]:
        """Each split's rows, chosen by a permutation seeded with `seed`, ascending."""
        num_train, num_val, _ = self.split_sizes(num_examples)
        order = torch.randperm(num_examples, generator=torch.Generator().manual_seed(self.seed))
        parts = torch.split(order, [num_train, num_val, num_examples - num_train - num_val])
        # rows stay sorted so that a split keeps the input order (predictions come out in it)
        return {split: rows.sort().values for split, rows in zip(("train", "val", "test"), parts, strict=True)}

    def _load_splits(self) -> dict[str, Split]:
        if not self.splits:
            features, targets = self.load_tensors()
            for split, rows in self.split_rows(len(features)).items():
                self.splits[split] = (*gather((features, targets), rows), rows)
        return self.splits

    @override
    def setup(self, stage: str) -> None:
        # In-memory data live on the GPU once, not copied there batch by batch.
        device = self.trainer.strategy.root_device if self.trainer is not None else torch.device("cpu")
        dtype = training_dtype(self.trainer)
        given = None
        if stage == "predict":
            given = self.load_predict_tensors()
        elif stage in ("validate", "test"):
            given = self.load_scoring_tensors()
        if given is None:  # a predict or scoring table of its own needs nothing of the training data
            for split, tensors in self._load_splits().items():
                if split == "train" and self.training_rows is None:
                    self.training_rows = (tensors[0].cpu(), tensors[1].cpu())
                self.splits[split] = tuple(_for_training(t, device, dtype) for t in tensors)
        if stage == "predict":
            features, rows = (self.splits["test"][0], self.splits["test"][2]) if given is None else given
            self.splits["predict"] = (_for_training(features, device, dtype), rows.to(device))
        elif given is not None:  # validate and test score every usable row of their own table
            self.splits["val" if stage == "validate" else "test"] = tuple(
                _for_training(t, device, dtype) for t in given
            )

    def _loader(self, split: str, shuffle: bool = False, even_shards: bool = False) -> TensorBatchLoader:
        """Batches of one split: `(features, targets)`, or `(features, row numbers)` to predict."""
        tensors = self.splits[split] if split == "predict" else self.splits[split][:2]
        trainer = self.trainer
        rank, world = (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)
        passes = 1
        if split == "train" and self.min_batches_per_epoch > 1:
            passes = max(1, math.ceil(self.min_batches_per_epoch * self.batch_size * world / len(tensors[0])))
        sampler = BatchIndexSampler(
            len(tensors[0]),
            self.batch_size,
            shuffle=shuffle,
            seed=self.seed,
            rank=rank,
            num_replicas=world,
            even_shards=even_shards,
            device=tensors[0].device,
            passes=passes,
        )
        return TensorBatchLoader(tensors, sampler, RowBatch if split == "predict" else None)

    @override
    def train_dataloader(self) -> TensorBatchLoader:
        # under DDP every process takes the same number of steps: shards are padded to equal length
        return self._loader("train", shuffle=True, even_shards=True)

    @override
    def val_dataloader(self) -> TensorBatchLoader:
        return self._loader("val")

    @override
    def test_dataloader(self) -> TensorBatchLoader:
        return self._loader("test")

    @override
    def predict_dataloader(self) -> TensorBatchLoader:
        # batches carry row numbers: the prediction writer puts rows back in input order
        return self._loader("predict")


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
    """

    def __init__(
        self,
        num_inputs: int = 1,
        num_examples: int = 1000,
        true_w: list[float] | None = None,
        true_b: float = 0.0,
        noise_std: float = 0.0,
        batch_size: int = 32,
        val_fraction: float = 0.0,
        test_fraction: float = 0.0,
        seed: int = 0,
    ) -> None:
        # features drawn from N(0, 1) need no standardising
        super().__init__(batch_size, val_fraction, test_fraction, seed, standardize=False)
        name = type(self).__name__
        self.true_w = synthetic_truth(name, num_inputs, num_examples, true_w, true_b, noise_std, seed)
        self.split_sizes(num_examples)  # fail now, not after the Trainer has started
        self.num_inputs = num_inputs
        self.num_examples = num_examples
        self.true_b = float(true_b)
        self.noise_std = noise_std

    @override
    def load_tensors(self) -> tuple[Tensor, Tensor]:
        generator = torch.Generator().manual_seed(self.seed)
        features = torch.randn(self.num_examples, self.num_inputs, generator=generator)
        noise = torch.randn(self.num_examples, generator=generator) * self.noise_std
        targets = features @ self.true_w + self.true_b + noise
        return features, targets


class TableRegressionDataModule(RegressionDataModule):
    """A table from a file: CSV (`,` `;` or tab separated, with a header row), Parquet (a file, a folder of
    part files or a glob), `.npz` (one array per column) or `.npy` (2-D); see `linreg_pl.regression.tables`.

    Features and target are standardised with training-split statistics that the model stores, so
    `predict` on a new file of raw features gives predictions in the original units.

    Text, category and yes/no columns become indicator columns (`linreg_pl.regression.encoding`): their
    levels are found on the training split, and `encoding`, linked into the model by the CLI, keeps them in
    its checkpoint. Validate and test use the model's encoding; predict on `predict_path` takes the feature
    columns and levels from the model alone and never reads `path`. Rows with a missing value are left out of
    training (`missing: drop`, one line says how many, by column) or refused (`missing: error`); a predict row
    with a missing value or a level the training split did not hold gets an empty prediction (one line counts
    them, by column). `path` is read when first needed: when the CLI links the inputs into the model, or in
    `setup`.

    Args:
        path: the table. In a `.npy` file the columns are named "0", "1", ...
        target: name of the label column.
        features: names of the feature columns; None means every column but `target`.
        predict_path: a table of raw features to predict on (the target column, if present, is ignored);
            None predicts on the test split of `path`.
        test_path: a labelled table (the feature columns and `target`) that `validate` and `test` score on all
            its rows (MSE, MAE, R²), read with the model's columns and levels alone, never `path`; rows with a
            missing value or a level training did not see are left out, and one line counts them. None scores
            the val and test splits of `path`. `fit` validates on the val split of `path` either way.
        batch_size: examples per batch.
        val_fraction: share of the rows held out for validation, in [0, 1).
        test_fraction: share of the rows held out for test, in [0, 1).
        seed: seeds the split and the per-epoch shuffle.
        standardize: standardise features and target with training-split statistics (and give the model the
            design's QR factor, with which it preconditions SGD; see `LinearRegression`).
        min_batches_per_epoch: repeat the training split within an epoch up to at least this many batches.
        missing: `drop` leaves rows with a missing value (in a feature used or the target) out, as R's
            na.omit; `error` refuses the table at the first one.
    """

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
        standardize: bool = True,
        min_batches_per_epoch: int = 0,
        missing: Literal["drop", "error"] = "drop",
    ) -> None:
        super().__init__(batch_size, val_fraction, test_fraction, seed, standardize, min_batches_per_epoch)
        if missing not in ("drop", "error"):
            raise ConfigError(f"{type(self).__name__}: missing must be 'drop' or 'error', got {missing!r}")
        self.path = path
        self.target = target
        self.predict_path = predict_path
        self.test_path = test_path
        self.features = features
        self.missing = missing
        self._encoding: Encoding | None = None

    @property
    def encoding(self) -> Encoding:
        """Each feature column's levels (text) or None (numbers), in input order (linked into the model)."""
        self._load_splits()
        assert self._encoding is not None
        return self._encoding

    @property
    def standardization(self) -> dict[str, list[float]] | None:
        """As `RegressionDataModule.standardization`, for the table's encoded columns."""
        self.encoding  # noqa: B018 (from a checkpoint, an AttributeError: the link is left alone)
        return super().standardization

    @property
    def num_inputs(self) -> int:
        """The model's inputs: one per number column, one per level but the first of each text column."""
        return len(input_names(self.encoding))

    @property
    def feature_names(self) -> list[str]:
        """The model's inputs by name, `column=level` for indicators (linked into the model by the CLI)."""
        return input_names(self.encoding)

    def _model_encoding(self) -> Encoding | None:
        return model_encoding(self.trainer)

    @override
    def _load_splits(self) -> dict[str, Split]:
        if self.splits:
            return self.splits
        features = feature_columns(self.path, self.target, self.features)
        encoding = self._model_encoding()
        columns = list(encoding) if encoding is not None else features
        table = read_arrow(self.path, [*columns, self.target])
        kinds = encoding or dict.fromkeys(features)  # numbers for now: only the missing cells are looked at
        # which rows miss a value: numbers NaN, text null (levels do not matter yet)
        missing = {name: np.asarray(is_null_or_nan(table.column(name))) for name in [*columns, self.target]}
        bad = np.zeros(table.num_rows, dtype=bool)
        for mask in missing.values():
            bad |= mask
        if bad.any():
            counts = column_counts(missing)
            if self.missing == "error":
                raise missing_error(self.path, [*columns, self.target], table, counts)
            left_out = f"left out {int(bad.sum())} of {table.num_rows} rows"
            print(f"{self.path}: {left_out} with a missing value ({describe(counts)})", flush=True)
        kept = np.flatnonzero(~bad)
        table = table.take(kept)
        rows = self.split_rows(table.num_rows)
        if encoding is None:
            encoding = find_encoding(table.take(rows["train"].numpy()), list(kinds), f"{self.path} (training split)")
        encoded = encode(table, encoding, self.path)
        targets = torch.from_numpy(target_values(table, self.target, self.path))
        design = torch.from_numpy(encoded.features)
        unseen = encoded.unusable()
        if unseen.any():
            counts = column_counts(encoded.unseen)
            print(
                f"{self.path}: left out {int(unseen.sum())} validation/test rows with a level the training split does "
                f"not hold ({describe(counts)})",
                flush=True,
            )
        for split, split_rows in rows.items():
            split_rows = split_rows[torch.from_numpy(~unseen[split_rows.numpy()])]
            # row numbers of the file's data rows (0-based), as predictions name them
            self.splits[split] = (*gather((design, targets), split_rows), torch.from_numpy(kept)[split_rows])
        self._encoding, self._tensors = encoding, (design, targets)
        return self.splits

    @override
    def load_tensors(self) -> tuple[Tensor, Tensor]:
        """The table's rows without a missing value, encoded: `(features [n, d], targets [n])`, float64."""
        self._load_splits()
        return self._tensors

    @override
    def load_predict_tensors(self) -> tuple[Tensor, Tensor] | None:
        if self.predict_path is None:
            return None
        encoding = self._model_encoding() or self.encoding
        table = read_arrow(self.predict_path, list(encoding))
        encoded = encode(table, encoding, self.predict_path)
        features = torch.from_numpy(encoded.features)
        unusable = encoded.unusable()
        features[torch.from_numpy(unusable)] = float("nan")  # the model's prediction is NaN: an empty cell
        report_unpredictable(self.predict_path, encoded, unusable)
        return features, torch.arange(len(features))

    @override
    def load_scoring_tensors(self) -> Split | None:
        if self.test_path is None:
            return None
        encoding = self._model_encoding() or self.encoding
        table = read_arrow(self.test_path, [*encoding, self.target])
        encoded = encode(table, encoding, self.test_path)
        targets = target_values(table, self.target, self.test_path)
        missing = {**encoded.missing, self.target: np.isnan(targets)}
        unusable = encoded.unusable() | missing[self.target]
        if unusable.any():
            reasons = []
            if counts := column_counts(missing):
                reasons.append(f"a missing value ({describe(counts)})")
            if counts := column_counts(encoded.unseen):
                reasons.append(f"a level not seen in training ({describe(counts)})")
            print(
                f"{self.test_path}: left out {int(unusable.sum())} of {len(unusable)} rows: {'; '.join(reasons)}",
                flush=True,
            )
        rows = np.flatnonzero(~unusable)
        if not len(rows):
            raise ConfigError(f"{self.test_path}: no row can be scored: each misses a value or has an unseen level")
        if len(rows) < MIN_SCORED_ROWS:
            raise ConfigError(
                f"{self.test_path}: {len(rows)} row can be scored, and the R² it reports needs {MIN_SCORED_ROWS}"
            )
        return torch.from_numpy(encoded.features[rows]), torch.from_numpy(targets[rows]), torch.from_numpy(rows)


def model_encoding(trainer: Any) -> Encoding | None:
    """The encoding the trainer's model was trained with (from its hyperparameters), if any."""
    model = trainer.lightning_module if trainer is not None else None
    hparams = getattr(model, "hparams", {}) or {}
    if hparams.get("encoding"):
        return dict(hparams["encoding"])
    if hparams.get("feature_names"):  # a checkpoint from before encodings: every input a number column
        return dict.fromkeys(hparams["feature_names"])
    return None


def is_null_or_nan(column: Any) -> np.ndarray:
    """Missing cells of a column: null, NaN, or a text of `MISSING_TEXT`."""
    import pyarrow.compute as pc

    if is_text(column.type):
        return np.asarray(pc.is_null(texts(column)).to_numpy(zero_copy_only=False), dtype=bool)
    return np.asarray(pc.is_null(column, nan_is_null=True).to_numpy(zero_copy_only=False), dtype=bool)


def missing_error(path: str, columns: list[str], table: Any, counts: dict[str, int]) -> ConfigError:
    """`missing: error`: the one-line error of the strict number reader for the first number column that misses a
    value, else (a text column) one of our own."""
    numeric = [name for name in columns if name in counts and not is_text(table.column(name).type)]
    if numeric:
        try:
            read_table(path, numeric)
        except ConfigError as error:
            return error
    name = next(iter(counts))
    row = int(np.argmax(is_null_or_nan(table.column(name)))) + 1
    return ConfigError(f"{path}: column {name!r} has a missing value in data row {row}; or give missing: drop")


def report_unpredictable(path: str, encoded: Encoded, unusable: np.ndarray) -> None:
    """One line counting the rows that get no prediction, by column and reason."""
    if not unusable.any():
        return
    reasons = []
    if counts := column_counts(encoded.missing):
        reasons.append(f"a missing value ({describe(counts)})")
    if counts := column_counts(encoded.unseen):
        reasons.append(f"a level not seen in training ({describe(counts)})")
    print(f"{path}: {int(unusable.sum())} rows get no prediction: {'; '.join(reasons)}", flush=True)
