"""Rank-deficient tables through the README's table command: aliased columns are found from the factor (R's rule),
named, left empty in parameters.csv, held at weight 0 in the model (R's choice), and the rest lands on the optimum."""

from __future__ import annotations

import csv
from pathlib import Path

import torch
from conftest import ROOT, version_dir
from example_helpers import (
    no_picture,  # noqa: F401 (autouse: fit.png is drawn by tests marked picture)
    run_cli,
)
from test_inference import HOUSES_OLS, houses, write_csv

TABLE = ["--config", str(ROOT / "configs" / "csv.yaml")]
# the whitened problem of a small table converges in a few epochs of full-batch steps; csv.yaml's 60 are for large
# noisy tables (the cosine schedule shortened with them)
SHORT = ["--trainer.max_epochs", "8", "--model.init_args.scheduler.init_args.T_max", "8"]
SHORT += ["--trainer.enable_checkpointing", "false"]
INFERENCE = ("optimum", "std_error", "std_error_hc3", "t_value", "p_value", "ci_low", "ci_high")


def fit_table(path: str, *args: str):
    cli = run_cli("fit", *TABLE, *SHORT, "--data.path", path, "--data.target", "y", *args)
    report = next(c for c in cli.trainer.callbacks if type(c).__name__ == "ParameterReport").result
    with open(version_dir(Path(".")) / "parameters.csv") as handle:
        parameters = {row.pop("parameter"): row for row in csv.DictReader(handle)}
    return cli, report, parameters


def test_a_column_twice_another_is_aliased_and_the_others_land_on_the_optimum(isolated, capsys):
    generator = torch.Generator().manual_seed(0)
    a, b = torch.randn(2, 100, generator=generator, dtype=torch.float64)
    y = 1.5 * a - 2 * b + 3 + 0.1 * torch.randn(100, generator=generator, dtype=torch.float64)
    write_csv(isolated / "t.csv", ["a", "b", "c", "y"], zip(*(v.tolist() for v in (a, b, 2 * a, y)), strict=True))
    cli, report, parameters = fit_table("t.csv")
    weight, _ = cli.model.learned_parameters()
    assert weight[2] == 0.0  # was -101,298 for a and 50,649 for c, 0.18% above the optimum
    assert report["objective_ratio"] <= 1.005
    assert float((weight[:2] - report["closed_w"][:2]).abs().max()) < 1e-3
    assert parameters["c"]["learned"] == "0.0" and all(parameters["c"][k] == "" for k in INFERENCE)
    assert all(parameters["a"][k] != "" for k in INFERENCE)
    out = capsys.readouterr().out
    assert "Coefficients: (1 not defined because of singularities)\n" in out
    aliased = "aliased (each a combination of the columns before it and the intercept; weight 0 and no inference"
    assert f"{aliased}, as R's lm): c\n" in out
    assert report["condition_number"] < 10  # of a and b: the aliased column is left out, not an infinite one


def test_a_duplicated_text_column_is_aliased_and_the_fit_is_the_one_without_it(isolated, capsys):
    # region codes the same three groups as city under other names: its indicators are the city ones
    region = {"Aarhus": "north", "Bergen": "west", "Cork": "south"}
    rows = [(area, rooms, age, city, region[city], price) for area, rooms, age, city, price in houses()]
    write_csv(isolated / "t.csv", ["area", "rooms", "age", "city", "region", "y"], rows)
    every_row = ["--data.val_fraction", "0", "--data.test_fraction", "0", "--monitor_check", "null"]
    every_row += ["--trainer.callbacks", "linreg_pl.regression.report.ParameterReport"]
    cli, report, parameters = fit_table("t.csv", *every_row)
    names = ["area", "rooms", "age", "city=Bergen", "city=Cork", "region=south", "region=west", "bias"]
    assert list(parameters) == names
    assert cli.model.learned_parameters()[0][5:].tolist() == [0.0, 0.0]
    assert all(parameters[name][k] == "" for name in ("region=south", "region=west") for k in INFERENCE)
    for column in ("optimum", "std_error"):  # statsmodels' figures for the table without region
        got = [float(parameters[name][column]) for name in [*names[:5], "bias"]]
        assert max(abs(g - w) / abs(w) for g, w in zip(got, HOUSES_OLS[column], strict=True)) <= 1e-8
    assert report["objective_ratio"] <= 1.005
    assert "Coefficients: (2 not defined because of singularities)\n" in capsys.readouterr().out


def test_more_columns_than_rows_keeps_the_first_identifiable_ones_and_fits_without_diverging(isolated, capsys):
    generator = torch.Generator().manual_seed(1)
    features = torch.randn(30, 50, generator=generator, dtype=torch.float64)
    y = features[:, :5] @ torch.arange(1.0, 6.0, dtype=torch.float64) + 0.1 * torch.randn(30, generator=generator)
    names = [f"x{j}" for j in range(50)]
    write_csv(
        isolated / "t.csv", [*names, "y"], [[*row, t] for row, t in zip(features.tolist(), y.tolist(), strict=True)]
    )
    cli, report, parameters = fit_table("t.csv")  # was: diverged at epoch 3, advising a lower learning rate
    weight, _ = cli.model.learned_parameters()
    # 24 training rows: the intercept and 23 columns fit them exactly; x23..x49 are combinations of those
    assert [name for name in names if parameters[name]["optimum"] == ""] == names[23:]
    assert bool((weight[23:] == 0).all()) and float(weight.abs().max()) < 10
    assert report["perfect_fit"] and report["objective_ratio"] <= 1.005  # 1 + learned mse / the target's variance
    out = capsys.readouterr().out
    assert "Coefficients: (27 not defined because of singularities)\n" in out
    assert "no inference: 24 rows leave no residual degrees of freedom for 24 parameters\n" in out
