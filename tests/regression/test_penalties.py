"""L2, L1 and elastic-net penalties: SGD reaches NormalEquations' exact penalised optimum; 0 changes nothing."""

from __future__ import annotations

import re

import pytest
import torch
from conftest import ROOT
from example_helpers import (
    no_picture,  # noqa: F401 (autouse: fit.png is drawn by tests marked picture)
    run_cli,
)
from test_training_to_the_optimum import noisy_table, write_table

from linreg_pl.errors import ConfigError
from linreg_pl.regression.closed_form import NormalEquations
from linreg_pl.regression.model import LinearRegression

SUPPORT = [1, 4, 7, 12, 18]
SPARSE_W = [0.0] * 20
for index, value in zip(SUPPORT, [1.5, -2.0, 1.0, 3.0, -1.2], strict=True):
    SPARSE_W[index] = value
# 20 features, 5 used: plain data (no standardising), batches of 400 (a quarter of the rows) so that the
# minibatch gradient of an unused weight stays below l1 and the proximal step keeps it at exactly 0;
# a cosine-decaying lr converges
SPARSE = [
    "--data.num_inputs", "20", "--data.true_w", str(SPARSE_W), "--data.true_b", "0.3", "--data.noise_std", "0.1",
    "--data.num_examples", "2000", "--data.batch_size", "400", "--trainer.max_epochs", "40",
    "--model.optimizer.lr", "0.1", "--model.scheduler", "CosineAnnealingLR", "--model.scheduler.T_max", "40",
]  # fmt: skip


def exact(cli, l1: float, l2: float, standardize: bool):
    statistics = NormalEquations()
    statistics.update(*cli.datamodule.splits["train"][:2])
    return statistics.solve(l1=l1, l2=l2, standardize=standardize)


def test_zero_penalties_leave_the_seed_experiment_bit_identical(isolated):
    # bit-identical parameters: no proximal step and no penalty term changed a single rounding
    quick = ["--trainer.max_epochs", "1", "--trainer.enable_checkpointing", "false", "--trainer.limit_val_batches", "0"]
    plain = run_cli("fit", *quick).model
    zero = run_cli("fit", *quick, "--model.l2_strength", "0", "--model.l1_strength", "0").model
    assert torch.equal(plain.linear.weight, zero.linear.weight) and torch.equal(plain.linear.bias, zero.linear.bias)
    # a penalty as small as 1e-3 does change them: the comparison above can fail
    small = run_cli("fit", *quick, "--model.l1_strength", "1e-3").model
    assert not torch.equal(plain.linear.weight, small.linear.weight)


def test_ridge_through_the_cli_reaches_the_exact_ridge_optimum(isolated, capsys):
    # A cosine-decaying lr converges to the optimum (within 1e-3 relative in 150 epochs); csv.yaml's tail averaging on
    # top of it stalls at 1.4e-3 on this table (see the README), so this run decays without averaging.
    write_table(isolated / "table.csv", noisy_table(seed=0, noise=0.1))
    table = ["--data", "TableRegressionDataModule", "--data.path", str(isolated / "table.csv"), "--data.target", "y"]
    decay = ["--model.scheduler", "CosineAnnealingLR", "--model.scheduler.T_max", "150", "--trainer.max_epochs", "150"]
    cli = run_cli("fit", *table, *decay, "--model.l2_strength", "0.1")
    weight, bias = cli.model.learned_parameters()
    expected_w, expected_b = exact(cli, 0.0, 0.1, standardize=True)
    least_w, _ = exact(cli, 0.0, 0.0, standardize=True)
    assert (weight.double() - expected_w).norm() <= 1e-3 * expected_w.norm()
    assert abs(float(bias) - float(expected_b)) <= 1e-3 * abs(float(expected_b))
    assert (least_w - expected_w).norm() > 0.05 * expected_w.norm()  # ridge is not least squares here
    out = capsys.readouterr().out
    assert "ridge" in out and "training ridge objective, learned / exact optimum = 1.0000" in out


@pytest.mark.parametrize(("l1", "l2", "kind"), [(0.2, 0.0, "lasso"), (0.3, 0.05, "elastic net")])
def test_lasso_and_elastic_net_find_exactly_the_used_features(l1, l2, kind, isolated, capsys):
    cli = run_cli("fit", *SPARSE, "--model.l1_strength", str(l1), "--model.l2_strength", str(l2))
    weight, bias = cli.model.learned_parameters()
    expected_w, expected_b = exact(cli, l1, l2, standardize=False)
    assert weight.nonzero().flatten().tolist() == SUPPORT == expected_w.nonzero().flatten().tolist()
    unused = [i for i in range(20) if i not in SUPPORT]
    assert weight[unused].tolist() == [0.0] * 15
    assert (weight.double() - expected_w).abs().max() <= 1e-2 and abs(float(bias - expected_b)) <= 1e-2
    assert re.search(rf"^parameter +true +{kind} +learned", capsys.readouterr().out, re.MULTILINE)


@pytest.mark.parametrize("name", ["l2_strength", "l1_strength"])
def test_a_bad_penalty_is_a_one_line_config_error(name, isolated, capsys):
    for value in (-0.1, float("nan"), float("inf")):
        with pytest.raises(ConfigError, match=f"{name} must be a finite number >= 0"):
            LinearRegression(**{name: value})
    with pytest.raises(SystemExit) as exit_info:
        run_cli("fit", f"--model.{name}", "-0.1")
    assert exit_info.value.code == 2
    assert f"{name} must be a finite number >= 0" in capsys.readouterr().err.strip().splitlines()[-1]


def test_the_averaged_config_switches_the_mechanism_on_for_synthetic_data(isolated, capsys):
    cli = run_cli("fit", "--config", str(ROOT / "configs" / "averaged.yaml"))
    assert any(type(c).__name__ == "TailWeightAveraging" for c in cli.trainer.callbacks)
    assert "training mse, learned / exact optimum = 1.0000" in capsys.readouterr().out
