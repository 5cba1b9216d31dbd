"""The regression example's end-of-fit report: epoch lines, learned against true and exact parameters, fit.png.

    python -m linreg_pl fit --config configs/default.yaml      # ParameterReport prints the table, draws fit.png

`configs/default.yaml` lists it under `trainer.callbacks`; a model without `learned_parameters()` (not a
linear regression) gets nothing from it, so configs of other models leave it out.
"""

from __future__ import annotations

import csv
import math
import os
import time
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.loggers import TensorBoardLogger
from torch import Tensor
from torchmetrics.functional import mean_squared_error, r2_score
from typing_extensions import override

from linreg_pl.regression.closed_form import NormalEquations, least_squares
from linreg_pl.regression.figures import MISSING_MATPLOTLIB, plot_fit, plots_available
from linreg_pl.regression.inference import SUMMARY_NAMES, OrdinaryLeastSquares, ordinary_least_squares

# Above this condition number of the standardised design, float32 training (features and weight rounded to 24
# bits) ends measurably above the optimum (polynomial columns x..x¹¹: 1.005 in float32 at ~1e8, 1.00001 in
# float64; x..x⁹ at ~2e6: 1.000003 in both): the report suggests float64.
FLOAT32_CONDITION = 1e7
# The model's parameters rounded to its dtype (float32) from the optimum more than this above it in the objective:
# the report says float32 cannot hold the optimum (learned / optimum cannot get below that).
HELD_RATIO = 1.001
# An optimum below this fraction of the target's variance is a perfect fit (0 but for rounding): learned / optimum
# would divide by rounding noise, so the report compares the learned error with the variance.
PERFECT_FIT = 1e-12
# parameters.csv's columns after parameter,learned,optimum,true: the least-squares optimum's inference
INFERENCE_COLUMNS = ("std_error", "std_error_hc3", "t_value", "p_value", "ci_low", "ci_high")


class ParameterReport(Callback):
    """Prints each epoch's losses and training speed and, at the end of `fit`, the learned parameters
    beside the true ones (when known) and the exact optimum (data in memory, or a streamed table's
    one-pass statistics).

    The exact optimum is `NormalEquations.solve` (for least squares on data in memory, `refine`d by a second
    pass over the rows) on the training split with the model's own objective: its
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
        self.parameters_path: str | None = None  # parameters.csv, once written
        self.summary_path: str | None = None  # summary.csv, once written (least squares only)
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
                "intercept": getattr(getattr(pl_module, "linear", None), "bias", True) is not None,
            }
            rows = _training_rows(datamodule)
            if penalties["l1"] or penalties["l2"]:
                closed_w, closed_b = statistics.solve(**penalties)
                self.result["notes"] = [
                    f"no standard errors, p values or summary.csv: the {_kind(penalties['l1'], penalties['l2'])} "
                    "estimate is biased by its penalty, and they are for ordinary least squares"
                ]
            else:
                # R's choice for aliased columns (weight 0, reported empty); with the rows in memory, a second
                # pass makes the estimate exact on designs as ill-conditioned as polynomial columns up to x^10
                # (`refine`), and a third gives each row's leverage (HC3)
                # streamed: HC3's pass over the training rows, once (on the process that writes the files)
                blocks = getattr(datamodule, "training_blocks", None) if trainer.is_global_zero else None
                fit = ordinary_least_squares(statistics, rows, penalties["intercept"], blocks=blocks)
                closed_w, closed_b = fit.weight.nan_to_num(0.0), fit.bias
                self.result.update(ols=fit, notes=fit.notes)
            optimum = statistics.objective(closed_w, closed_b, **penalties)
            learned = statistics.objective(learned_w.double(), float(learned_b), **penalties)
            # a perfect fit (optimum 0 to rounding: more columns than rows, a noiseless table) compares the learned
            # error with the target's variance instead
            spread = float(statistics.target_std) ** 2 if not penalties["standardize"] else 1.0
            perfect = optimum <= PERFECT_FIT * spread
            ratio = 1.0 + learned / spread if perfect else learned / optimum
            self.result["perfect_fit"] = perfect
            self.result.update(closed_w=closed_w, closed_b=closed_b, objective_ratio=ratio)
            self.result["kind"] = _kind(penalties["l1"], penalties["l2"])
            # of the identifiable columns for least squares: aliased ones are left out, not an infinite condition
            fit = self.result.get("ols")
            condition = fit.summary["condition_number"] if fit is not None else math.nan
            self.result["condition_number"] = (
                condition if not math.isnan(condition) else statistics.condition_number(penalties["intercept"])
            )
            self.result["float64"] = any(p.dtype == torch.float64 for p in pl_module.parameters())
            if hasattr(pl_module, "nearest_parameters"):  # how close the model's own dtype can get at all
                held = statistics.objective(*pl_module.nearest_parameters(closed_w, closed_b), **penalties)
                self.result["held_ratio"] = 1.0 + held / spread if perfect else held / optimum
            for split in ("val", "test"):
                if split in splits and len(splits[split][0]):
                    x, y = (t.double().cpu() for t in splits[split][:2])
                    self.result["scores"][f"closed-form {split}"] = _scores(x @ closed_w + closed_b, y)
                    self.result["scores"][f"learned {split}"] = _scores(x @ learned_w.double() + learned_b.double(), y)
        if true_w is not None:
            self.result["max_error"] = max(float((learned_w - true_w).abs().max()), abs(float(learned_b) - true_b))
        names = [*parameter_names(pl_module, len(learned_w)), "bias"]
        # every process asks: `trainer.log_dir` broadcasts rank zero's directory to the others under DDP
        path = os.path.join(trainer.log_dir or ".", "parameters.csv")
        if trainer.is_global_zero:
            self._write_parameters(path, names, learned_w, learned_b, closed_w, closed_b, true_w, true_b)
            print(self._table(names, learned_w, learned_b, closed_w, closed_b, true_w, true_b), flush=True)
            fit = self.result.get("ols")
            if fit is not None:
                self._write_summary(os.path.join(os.path.dirname(path), "summary.csv"), fit)
                print(self._coefficients(names, fit), flush=True)
            if fit is not None and bool(fit.aliased.any()):
                aliased = ", ".join(names[j] for j in torch.nonzero(fit.aliased).flatten().tolist())
                before = "the columns before it" + (" and the intercept" if fit.intercept else "")
                print(f"aliased (each a combination of {before}; weight 0 and no inference, as R's lm): {aliased}")
            for note in self.result.get("notes", []):
                print(note, flush=True)
            if "objective_ratio" in self.result:
                print(self._ratio_line(), flush=True)
                print(self._condition_line(), flush=True)
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
            names = [*parameter_names(pl_module, len(learned_w)), "bias"]
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
        if self.result.get("perfect_fit"):
            line = (
                f"the exact optimum fits the training rows exactly; training {what}, 1 + learned / the target's "
                f"variance = {ratio:.5f}"
            )
        if ratio > 1.01:
            line += (
                "\nhint: SGD stopped more than 1% above the optimum: train longer (--trainer.max_epochs), average "
                "the weights (--config configs/averaged.yaml) or lower the learning rate (--model.optimizer.lr)"
            )
        return line

    def _condition_line(self) -> str:
        condition = self.result["condition_number"]
        line = f"condition number of the standardised design: {condition:.3g}"
        held = self.result.get("held_ratio", 1.0)
        if held > HELD_RATIO and not self.result["float64"]:
            line += (
                f"\nhint: float32 cannot hold the optimum: the model's nearest float32 parameters are {held:.6g} times "
                "its objective; train in float64 (--trainer.precision 64-true)"
            )
            return line
        if condition > FLOAT32_CONDITION and not self.result["float64"]:
            line += (
                f"\nhint: float32 cannot resolve a design this ill-conditioned (above {FLOAT32_CONDITION:.0e}): "
                "train in float64 (--trainer.precision 64-true)"
            )
        return line

    def _write_parameters(self, path, names, learned_w, learned_b, closed_w, closed_b, true_w, true_b) -> None:
        """`<log_dir>/parameters.csv`: parameter,learned,optimum,true and, for least squares, the optimum's
        inference (`INFERENCE_COLUMNS`), every value in full (repr of the float64); empty where unknown or
        undefined (an aliased column's optimum and inference, a penalised fit's inference)."""
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        fit: OrdinaryLeastSquares | None = self.result.get("ols")
        columns = [
            [*learned_w.double().tolist(), float(learned_b)],
            fit.estimate.tolist()
            if fit is not None
            else [*closed_w.tolist(), float(closed_b)]
            if closed_w is not None
            else None,
            [*true_w.double().tolist(), float(true_b)] if true_w is not None else None,
            *(getattr(fit, name).tolist() if fit is not None else None for name in INFERENCE_COLUMNS),
        ]
        with open(path, "w", newline="") as handle:
            writer = csv.writer(handle, lineterminator="\n")
            writer.writerow(["parameter", "learned", "optimum", "true", *INFERENCE_COLUMNS])
            for i, name in enumerate(names):
                writer.writerow([name, *("" if c is None or math.isnan(c[i]) else repr(c[i]) for c in columns)])
        self.parameters_path = path

    def _write_summary(self, path: str, fit: OrdinaryLeastSquares) -> None:
        """`<log_dir>/summary.csv`: statistic,value for the least-squares fit (`SUMMARY_NAMES`), empty where
        undefined; counts as integers."""
        with open(path, "w", newline="") as handle:
            writer = csv.writer(handle, lineterminator="\n")
            writer.writerow(["statistic", "value"])
            for name in SUMMARY_NAMES:
                value = fit.summary[name]
                if name in ("rows", "parameters", "df_residual"):
                    writer.writerow([name, int(value)])
                else:
                    writer.writerow([name, "" if math.isnan(value) else repr(value)])
        self.summary_path = path

    def _coefficients(self, names: list[str], fit: OrdinaryLeastSquares) -> str:
        """The coefficient table as R's summary(lm) prints it: the intercept first, NA where undefined."""
        order = [len(names) - 1, *range(len(names) - 1)] if fit.intercept else list(range(len(names) - 1))
        aliased = int(fit.aliased.sum())
        title = "Coefficients:" + (f" ({aliased} not defined because of singularities)" if aliased else "")
        cells = [["", "Estimate", "Std. Error", "t value", "Pr(>|t|)"]]

        def number(value: float, digits: str = ".6g") -> str:
            return "NA" if math.isnan(value) else format(value, digits)

        for i in order[: max(self.max_rows, 1) * 5]:
            p = float(fit.p_value[i])
            cells.append(
                [
                    "(Intercept)" if i == len(names) - 1 else names[i],
                    number(float(fit.estimate[i])),
                    number(float(fit.std_error[i])),
                    number(float(fit.t_value[i]), ".4g"),
                    "NA" if math.isnan(p) else "<2e-16" if p < 2e-16 else format(p, ".4g"),
                ]
            )
        widths = [max(len(row[j]) for row in cells) for j in range(5)]
        lines = ["", title]
        lines += [
            "  ".join(c.ljust(w) if j == 0 else c.rjust(w) for j, (c, w) in enumerate(zip(row, widths, strict=True)))
            for row in cells
        ]
        if len(order) > len(cells) - 1:
            lines.append(f"({len(order)} coefficients, {len(cells) - 1} shown; all in parameters.csv)")
        summary = fit.summary
        df = int(summary["df_residual"])
        if df > 0:
            lines.append(f"Residual standard error: {summary['residual_std_error']:.6g} on {df} degrees of freedom")
            lines.append(
                f"Multiple R-squared: {summary['r_squared']:.6g},  Adjusted R-squared: {summary['adj_r_squared']:.6g}"
                + ("" if fit.intercept else "  (uncentred: no intercept)")
            )
            if not math.isnan(summary["f_statistic"]):
                model_df = int(summary["parameters"]) - int(fit.intercept)
                f_p = summary["f_p_value"]
                lines.append(
                    f"F-statistic: {summary['f_statistic']:.6g} on {model_df} and {df} DF,  p-value: "
                    + ("NA" if math.isnan(f_p) else "<2.2e-16" if f_p < 2.2e-16 else f"{f_p:.4g}")
                )
        return "\n".join(lines)

    def _table(self, names, learned_w, learned_b, closed_w, closed_b, true_w, true_b) -> str:
        learned = [*learned_w.tolist(), float(learned_b)]
        closed = [*closed_w.tolist(), float(closed_b)] if closed_w is not None else None
        truth = [*true_w.tolist(), true_b] if true_w is not None else None
        kind = self.result.get("kind", "closed-form")
        reference, against = (truth, "true") if truth is not None else (closed, kind)
        errors = [abs(a - b) for a, b in zip(learned, reference, strict=True)] if reference else None
        rows = list(range(len(names)))
        if len(names) > self.max_rows:  # the largest errors, or the first rows when nothing to compare with
            rows = sorted(sorted(rows, key=lambda i: -errors[i])[: self.max_rows]) if errors else rows[: self.max_rows]
        cells = [["parameter", "true", kind, "learned", *([f"|learned - {against}|"] if errors else [])]]
        for i in rows:
            cells.append(
                [
                    names[i],
                    f"{truth[i]:.6g}" if truth else "-",
                    f"{closed[i]:.6g}" if closed else "-",
                    f"{learned[i]:.6g}",
                    *([f"{errors[i]:.2e}"] if errors else []),
                ]
            )
        # columns as wide as their widest cell, two spaces apart: wide numbers never run together
        widths = [max(len(row[j]) for row in cells) for j in range(len(cells[0]))]
        lines = [""]
        for row in cells:
            padded = [
                cell.ljust(w) if j == 0 else cell.rjust(w) for j, (cell, w) in enumerate(zip(row, widths, strict=True))
            ]
            lines.append("  ".join(padded))
        if len(names) > self.max_rows:
            lines.append(f"({len(names)} parameters, {self.max_rows} shown)")
        if errors:
            lines.append(f"max |learned - {against}| = {max(errors):.2e}")
        if self.result["scores"]:
            lines.append(f"{'':<20}{'mse':>12}{'r2':>12}")
            for name, (mse, r2) in self.result["scores"].items():
                lines.append(f"{name:<20}{mse:>12.4e}{r2:>12.6f}")
        return "\n".join(lines)


def parameter_names(pl_module: LightningModule, count: int) -> list[str]:
    """The weights' names: the model's `feature_names` (a table's columns, `column=level` for indicators),
    else x0, x1, ..."""
    names = getattr(pl_module, "hparams", {}).get("feature_names")
    return list(names) if names and len(names) == count else [f"x{i}" for i in range(count)]


def _kind(l1: float, l2: float) -> str:
    """The name of the exact optimum's problem, for the report's column."""
    return {(False, False): "least squares", (False, True): "ridge", (True, False): "lasso"}.get(
        (l1 > 0, l2 > 0), "elastic net"
    )


def _training_rows(datamodule: Any) -> tuple[Tensor, Tensor] | None:
    """The training split in memory as the data module read it (`training_rows`: float64 for tables, whatever
    precision the model trains in), else its `splits["train"]`; None when streamed."""
    rows = getattr(datamodule, "training_rows", None)
    if rows is not None:
        return rows[0].cpu(), rows[1].cpu()
    splits = getattr(datamodule, "splits", None) or {}
    return (splits["train"][0].cpu(), splits["train"][1].cpu()) if "train" in splits else None


def _training_statistics(datamodule: Any) -> NormalEquations | None:
    """The training split's statistics: one pass over the rows in memory (`_training_rows`), or a streamed
    table's own one-pass `normal_equations`; None for data modules with neither."""
    rows = _training_rows(datamodule)
    if rows is not None:
        statistics = NormalEquations()
        statistics.update(*rows)
        return statistics
    return getattr(datamodule, "normal_equations", None)


def _scores(predictions: Tensor, targets: Tensor) -> tuple[float, float]:
    r2 = float(r2_score(predictions, targets)) if len(targets) > 1 else float("nan")
    return float(mean_squared_error(predictions, targets)), r2
