"""Helpers for test_distributed.py, imported by class path in DDP worker processes (PYTHONPATH=tests)."""

from __future__ import annotations

import json

from linreg_pl.regression.data import SyntheticRegressionDataModule
from linreg_pl.regression.model import LinearRegression


class RowsDataModule(SyntheticRegressionDataModule):
    """The synthetic data with each batch's row numbers as a third tensor."""

    def _loader(self, split, shuffle=False, even_shards=False):
        loader = super()._loader(split, shuffle, even_shards)
        loader.tensors = self.splits[split]  # features, targets and row numbers
        return loader


class ShardProbe(LinearRegression):
    """Trains as usual and writes the rows each process saw in the first epoch to rows-<rank>.json."""

    def __init__(self, num_inputs: int = 2) -> None:
        super().__init__(num_inputs=num_inputs)
        self.seen: dict[str, list[int]] = {"train": [], "val": []}

    def training_step(self, batch, batch_idx):
        if self.current_epoch == 0:
            self.seen["train"] += batch[2].tolist()
        return super().training_step(batch[:2], batch_idx)

    def validation_step(self, batch, batch_idx):
        if self.current_epoch == 0 and not self.trainer.sanity_checking:
            self.seen["val"] += batch[2].tolist()
        return super().validation_step(batch[:2], batch_idx)

    def on_train_epoch_end(self):
        if self.current_epoch == 0:
            with open(f"rows-{self.global_rank}.json", "w") as handle:
                json.dump(self.seen, handle)
