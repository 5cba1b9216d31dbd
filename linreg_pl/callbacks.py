"""Callbacks: the end-of-fit report and picture, weight averaging, the divergence guard, the interrupt checkpoint, the
predictions file.

    python -m linreg_pl fit --config configs/default.yaml      # ParameterReport prints the table, draws fit.png
    python -m linreg_pl predict --config configs/default.yaml --ckpt_path .../last.ckpt

`configs/default.yaml` lists them under `trainer.callbacks`.
"""

from __future__ import annotations

import contextlib
import csv
import heapq
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.callbacks import BasePredictionWriter, WeightAveraging
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities.exceptions import SIGTERMException
from torch import Tensor
from torchmetrics.functional import mean_squared_error, r2_score
from typing_extensions import override

from linreg_pl.checkpoint_io import remove_stale_temporaries
from linreg_pl.closed_form import NormalEquations, least_squares
from linreg_pl.errors import ConfigError
from linreg_pl.figures import MISSING_MATPLOTLIB, plot_fit, plots_available


class DivergenceError(RuntimeError):
    """The loss or the weights stopped being finite; the message says where and what to try."""


class ParameterReport(Callback):
    """Prints each epoch's losses and training speed and, at the end of `fit`, the learned parameters
    beside the true ones (when known) and the exact optimum (data in memory, or a streamed table's
    one-pass statistics).

    The exact optimum is `NormalEquations.solve` on the training split with the model's own objective: its
    `l1_strength`/`l2_strength` (0 when it has none) on the standardised problem when the model standardises
    (its `standardize` layer has statistics). Its column is named for what it is: least squares, ridge, lasso or
    elastic net. It is the yardstick for what SGD reached; the report also prints learned/optimum of that
    objective on the training split, with a hint when it is more than 1% above 1.

    It also draws `fit.png` in the run's log directory (and logs it to TensorBoard when that is a
    logger): training and validation loss per epoch; predicted against actual targets on the validation
    split (else test, else training) with the closed-form least-squares predictions beside the model's;
    the residuals; and, for synthetic data, learned against true parameters. matplotlib is the `plots`
    extra: without it, one line says so and the run goes on.

    What it reads: the model's `learned_parameters()` (weight and bias in raw units; without it only the
    epoch lines are printed), and of the data module, when it has them, `true_w`/`true_b` (synthetic
    data) and `splits` (`RegressionDataModule`'s in-memory splits, for the closed form, the scores and
    the picture), or else `normal_equations` (a streamed table's training statistics: the closed form,
    no scores, no picture).

    Args:
        max_rows: parameters listed one per row at most; above it only the largest errors are listed.
        plot: draw `fit.png` at the end of `fit`.
    """

    def __init__(self, max_rows: int = 10, plot: bool = True) -> None:
        self.max_rows = max_rows
        self.plot = plot
        self.result: dict[str, Any] = {}
        self.rates: list[float] = []
        self.history: dict[str, list[float]] = {"epoch": [], "train/loss": [], "val/loss": []}
        self.path: str | None = None  # the picture, once drawn
        self._restart_clock()

    def _restart_clock(self) -> None:
        self._start = self._last_batch_end = time.perf_counter()
        self._examples = 0
        self._finished_epoch: int | None = None

    @override
    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._restart_clock()  # a run resumed mid-epoch starts without on_train_epoch_start

    @override
    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._print_finished_epoch(trainer)
        self._restart_clock()

    @override
    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        # training time only, up to the last batch, without the validation that follows
        self._examples += len(batch[0])
        self._last_batch_end = time.perf_counter()

    @override
    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        seconds = self._last_batch_end - self._start
        self.rates.append(self._examples * trainer.world_size / seconds if seconds > 0 else 0.0)
        self._finished_epoch = trainer.current_epoch

    @override
    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._print_finished_epoch(trainer)

    def _print_finished_epoch(self, trainer: Trainer) -> None:
        # Printed once the epoch is wholly over: callbacks' `on_train_epoch_end` runs before the model's,
        # where the epoch's training loss is logged.
        if self._finished_epoch is None or not trainer.is_global_zero:
            return
        metrics = trainer.callback_metrics
        self.history["epoch"].append(self._finished_epoch + 1)
        for name in ("train/loss", "val/loss"):
            self.history[name].append(float(metrics[name]) if name in metrics else float("nan"))
        parts = [f"{name} {float(metrics[name]):.6g}" for name in ("train/loss", "val/loss") if name in metrics]
        parts.append(f"{self.rates[-1]:,.0f} samples/s")
        print(f"epoch {self._finished_epoch + 1}/{trainer.max_epochs}: " + ", ".join(parts), flush=True)
        self._finished_epoch = None

    @override
    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if hasattr(pl_module, "learned_parameters"):
            self._report(trainer, pl_module)
        self._draw(trainer, pl_module)

    def _report(self, trainer: Trainer, pl_module: LightningModule) -> None:
        datamodule = trainer.datamodule
        splits = getattr(datamodule, "splits", None) or {}
        learned_w, learned_b = pl_module.learned_parameters()
        true_w, true_b = getattr(datamodule, "true_w", None), getattr(datamodule, "true_b", None)
        self.result = {"learned_w": learned_w, "learned_b": learned_b, "scores": {}}
        closed_w = closed_b = None
        statistics = _training_statistics(datamodule)
        if statistics is not None:
            standardize = getattr(pl_module, "standardize", None)
            penalties = {
                "l1": float(getattr(pl_module, "l1_strength", 0.0)),
                "l2": float(getattr(pl_module, "l2_strength", 0.0)),
                "standardize": getattr(standardize, "mean", None) is not None,
            }
            closed_w, closed_b = statistics.solve(**penalties)
            optimum = statistics.objective(closed_w, closed_b, **penalties)
            learned = statistics.objective(learned_w.double(), float(learned_b), **penalties)
            # a perfect fit (optimum 0) compares on the objective itself
            ratio = learned / optimum if optimum > 0 else 1.0 + learned
            self.result.update(closed_w=closed_w, closed_b=closed_b, objective_ratio=ratio)
            self.result["kind"] = _kind(penalties["l1"], penalties["l2"])
            for split in ("val", "test"):
                if split in splits and len(splits[split][0]):
                    x, y = (t.double().cpu() for t in splits[split][:2])
                    self.result["scores"][f"closed-form {split}"] = _scores(x @ closed_w + closed_b, y)
                    self.result["scores"][f"learned {split}"] = _scores(x @ learned_w.double() + learned_b.double(), y)
        if true_w is not None:
            self.result["max_error"] = max(float((learned_w - true_w).abs().max()), abs(float(learned_b) - true_b))
        if trainer.is_global_zero:
            print(self._table(learned_w, learned_b, closed_w, closed_b, true_w, true_b), flush=True)
            if "objective_ratio" in self.result:
                print(self._ratio_line(), flush=True)
            if self.rates:
                steady = self.rates[1:] or self.rates  # the first epoch includes start-up
                print(f"training throughput: {sum(steady) / len(steady):.0f} samples/s", flush=True)

    def _draw(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """`fit.png` in the run's log directory, and to TensorBoard when it is a logger."""
        # every process asks: `trainer.log_dir` broadcasts rank zero's directory to the others under DDP
        path = os.path.join(trainer.log_dir or ".", "fit.png")
        if not self.plot or not trainer.is_global_zero or trainer.fast_dev_run:
            return
        if not plots_available():
            print(f"ParameterReport: no fit.png: {MISSING_MATPLOTLIB}", flush=True)
            return
        splits = getattr(trainer.datamodule, "splits", None) or {}
        name = next((n for n in ("val", "test", "train") if n in splits and len(splits[n][0])), None)
        if name is None:
            print("ParameterReport: no fit.png: the data module holds no in-memory `splits` to plot", flush=True)
            return
        features, targets = splits[name][:2]
        was_training = pl_module.training
        pl_module.eval()
        with torch.no_grad():
            predicted = pl_module(features).reshape(-1).cpu()
        pl_module.train(was_training)
        features, targets = features.cpu().double(), targets.cpu()
        # the report's exact optimum (the model's own objective), else plain least squares
        closed_w, closed_b = self.result.get("closed_w"), self.result.get("closed_b")
        if closed_w is None:
            closed_w, closed_b = least_squares(*(t.cpu() for t in splits["train"][:2]))
        learned = truth = names = None
        true_w, true_b = getattr(trainer.datamodule, "true_w", None), getattr(trainer.datamodule, "true_b", None)
        if true_w is not None and true_b is not None and hasattr(pl_module, "learned_parameters"):
            learned_w, learned_b = pl_module.learned_parameters()
            learned, truth = [*learned_w.tolist(), float(learned_b)], [*true_w.tolist(), float(true_b)]
            names = [f"w[{i}]" for i in range(len(learned_w))] + ["b"]
        figure = plot_fit(
            path,
            epochs=self.history["epoch"],
            train_loss=self.history["train/loss"],
            val_loss=self.history["val/loss"],
            actual=targets,
            predicted=predicted,
            closed_form_predicted=features @ closed_w + closed_b,
            split_name={"val": "validation", "test": "test", "train": "training"}[name],
            learned=learned,
            truth=truth,
            parameter_names=names,
        )
        self.path = path
        for logger in trainer.loggers:
            if isinstance(logger, TensorBoardLogger):
                logger.experiment.add_figure("fit", figure, global_step=trainer.global_step, close=False)
        print(f"wrote the fit plot to {path}", flush=True)

    def _ratio_line(self) -> str:
        ratio, kind = self.result["objective_ratio"], self.result["kind"]
        what = "mse" if kind == "least squares" else f"{kind} objective"
        line = f"training {what}, learned / exact optimum = {ratio:.5f}"
        if ratio > 1.01:
            line += (
                "\nhint: SGD stopped more than 1% above the optimum: train longer (--trainer.max_epochs), average "
                "the weights (--config configs/averaged.yaml) or lower the learning rate (--model.optimizer.lr)"
            )
        return line

    def _table(self, learned_w, learned_b, closed_w, closed_b, true_w, true_b) -> str:
        names = [f"w[{i}]" for i in range(len(learned_w))] + ["b"]
        learned = [*learned_w.tolist(), float(learned_b)]
        closed = [*closed_w.tolist(), float(closed_b)] if closed_w is not None else None
        truth = [*true_w.tolist(), true_b] if true_w is not None else None
        kind = self.result.get("kind", "closed-form")
        reference, against = (truth, "true") if truth is not None else (closed, kind)
        errors = [abs(a - b) for a, b in zip(learned, reference, strict=True)] if reference else None
        header = f"{'parameter':<10}{'true':>12}{kind:>15}{'learned':>12}"
        lines = ["", header + (f"  {f'|learned - {against}|':>22}" if errors else "")]
        rows = list(range(len(names)))
        if len(names) > self.max_rows:  # the largest errors, or the first rows when nothing to compare with
            rows = sorted(sorted(rows, key=lambda i: -errors[i])[: self.max_rows]) if errors else rows[: self.max_rows]
        for i in rows:
            true_cell = f"{truth[i]:>12.4f}" if truth else f"{'-':>12}"
            closed_cell = f"{closed[i]:>15.4f}" if closed else f"{'-':>15}"
            error_cell = f"{errors[i]:>24.2e}" if errors else ""
            lines.append(f"{names[i]:<10}{true_cell}{closed_cell}{learned[i]:>12.4f}{error_cell}")
        if len(names) > self.max_rows:
            lines.append(f"({len(names)} parameters, {self.max_rows} shown)")
        if errors:
            lines.append(f"max |learned - {against}| = {max(errors):.2e}")
        if self.result["scores"]:
            lines.append(f"{'':<20}{'mse':>12}{'r2':>12}")
            for name, (mse, r2) in self.result["scores"].items():
                lines.append(f"{name:<20}{mse:>12.4e}{r2:>12.6f}")
        return "\n".join(lines)


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


def _kind(l1: float, l2: float) -> str:
    """The name of the exact optimum's problem, for the report's column."""
    return {(False, False): "least squares", (False, True): "ridge", (True, False): "lasso"}.get(
        (l1 > 0, l2 > 0), "elastic net"
    )


def _training_statistics(datamodule: Any) -> NormalEquations | None:
    """The training split's statistics: one pass over in-memory `splits["train"]`, or a streamed table's
    own one-pass `normal_equations`; None for data modules with neither."""
    splits = getattr(datamodule, "splits", None) or {}
    if "train" in splits:
        statistics = NormalEquations()
        statistics.update(*(t.cpu() for t in splits["train"][:2]))
        return statistics
    return getattr(datamodule, "normal_equations", None)


def _scores(predictions: Tensor, targets: Tensor) -> tuple[float, float]:
    r2 = float(r2_score(predictions, targets)) if len(targets) > 1 else float("nan")
    return float(mean_squared_error(predictions, targets)), r2


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
            raise ValueError(f"DivergenceGuard: check_every_n_steps must be >= 1, got {check_every_n_steps}")
        self.check_every_n_steps = check_every_n_steps

    @override
    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if batch_idx % self.check_every_n_steps and not trainer.is_last_batch:
            return
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        values = [loss.detach().reshape(-1)] + [p.detach().reshape(-1) for p in pl_module.parameters()]
        if bool(torch.isfinite(torch.cat(values)).all()):
            return
        what = "the loss" if not bool(torch.isfinite(loss).all()) else "the weights"
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


class PredictionWriter(BasePredictionWriter):
    """Writes `predict` output as CSV, `row,prediction`: one line per input row, in input order.

    `row` is the data row's 0-based position in the input file (for the default predict set, the
    test split of the training file, its rows in file order).

    Never holds all predictions: each process appends its batches to its own part file beside `path`
    (`<path>.part-<rank>`) as they come, and rank zero merges the parts by row number, line by line
    (`heapq.merge`), into `path`, then removes them. Each process's rows must ascend, as they do for this
    project's loaders and a `DataLoader` without shuffling (Lightning's predict sampler); a process whose
    rows do not ascend sorts its own part in memory first. With several nodes, `path` must be on a
    filesystem they share.

    Args:
        path: the CSV file to write; None writes `predictions.csv` in the run's log directory.
    """

    def __init__(self, path: str | None = None) -> None:
        super().__init__(write_interval="batch")
        self.path = path
        self.written: str | None = None
        self._part: Any = None
        self._part_path: Path | None = None
        self._last_row = -1
        self._ascending = True

    def _output(self, trainer: Trainer) -> Path:
        return Path(self.path or os.path.join(trainer.log_dir or ".", "predictions.csv"))

    @override
    def on_predict_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        path = self._output(trainer)  # `log_dir` is agreed among the processes (a collective call)
        path.parent.mkdir(parents=True, exist_ok=True)
        self._part_path = path.with_name(f"{path.name}.part-{trainer.global_rank}")
        self._part = self._part_path.open("w", newline="")
        self._last_row, self._ascending = -1, True

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
        # Lightning's batch indices for a `DataLoader`; this project's predict batches carry row numbers
        rows = (torch.as_tensor(batch_indices) if batch_indices else batch[1]).detach().cpu().reshape(-1)
        if len(rows) == 0:
            return
        self._ascending &= bool(rows[0] > self._last_row) and bool((rows[1:] > rows[:-1]).all())
        self._last_row = int(rows[-1])
        predictions = prediction.detach().float().cpu().reshape(len(rows))
        csv.writer(self._part).writerows(zip(rows.tolist(), predictions.tolist(), strict=True))

    @override
    def on_predict_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._part.close()
        if not self._ascending:  # e.g. a user's shuffled loader: this process's share, sorted in memory
            lines = self._part_path.read_text().splitlines(keepends=True)
            self._part_path.write_text("".join(sorted(lines, key=_row_number)))
        trainer.strategy.barrier()  # every part is complete
        if trainer.is_global_zero:
            path = self._output(trainer)
            parts = [path.with_name(f"{path.name}.part-{rank}") for rank in range(trainer.world_size)]
            handles = [part.open(newline="") for part in parts]
            count = 0
            try:
                with path.open("w", newline="") as output:
                    output.write("row,prediction\r\n")  # csv.writer's line ending, as in the parts
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


def _row_number(line: str) -> int:
    return int(line.split(",", 1)[0])
