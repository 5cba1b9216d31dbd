"""Tables as people have them: text and yes/no columns, missing values, predict from the checkpoint alone."""

from __future__ import annotations

import csv

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from conftest import ROOT, version_dir
from example_helpers import (
    no_picture,  # noqa: F401 (autouse: fit.png is drawn by tests marked picture)
    run_cli,
)

from linreg_pl.cli import main
from linreg_pl.errors import ConfigError
from linreg_pl.regression.data import TableRegressionDataModule

CSV = str(ROOT / "configs" / "csv.yaml")
QUICK = ["--trainer.max_epochs", "20", "--model.scheduler.init_args.T_max", "20", "--data.batch_size", "20"]


def write(path, rows: list[list]) -> None:
    with open(path, "w", newline="") as handle:
        csv.writer(handle).writerows(rows)


def table(n: int = 300, seed: int = 0) -> list[list]:
    """y = 2x + 1.5[color=red] - 0.5[color=green] + 3[ok=yes] + 1 + noise; row 5 misses x."""
    rng = np.random.default_rng(seed)
    x, color, ok = rng.normal(size=n), rng.choice(["red", "green", "blue"], n), rng.choice(["yes", "no"], n)
    y = 2 * x + 1.5 * (color == "red") - 0.5 * (color == "green") + 3 * (ok == "yes") + 1 + 0.05 * rng.normal(size=n)
    rows = [["x", "color", "ok", "y"]] + [[x[i], color[i], ok[i], y[i]] for i in range(n)]
    rows[6][0] = "NA"
    return rows


def test_text_columns_are_dummy_coded_levels_go_into_the_checkpoint_and_missing_rows_are_left_out(isolated, capsys):
    rows = table()
    write(isolated / "t.csv", rows)
    cli = run_cli("fit", "--config", CSV, "--data.path", "t.csv", "--data.target", "y", *QUICK)
    out = capsys.readouterr().out
    assert "t.csv: left out 1 of 300 rows with a missing value (x: 1)" in out
    assert cli.model.hparams.encoding == {"x": None, "color": ["blue", "green", "red"], "ok": ["no", "yes"]}
    assert cli.model.hparams.feature_names == ["x", "color=green", "color=red", "ok=yes"]
    checkpoint = torch.load(version_dir(isolated) / "checkpoints" / "last.ckpt", weights_only=True)
    assert checkpoint["hyper_parameters"]["encoding"]["color"] == ["blue", "green", "red"]
    # the exact optimum is least squares on the dummy-coded design of the training split (held as float32)
    train_rows = cli.datamodule.splits["train"][2].numpy()
    data = [rows[1 + r] for r in train_rows]
    design = np.array([[float(r[0]), r[1] == "green", r[1] == "red", r[2] == "yes", 1.0] for r in data], dtype=float)
    solution = np.linalg.lstsq(design, np.array([float(r[3]) for r in data]), rcond=None)[0]
    with open(version_dir(isolated) / "parameters.csv") as handle:
        written = list(csv.DictReader(handle))
    assert [r["parameter"] for r in written] == ["x", "color=green", "color=red", "ok=yes", "bias"]
    np.testing.assert_allclose([float(r["optimum"]) for r in written], solution, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose([float(r["learned"]) for r in written], solution, atol=0.05)
    assert all(r["true"] == "" for r in written)


def test_predict_reads_only_the_new_table_and_leaves_unpredictable_rows_empty(isolated, capsys):
    write(isolated / "t.csv", table())
    cli = run_cli("fit", "--config", CSV, "--data.path", "t.csv", "--data.target", "y", *QUICK)
    weight, bias = cli.model.learned_parameters()
    write(
        isolated / "new.csv",
        [["ok", "color", "x", "y"], ["yes", "red", 1, 0], ["no", "blue", "", 0], ["no", "pink", 0, 0]],
    )
    (isolated / "t.csv").unlink()  # the training table is not needed
    capsys.readouterr()
    ckpt = str(version_dir(isolated) / "checkpoints" / "last.ckpt")
    run_cli("predict", "--config", CSV, "--ckpt_path", ckpt, "--data.predict_path", "new.csv")
    out = capsys.readouterr().out
    assert "new.csv: 2 rows get no prediction: a missing value (x: 1); a level not seen in training (color: 1)" in out
    lines = (version_dir(isolated, 1) / "predictions.csv").read_text().splitlines()
    assert lines[0] == "row,prediction" and lines[2:] == ["1,", "2,"]
    expected = float(weight @ torch.tensor([1.0, 0.0, 1.0, 1.0], dtype=weight.dtype) + bias)
    assert float(lines[1].split(",")[1]) == pytest.approx(expected, rel=1e-5)
    # export from the checkpoint alone: the file takes the indicator columns, named and in order
    main(["export", "--ckpt_path", ckpt, "--output", "m.pt2"])
    assert 'input "features": float32 [batch, 4], columns in this order: x, color=green, color=red, ok=yes' in (
        capsys.readouterr().out
    )
    encoded = torch.tensor([[1.0, 0.0, 1.0, 1.0]])  # the predict row above: yes, red, 1
    assert float(torch.export.load("m.pt2").module()(encoded)[0]) == pytest.approx(expected, rel=1e-5)


def test_missing_error_refuses_with_the_one_line_message(isolated):
    write(isolated / "t.csv", table())
    module = TableRegressionDataModule("t.csv", target="y", missing="error")
    with pytest.raises(ConfigError, match=r"^t.csv: line 7, column 'x': 'NA' is not a number$"):
        _ = module.encoding


def test_an_identifier_column_is_refused_with_the_advice_to_leave_it_out(isolated):
    rows = table(n=100)
    for i, row in enumerate(rows):
        row.append("name" if i == 0 else f"person-{i}")
    write(isolated / "t.csv", rows)
    with pytest.raises(ConfigError, match=r"column 'name' holds 79 different texts in 79 rows: an identifier"):
        _ = TableRegressionDataModule("t.csv", target="y", val_fraction=0.1, test_fraction=0.1).encoding
    module = TableRegressionDataModule("t.csv", target="y", features=["x", "color", "ok"])
    assert module.num_inputs == 4


def test_parquet_dictionary_and_string_columns_encode_as_csv_text_does(isolated):
    rows = table(n=120)
    header, body = rows[0], rows[1:]
    columns = {name: [r[j] for r in body] for j, name in enumerate(header)}
    x = pa.array([None if v == "NA" else float(v) for v in columns["x"]])
    pq.write_table(
        pa.table(
            {"x": x, "color": pa.array(columns["color"]).dictionary_encode(), "ok": columns["ok"], "y": columns["y"]}
        ),
        isolated / "t.parquet",
    )
    write(isolated / "t.csv", rows)
    parquet = TableRegressionDataModule("t.parquet", target="y")
    text = TableRegressionDataModule("t.csv", target="y")
    assert parquet.encoding == text.encoding
    assert torch.equal(parquet.load_tensors()[0], text.load_tensors()[0])
