"""A lasso through the README's table command ends sparse where the exact lasso is, in the checkpoint's own weights
(what predict and export use), with and without standardisation."""

from __future__ import annotations

import pytest
import torch
from conftest import ROOT, version_dir
from example_helpers import (
    no_picture,  # noqa: F401 (autouse: fit.png is drawn by tests marked picture)
    run_cli,
)
from test_inference import write_csv

from linreg_pl.regression.closed_form import NormalEquations
from linreg_pl.regression.model import LinearRegression

TABLE = ["--config", str(ROOT / "configs" / "csv.yaml"), "--data.path", "t.csv", "--data.target", "y"]
SUPPORT = [1, 4, 7, 12, 18]


def sparse_table() -> tuple[torch.Tensor, torch.Tensor]:
    """2,000 rows, 20 columns of different scales, 5 used: 15 true zeros."""
    generator = torch.Generator().manual_seed(3)
    features = torch.randn(2000, 20, generator=generator, dtype=torch.float64) * torch.linspace(0.5, 3.0, 20)
    weight = torch.zeros(20, dtype=torch.float64)
    weight[SUPPORT] = torch.tensor([1.5, -2.0, 1.0, 3.0, -1.2], dtype=torch.float64)
    targets = features @ weight + 0.3 + 0.5 * torch.randn(2000, generator=generator, dtype=torch.float64)
    return features, targets


# unstandardised (the setting; l1 on raw weights of columns up to 3 wide) and standardised
@pytest.mark.parametrize("standardize, l1", [(False, 0.3), (True, 0.1)])
def test_the_checkpoints_lasso_weights_are_zero_exactly_where_the_exact_lasso_is(standardize, l1, isolated):
    features, targets = sparse_table()
    names = [f"x{j}" for j in range(20)]
    write_csv(
        isolated / "t.csv", [*names, "y"], [[*r, t] for r, t in zip(features.tolist(), targets.tolist(), strict=True)]
    )
    args = ["--data.standardize", str(standardize).lower(), "--data.batch_size", "50", "--trainer.max_epochs", "30"]
    args += ["--model.init_args.scheduler.init_args.T_max", "30", "--model.l1_strength", str(l1)]
    cli = run_cli("fit", *TABLE, *args)
    statistics = NormalEquations()
    statistics.update(*cli.datamodule.training_rows)
    optimum, _ = statistics.solve(l1=l1, standardize=standardize)
    zeros = (optimum == 0).tolist()
    assert sum(zeros) == 15  # the exact lasso keeps the 5 used columns
    model = LinearRegression.load_from_checkpoint(version_dir(isolated) / "checkpoints" / "last.ckpt")
    weight, _ = model.learned_parameters()
    assert (weight == 0).tolist() == zeros  # every zero of the optimum, and only those, in the checkpoint
    assert float((weight - optimum).abs().max()) < 0.01
