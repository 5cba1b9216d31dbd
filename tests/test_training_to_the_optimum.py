"""configs/csv.yaml trains noisy tables to the least-squares optimum; the averaged weights are what is
checkpointed, reported and predicted with, and resuming stays exact."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch
from conftest import ROOT, run_cli, version_dir
from lightning.pytorch import Callback

CSV_CONFIG = str(ROOT / "configs" / "csv.yaml")


def noisy_table(rows: int = 350, columns: int = 10, seed: int = 0, noise: float = 1.0) -> dict[str, np.ndarray]:
    """Columns correlated ~0.7 with each other, of scales 0.5-20 and offsets up to ±50; the noise
    variance is `noise`² times the signal's: with 1, half of the target's variance."""
    rng = np.random.default_rng(seed)
    shared = rng.normal(size=(rows, 1))
    x = (rng.normal(size=(rows, columns)) + 1.5 * shared) * rng.uniform(0.5, 20, columns) + rng.uniform(
        -50, 50, columns
    )
    signal = x @ (rng.normal(size=columns) / x.std(0))
    y = signal + rng.normal(scale=noise * signal.std(), size=rows) + 3.0
    return {**{f"x{i}": x[:, i] for i in range(columns)}, "y": y}


def write_table(path, columns: dict[str, np.ndarray]) -> None:
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(columns)
        writer.writerows(zip(*(v.tolist() for v in columns.values()), strict=True))


def table_args(path, *extra: str) -> list[str]:
    return ["--config", CSV_CONFIG, "--data.path", str(path), "--data.target", "y", *extra]


def learned_over_closed_form_test_mse(cli) -> float:
    scores = next(c for c in cli.trainer.callbacks if type(c).__name__ == "ParameterReport").result["scores"]
    return scores["learned test"][0] / scores["closed-form test"][0]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_noisy_tables_land_within_half_a_percent_of_the_closed_form_test_mse(seed, isolated):
    write_table(isolated / "table.csv", noisy_table(seed=seed))
    assert learned_over_closed_form_test_mse(run_cli("fit", *table_args(isolated / "table.csv"))) == pytest.approx(
        1.0, abs=0.005
    )


def test_constant_lr_sgd_on_the_same_table_does_not(isolated, capsys):
    write_table(isolated / "table.csv", noisy_table(seed=2))
    # default.yaml's constant lr, as many epochs, no averaging
    table = ["--data", "TableRegressionDataModule", "--data.path", str(isolated / "table.csv"), "--data.target", "y"]
    cli = run_cli("fit", *table, "--trainer.max_epochs", "60")
    assert abs(learned_over_closed_form_test_mse(cli) - 1.0) > 0.01
    assert "hint" not in capsys.readouterr().out  # on the training split it is within 1%
    run_cli("fit", *table)  # the seed recipe's 3 epochs: more than 1% off, and the report says what to do
    assert "hint: SGD stopped more than 1% above the optimum" in capsys.readouterr().out


class StopAfter(Callback):
    """Ends `fit` after `epochs` epochs, as an interrupted run would, without changing max_epochs."""

    def __init__(self, epochs: int = 1) -> None:
        self.epochs = epochs

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if trainer.current_epoch + 1 >= self.epochs:
            trainer.should_stop = True


def test_the_averaged_weights_are_checkpointed_predicted_with_and_resume_exactly(isolated):
    write_table(isolated / "table.csv", noisy_table(rows=200))
    short = ["--trainer.max_epochs", "8", "--model.scheduler.T_max", "8"]
    straight = run_cli("fit", *table_args(isolated / "table.csv", *short))
    weight, bias = straight.model.linear.weight.detach().clone(), straight.model.linear.bias.detach().clone()
    # the model ends with the averaged weights, and last.ckpt holds them (the live ones beside them)
    averaged = next(c for c in straight.trainer.callbacks if type(c).__name__ == "TailWeightAveraging")
    assert torch.equal(averaged._average_model.module.linear.weight, weight)
    last = torch.load(version_dir(isolated, 0) / "checkpoints" / "last.ckpt", weights_only=True)
    assert torch.equal(last["state_dict"]["linear.weight"], weight)
    assert not torch.equal(last["current_model_state"]["linear.weight"], weight)
    # predict from last.ckpt predicts with the averaged weights
    run_cli(
        "predict",
        *table_args(isolated / "table.csv"),
        "--ckpt_path",
        str(version_dir(isolated, 0) / "checkpoints" / "last.ckpt"),
        "--predictions.path",
        "p.csv",
    )
    predicted = torch.tensor([float(r["prediction"]) for r in csv.DictReader(open(isolated / "p.csv"))])
    test_features = straight.datamodule.splits["test"][0]
    with torch.no_grad():
        assert torch.allclose(predicted, straight.model(test_features), rtol=0, atol=1e-5)
    # stopped after 6 of 8 epochs (mid-average), resumed from last.ckpt: the same bits
    run_cli(
        "fit",
        *table_args(isolated / "table.csv", *short),
        "--trainer.callbacks+",
        f"{__name__}.StopAfter",
        "--trainer.callbacks.epochs",
        "6",
    )
    resumed = run_cli(
        "fit",
        *table_args(isolated / "table.csv", *short),
        "--ckpt_path",
        str(version_dir(isolated, 2) / "checkpoints" / "last.ckpt"),
    )
    assert resumed.trainer.current_epoch == 8
    assert torch.equal(resumed.model.linear.weight, weight) and torch.equal(resumed.model.linear.bias, bias)
