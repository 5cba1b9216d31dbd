"""Inference for ordinary least squares (linreg_pl.regression.inference and the report's parameters.csv and
summary.csv) against references computed elsewhere: NIST's certified Longley values, rational arithmetic, and
statsmodels' OLS (run once where the table was built, its numbers stored here; statsmodels is not needed)."""

from __future__ import annotations

import csv
import math
from fractions import Fraction

import pytest
import torch
from conftest import ROOT, version_dir
from example_helpers import (
    no_picture,  # noqa: F401 (autouse: fit.png is drawn by tests marked picture)
    run_cli,
)

from linreg_pl.regression.closed_form import NormalEquations
from linreg_pl.regression.inference import MISSING_SCIPY, aliased_columns, ordinary_least_squares

pytest.importorskip("scipy")

# NIST StRD Longley (https://www.itl.nist.gov/div898/strd/lls/data/Longley.shtml): y, then x1..x6
LONGLEY = """60323 83.0 234289 2356 1590 107608 1947
61122 88.5 259426 2325 1456 108632 1948
60171 88.2 258054 3682 1616 109773 1949
61187 89.5 284599 3351 1650 110929 1950
63221 96.2 328975 2099 3099 112075 1951
63639 98.1 346999 1932 3594 113270 1952
64989 99.0 365385 1870 3547 115094 1953
63761 100.0 363112 3578 3350 116219 1954
66019 101.2 397469 2904 3048 117388 1955
67857 104.6 419180 2822 2857 118734 1956
68169 108.4 442769 2936 2798 120445 1957
66513 110.8 444546 4681 2637 121950 1958
68655 112.6 482704 3813 2552 123366 1959
69564 114.2 502601 3931 2514 125368 1960
69331 115.7 518173 4806 2572 127852 1961
70551 116.9 554894 4007 2827 130081 1962"""
# certified with 500-digit arithmetic: (estimate, standard deviation) of x1..x6, then of the intercept
LONGLEY_CERTIFIED = [
    (15.0618722713733, 84.9149257747669),
    (-0.358191792925910e-01, 0.334910077722432e-01),
    (-2.02022980381683, 0.488399681651699),
    (-1.03322686717359, 0.214274163161675),
    (-0.511041056535807e-01, 0.226073200069370),
    (1829.15146461355, 455.478499142212),
    (-3482258.63459582, 890420.383607373),
]
LONGLEY_RESIDUAL_SD, LONGLEY_R_SQUARED, LONGLEY_F = 304.854073561965, 0.995479004577296, 330.285339234588
LONGLEY_NAMES = ["deflator", "gnp", "unemployed", "armed", "population", "year"]
TABLE = ["--config", str(ROOT / "configs" / "csv.yaml")]
# the whole table is the training split (the certified values are for all 16 rows): nothing to monitor
ALL_ROWS = ["--data.val_fraction", "0", "--data.test_fraction", "0", "--monitor_check", "null"]
ALL_ROWS += [
    "--trainer.callbacks",
    "linreg_pl.regression.report.ParameterReport",
    "--trainer.enable_checkpointing",
    "false",
]
# the files' figures are the exact optimum's, whatever SGD reached: a few epochs write them
FEW_EPOCHS = ["--trainer.max_epochs", "2"]

# statsmodels 0.15.0, OLS(y, add_constant(X)).fit() on `houses()` with X = area, rooms, age, city=Bergen,
# city=Cork (Aarhus the reference level): weights in that order, then the intercept
HOUSES_OLS = {
    "optimum": [
        12.408274510945555,
        139.97276022959562,
        -7.944983562789789,
        408.7006264470557,
        -239.08766722817506,
        1033.0467437172908,
    ],  # noqa: E501
    "std_error": [
        0.26998647201588816,
        25.89248506288925,
        1.0124080799880981,
        57.78887972099686,
        95.87996057299334,
        55.57974828129627,
    ],  # noqa: E501
    "std_error_hc3": [
        0.29203623660696143,
        26.969748677163064,
        1.063155204352515,
        59.183516132879014,
        99.18840340768782,
        70.77577646813673,
    ],  # noqa: E501
    "t_value": [
        45.95887496991091,
        5.405922216026049,
        -7.847609792765769,
        7.072305751906789,
        -2.4936145759692696,
        18.586747433416,
    ],  # noqa: E501
    "p_value": [
        5.61938129027313e-45,
        1.4981957742514164e-06,
        1.7385137523939424e-10,
        3.1438801070481725e-09,
        0.015740183689346793,
        3.969239647624249e-25,
    ],  # noqa: E501
    "ci_low": [
        11.866984225109936,
        88.06145320729034,
        -9.974739553552164,
        292.8408984068383,
        -431.31541433325685,
        921.6160575454143,
    ],  # noqa: E501
    "ci_high": [
        12.949564796781173,
        191.8840672519009,
        -5.915227572027414,
        524.5603544872731,
        -46.859920123093275,
        1144.4774298891675,
    ],  # noqa: E501
}
HOUSES_SUMMARY = {
    "rows": 60, "parameters": 6, "df_residual": 54, "residual_std_error": 89.50441935711304,
    "r_squared": 0.9824977492912218, "adj_r_squared": 0.9808771705218905, "f_statistic": 606.2634954156666,
    "f_p_value": 4.0299161708601075e-46, "log_likelihood": -351.63277666375603, "aic": 715.2655533275121,
    "bic": 727.8316207008447,
}  # fmt: skip
# the same, OLS(y, X) without the constant: R², F uncentred
HOUSES_NO_INTERCEPT = {
    "estimate": [15.127727405755243, 455.4098322687403, -2.353933330441441, -134.57115871583414, -1256.6608445261784],
    "std_error": [0.6115083592303784, 52.70114981437313, 2.6052250042986858, 134.3512504810947, 212.13123281721826],
    "std_error_hc3": [0.4670464262708631, 43.772891444971805, 2.4154645952490807, 121.679677784497, 183.75467514137856],
    "p_value": [1.7560088137802968e-31, 7.957468597902052e-12, 0.37017819701113497, 0.3209055840395324, 2.1339334686383477e-07],  # noqa: E501
    "r_squared": 0.99424334784623, "adj_r_squared": 0.9937200158322509, "f_statistic": 1899.8328428001892,
    "f_p_value": 2.919614913560621e-60, "log_likelihood": -411.66720355258536, "aic": 833.3344071051707,
    "bic": 843.8061299162812, "residual_std_error": 241.21465325991036,
}  # fmt: skip


def longley() -> tuple[torch.Tensor, torch.Tensor]:
    data = torch.tensor([[float(v) for v in line.split()] for line in LONGLEY.splitlines()], dtype=torch.float64)
    return data[:, 1:], data[:, 0]


def houses(n: int = 60) -> list[tuple]:
    """A real-looking table from a formula (the same on every machine): area, rooms, age, city, price."""
    rows = []
    cities = ["Aarhus", "Bergen", "Cork"]
    for i in range(n):
        area = round(50 + (i * 37) % 150 + 0.25 * ((i * 13) % 4), 2)
        rooms = 1 + (i * 7) % 5
        age = round(((i * 53) % 80) / 2, 1)
        city = cities[(i * 7 + i // 5) % 3]
        noise = ((i * 7919) % 1000) / 1000 - 0.5
        effect = {"Aarhus": 0, "Bergen": 400, "Cork": -250}[city]
        price = round(1000 + 12.5 * area + 150 * rooms - 8 * age + effect + 300 * noise, 2)
        rows.append((area, rooms, age, city, price))
    return rows


def houses_design() -> tuple[torch.Tensor, torch.Tensor]:
    rows = houses()
    features = [[a, r, g, float(c == "Bergen"), float(c == "Cork")] for a, r, g, c, _ in rows]
    return torch.tensor(features, dtype=torch.float64), torch.tensor([p for *_, p in rows], dtype=torch.float64)


def write_csv(path, header: list[str], rows) -> str:
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)
    return str(path)


def read_parameters(root) -> dict[str, dict[str, float | None]]:
    with open(version_dir(root) / "parameters.csv") as handle:
        return {
            row.pop("parameter"): {k: float(v) if v else None for k, v in row.items()} for row in csv.DictReader(handle)
        }


def read_summary(root) -> dict[str, float | None]:
    with open(version_dir(root) / "summary.csv") as handle:
        return {row["statistic"]: float(row["value"]) if row["value"] else None for row in csv.DictReader(handle)}


def relative(got: float, want: float) -> float:
    return abs(got - want) / abs(want)


def statistics_of(features, targets) -> NormalEquations:
    statistics = NormalEquations()
    statistics.update(features, targets)
    return statistics


def test_longley_gets_nists_certified_estimates_standard_deviations_residual_sd_and_r_squared():
    features, targets = longley()
    for rows in ((features, targets), None):  # with the second pass, and from the one-pass factor alone
        fit = ordinary_least_squares(statistics_of(features, targets), rows)
        for i, (estimate, deviation) in enumerate(LONGLEY_CERTIFIED):
            assert relative(float(fit.estimate[i]), estimate) <= 1e-9
            assert relative(float(fit.std_error[i]), deviation) <= 1e-9
        assert relative(fit.summary["residual_std_error"], LONGLEY_RESIDUAL_SD) <= 1e-9
        assert relative(fit.summary["r_squared"], LONGLEY_R_SQUARED) <= 1e-12
        assert relative(fit.summary["f_statistic"], LONGLEY_F) <= 1e-9
        assert fit.summary["df_residual"] == 9 and fit.summary["parameters"] == 7


def write_longley(path) -> None:
    features, targets = longley()
    rows = [[repr(float(y)), *(repr(float(v)) for v in row)] for row, y in zip(features, targets, strict=True)]
    write_csv(path, ["y", *LONGLEY_NAMES], rows)


@pytest.mark.parametrize("precision", ["32-true", "64-true"])
def test_longley_through_the_table_command_writes_the_certified_figures_in_either_precision(precision, isolated):
    write_longley(isolated / "longley.csv")
    args = ["--data.path", "longley.csv", "--data.target", "y", "--trainer.precision", precision]
    run_cli("fit", *TABLE, *ALL_ROWS, *FEW_EPOCHS, *args)
    parameters, summary = read_parameters(isolated), read_summary(isolated)
    for name, (estimate, deviation) in zip([*LONGLEY_NAMES, "bias"], LONGLEY_CERTIFIED, strict=True):
        assert relative(parameters[name]["optimum"], estimate) <= 1e-9
        assert relative(parameters[name]["std_error"], deviation) <= 1e-9
        assert relative(parameters[name]["t_value"], estimate / deviation) <= 1e-9
    assert relative(summary["residual_std_error"], LONGLEY_RESIDUAL_SD) <= 1e-9
    assert relative(summary["r_squared"], LONGLEY_R_SQUARED) <= 1e-12
    assert relative(summary["f_statistic"], LONGLEY_F) <= 1e-9
    assert list(summary) == [
        "rows", "parameters", "df_residual", "residual_std_error", "r_squared", "adj_r_squared", "f_statistic",
        "f_p_value", "log_likelihood", "aic", "bic", "condition_number",
    ]  # fmt: skip


@pytest.mark.slow
def test_longley_trained_in_float32_lands_within_a_hundredth_of_a_standard_error_of_each_estimate(isolated, capsys):
    write_longley(isolated / "longley.csv")
    run_cli("fit", *TABLE, *ALL_ROWS, "--data.path", "longley.csv", "--data.target", "y")
    for name, (estimate, deviation) in zip([*LONGLEY_NAMES, "bias"], LONGLEY_CERTIFIED, strict=True):
        assert abs(read_parameters(isolated)[name]["learned"] - estimate) <= 0.01 * deviation
    assert "training mse, learned / exact optimum = 1.00000\n" in capsys.readouterr().out


def test_a_table_with_a_text_column_gets_statsmodels_ols_figures_in_the_run_files(isolated, capsys):
    write_csv(isolated / "houses.csv", ["area", "rooms", "age", "city", "price"], houses())
    run_cli("fit", *TABLE, *ALL_ROWS, *FEW_EPOCHS, "--data.path", "houses.csv", "--data.target", "price")
    parameters, summary = read_parameters(isolated), read_summary(isolated)
    assert list(parameters) == ["area", "rooms", "age", "city=Bergen", "city=Cork", "bias"]
    for column, reference in HOUSES_OLS.items():
        for name, want in zip(parameters, reference, strict=True):
            assert relative(parameters[name][column], want) <= 1e-8, (column, name)
    for name, want in HOUSES_SUMMARY.items():
        assert relative(summary[name], want) <= 1e-8, name
    out = capsys.readouterr().out
    assert "Coefficients:\n" in out
    assert "Residual standard error: 89.5044 on 54 degrees of freedom" in out
    assert "F-statistic: 606.263 on 5 and 54 DF,  p-value: <2.2e-16" in out
    header = next(line for line in out.splitlines() if "Estimate" in line)
    assert header.split() == ["Estimate", "Std.", "Error", "t", "value", "Pr(>|t|)"]
    assert next(line for line in out.splitlines() if line.startswith("(Intercept)")).split()[1:3] == [
        "1033.05",
        "55.5797",
    ]


def test_without_intercept_r_squared_and_f_are_uncentred_as_statsmodels_gives_them():
    features, targets = houses_design()
    fit = ordinary_least_squares(statistics_of(features, targets), (features, targets), intercept=False)
    for column in ("estimate", "std_error", "std_error_hc3", "p_value"):
        got = getattr(fit, column)[:5].tolist()
        assert max(map(relative, got, HOUSES_NO_INTERCEPT[column])) <= 1e-8, column
    for name in ("r_squared", "adj_r_squared", "f_statistic", "f_p_value", "log_likelihood", "aic", "bic"):
        assert relative(fit.summary[name], HOUSES_NO_INTERCEPT[name]) <= 1e-8, name
    assert relative(fit.summary["residual_std_error"], HOUSES_NO_INTERCEPT["residual_std_error"]) <= 1e-8
    assert math.isnan(float(fit.std_error[5])) and float(fit.bias) == 0.0


# Rational arithmetic: the whole inference of a small design, exactly.


def exact_inverse(matrix: list[list[Fraction]]) -> list[list[Fraction]]:
    size = len(matrix)
    augmented = [[*row, *(Fraction(int(i == j)) for j in range(size))] for i, row in enumerate(matrix)]
    for column in range(size):
        pivot = next(i for i in range(column, size) if augmented[i][column] != 0)
        augmented[column], augmented[pivot] = augmented[pivot], augmented[column]
        lead = augmented[column][column]
        augmented[column] = [v / lead for v in augmented[column]]
        for i in range(size):
            if i != column and augmented[i][column] != 0:
                factor = augmented[i][column]
                augmented[i] = [a - factor * b for a, b in zip(augmented[i], augmented[column], strict=True)]
    return [row[size:] for row in augmented]


def exact_ols(features: torch.Tensor, targets: torch.Tensor, skip_leverage_one: bool = False):
    """Estimates (weights then intercept), their variances (classical and HC3), R² and F, in Fractions."""
    design = [[*(Fraction(v) for v in row), Fraction(1)] for row in features.tolist()]
    ys = [Fraction(v) for v in targets.tolist()]
    n, p = len(design), len(design[0])
    gram = [[sum(r[i] * r[j] for r in design) for j in range(p)] for i in range(p)]
    inverse = exact_inverse(gram)
    cross = [sum(r[i] * y for r, y in zip(design, ys, strict=True)) for i in range(p)]
    beta = [sum(inverse[i][j] * cross[j] for j in range(p)) for i in range(p)]
    residuals = [y - sum(b * x for b, x in zip(beta, r, strict=True)) for r, y in zip(design, ys, strict=True)]
    rss = sum(e * e for e in residuals)
    sigma2 = rss / (n - p)
    variance = [sigma2 * inverse[i][i] for i in range(p)]
    meat = [[Fraction(0)] * p for _ in range(p)]
    for r, e in zip(design, residuals, strict=True):
        leverage = sum(r[i] * inverse[i][j] * r[j] for i in range(p) for j in range(p))
        if leverage == 1 and skip_leverage_one:
            continue
        omega = e * e / (1 - leverage) ** 2
        for i in range(p):
            for j in range(p):
                meat[i][j] += omega * r[i] * r[j]
    left = [[sum(inverse[i][k] * meat[k][j] for k in range(p)) for j in range(p)] for i in range(p)]
    hc3 = [sum(left[i][k] * inverse[k][i] for k in range(p)) for i in range(p)]
    mean = sum(ys) / n
    tss = sum((y - mean) ** 2 for y in ys)
    r_squared = 1 - rss / tss
    f = (tss - rss) / (p - 1) / sigma2
    return beta, variance, hc3, r_squared, f


def small_design():
    """12 rows of dyadic values (exact in float64), 3 columns."""
    x = torch.tensor(
        [[i / 4, ((i * 5) % 7) / 2, float((i * i) % 5)] for i in range(12)], dtype=torch.float64
    )  # fmt: skip
    y = torch.tensor([0.5 * i - ((i * 3) % 4) / 8 + (i % 3) for i in range(12)], dtype=torch.float64)
    return x, y


def test_a_small_design_gets_the_rational_arithmetic_answers():
    features, targets = small_design()
    beta, variance, hc3, r_squared, f = exact_ols(features, targets)
    fit = ordinary_least_squares(statistics_of(features, targets), (features, targets))
    for i in range(4):
        assert relative(float(fit.estimate[i]), float(beta[i])) <= 1e-12
        assert relative(float(fit.std_error[i]) ** 2, float(variance[i])) <= 1e-12
        assert relative(float(fit.std_error_hc3[i]) ** 2, float(hc3[i])) <= 1e-12
    assert relative(fit.summary["r_squared"], float(r_squared)) <= 1e-13
    assert relative(fit.summary["f_statistic"], float(f)) <= 1e-12


def test_a_row_of_leverage_1_leaves_only_the_hc3_errors_it_determines_empty():
    # a column that is 1 in one row alone: that row alone fits its coefficient, HC3's 0/0 there
    features, targets = small_design()
    features = torch.cat([features, torch.zeros(12, 1, dtype=torch.float64)], dim=1)
    features[5, 3] = 1.0
    _, variance, hc3, _, _ = exact_ols(features, targets, skip_leverage_one=True)
    fit = ordinary_least_squares(statistics_of(features, targets), (features, targets))
    assert math.isnan(float(fit.std_error_hc3[3]))
    for i in (0, 1, 2, 4):
        assert relative(float(fit.std_error_hc3[i]) ** 2, float(hc3[i])) <= 1e-10
    for i in range(5):  # the classical errors are all defined
        assert relative(float(fit.std_error[i]) ** 2, float(variance[i])) <= 1e-11


def test_aliased_columns_are_the_ones_r_names_and_are_left_empty():
    features, targets = houses_design()
    doubled = torch.cat([features[:, :1], 2 * features[:, :1], features[:, 1:], torch.ones(60, 1)], dim=1)
    statistics = statistics_of(doubled, targets)
    # area2 = 2·area (aliased with the earlier column) and a constant column (aliased with the intercept)
    assert aliased_columns(statistics).tolist() == [False, True, False, False, False, False, True]
    fit = ordinary_least_squares(statistics, (doubled, targets))
    assert fit.notes[0] == "2 not defined because of singularities"
    kept = [0, 2, 3, 4, 5, 6]
    for column, reference in (("estimate", HOUSES_OLS["optimum"]), ("std_error", HOUSES_OLS["std_error"])):
        values = getattr(fit, column)
        assert max(map(relative, values[[*kept[:-1], 7]].tolist(), reference)) <= 1e-8
        assert math.isnan(float(values[1])) and math.isnan(float(values[6]))


def test_without_scipy_the_p_values_and_intervals_are_empty_and_one_line_says_how_to_get_them(monkeypatch):
    monkeypatch.setattr("linreg_pl.regression.inference.stats_available", lambda: False)
    features, targets = small_design()
    fit = ordinary_least_squares(statistics_of(features, targets), (features, targets))
    assert MISSING_SCIPY == 'p values and confidence intervals need scipy, the stats extra: pip install -e ".[stats]"'
    assert fit.notes == [MISSING_SCIPY]
    assert bool(fit.p_value.isnan().all() and fit.ci_low.isnan().all()) and math.isnan(fit.summary["f_p_value"])
    assert not bool(fit.std_error.isnan().any())


def test_a_penalised_fit_leaves_the_inference_columns_empty_and_says_why(isolated, capsys):
    write_csv(isolated / "houses.csv", ["area", "rooms", "age", "city", "price"], houses())
    args = ["--data.path", "houses.csv", "--data.target", "price", "--model.l2_strength", "0.01"]
    run_cli("fit", *TABLE, *ALL_ROWS, *FEW_EPOCHS, *args)
    parameters = read_parameters(isolated)
    for values in parameters.values():
        assert values["optimum"] is not None
        assert all(values[c] is None for c in ("std_error", "std_error_hc3", "t_value", "p_value", "ci_low", "ci_high"))
    assert not (version_dir(isolated) / "summary.csv").exists()
    assert (
        "no standard errors, p values or summary.csv: the ridge estimate is biased by its penalty, and they are for "
        "ordinary least squares\n" in capsys.readouterr().out
    )
