"""Checkpoints written before the redesign (`net.*` keys, 0-d target statistics) still validate, test,
predict and resume through the CLI, and predict what the old model predicted.

tests/regression/data/README.md says how the files were made.
"""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch
from conftest import ROOT, version_dir
from example_helpers import (
    DEFAULT_CONFIG,
    no_picture,  # noqa: F401 (autouse: fit.png is drawn by tests marked picture)
    run_cli,
)

from linreg_pl.cli import main
from linreg_pl.regression.model import FORMAT, FORMAT_KEY, LinearRegression

DATA = Path(__file__).resolve().parent / "data"
SYNTHETIC = DATA / "old_synthetic_last.ckpt"  # default experiment, 1 epoch, not standardised
TABLE = DATA / "old_csv_last.ckpt"  # old_csv_data.csv, 1 epoch, features and target standardised
TABLE_ARGS = ["--config", str(ROOT / "configs" / "csv.yaml"), "--data.path", str(DATA / "old_csv_data.csv")]
CASES = {"synthetic": (SYNTHETIC, ["--config", DEFAULT_CONFIG]), "table": (TABLE, TABLE_ARGS)}


def old_prediction(path: Path, features: torch.Tensor) -> torch.Tensor:
    """What the old model predicts, from its tensors by hand."""
    state = torch.load(path, weights_only=True)["state_dict"]
    standardized = (features - state["feature_mean"]) / state["feature_scale"]
    y = standardized @ state["net.weight"][0] + state["net.bias"][0]
    return y * state["target_scale"] + state["target_mean"]


def test_the_files_are_of_the_old_layout():
    for path in (SYNTHETIC, TABLE):
        checkpoint = torch.load(path, weights_only=True)
        assert FORMAT_KEY not in checkpoint and "net.weight" in checkpoint["state_dict"]
        assert checkpoint["state_dict"]["target_mean"].shape == ()


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("subcommand", ["validate", "test"])
def test_validate_and_test_from_an_old_checkpoint(case, subcommand, isolated):
    path, args = CASES[case]
    cli = run_cli(subcommand, *args, "--ckpt_path", str(path))
    stage = "val" if subcommand == "validate" else "test"
    assert cli.trainer.callback_metrics[f"{stage}/r2"] > 0.8  # the old model's quality, not a fresh one's
    state = torch.load(path, weights_only=True)["state_dict"]
    assert torch.equal(cli.model.linear.weight, state["net.weight"])


@pytest.mark.parametrize("case", CASES)
def test_predict_from_an_old_checkpoint_predicts_what_the_old_model_did(case, isolated):
    path, args = CASES[case]
    cli = run_cli("predict", *args, "--ckpt_path", str(path), "--predictions.path", "predictions.csv")
    rows = list(csv.DictReader(open("predictions.csv")))
    predicted = torch.tensor([float(r["prediction"]) for r in rows])
    features = cli.datamodule.load_tensors()[0].float()
    expected = old_prediction(path, features[torch.tensor([int(r["row"]) for r in rows])])
    assert len(rows) > 0
    torch.testing.assert_close(predicted, expected, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("case", CASES)
def test_fit_resumes_from_an_old_checkpoint(case, isolated):
    path, args = CASES[case]
    if case == "table":  # epochs as long as the old run's: csv.yaml now repeats a small training split, in
        args = [*args, "--data.min_batches_per_epoch", "0", "--data.batch_size", "10"]  # larger batches
    cli = run_cli("fit", *args, "--ckpt_path", str(path), "--trainer.max_epochs", "3")
    assert cli.trainer.current_epoch == 3 and cli.trainer.global_step == 3 * torch.load(path)["global_step"]
    # its own checkpoints are of the new layout and load on their own
    new = version_dir(isolated) / "checkpoints" / "last.ckpt"
    assert torch.load(new, weights_only=True)[FORMAT_KEY] == FORMAT
    model = LinearRegression.load_from_checkpoint(new)
    assert torch.equal(model.linear.weight, cli.model.linear.weight)
    assert (model.standardize.mean is None) == (case == "synthetic")


def test_load_from_checkpoint_rebuilds_the_old_standardisation():
    model = LinearRegression.load_from_checkpoint(TABLE)
    state = torch.load(TABLE, weights_only=True)["state_dict"]
    assert torch.equal(model.standardize.mean, state["feature_mean"])
    assert model.target.scale.shape == (1,) and model.target.scale[0] == state["target_scale"]
    assert model.hparams.standardization["target_mean"] == [state["target_mean"].item()]
    features = torch.randn(7, 3, generator=torch.Generator().manual_seed(0)) * 10
    torch.testing.assert_close(model(features), old_prediction(TABLE, features))
    plain = LinearRegression.load_from_checkpoint(SYNTHETIC)
    assert plain.standardize.mean is None and plain.target.mean is None


@pytest.mark.parametrize("case", CASES)
def test_export_of_an_old_checkpoint_computes_what_the_old_model_did(case, isolated, capsys):
    path, _ = CASES[case]
    main(["export", "--ckpt_path", str(path), "--output", "model.pt2"])
    assert capsys.readouterr().out.startswith("wrote model.pt2")
    features = torch.randn(5, 2 if case == "synthetic" else 3, generator=torch.Generator().manual_seed(1)) * 3
    with torch.no_grad():
        exported = torch.export.load("model.pt2").module()(features)
    torch.testing.assert_close(exported, old_prediction(path, features), rtol=1e-5, atol=1e-5)
