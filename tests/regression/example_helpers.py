"""The regression example's test helpers: its experiment (configs/default.yaml) driven through the CLI in-process,
and the exact least squares its fits are held to. Part of the example: delete tests/regression/ with it.

Each test module here imports `no_picture`, an autouse fixture: drawing fit.png is a third of a small in-process
fit, so only the tests marked `picture` draw it.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from conftest import QUIET, ROOT

from linreg_pl.cli import main

DEFAULT_CONFIG = str(ROOT / "configs" / "default.yaml")
EXPERIMENT_DATA = yaml.safe_load(Path(DEFAULT_CONFIG).read_text())["data"]["init_args"]
# the default experiment, streamed: 20,000 examples in chunks of 2,000, one generating thread
SMALL_STREAM = [
    "--config",
    str(ROOT / "configs" / "stream.yaml"),
    "--data.num_examples",
    "20000",
    "--data.chunk_size",
    "2000",
    # the seed's batch and lr, not stream.yaml's (for millions of examples): small runs, their step counts
    "--data.batch_size",
    "10",
    "--model.optimizer.init_args.lr",
    "0.03",
]


@pytest.fixture(autouse=True)
def no_picture(request, monkeypatch):
    if request.node.get_closest_marker("picture") is None:
        # the report goes through the same steps but draws nothing (subprocesses draw as usual)
        monkeypatch.setattr("linreg_pl.regression.report.plot_fit", lambda path, **inputs: None)


def with_experiment(args: list[str]) -> list[str]:
    """A command line (subcommand first) with the regression experiment's config (configs/default.yaml) right after
    the subcommand, as the README's commands give it."""
    subcommand, *rest = args
    if subcommand not in ("fit", "validate", "test", "predict") or DEFAULT_CONFIG in rest:
        return list(args)
    return [subcommand, "--config", DEFAULT_CONFIG, *rest]


def run_cli(subcommand: str, *args: str, quiet: bool = True):
    """Run the CLI in-process and return the LightningCLI object (model, datamodule, trainer): the regression
    experiment (configs/default.yaml) and what `args` change."""
    return main(with_experiment([subcommand, *args, *(QUIET if quiet else [])]))


def exact_least_squares(features, targets):
    """The least-squares weight [num_inputs] and bias [] of `targets ≈ features·w + b` in float64, by torch's own
    solver (not the package's closed form): the optimum SGD on those rows approaches."""
    import torch

    design = torch.cat([features.double(), torch.ones(len(features), 1, dtype=torch.float64)], 1)
    solution = torch.linalg.lstsq(design, targets.double().unsqueeze(1), driver="gelsd").solution[:, 0]
    return solution[:-1], solution[-1]


def assert_near_training_optimum(cli, tolerance: float = 1e-3) -> None:
    """The fitted model's weight and bias are within `tolerance` of the exact least-squares ones of its
    training split (the in-memory data modules' `splits["train"]`)."""
    features, targets = cli.datamodule.splits["train"][:2]
    weight, bias = cli.model.learned_parameters()
    exact_w, exact_b = exact_least_squares(features.cpu(), targets.cpu())
    error = max((weight.double().cpu() - exact_w).abs().max().item(), abs(float(bias) - float(exact_b)))
    assert error < tolerance, f"max |learned - least squares| = {error:.3g}"
