"""One PNG that says whether a fit worked: loss curves, predictions against targets, residuals, parameters.

    python -m linreg_pl fit --config configs/default.yaml

draws it at the end of the fit through `ParameterReport` (linreg_pl/callbacks.py), which calls `plot_fit`,
which saves `<log_dir>/fit.png`; with TensorBoard the report also logs the returned Figure there.
matplotlib is the optional `plots` extra: `plots_available()` lets the report skip it when missing.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from linreg_pl.errors import ConfigError

if TYPE_CHECKING:
    from matplotlib.figure import Figure

PANEL_INCHES = (4.0, 4.0)
DPI = 100
# enough to show the shape of the cloud; a million markers take seconds to draw and look the same
MAX_POINTS = 5_000
# beyond this many parameters the labels overlap; the points and the identity line still read
MAX_PARAMETER_LABELS = 12


MISSING_MATPLOTLIB = 'plotting needs matplotlib, the `plots` extra: pip install -e ".[plots]"'


def plots_available() -> bool:
    """Whether matplotlib (the `plots` extra) is installed."""
    return importlib.util.find_spec("matplotlib") is not None


def plot_fit(
    path: str | Path,
    *,
    epochs: Sequence[int],
    train_loss: Sequence[float],
    val_loss: Sequence[float],
    actual: torch.Tensor | np.ndarray,
    predicted: torch.Tensor | np.ndarray,
    closed_form_predicted: torch.Tensor | np.ndarray | None = None,
    split_name: str = "validation",
    learned: Sequence[float] | None = None,
    truth: Sequence[float] | None = None,
    parameter_names: Sequence[str] | None = None,
) -> Figure:
    """Draw the fit report, save it as a PNG at `path` and return the figure.

    Panels, left to right: training and validation loss per epoch (log scale); predicted against
    actual targets on the split, with the identity line and the closed-form least-squares predictions;
    histogram of the residuals (actual - predicted); and, only when `truth` is given, learned against
    true parameters. Each panel is 400 x 400 pixels.

    Args:
        path: the PNG to write; missing parent folders are created.
        epochs: the epoch of each loss value.
        train_loss: mean training loss per epoch.
        val_loss: validation loss per epoch.
        actual: the split's targets [n].
        predicted: the model's predictions for them [n].
        closed_form_predicted: the closed-form solution's predictions [n], for comparison.
        split_name: the split the targets come from, for the titles.
        learned: the model's parameters (weights, then bias), in the targets' units.
        truth: the parameters that generated the data; adds the fourth panel.
        parameter_names: a label for each parameter; positions when not given.
    """
    if not plots_available():
        raise ConfigError(MISSING_MATPLOTLIB)
    from matplotlib.figure import Figure

    if truth is not None and (learned is None or len(learned) != len(truth)):
        raise ValueError("plot_fit: `truth` needs `learned` with as many parameters")
    actual, predicted = _flat(actual), _flat(predicted)
    closed_form = None if closed_form_predicted is None else _flat(closed_form_predicted)

    panels = 3 if truth is None else 4
    # Figure, not pyplot: no global figure list to leak into and no interactive backend chosen;
    # saving a PNG renders with Agg
    figure = Figure(figsize=(PANEL_INCHES[0] * panels, PANEL_INCHES[1]), dpi=DPI)
    # fixed margins, not layout="constrained": measuring every label to place the panels took 0.65 s,
    # more than the rest of the drawing, at the end of every fit
    axes = figure.subplots(1, panels, gridspec_kw={"wspace": 0.32})
    figure.subplots_adjust(left=0.32 / panels, right=1 - 0.08 / panels, bottom=0.12, top=0.86)

    loss_axes = axes[0]
    loss_axes.plot(epochs, train_loss, marker=".", label="training")
    loss_axes.plot(epochs, val_loss, marker=".", label="validation")
    loss_axes.set_yscale("log")
    loss_axes.xaxis.get_major_locator().set_params(integer=True)  # epochs are whole numbers
    loss_axes.set(title="Loss per epoch", xlabel="epoch", ylabel="mean squared error")
    loss_axes.legend()

    shown = _spread_sample(len(actual))
    fit_axes = axes[1]
    # the closed form first, as a wider halo: on a good fit both clouds coincide, and the model's
    # points on top stay visible inside it
    if closed_form is not None:
        fit_axes.scatter(
            actual[shown],
            closed_form[shown],
            s=30,
            alpha=0.3,
            color="C1",
            linewidths=0,
            label=f"closed form (RMSE {_rmse(actual, closed_form):.4g})",
        )
    fit_axes.scatter(
        actual[shown],
        predicted[shown],
        s=4,
        color="C0",
        linewidths=0,
        label=f"model (RMSE {_rmse(actual, predicted):.4g})",
    )
    low, high = float(actual.min()), float(actual.max())
    fit_axes.plot([low, high], [low, high], color="black", linestyle="--", linewidth=1, label="identity")
    title = f"Predicted vs actual ({split_name})"
    if len(shown) < len(actual):
        title += f"\n{len(shown):,} of {len(actual):,} points"
    fit_axes.set(title=title, xlabel="actual", ylabel="predicted")
    fit_axes.legend(loc="upper left", markerscale=2)

    residual_axes = axes[2]
    residuals = actual - predicted
    bins = np.histogram_bin_edges(
        residuals if closed_form is None else np.concatenate([residuals, actual - closed_form]), bins=40
    )
    residual_axes.hist(residuals, bins=bins, color="C0", alpha=0.6, label="model")
    if closed_form is not None:
        residual_axes.hist(actual - closed_form, bins=bins, histtype="step", color="C1", label="closed form")
    residual_axes.axvline(0.0, color="black", linestyle="--", linewidth=1)
    residual_axes.set(title=f"Residuals ({split_name})", xlabel="actual - predicted", ylabel="examples")
    residual_axes.legend()

    if truth is not None:
        _plot_parameters(axes[3], np.asarray(learned, dtype=float), np.asarray(truth, dtype=float), parameter_names)

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, format="png", dpi=DPI)
    return figure


def _plot_parameters(axes, learned: np.ndarray, truth: np.ndarray, names: Sequence[str] | None) -> None:
    names = list(names) if names is not None else [str(i) for i in range(len(truth))]
    axes.scatter(truth, learned, color="C2", zorder=3)
    low, high = min(truth.min(), learned.min()), max(truth.max(), learned.max())
    axes.plot([low, high], [low, high], color="black", linestyle="--", linewidth=1, label="identity")
    if len(names) <= MAX_PARAMETER_LABELS:
        for name, x, y in zip(names, truth, learned, strict=True):
            axes.annotate(name, (x, y), xytext=(4, -10), textcoords="offset points")
    largest = float(np.abs(learned - truth).max())
    # room for the labels of the extreme points
    axes.margins(0.15)
    axes.set(title=f"Learned vs true parameters\nlargest gap {largest:.3g}", xlabel="true", ylabel="learned")
    axes.legend(loc="upper left")


def _flat(values: torch.Tensor | np.ndarray) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().numpy()
    return np.asarray(values, dtype=float).reshape(-1)


def _spread_sample(count: int) -> np.ndarray:
    """At most MAX_POINTS indices, evenly spread, so the same data always draws the same picture."""
    if count <= MAX_POINTS:
        return np.arange(count)
    return np.linspace(0, count - 1, MAX_POINTS).round().astype(int)


def _rmse(actual: np.ndarray, predicted: np.ndarray) -> float:
    return float(np.sqrt(np.mean((actual - predicted) ** 2)))
