"""The fit report draws what it is given, at a known size, without warnings or global pyplot state."""

from __future__ import annotations

import csv
import importlib.util
import struct
import warnings

import numpy as np
import pytest
import torch
from conftest import ROOT, version_dir
from example_helpers import (
    DEFAULT_CONFIG,
    SMALL_STREAM,
    no_picture,  # noqa: F401 (autouse: fit.png is drawn by tests marked picture)
    run_cli,
)

from linreg_pl.errors import ConfigError
from linreg_pl.regression import figures
from linreg_pl.regression.figures import MAX_POINTS, plot_fit, plots_available
from linreg_pl.regression.report import ParameterReport

pytestmark = pytest.mark.picture  # these tests look at fit.png

needs_matplotlib = pytest.mark.skipif(
    not plots_available(), reason='needs the `plots` extra: pip install -e ".[plots]"'
)

EPOCHS = [0, 1, 2, 3]
TRAIN_LOSS = [12.0, 0.9, 0.02, 1.1e-4]
VAL_LOSS = [8.0, 0.5, 0.01, 1.3e-4]
TRUE_PARAMETERS = [2.0, -3.4, 4.2]


def fit_inputs(count: int = 200) -> dict:
    """y = 2 x0 - 3.4 x1 + 4.2 + noise, a model slightly off the truth and the least-squares fit."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(count, 2, generator=generator)
    actual = x @ torch.tensor([2.0, -3.4]) + 4.2 + 0.01 * torch.randn(count, generator=generator)
    design = torch.cat([x, torch.ones(count, 1)], dim=1)
    closed_form = design @ torch.linalg.lstsq(design, actual[:, None]).solution.squeeze(1)
    return {
        "epochs": EPOCHS,
        "train_loss": TRAIN_LOSS,
        "val_loss": VAL_LOSS,
        "actual": actual,  # a tensor, as a data module holds it
        "predicted": (x @ torch.tensor([1.999, -3.398]) + 4.201).numpy(),
        "closed_form_predicted": closed_form.numpy(),
        "split_name": "validation",
        "learned": [1.999, -3.398, 4.201],
        "parameter_names": ["w[0]", "w[1]", "b"],
    }


def png_size(path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


@needs_matplotlib
@pytest.mark.parametrize("truth, panels", [(None, 3), (TRUE_PARAMETERS, 4)], ids=["without_truth", "with_truth"])
def test_png_has_a_400_pixel_panel_per_axes_and_nothing_warns(tmp_path, truth, panels):
    import matplotlib.pyplot as plt

    open_figures = plt.get_fignums()
    path = tmp_path / "plots" / "fit.png"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        figure = plot_fit(path, **fit_inputs(), truth=truth)
    assert [str(w.message) for w in caught] == []
    assert len(figure.axes) == panels
    assert png_size(path) == (400 * panels, 400)
    # drawn without pyplot: no figure left open in its global list
    assert plt.get_fignums() == open_figures


@needs_matplotlib
def test_panels_plot_the_given_data(tmp_path):
    inputs = fit_inputs()
    loss_axes, fit_axes, residual_axes, parameter_axes = plot_fit(
        tmp_path / "fit.png", **inputs, truth=TRUE_PARAMETERS
    ).axes

    assert loss_axes.get_yscale() == "log"
    (train, val) = loss_axes.get_lines()
    assert list(train.get_xdata()) == EPOCHS and list(train.get_ydata()) == TRAIN_LOSS
    assert list(val.get_xdata()) == EPOCHS and list(val.get_ydata()) == VAL_LOSS

    actual = inputs["actual"].numpy()
    closed_form_points, model_points = fit_axes.collections
    np.testing.assert_allclose(model_points.get_offsets(), np.column_stack([actual, inputs["predicted"]]), rtol=1e-6)
    np.testing.assert_allclose(
        closed_form_points.get_offsets(), np.column_stack([actual, inputs["closed_form_predicted"]]), rtol=1e-6
    )

    # the model's histogram: one bar per bin, every example counted once
    model_bars = residual_axes.containers[0]
    assert sum(bar.get_height() for bar in model_bars) == len(actual)

    (parameters,) = parameter_axes.collections
    np.testing.assert_allclose(parameters.get_offsets(), np.column_stack([TRUE_PARAMETERS, inputs["learned"]]))
    assert [text.get_text() for text in parameter_axes.texts] == ["w[0]", "w[1]", "b"]


@needs_matplotlib
def test_large_splits_draw_an_even_sample_and_say_so(tmp_path):
    count = 3 * MAX_POINTS
    inputs = fit_inputs(count)
    fit_axes = plot_fit(tmp_path / "fit.png", **inputs).axes[1]
    _, model_points = fit_axes.collections
    assert len(model_points.get_offsets()) == MAX_POINTS
    assert f"{MAX_POINTS:,} of {count:,} points" in fit_axes.get_title()


@needs_matplotlib
@pytest.mark.skipif(importlib.util.find_spec("tensorboard") is None, reason="needs tensorboard")
def test_tensorboard_takes_the_returned_figure(tmp_path):
    from torch.utils.tensorboard import SummaryWriter

    figure = plot_fit(tmp_path / "fit.png", **fit_inputs())
    with SummaryWriter(tmp_path / "logs") as writer:
        writer.add_figure("fit", figure, global_step=3)
    assert list((tmp_path / "logs").glob("events.out.tfevents.*"))


def test_without_matplotlib_plot_fit_names_the_install_command(tmp_path, monkeypatch):
    real_find_spec = figures.importlib.util.find_spec
    monkeypatch.setattr(
        figures.importlib.util, "find_spec", lambda name: None if name == "matplotlib" else real_find_spec(name)
    )
    assert not plots_available()
    with pytest.raises(ConfigError) as error:
        plot_fit(tmp_path / "fit.png", **fit_inputs())
    assert str(error.value) == 'plotting needs matplotlib, the `plots` extra: pip install -e ".[plots]"'
    assert not (tmp_path / "fit.png").exists()


# ParameterReport (configs/default.yaml) draws fit.png: a real run (fast_dev_run logs nothing) writes it


@needs_matplotlib
def test_fit_writes_fit_png_in_the_run_directory(isolated, capsys):
    cli = run_cli("fit")
    path = version_dir(isolated) / "fit.png"
    assert png_size(path) == (1600, 400)  # four panels: synthetic data know their true parameters
    assert f"wrote the fit plot to {cli.trainer.log_dir}/fit.png" in capsys.readouterr().out
    plot = next(c for c in cli.trainer.callbacks if isinstance(c, ParameterReport))
    assert plot.history["epoch"] == [1, 2, 3]
    metrics = list(csv.DictReader((version_dir(isolated) / "metrics.csv").open()))
    assert plot.history["train/loss"] == pytest.approx([float(r["train/loss"]) for r in metrics if r["train/loss"]])
    assert plot.history["val/loss"] == pytest.approx([float(r["val/loss"]) for r in metrics if r["val/loss"]])


@needs_matplotlib
@pytest.mark.skipif(importlib.util.find_spec("tensorboard") is None, reason="needs tensorboard")
def test_fit_logs_the_figure_to_tensorboard(isolated):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_cli(
        "fit",
        "--config",
        DEFAULT_CONFIG,
        "--config",
        str(ROOT / "configs" / "tensorboard.yaml"),
        "--trainer.max_epochs",
        "1",
    )
    events = EventAccumulator(str(version_dir(isolated)), size_guidance={"images": 0})
    events.Reload()
    assert events.Tags()["images"] == ["fit"]
    (image,) = events.Images("fit")
    assert image.encoded_image_string[:8] == b"\x89PNG\r\n\x1a\n" and (image.width, image.height) == (1600, 400)
    assert (version_dir(isolated) / "fit.png").is_file()


def test_fit_without_matplotlib_says_which_extra_once_and_finishes(isolated, capsys, monkeypatch):
    real_find_spec = figures.importlib.util.find_spec
    monkeypatch.setattr(
        figures.importlib.util, "find_spec", lambda name: None if name == "matplotlib" else real_find_spec(name)
    )
    run_cli("fit", "--trainer.max_epochs", "1")
    out = capsys.readouterr().out
    assert out.count("ParameterReport: no fit.png") == 1
    needs = 'ParameterReport: no fit.png: plotting needs matplotlib, the `plots` extra: pip install -e ".[plots]"\n'
    assert needs in out
    assert not (version_dir(isolated) / "fit.png").exists()
    assert (version_dir(isolated) / "checkpoints" / "last.ckpt").is_file()


def test_fit_on_data_without_in_memory_splits_skips_the_plot_in_one_line(isolated, capsys):
    run_cli("fit", *SMALL_STREAM, "--trainer.max_epochs", "1")
    out = capsys.readouterr().out
    assert out.count("ParameterReport: no fit.png") == 1 and "no in-memory `splits`" in out
    assert (version_dir(isolated) / "checkpoints" / "last.ckpt").is_file()
