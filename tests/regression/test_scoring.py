"""`validate` and `test` on a labelled table of their own (`--data.test_path`): every usable row scored from the
checkpoint alone, against numpy on the same rows."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import ROOT, version_dir
from example_helpers import (
    no_picture,  # noqa: F401 (autouse: fit.png is drawn by tests marked picture)
    run_cli,
)
from test_inference import houses, write_csv

TABLE = ["--config", str(ROOT / "configs" / "csv.yaml"), "--data.target", "price"]
QUICK = ["--trainer.max_epochs", "3", "--model.init_args.scheduler.init_args.T_max", "3"]
HEADER = ["area", "rooms", "age", "city", "price"]


def numpy_scores(rows, weight: np.ndarray, bias: float) -> dict[str, float]:
    """MSE, MAE and R² of x·w + b on the rows, with the city indicators coded by hand (Aarhus the reference)."""
    x = np.array([[a, r, g, c == "Bergen", c == "Cork"] for a, r, g, c, _ in rows], dtype=np.float64)
    y = np.array([p for *_, p in rows], dtype=np.float64)
    error = y - (x @ weight + bias)
    return {
        "mse": np.mean(error**2),
        "mae": np.mean(np.abs(error)),
        "r2": 1 - np.sum(error**2) / np.sum((y - y.mean()) ** 2),
    }


@pytest.mark.parametrize("subcommand, stage", [("test", "test"), ("validate", "val")])
def test_a_held_out_file_is_scored_on_all_its_usable_rows_from_the_checkpoint_alone(
    subcommand, stage, isolated, capsys
):
    table = houses(90)
    write_csv(isolated / "train.csv", HEADER, table[:60])
    fit = run_cli("fit", *TABLE, *QUICK, "--data.path", "train.csv")
    weight, bias = (t.numpy() for t in fit.model.learned_parameters())
    ckpt = str(version_dir(isolated) / "checkpoints" / "last.ckpt")
    (isolated / "train.csv").unlink()  # nothing of the training table is read
    usable = table[60:]
    unusable = [(100.0, 2, "", "Bergen", 2000.0), (100.0, 2, 10.0, "Dublin", 2000.0), (100.0, 2, 10.0, "Cork", "")]
    write_csv(isolated / "holdout.csv", HEADER, [*usable[:10], *unusable, *usable[10:]])
    capsys.readouterr()
    cli = run_cli(
        subcommand, *TABLE, "--data.path", "train.csv", "--ckpt_path", ckpt, "--data.test_path", "holdout.csv"
    )
    out = capsys.readouterr().out
    assert (
        "holdout.csv: left out 3 of 33 rows: a missing value (age: 1, price: 1); a level not seen in training (city: 1)"
        in out
    )
    metrics = cli.trainer.callback_metrics
    for name, expected in numpy_scores(usable, weight, float(bias)).items():
        assert float(metrics[f"{stage}/{name}"]) == pytest.approx(expected, rel=1e-5), name


def test_a_held_out_file_with_fewer_than_two_usable_rows_is_a_one_line_error(isolated, capsys):
    write_csv(isolated / "train.csv", HEADER, houses(60))
    run_cli("fit", *TABLE, *QUICK, "--data.path", "train.csv")
    ckpt = str(version_dir(isolated) / "checkpoints" / "last.ckpt")
    unseen, usable = (100.0, 2, 10.0, "Dublin", 2000.0), (100.0, 2, 10.0, "Cork", 2000.0)
    expected = {
        "none.csv": ([unseen], "none.csv: no row can be scored: each misses a value or has an unseen level"),
        "one.csv": ([unseen, usable], "one.csv: 1 row can be scored, and the R² it reports needs 2"),
    }
    for name, (rows, message) in expected.items():
        write_csv(isolated / name, HEADER, rows)
        capsys.readouterr()
        with pytest.raises(SystemExit) as exit_info:
            run_cli("test", *TABLE, "--data.path", "train.csv", "--ckpt_path", ckpt, "--data.test_path", name)
        assert exit_info.value.code == 2
        assert capsys.readouterr().err.strip().splitlines()[-1] == f"linreg-pl: error: {message}"


@pytest.mark.parametrize("subcommand, stage", [("test", "test"), ("validate", "val")])
def test_a_streamed_held_out_file_scores_what_the_in_memory_one_does(subcommand, stage, isolated, capsys):
    table = houses(90)
    write_csv(isolated / "train.csv", HEADER, table[:60])
    run_cli("fit", *TABLE, *QUICK, "--data.path", "train.csv")
    ckpt = str(version_dir(isolated) / "checkpoints" / "last.ckpt")
    (isolated / "train.csv").unlink()
    unusable = [(100.0, 2, "", "Bergen", 2000.0), (100.0, 2, 10.0, "Dublin", 2000.0), (100.0, 2, 10.0, "Cork", "")]
    write_csv(isolated / "holdout.csv", HEADER, [*table[60:70], *unusable, *table[70:]])
    scores = {}
    stream = ["--config", str(ROOT / "configs" / "table-stream.yaml"), "--data.target", "price"]
    for name, config in (("memory", TABLE), ("stream", [*stream, "--data.chunk_bytes", "300"])):
        args = ["--data.path", "train.csv", "--ckpt_path", ckpt, "--data.test_path", "holdout.csv"]
        capsys.readouterr()
        cli = run_cli(subcommand, *config, *args)
        assert "holdout.csv: left out 3 of 33 rows: a missing value (age: 1, price: 1); a level not seen in " in (
            capsys.readouterr().out
        )
        scores[name] = {k: float(cli.trainer.callback_metrics[f"{stage}/{k}"]) for k in ("mse", "mae", "r2")}
    for key, value in scores["memory"].items():
        assert scores["stream"][key] == pytest.approx(value, rel=1e-5), key
