"""The sweep command (linreg_pl/sweep.py) on a user's model (tests/user_models.py); the example's sweeps, workers,
resuming, pruning and bad input are in tests/regression/test_example_sweep.py.

    python -m pytest tests/test_sweep.py
"""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import yaml
from conftest import ROOT

from linreg_pl.cli import main

pytest.importorskip("optuna")

CLASSIFIER = str(ROOT / "tests" / "configs" / "classifier.yaml")
# small trials: one epoch of at most 20 steps, no model summary, CPU
TINY = ["--trainer.max_epochs", "1", "--trainer.limit_train_batches", "20", "--trainer.accelerator", "cpu"]
TINY += ["--trainer.enable_model_summary", "false"]


def write_sweep(path: Path, **spec) -> str:
    spec.setdefault("metric", {"name": "val/loss", "goal": "minimize"})
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return str(path)


def read_trials(folder: Path) -> list[dict[str, str]]:
    with open(folder / "trials.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def value_of(cli, metric: str) -> float:
    return float(cli.trainer.callback_metrics[metric])


def test_a_grid_sweep_of_a_classifier_finishes_and_its_best_config_reruns(tmp_path, capsys):
    # a user's own model (tests/user_models.py), its own metric, maximised; grid: run_cap is the grid's size
    sweep = write_sweep(
        tmp_path / "grid.yaml",
        method="grid",
        metric={"name": "val_acc", "goal": "maximize"},
        parameters={"model.init_args.lr": {"values": [0.001, 0.01, 0.05]}, "model.hidden": {"values": [4, 16]}},
    )
    main(["sweep", "--config", CLASSIFIER, "--sweep", sweep, *TINY[:2], "--trainer.enable_model_summary", "false"])
    folder = tmp_path / "sweeps" / "grid"
    trials = read_trials(folder)
    assert len(trials) == 6 and {t["state"] for t in trials} == {"COMPLETE"}
    points = {(float(t["model.init_args.lr"]), int(t["model.hidden"])) for t in trials}
    assert points == {(lr, hidden) for lr in (0.001, 0.01, 0.05) for hidden in (4, 16)}
    values = [float(t["value"]) for t in trials]
    rerun = main(["fit", "--config", str(folder / "best.yaml")])
    assert value_of(rerun, "val_acc") == max(values)
    assert "sweeps/grid/best.yaml" in capsys.readouterr().out
