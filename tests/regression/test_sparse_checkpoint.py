"""A lasso ends sparse where the exact lasso is, in the checkpoint's own weights (what predict and export use): through
the README's table command with and without standardisation and averaging, and in the default experiment (synthetic
data, raw features) with and without averaging (configs/averaged.yaml)."""

from __future__ import annotations

import csv

import pytest
import torch
from conftest import ROOT, version_dir
from example_helpers import (
    no_picture,  # noqa: F401 (autouse: fit.png is drawn by tests marked picture)
    run_cli,
)
from test_inference import write_csv

from linreg_pl.regression.closed_form import NormalEquations
from linreg_pl.regression.model import LASSO_LIVE_WEIGHT, LinearRegression

TABLE = ["--config", str(ROOT / "configs" / "csv.yaml"), "--data.path", "t.csv", "--data.target", "y"]
# csv.yaml's callbacks without its TailWeightAveraging: the checkpoint then holds SGD's last iterate, finished
WITHOUT_AVERAGING = [
    "--trainer.callbacks",
    '[{"class_path": "lightning.pytorch.callbacks.ModelCheckpoint", "init_args": {"monitor": "val/loss"}}, '
    '"linreg_pl.regression.report.ParameterReport"]',
]
SUPPORT = [1, 4, 7, 12, 18]


def sparse_table() -> tuple[torch.Tensor, torch.Tensor]:
    """2,000 rows, 20 columns of different scales, 5 used: 15 true zeros."""
    generator = torch.Generator().manual_seed(3)
    features = torch.randn(2000, 20, generator=generator, dtype=torch.float64) * torch.linspace(0.5, 3.0, 20)
    weight = torch.zeros(20, dtype=torch.float64)
    weight[SUPPORT] = torch.tensor([1.5, -2.0, 1.0, 3.0, -1.2], dtype=torch.float64)
    targets = features @ weight + 0.3 + 0.5 * torch.randn(2000, generator=generator, dtype=torch.float64)
    return features, targets


def fit_sparse_table(isolated, standardize: bool, l1: float, *more: str):
    features, targets = sparse_table()
    names = [f"x{j}" for j in range(20)]
    write_csv(
        isolated / "t.csv", [*names, "y"], [[*r, t] for r, t in zip(features.tolist(), targets.tolist(), strict=True)]
    )
    args = ["--data.standardize", str(standardize).lower(), "--data.batch_size", "50", "--trainer.max_epochs", "30"]
    args += ["--model.init_args.scheduler.init_args.T_max", "30", "--model.l1_strength", str(l1)]
    return run_cli("fit", *TABLE, *args, *more)


# unstandardised (the setting; l1 on raw weights of columns up to 3 wide) and standardised; averaged (csv.yaml)
# and not (before: without averaging the unstandardised checkpoint had 8 of the 15 zeros)
# two of the four in the default suite (the setting without averaging, which failed before, and its opposite);
# the other two in the slow one (about 3 s each)
@pytest.mark.parametrize(
    "standardize, l1, averaged",
    [
        pytest.param(False, 0.3, False, id="raw-last-iterate"),
        pytest.param(True, 0.1, True, id="standardised-averaged"),
        pytest.param(False, 0.3, True, id="raw-averaged", marks=pytest.mark.slow),
        pytest.param(True, 0.1, False, id="standardised-last-iterate", marks=pytest.mark.slow),
    ],
)
def test_the_checkpoints_lasso_weights_are_zero_exactly_where_the_exact_lasso_is(standardize, l1, averaged, isolated):
    cli = fit_sparse_table(isolated, standardize, l1, *([] if averaged else WITHOUT_AVERAGING))
    assert any(type(c).__name__ == "TailWeightAveraging" for c in cli.trainer.callbacks) == averaged
    statistics = NormalEquations()
    statistics.update(*cli.datamodule.training_rows)
    optimum, _ = statistics.solve(l1=l1, standardize=standardize)
    zeros = (optimum == 0).tolist()
    assert sum(zeros) == 15  # the exact lasso keeps the 5 used columns
    ckpt = version_dir(isolated) / "checkpoints" / "last.ckpt"
    weight, _ = LinearRegression.load_from_checkpoint(ckpt).learned_parameters()
    assert (weight == 0).tolist() == zeros  # every zero of the optimum, and only those, in the checkpoint
    assert float((weight - optimum).abs().max()) < 0.01  # 3e-4 to 2e-3 measured

    # predict from the checkpoint uses those zeros: rows that differ only in the zeroed columns get the same bits
    rows = torch.randn(6, 20, generator=torch.Generator().manual_seed(1), dtype=torch.float64) * 3
    rows[:, SUPPORT] = torch.tensor([0.5, -1.0, 2.0, 0.25, 1.5], dtype=torch.float64)
    write_csv(isolated / "new.csv", [f"x{j}" for j in range(20)], rows.tolist())
    predict = ["--data.predict_path", "new.csv", "--predictions.path", "new_predictions.csv", "--ckpt_path", str(ckpt)]
    run_cli("predict", *TABLE, *predict)
    predictions = [r["prediction"] for r in csv.DictReader((isolated / "new_predictions.csv").open())]
    assert len(predictions) == 6 and len(set(predictions)) == 1


@pytest.mark.slow  # three fits, about 4 s
def test_a_resumed_lasso_continues_from_the_live_weights_not_the_finished_ones(isolated):
    # without averaging the checkpoint's state_dict holds the finished weights; a resumed fit must continue from
    # SGD's own, kept beside them, to end where the uninterrupted run ends
    straight = fit_sparse_table(isolated, False, 0.3, *WITHOUT_AVERAGING)
    checkpoints = [version_dir(isolated, v) / "checkpoints" / "last.ckpt" for v in (0, 1, 2)]
    fit_sparse_table(isolated, False, 0.3, *WITHOUT_AVERAGING, "--trainer.max_epochs", "15")
    halfway = torch.load(checkpoints[1], weights_only=True)
    assert not torch.equal(halfway[LASSO_LIVE_WEIGHT], halfway["state_dict"]["linear.weight"])
    resumed = fit_sparse_table(isolated, False, 0.3, *WITHOUT_AVERAGING, "--ckpt_path", str(checkpoints[1]))
    assert torch.equal(resumed.model.linear.weight, straight.model.linear.weight)
    ends = [torch.load(checkpoints[v], weights_only=True) for v in (0, 2)]
    assert torch.equal(ends[0][LASSO_LIVE_WEIGHT], ends[1][LASSO_LIVE_WEIGHT])
    assert torch.equal(ends[0]["state_dict"]["linear.weight"], ends[1]["state_dict"]["linear.weight"])


# the lasso command of docs/penalties.md (the default experiment with 20 inputs, 5 used) with label noise 0.3, not
# the experiment's 0.01, so that minibatch noise moves the unused weights (before: 8 of the 15 zeros without
# averaging, none with it)
DEFAULT_LASSO = [
    "--data.num_inputs", "20", "--data.true_w", "[0,0,3,0,0,-2,0,0,0,1.5,0,0,0,0,-1,0,0,0,0.5,0]",
    "--data.num_examples", "2000", "--data.noise_std", "0.3", "--data.batch_size", "100",
    "--model.l1_strength", "0.05", "--trainer.max_epochs", "30", "--model.scheduler", "CosineAnnealingLR",
    "--model.scheduler.T_max", "30", "--model.optimizer.lr", "0.1",
]  # fmt: skip


@pytest.mark.parametrize(
    "averaged", [False, pytest.param(True, marks=pytest.mark.slow)], ids=["default.yaml", "averaged.yaml"]
)
def test_the_default_experiments_lasso_checkpoint_is_zero_exactly_where_the_exact_lasso_is(averaged, isolated):
    more = ["--config", str(ROOT / "configs" / "averaged.yaml")] if averaged else []
    cli = run_cli("fit", *more, *DEFAULT_LASSO)
    assert any(type(c).__name__ == "TailWeightAveraging" for c in cli.trainer.callbacks) == averaged
    statistics = NormalEquations()
    statistics.update(*cli.datamodule.splits["train"][:2])
    optimum, _ = statistics.solve(l1=0.05)
    assert int((optimum == 0).sum()) == 15
    weight, _ = LinearRegression.load_from_checkpoint(
        version_dir(isolated) / "checkpoints" / "last.ckpt"
    ).learned_parameters()
    assert (weight == 0).tolist() == (optimum == 0).tolist()
    assert float((weight - optimum).abs().max()) < 0.01  # 7e-5 and 8e-5 measured
