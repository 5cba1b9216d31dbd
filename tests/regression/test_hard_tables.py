"""Tables that did not land before, through the README's table command: a Filip-like polynomial of degree 10
(condition ~4e9) in 64-true, and a diamonds-like table (tens of thousands of rows, text columns, near-collinear
columns, a few wild rows)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import ROOT
from example_helpers import (
    no_picture,  # noqa: F401 (autouse: fit.png is drawn by tests marked picture)
    run_cli,
)
from test_closed_form import exact_least_squares, worst_relative_error
from test_inference import write_csv

from linreg_pl.regression.closed_form import NormalEquations
from linreg_pl.regression.inference import ordinary_least_squares

TABLE = ["--config", str(ROOT / "configs" / "csv.yaml"), "--data.path", "t.csv", "--data.target", "y"]
# NIST StRD Filip's certified coefficients b0..b10: the curve the Filip-like table follows
FILIP = [
    -1467.48961422980, -2772.17959193342, -2316.37108160893, -1127.97394098372, -354.478233703349,
    -75.1242017393757, -10.8753180355343, -1.06221498588947, -0.670191154593408e-01, -0.246781078275479e-02,
    -0.402962525080404e-04,
]  # fmt: skip


# NIST StRD Filip's data (https://www.itl.nist.gov/div898/strd/lls/data/Filip.shtml): y x pairs, 4 a line
FILIP_DATA = """0.8116 -6.860120914  0.9072 -4.324130045  0.9052 -4.358625055  0.9039 -4.358426747
0.8053 -6.955852379  0.8377 -6.661145254  0.8667 -6.355462942  0.8809 -6.118102026
0.7975 -7.115148017  0.8162 -6.815308569  0.8515 -6.519993057  0.8766 -6.204119983
0.8885 -5.853871964  0.8859 -6.109523091  0.8959 -5.79832982  0.8913 -5.482672118
0.8959 -5.171791386  0.8971 -4.851705903  0.9021 -4.517126416  0.909 -4.143573228
0.9139 -3.709075441  0.9199 -3.499489089  0.8692 -6.300769497  0.8872 -5.953504836
0.89 -5.642065153  0.891 -5.031376979  0.8977 -4.680685696  0.9035 -4.329846955
0.9078 -3.928486195  0.7675 -8.56735134  0.7705 -8.363211311  0.7713 -8.107682739
0.7736 -7.823908741  0.7775 -7.522878745  0.7841 -7.218819279  0.7971 -6.920818754
0.8329 -6.628932138  0.8641 -6.323946875  0.8804 -5.991399828  0.7668 -8.781464495
0.7633 -8.663140179  0.7678 -8.473531488  0.7697 -8.247337057  0.77 -7.971428747
0.7749 -7.676129393  0.7796 -7.352812702  0.7897 -7.072065318  0.8131 -6.774174009
0.8498 -6.478861916  0.8741 -6.159517513  0.8061 -6.835647144  0.846 -6.53165267
0.8751 -6.224098421  0.8856 -5.910094889  0.8919 -5.598599459  0.8934 -5.290645224
0.894 -4.974284616  0.8957 -4.64454848  0.9047 -4.290560426  0.9129 -3.885055584
0.9209 -3.408378962  0.9219 -3.13200249  0.7739 -8.726767166  0.7681 -8.66695597
0.7665 -8.511026475  0.7703 -8.165388579  0.7702 -7.886056648  0.7761 -7.588043762
0.7809 -7.283412422  0.7961 -6.995678626  0.8253 -6.691862621  0.8602 -6.392544977
0.8809 -6.067374056  0.8301 -6.684029655  0.8664 -6.378719832  0.8834 -6.065855188
0.8898 -5.752272167  0.8964 -5.132414673  0.8963 -4.811352704  0.9074 -4.098269308
0.9119 -3.66174277  0.9228 -3.2644011"""
# its certified standard deviations of b0..b10, residual standard deviation and R²
FILIP_SD = [
    298.084530995537, 559.779865474950, 466.477572127796, 227.204274477751, 71.6478660875927, 15.2897178747400,
    2.23691159816033, 0.221624321934227, 0.142363763154724e-01, 0.535617408889821e-03, 0.896632837373868e-05,
]  # fmt: skip
FILIP_RESIDUAL_SD, FILIP_R_SQUARED = 0.334801051324544e-02, 0.996727416185620


def report_of(cli):
    return next(c for c in cli.trainer.callbacks if type(c).__name__ == "ParameterReport").result


def filip_like(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """82 rows, x in [-8.78, -3.13] as Filip's, y on its degree-10 curve plus noise of its residual SD (0.0033)."""
    rng = np.random.default_rng(seed)
    x = np.round(np.sort(rng.uniform(-8.78, -3.13, 82)), 6)
    y = np.round(sum(b * x**j for j, b in enumerate(FILIP)) + rng.normal(0, 0.0033, 82), 6)
    return x, y


@pytest.mark.slow
def test_a_filip_like_polynomial_lands_on_the_optimum_in_64_true(isolated, capsys):
    # before: 1.69 x the optimum (the averaged copy of the model stayed float32, and every swap with it rounded
    # the whitening of a design this ill-conditioned; a damping of 1e-14 left its smallest directions unwhitened)
    x, y = filip_like()
    write_csv(
        isolated / "t.csv",
        ["y", *(f"x{j}" for j in range(1, 11))],
        [[v, *(u**j for j in range(1, 11))] for u, v in zip(x, y, strict=True)],
    )
    cli = run_cli("fit", *TABLE, "--trainer.precision", "64-true")
    result = report_of(cli)
    assert result["condition_number"] > 1e9
    assert result["objective_ratio"] <= 1.01
    assert not bool(result["ols"].aliased.any())  # R's lm (tol 1e-7) would call x10 aliased here


def diamonds_like(n: int = 20000, seed: int = 0) -> list[list]:
    """carat, three text columns (cut, color, clarity), depth, table and x, y, z: x, y, z almost collinear with
    each other and with carat's cube root, the price a multiplicative function of carat and the grades."""
    rng = np.random.default_rng(seed)
    carat = np.round(np.exp(rng.normal(-0.4, 0.55, n)).clip(0.2, 5), 2)
    size = 6.45 * carat ** (1 / 3)
    x, y = (np.round(size + rng.normal(0, 0.03, n), 2) for _ in range(2))
    z = np.round(0.618 * size + rng.normal(0, 0.02, n), 2)
    depth = np.round(100 * z / ((x + y) / 2) + rng.normal(0, 0.3, n), 1)
    table = np.round(rng.normal(57, 2.2, n), 0)
    cut = rng.choice(5, n, p=[0.03, 0.09, 0.22, 0.26, 0.40])
    color, clarity = rng.choice(7, n), rng.choice(8, n, p=[0.01, 0.17, 0.24, 0.23, 0.15, 0.09, 0.07, 0.04])
    noise = rng.normal(0, 0.15, n)
    price = np.round(np.exp(8.5 + 1.7 * np.log(carat) + 0.04 * cut - 0.07 * color + 0.09 * clarity + noise), 0)
    cuts = ["Fair", "Good", "Very Good", "Premium", "Ideal"]
    clarities = ["I1", "SI2", "SI1", "VS2", "VS1", "VVS2", "VVS1", "IF"]
    columns = zip(carat, cut, color, clarity, depth, table, price, x, y, z, strict=True)
    return [[c, cuts[k], "DEFGHIJ"[o], clarities[q], d, t, p, u, v, w] for c, k, o, q, d, t, p, u, v, w in columns]


@pytest.mark.slow
def test_a_diamonds_like_table_lands_within_half_a_percent_with_the_readme_command(isolated, capsys):
    header = ["carat", "cut", "color", "clarity", "depth", "table", "y", "x", "width", "height"]
    write_csv(isolated / "t.csv", header, diamonds_like())
    cli = run_cli("fit", *TABLE)
    result = report_of(cli)
    assert cli.model.hparams.feature_names[:5] == ["carat", "cut=Good", "cut=Ideal", "cut=Premium", "cut=Very Good"]
    assert result["objective_ratio"] <= 1.005
    assert "hint" not in capsys.readouterr().out


def wild_rows_table(path) -> None:
    """A 5,000-row diamonds-like table with what ggplot2's diamonds has: rows with x, y and z 0 (not measured) and a y
    typed 10x too large, whose leverage is ~0.85: with batches of 64 it gives a batch holding it a curvature of
    n·h/B ~ 60 along its direction in the whitened problem."""
    rows = diamonds_like(n=5000)
    for i in range(0, 5000, 500):
        rows[i][7:10] = [0.0, 0.0, 0.0]
    rows[1234][8] = 58.9
    write_csv(path, ["carat", "cut", "color", "clarity", "depth", "table", "y", "x", "width", "height"], rows)


def test_a_row_of_high_leverage_no_longer_throws_sgd_off_the_optimum(isolated):
    wild_rows_table(isolated / "t.csv")
    cli = run_cli("fit", *TABLE, "--data.batch_size", "64")
    assert cli.model.hparams.standardization["largest_leverage"][0] > 0.5
    assert report_of(cli)["objective_ratio"] <= 1.005


@pytest.mark.slow
def test_without_the_leverage_aware_step_the_same_table_diverges(isolated, monkeypatch):
    wild_rows_table(isolated / "t.csv")
    monkeypatch.setattr("linreg_pl.regression.model.LinearRegression._step_scale", lambda self, rows: 1.0)
    with pytest.raises(SystemExit) as exit_info:  # the divergence guard's exit status
        run_cli("fit", *TABLE, "--data.batch_size", "64")
    assert exit_info.value.code == 1


def filip() -> tuple[torch.Tensor, torch.Tensor]:
    """NIST Filip as a table of x, x², ..., x¹⁰ would hold it: each power of the decimal x computed in float64."""
    values = [float(v) for v in FILIP_DATA.split()]
    x, y = values[1::2], values[0::2]
    features = torch.tensor([[u**j for j in range(1, 11)] for u in x], dtype=torch.float64)
    return features, torch.tensor(y, dtype=torch.float64)


def test_nist_filip_gets_its_exact_least_squares_and_nists_certified_values_as_far_as_its_float64_powers_allow():
    # the yardstick against the exact least squares of the float64 table (rational arithmetic): 13 digits measured
    # (7.6e-14); NIST's certified values are for the decimal x's exact powers, and the float64 table's own exact
    # least squares is 2.5e-8 away from them (its powers are rounded, at condition 3.8e9): 7 digits there
    features, targets = filip()
    statistics = NormalEquations()
    statistics.update(features, targets)
    fit = ordinary_least_squares(statistics, (features, targets))
    assert not bool(fit.aliased.any())  # R's lm (tol 1e-7) calls x10 aliased
    exact_weight, exact_bias = exact_least_squares(features, targets)
    assert worst_relative_error(fit.weight, fit.bias, exact_weight, exact_bias) <= 1e-12
    certified = [*FILIP[1:], FILIP[0]], [*FILIP_SD[1:], FILIP_SD[0]]  # weights, then the intercept
    for column, reference in zip((fit.estimate, fit.std_error), certified, strict=True):
        assert max(abs(got - want) / abs(want) for got, want in zip(column.tolist(), reference, strict=True)) <= 1e-7
    assert abs(fit.summary["residual_std_error"] / FILIP_RESIDUAL_SD - 1) <= 1e-9  # 2.7e-11 measured
    assert abs(fit.summary["r_squared"] / FILIP_R_SQUARED - 1) <= 1e-11  # 1.8e-13 measured
