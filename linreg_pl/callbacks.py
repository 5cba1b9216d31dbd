"""Callbacks any LightningModule can use: the divergence guard, the interrupt checkpoint, a check that monitored
metrics exist, tail weight averaging and the predictions file.

    python -m linreg_pl fit --config configs/default.yaml
    python -m linreg_pl predict --config configs/default.yaml --ckpt_path .../last.ckpt

`configs/base.yaml`, which every run reads, lists the guards under `trainer.callbacks`; the CLI adds the
predictions file to every run (`--predictions.path`).
"""

from __future__ import annotations

import contextlib
import csv
import heapq
import os
import signal
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.callbacks import BasePredictionWriter, WeightAveraging
from lightning.pytorch.utilities.exceptions import SIGTERMException
from torch import Tensor
from typing_extensions import override

from linreg_pl.checkpoint_io import remove_stale_temporaries
from linreg_pl.errors import ConfigError


class DivergenceError(RuntimeError):
    """The loss or the weights stopped being finite; the message says where and what to try."""


class TailWeightAveraging(WeightAveraging):
    """Lightning's `WeightAveraging` (torch's `AveragedModel`: an equal-weight average of the weights after
    each optimiser step), over the last `1 - start_fraction` of training's steps only.

    Constant-lr SGD ends wherever the minibatch noise leaves it, a few percent above the optimum on noisy
    data; the average of its iterates converges to the optimum (for a quadratic loss the mean of the
    iterates is the optimum). The early steps are left out, so the descent from the initial weights does
    not weigh on the average. Before the window the average follows the live weights, so validation and
    the checkpoints of early epochs see the model as it is.

    As in `WeightAveraging`: validation runs with the averaged weights, checkpoints hold them in
    `state_dict` (the live ones under `current_model_state`, for resuming exactly), and at the end of
    `fit` they replace the live weights, so the report, `last.ckpt`, `test` and `predict` all use them.

    Args:
        start_fraction: the share of training's steps (`trainer.estimated_stepping_batches`) to run
            before averaging starts, in [0, 1).
    """

    def __init__(self, start_fraction: float = 0.5) -> None:
        if not (isinstance(start_fraction, (int, float)) and 0 <= start_fraction < 1):
            raise ConfigError(f"TailWeightAveraging: start_fraction must be in [0, 1), got {start_fraction!r}")
        super().__init__()
        self.start_fraction = start_fraction
        self._start_step = 0

    @override
    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._start_step = int(self.start_fraction * trainer.estimated_stepping_batches)

    @override
    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if self._average_model is not None and trainer.global_step <= self._start_step:
            self._average_model.n_averaged.zero_()  # AveragedModel copies the weights when it has none averaged
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)

    @override
    def on_load_checkpoint(self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict[str, Any]) -> None:
        # outside `fit` there is nothing to restore: the checkpoint's `state_dict` already is the average
        if self._average_model is not None:
            super().on_load_checkpoint(trainer, pl_module, checkpoint)


class DivergenceGuard(Callback):
    """Stops training with a `DivergenceError` once the loss or a weight is NaN or infinite.

    It checks every `check_every_n_steps` steps and on the last batch of each epoch, so a checkpoint
    (saved after the epoch's last batch) never holds non-finite weights and the last good one is kept.
    Checking less often than every step avoids a device-to-host sync per step on a GPU.

    Args:
        check_every_n_steps: steps between checks, >= 1.
    """

    def __init__(self, check_every_n_steps: int = 20) -> None:
        if check_every_n_steps < 1:
            raise ConfigError(f"DivergenceGuard: check_every_n_steps must be >= 1, got {check_every_n_steps}")
        self.check_every_n_steps = check_every_n_steps

    @override
    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if batch_idx % self.check_every_n_steps and not trainer.is_last_batch:
            return
        # a skipped batch or manual optimisation returns no loss: the weights are checked alone
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        losses = [loss.detach().reshape(-1)] if isinstance(loss, torch.Tensor) else []
        values = losses + [p.detach().reshape(-1) for p in pl_module.parameters()]
        if bool(torch.isfinite(torch.cat(values)).all()):
            return
        what = "the loss" if losses and not bool(torch.isfinite(losses[0]).all()) else "the weights"
        lrs = sorted({group["lr"] for opt in trainer.optimizers for group in opt.param_groups})
        last = last_checkpoint_path(trainer)
        if last:
            kept = f"; the last good checkpoint is kept: {last}"
        else:
            kept = "; no checkpoint was written" + ("" if trainer.checkpoint_callbacks else " (checkpointing is off)")
        raise DivergenceError(
            f"training diverged at epoch {trainer.current_epoch}, step {trainer.global_step}: {what} became "
            f"NaN or infinite. The learning rate {', '.join(f'{lr:g}' for lr in lrs)} is probably too high "
            f"for this data: lower it (--model.optimizer.lr) or standardise the features{kept}"
        )


class InterruptCheckpoint(Callback):
    """On Ctrl-C or SIGTERM during `fit`'s training, finishes the current step, saves `interrupted.ckpt` beside
    the other checkpoints and exits with status 130 (Ctrl-C) or 143 (SIGTERM).

    Lightning stops a run between steps on SIGTERM. From the first training step to the end of the last, this
    callback makes the first Ctrl-C do the same, by sending the process SIGTERM, so resuming from
    `interrupted.ckpt` is exact either way. A second Ctrl-C stops at once, inside a step, and saves nothing:
    resume from `last.ckpt`, the last finished epoch. The README lists where Ctrl-C is left to Lightning
    (several processes among them). Other exceptions (a divergence, a bug) save nothing either, so a bad state
    never lands in a checkpoint. With checkpointing off (`--trainer.enable_checkpointing false`) it saves
    nothing and says so.

    At the start of `fit` it also removes the temporary files that a killed checkpoint write left
    (`AtomicCheckpointIO`) in this run's checkpoint directories and in the one resumed from.
    """

    def __init__(self) -> None:
        self.path: str | None = None
        self.stopped_by = signal.SIGTERM  # SIGINT once Ctrl-C was pressed

    @override
    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.stopped_by = signal.SIGTERM
        # after ModelCheckpoint's setup, which resolves its dirpath; one process deletes, as one writes
        if not trainer.is_global_zero:
            return
        directories = {c.dirpath for c in trainer.checkpoint_callbacks if getattr(c, "dirpath", None)}
        if trainer.ckpt_path and os.path.isfile(trainer.ckpt_path):
            directories.add(os.path.dirname(os.path.abspath(trainer.ckpt_path)))
        for directory in sorted(directories):
            remove_stale_temporaries(directory)

    @override
    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        # Lightning handles SIGTERM by now and puts back every handler it found (this one's too) when the run
        # ends; the README says why Ctrl-C is otherwise left alone
        if (
            trainer.world_size == 1
            and threading.current_thread() is threading.main_thread()
            and callable(signal.getsignal(signal.SIGTERM))
            and signal.getsignal(signal.SIGINT) is signal.default_int_handler
        ):
            signal.signal(signal.SIGINT, self._finish_the_step)

    @override
    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if signal.getsignal(signal.SIGINT) == self._finish_the_step:  # training is over: Ctrl-C stops at once
            signal.signal(signal.SIGINT, signal.default_int_handler)

    def _finish_the_step(self, signum: int, frame: Any) -> None:
        signal.signal(signal.SIGINT, signal.default_int_handler)  # a second Ctrl-C raises KeyboardInterrupt
        self.stopped_by = signal.SIGINT
        with contextlib.suppress(OSError):  # os.write, not print: a signal can land while print holds stderr
            os.write(2, b"\nCtrl-C: stopping after this step (press it again to stop at once, saving nothing)\n")
        signal.raise_signal(signal.SIGTERM)

    @override
    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:
        if trainer.state.fn != "fit" or not isinstance(exception, (KeyboardInterrupt, SIGTERMException)):
            return
        if isinstance(exception, KeyboardInterrupt):
            self._say(trainer, f"Stopped at once (KeyboardInterrupt): nothing saved. {_resume_hint(trainer)}")
            return
        exception.code = 128 + self.stopped_by  # the exit status, as for a process stopped by that signal
        name = "Ctrl-C" if self.stopped_by == signal.SIGINT else "SIGTERM"
        if not all(bool(torch.isfinite(p).all()) for p in pl_module.parameters()):
            return
        if not trainer.checkpoint_callbacks:
            self._say(
                trainer,
                f"Interrupted ({name}): checkpointing is off (--trainer.enable_checkpointing false), "
                "so nothing was saved.",
            )
            return
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, signal.SIG_IGN)  # as in Lightning's own shutdown: let the save finish
        checkpoint = trainer.checkpoint_callback
        directory = getattr(checkpoint, "dirpath", None) or os.path.join(trainer.log_dir or ".", "checkpoints")
        self.path = os.path.join(directory, "interrupted.ckpt")
        trainer.save_checkpoint(self.path, weights_only=False)  # everything, optimiser and loops too
        loader = trainer.train_dataloader  # None before the first training step: nothing to resume mid-way
        if loader is None or (hasattr(loader, "state_dict") and hasattr(loader, "load_state_dict")):
            how = "Resume exactly with"
        else:
            how = (
                "This data keeps no place in the epoch, so a resumed epoch's remaining steps start from its "
                "first batches. Resume with"
            )
        self._say(trainer, f"Interrupted ({name}): saved {self.path}. {how}: fit <same config> --ckpt_path {self.path}")

    @staticmethod
    def _say(trainer: Trainer, message: str) -> None:
        if trainer.is_global_zero:
            print(f"\n{message}", flush=True)


def _resume_hint(trainer: Trainer) -> str:
    if last := last_checkpoint_path(trainer):
        return f"Resume from the last finished epoch with: fit <same config> --ckpt_path {last}"
    return "No epoch had finished, so there is nothing to resume from."


def last_checkpoint_path(trainer: Trainer) -> str:
    """The newest end-of-epoch checkpoint of this run ("" if none yet)."""
    for callback in trainer.checkpoint_callbacks:
        if callback.last_model_path:
            return callback.last_model_path
        if callback.monitor is None and callback.best_model_path:  # an unmonitored one keeps the newest
            return callback.best_model_path
    return ""


class MonitoredMetricsCheck(Callback):
    """Stops `fit` with one line when a callback (`ModelCheckpoint`, `EarlyStopping`, ...) monitors a metric the
    model never logs, naming the metrics it does log.

    It looks once a training epoch is over and, when the run validates, a validation has run after it (at the
    next epoch's start, or at the end of training): by then every metric the model logs has been logged once,
    whatever `check_val_every_n_epoch` says. Lightning itself only warns about such a monitor when there is no
    validation (and the best checkpoint is then never written); where a callback acts at the end of validation,
    Lightning stops the run first, in its own words, which the CLI prints as one line too.
    """

    def __init__(self) -> None:
        self._first_epoch: int | None = None
        self._validated = False

    @override
    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._first_epoch, self._validated = trainer.current_epoch, False

    @override
    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self._first_epoch is None or trainer.current_epoch <= self._first_epoch:
            return
        if self._validated or not trainer.enable_validation:
            self._check(trainer, pl_module)

    @override
    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not trainer.sanity_checking:
            self._validated = True

    @override
    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self._first_epoch is not None and (self._validated or not trainer.enable_validation):
            self._check(trainer, pl_module)

    def _check(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._first_epoch = None  # once per run
        logged = sorted(trainer.callback_metrics)
        for callback in trainer.callbacks:
            monitor = getattr(callback, "monitor", None)
            if isinstance(monitor, str) and monitor not in trainer.callback_metrics:
                raise ConfigError(
                    f"{type(callback).__name__} monitors {monitor!r}, which {type(pl_module).__name__} never logs; "
                    f"it logs: {', '.join(logged) or 'nothing'}. Monitor one of those (its `monitor` argument in "
                    "trainer.callbacks), or leave that callback out of the config"
                )


class PredictionWriter(BasePredictionWriter):
    """Writes what `predict_step` returns as CSV: one line per input row, in input order, one column per output.

    `predict_step` may return a tensor `[n]` (column `prediction`) or `[n, k]` (`prediction_0` ...
    `prediction_{k-1}`; more dimensions are flattened), or a tuple or dict of such tensors (columns named by
    position, `prediction_0`, ..., or by the dict's keys, each `[n, k]` value again split as `key_0`, ...).
    The first column, `row`, numbers the input rows: the row numbers the batch carries in a `row` field
    (a dict key or a named tuple's field, as this project's loaders do: the row's position in the input file),
    else Lightning's batch indices (any `DataLoader`), else the position in the predict loader's order.

    Never holds all predictions: each process appends its batches to its own part file beside `path`
    (`<path>.part-<rank>`) as they come, and rank zero merges the parts by row number, line by line
    (`heapq.merge`), into `path`, then removes them. A process whose rows do not ascend (a shuffled loader)
    sorts its own part in memory first. With several nodes, `path` must be on a filesystem they share. A NaN
    prediction is written as an empty cell.

    Args:
        path: the CSV file to write; None writes `predictions.csv` in the run's log directory.
    """

    def __init__(self, path: str | None = None) -> None:
        super().__init__(write_interval="batch")
        self.path = path
        self.written: str | None = None
        self._part: Any = None
        self._part_path: Path | None = None
        self._header: list[str] | None = None
        self._last_row = -1
        self._position = 0
        self._ascending = True

    def _output(self, trainer: Trainer) -> Path:
        return Path(self.path or os.path.join(trainer.log_dir or ".", "predictions.csv"))

    @override
    def on_predict_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        path = self._output(trainer)  # `log_dir` is agreed among the processes (a collective call)
        path.parent.mkdir(parents=True, exist_ok=True)
        self._part_path = path.with_name(f"{path.name}.part-{trainer.global_rank}")
        self._part = self._part_path.open("w", newline="")
        self._header, self._last_row, self._position, self._ascending = None, -1, 0, True

    @override
    def write_on_batch_end(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        prediction: Any,
        batch_indices: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int,
    ) -> None:
        names, columns = prediction_columns(prediction)
        count = len(columns[0])
        rows = _carried_rows(batch)
        if rows is None and batch_indices:
            rows = torch.as_tensor(batch_indices)
        if rows is None:
            if trainer.world_size > 1:
                raise ConfigError(
                    "PredictionWriter: under several processes each predict batch needs its row numbers: use a "
                    "DataLoader (Lightning gives its indices) or give the batch a `row` field"
                )
            rows = torch.arange(self._position, self._position + count)
        rows = rows.detach().cpu().reshape(-1)
        self._position += count
        if len(rows) != count:
            raise ConfigError(
                f"PredictionWriter: predict_step returned {count} predictions for a batch of {len(rows)} rows; "
                "return one per input row (first dimension)"
            )
        if count == 0:
            return
        if self._header is None:
            self._header = ["row", *names]
            csv.writer(self._part).writerow(self._header)
        elif ["row", *names] != self._header:
            raise ConfigError(
                f"PredictionWriter: predict_step's outputs changed from {self._header[1:]} to {names} between batches"
            )
        self._ascending &= bool(rows[0] > self._last_row) and bool((rows[1:] > rows[:-1]).all())
        self._last_row = int(rows[-1])
        csv.writer(self._part).writerows(zip(rows.tolist(), *map(_cells, columns), strict=True))

    @override
    def on_predict_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._part.close()
        if not self._ascending:  # e.g. a user's shuffled loader: this process's share, sorted in memory
            header, *lines = self._part_path.read_text().splitlines(keepends=True)
            self._part_path.write_text(header + "".join(sorted(lines, key=_row_number)))
        trainer.strategy.barrier()  # every part is complete
        if trainer.is_global_zero:
            path = self._output(trainer)
            parts = [path.with_name(f"{path.name}.part-{rank}") for rank in range(trainer.world_size)]
            handles = [part.open(newline="") for part in parts]
            count = 0
            try:
                headers = {handle.readline() for handle in handles} - {""}  # a process with no rows has none
                if len(headers) > 1:
                    raise ConfigError(f"PredictionWriter: the processes' predictions have different columns: {headers}")
                with path.open("w", newline="") as output:
                    output.write(headers.pop() if headers else "row,prediction\r\n")
                    for line in heapq.merge(*handles, key=_row_number):
                        output.write(line)
                        count += 1
            finally:
                for handle in handles:
                    handle.close()
            for part in parts:
                part.unlink()
            self.written = str(path)
            print(f"wrote {count} predictions to {path}", flush=True)
        trainer.strategy.barrier()  # the parts are gone before anyone reads the file


def prediction_columns(prediction: Any) -> tuple[list[str], list[Tensor]]:
    """Column names and 1-D columns (one value per row) of what a `predict_step` returned."""
    names: list[str] = []
    columns: list[Tensor] = []

    def add(name: str, value: Any) -> None:
        if not isinstance(value, Tensor):
            raise ConfigError(
                f"PredictionWriter: predict_step returned {type(value).__name__} for {name!r}; it writes tensors "
                "[n] or [n, k], or a tuple or dict of them"
            )
        value = value.detach()
        value = (value.float() if value.is_floating_point() else value).cpu()
        if value.ndim == 0:
            raise ConfigError(
                f"PredictionWriter: predict_step returned a scalar for {name!r}; return one value per row"
            )
        if value.ndim == 1:
            names.append(name)
            columns.append(value)
            return
        flat = value.reshape(len(value), -1)
        for j in range(flat.shape[1]):
            names.append(f"{name}_{j}")
            columns.append(flat[:, j])

    if isinstance(prediction, Mapping):
        for key, value in prediction.items():
            add(str(key), value)
    elif isinstance(prediction, Sequence) and not isinstance(prediction, (str, Tensor)):
        for i, value in enumerate(prediction):
            add(f"prediction_{i}", value)
    else:
        add("prediction", prediction)
    if not columns:
        raise ConfigError("PredictionWriter: predict_step returned no tensors")
    lengths = {len(c) for c in columns}
    if len(lengths) > 1:
        raise ConfigError(f"PredictionWriter: predict_step's outputs have different numbers of rows: {sorted(lengths)}")
    return names, columns


def _cells(column: Tensor) -> list[Any]:
    """A column's CSV cells: a NaN (a row the model could not predict, e.g. a missing input) is an empty cell.
    The per-value check runs only for a column that holds one (predict's hot path is every row)."""
    values = column.tolist()
    if column.is_floating_point() and bool(column.isnan().any()):
        return [None if v != v else v for v in values]
    return values


def _carried_rows(batch: Any) -> Tensor | None:
    """The `row` field of a batch (a dict key or a named tuple's field), if it has one."""
    rows = batch.get("row") if isinstance(batch, Mapping) else getattr(batch, "row", None)
    return rows if isinstance(rows, Tensor) else None


def _row_number(line: str) -> int:
    return int(line.split(",", 1)[0])
