"""The statistics tests' tables: learned / optimum training MSE, the yardstick's correct digits and the inference's.

    PYTHONPATH=.:tests:tests/regression python benchmarks/statistics_digits.py     # a few minutes on 2 CPU cores

For each table the README's table command (configs/csv.yaml; 64-true for the Filip-like table) fits the default
split; `learned/optimum` is the report's ratio, `yardstick` the digits of its optimum against the exact least squares
(rational arithmetic) of the training split as read (identifiable columns). `inference` is the digits of the
standard errors (all rows, `ordinary_least_squares`) against the table's reference, where it has one.
"""

from __future__ import annotations

import math
import os
import sys
import tempfile
from fractions import Fraction
from pathlib import Path

import torch
from conftest import QUIET, ROOT
from test_closed_form import exact_least_squares, gaussian_elimination, polynomial_table_rows, scaled_table_rows
from test_hard_tables import FILIP, FILIP_SD, diamonds_like, filip, filip_like
from test_inference import (
    ALL_ROWS,
    HOUSES_OLS,
    LONGLEY_CERTIFIED,
    LONGLEY_NAMES,
    exact_ols,
    houses,
    houses_design,
    longley,
    small_design,
    write_csv,
)
from test_sparse_checkpoint import sparse_table

from linreg_pl.cli import main
from linreg_pl.regression.closed_form import NormalEquations
from linreg_pl.regression.inference import ordinary_least_squares

CSV = ["--config", str(ROOT / "configs" / "csv.yaml"), "--trainer.enable_checkpointing", "false"]


def digits(got: list[float], want: list[float]) -> float:
    worst = max(abs(float(g) - float(w)) / abs(float(w)) for g, w in zip(got, want, strict=True))
    return 16.0 if worst == 0 else -math.log10(worst)


def tensor_table(path: Path, features: torch.Tensor, targets: torch.Tensor, names: list[str]) -> None:
    write_csv(path, [*names, "y"], [[*r, t] for r, t in zip(features.tolist(), targets.tolist(), strict=True)])


def fit(path: Path, target: str, *args: str) -> tuple[dict, tuple[torch.Tensor, torch.Tensor]]:
    cli = main(["fit", *CSV, "--data.path", str(path), "--data.target", target, *args, *QUIET])
    report = next(c for c in cli.trainer.callbacks if type(c).__name__ == "ParameterReport").result
    return report, cli.datamodule.training_rows


def exact_least_squares_in_integers(features: torch.Tensor, targets: torch.Tensor) -> tuple[list, Fraction]:
    """`exact_least_squares` for many rows: each float64 column times a power of two is integers (exactly), so
    [1, x]ᵀ[1, x] and [1, x]ᵀy are sums of Python integers; the system is then solved in Fractions."""
    columns = [[1.0] * len(features), *features.to(torch.float64).T.tolist(), targets.to(torch.float64).tolist()]
    scales = [max(Fraction(v).denominator for v in column) for column in columns]
    ints = [[int(Fraction(v) * scale) for v in column] for column, scale in zip(columns, scales, strict=True)]
    size = len(columns) - 1

    def sum_of_products(p: int, q: int) -> Fraction:
        return Fraction(sum(a * b for a, b in zip(ints[p], ints[q], strict=True)), scales[p] * scales[q])

    matrix = [[sum_of_products(p, q) for q in range(size)] for p in range(size)]
    solution = gaussian_elimination(matrix, [sum_of_products(p, size) for p in range(size)])
    return solution[1:], solution[0]


def yardstick_digits(report: dict, rows: tuple[torch.Tensor, torch.Tensor]) -> float:
    fit = report.get("ols")
    kept = torch.nonzero(~fit.aliased).flatten() if fit is not None else torch.arange(rows[0].shape[1])
    solve = exact_least_squares if len(rows[0]) <= 5000 else exact_least_squares_in_integers
    exact_w, exact_b = solve(rows[0][:, kept], rows[1])
    got = [*report["closed_w"][kept].tolist(), float(report["closed_b"])]
    return digits(got, [*(float(w) for w in exact_w), float(exact_b)])


def inference_digits(features, targets, reference_errors: list[float], columns=None) -> float:
    statistics = NormalEquations()
    statistics.update(features, targets)
    result = ordinary_least_squares(statistics, (features, targets))
    errors = result.std_error.tolist()
    if columns is not None:
        errors = [errors[i] for i in columns]
    return digits(errors, reference_errors)


def main_table() -> list[tuple[str, str, str, str]]:
    lines = []
    work = Path(tempfile.mkdtemp())
    os.chdir(work)

    def row(name: str, report: dict, rows, inference: str, extra: str = "") -> None:
        ratio = report["objective_ratio"]
        yard = f"{yardstick_digits(report, rows):.1f}" if rows is not None else "not measured"
        lines.append((name, f"{ratio:.5f}{extra}", yard, inference))
        print(lines[-1], flush=True)

    features, targets = longley()
    tensor_table(work / "longley.csv", features, targets, LONGLEY_NAMES)
    report, rows = fit(work / "longley.csv", "y")
    certified = [sd for _, sd in LONGLEY_CERTIFIED]
    row("Longley (NIST)", report, rows, f"{inference_digits(features, targets, certified):.1f} (NIST certified SDs)")

    write_csv(work / "houses.csv", ["area", "rooms", "age", "city", "price"], houses())
    report, rows = fit(work / "houses.csv", "price")
    reference = HOUSES_OLS["std_error"]
    row("houses, text column", report, rows, f"{inference_digits(*houses_design(), reference):.1f} (statsmodels)")

    features, targets = small_design()
    tensor_table(work / "small.csv", features, targets, ["a", "b", "c"])
    # 12 rows: a 1-row validation split fails torchmetrics' R² ("Needs at least two samples"): every row trains
    report, rows = fit(work / "small.csv", "y", *ALL_ROWS)
    _, variance, _, _, _ = exact_ols(features, targets)
    exact_errors = [math.sqrt(float(v)) for v in variance]
    inference = f"{inference_digits(features, targets, exact_errors):.1f} (rational)"
    row("small rational design (all rows)", report, rows, inference)

    for name, table, precision in (
        ("degree 10 on [0, 10]", polynomial_table_rows, "32-true"),
        ("degree 10 on [0, 10] (64-true)", polynomial_table_rows, "64-true"),
        ("scales 1e9 apart", scaled_table_rows, "32-true"),
    ):
        features, targets, names = table()
        tensor_table(work / "t.csv", features, targets, names)
        report, rows = fit(work / "t.csv", "y", "--trainer.precision", precision)
        row(name, report, rows, "-")

    x, y = filip_like()
    features = torch.tensor([[u**j for j in range(1, 11)] for u in x.tolist()], dtype=torch.float64)
    tensor_table(work / "filip_like.csv", features, torch.tensor(y.tolist()), [f"x{j}" for j in range(1, 11)])
    report, rows = fit(work / "filip_like.csv", "y", "--trainer.precision", "64-true")
    row("Filip-like (64-true)", report, rows, "-")

    features, targets = filip()
    tensor_table(work / "filip.csv", features, targets, [f"x{j}" for j in range(1, 11)])
    report, rows = fit(work / "filip.csv", "y", "--trainer.precision", "64-true")
    errors = inference_digits(features, targets, [*FILIP_SD[1:], FILIP_SD[0]])
    statistics = NormalEquations()
    statistics.update(features, targets)
    estimate = ordinary_least_squares(statistics, (features, targets)).estimate.tolist()
    certified = digits(estimate, [*FILIP[1:], FILIP[0]])
    row("NIST Filip (64-true)", report, rows, f"SDs {errors:.1f}, estimates {certified:.1f} (NIST certified)")

    generator = torch.Generator().manual_seed(0)
    a, b = torch.randn(2, 100, generator=generator, dtype=torch.float64)
    y = 1.5 * a - 2 * b + 3 + 0.1 * torch.randn(100, generator=generator, dtype=torch.float64)
    tensor_table(work / "aliased.csv", torch.stack([a, b, 2 * a], 1), y, ["a", "b", "c"])
    report, rows = fit(work / "aliased.csv", "y")
    row("aliased column (c = 2a)", report, rows, "-")

    region = {"Aarhus": "north", "Bergen": "west", "Cork": "south"}
    duplicated = [(ar, ro, ag, c, region[c], p) for ar, ro, ag, c, p in houses()]
    write_csv(work / "dup.csv", ["area", "rooms", "age", "city", "region", "y"], duplicated)
    report, rows = fit(work / "dup.csv", "y")
    row("duplicated factor", report, rows, "-")

    generator = torch.Generator().manual_seed(1)
    features = torch.randn(30, 50, generator=generator, dtype=torch.float64)
    y = features[:, :5] @ torch.arange(1.0, 6.0, dtype=torch.float64) + 0.1 * torch.randn(30, generator=generator)
    tensor_table(work / "wide.csv", features, y, [f"x{j}" for j in range(50)])
    report, rows = fit(work / "wide.csv", "y")
    row("50 columns, 30 rows", report, rows, "none (no residual df)", " (1 + mse/var)")

    header = ["carat", "cut", "color", "clarity", "depth", "table", "y", "x", "width", "height"]
    write_csv(work / "diamonds.csv", header, diamonds_like())
    report, rows = fit(work / "diamonds.csv", "y")
    row("diamonds-like, 20,000 rows", report, rows, "-")

    features, targets = sparse_table()
    tensor_table(work / "lasso.csv", features, targets, [f"x{j}" for j in range(20)])
    lasso = ["--data.standardize", "false", "--data.batch_size", "50", "--trainer.max_epochs", "30"]
    lasso += ["--model.init_args.scheduler.init_args.T_max", "30", "--model.l1_strength", "0.3"]
    report, _ = fit(work / "lasso.csv", "y", *lasso)
    row("lasso 2,000 x 20 (l1 0.3, raw)", report, None, "- (penalised)", " (lasso objective)")
    return lines


if __name__ == "__main__":
    table = main_table()
    print("\n| table | learned / optimum | yardstick digits | inference digits (reference) |")
    print("|---|---|---|---|")
    for line in table:
        print("| " + " | ".join(line) + " |")
    sys.exit(0)
