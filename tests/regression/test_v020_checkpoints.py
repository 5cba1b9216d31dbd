"""Checkpoints written by 0.2.0, whose class path (`linreg_pl.model.LinearRegression`) moved to
`linreg_pl.regression.model`, still validate, test, predict and export, and predict what their weights say.

tests/regression/data/README.md says how the files were made.
"""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch
from conftest import ROOT
from example_helpers import (
    no_picture,  # noqa: F401 (autouse: fit.png is drawn by tests marked picture)
    run_cli,
)

from linreg_pl.cli import main

DATA = Path(__file__).resolve().parent / "data"
TABLE_ARGS = ["--config", str(ROOT / "configs" / "csv.yaml"), "--data.path", str(DATA / "old_csv_data.csv")]
CASES = {"synthetic": (DATA / "v020_synthetic_last.ckpt", []), "table": (DATA / "v020_csv_last.ckpt", TABLE_ARGS)}


def by_hand(path: Path, features: torch.Tensor) -> torch.Tensor:
    """The 0.2.0 model's prediction from its tensors: standardise, linear, back to the target's units."""
    state = torch.load(path, weights_only=True)["state_dict"]
    if "standardize.mean" in state:
        features = (features - state["standardize.mean"]) / state["standardize.scale"]
    y = features @ state["linear.weight"][0] + state["linear.bias"][0]
    return y * state["target.scale"][0] + state["target.mean"][0] if "target.mean" in state else y


def test_the_files_name_the_old_class_path():
    for path, _ in CASES.values():
        assert (
            torch.load(path, weights_only=True)["hyper_parameters"]["_class_path"] == "linreg_pl.model.LinearRegression"
        )


@pytest.mark.parametrize("case", CASES)
def test_validate_test_predict_and_export_a_0_2_0_checkpoint(case, isolated, capsys):
    path, args = CASES[case]
    for subcommand, split in (("validate", "val"), ("test", "test")):
        run = run_cli(subcommand, *args, "--ckpt_path", str(path))
        features, targets = (t.float() for t in run.datamodule.splits[split][:2])
        expected = float(((by_hand(path, features) - targets) ** 2).mean())  # the checkpoint's own error
        assert float(run.trainer.callback_metrics[f"{split}/mse"]) == pytest.approx(expected, rel=1e-5)
    cli = run_cli("predict", *args, "--ckpt_path", str(path), "--predictions.path", "p.csv")
    rows = list(csv.DictReader(open("p.csv")))
    features = cli.datamodule.load_tensors()[0].float()[torch.tensor([int(r["row"]) for r in rows])]
    predicted = torch.tensor([float(r["prediction"]) for r in rows])
    torch.testing.assert_close(predicted, by_hand(path, features), rtol=1e-5, atol=1e-4)
    main(["export", "--ckpt_path", str(path), "--output", "model.pt2"])
    exported = torch.export.load("model.pt2").module()
    torch.testing.assert_close(exported(features), by_hand(path, features), rtol=1e-5, atol=1e-4)
