"""Lightning's DDP on CPU (2 processes, gloo): the same result as one process, disjoint shards, portable checkpoints."""

from __future__ import annotations

import csv
import json
import signal

import pytest
import torch
from conftest import ROOT, interrupt_at, run_python, version_dir
from example_helpers import (
    DEFAULT_CONFIG,
    EXPERIMENT_DATA,
    assert_near_training_optimum,
    no_picture,  # noqa: F401 (autouse: fit.png is drawn by tests marked picture)
    run_cli,
)

from linreg_pl.regression.data import SyntheticRegressionDataModule

DDP = ["--config", DEFAULT_CONFIG, "--config", str(ROOT / "configs" / "ddp.yaml"), "--trainer.accelerator", "cpu"]


def run_ddp(*args: str, cwd) -> str:
    """`python -m linreg_pl ...` with 2 processes; Lightning launches the second one itself."""
    return run_python(["-m", "linreg_pl", *args], cwd)


@pytest.mark.slow  # two processes started and stopped, about 7 s
def test_ctrl_c_stops_every_ddp_process_at_once_and_saves_nothing(isolated):
    code, output = interrupt_at(5, signal.SIGINT, *DDP, "--trainer.max_epochs", "1", cwd=isolated)
    assert code == 1, output
    stopped = "Stopped at once (KeyboardInterrupt): nothing saved. No epoch had finished, so there is nothing to resume"
    assert stopped in output
    assert not list(isolated.rglob("*.ckpt"))


def metrics(path) -> dict[str, float]:
    """The last logged value of each metric in a metrics.csv."""
    values: dict[str, float] = {}
    for row in csv.DictReader(open(path)):
        values.update({key: float(value) for key, value in row.items() if value and key not in ("epoch", "step")})
    return values


@pytest.mark.slow  # 2 processes started by Lightning: seconds each; the kit's DDP runs by default
def test_ddp_trains_the_default_experiment_as_one_process_does(isolated):
    # 2 epochs: each gloo step costs more than the whole step of this model, and the second epoch's reshuffle,
    # dealt out to the processes, is what can go wrong (one process's 3-epoch fit is checked in test_cli.py)
    two_epochs = ["--trainer.max_epochs", "2"]
    output = run_ddp("fit", *DDP, *two_epochs, cwd=isolated)
    assert "max |learned - true|" in output
    ddp = torch.load(version_dir(isolated, 0) / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    single = run_cli("fit", "--config", DEFAULT_CONFIG, *two_epochs)
    # 2 processes x batch 5, gradients averaged = one process x batch 10: the same steps
    assert torch.equal(ddp["linear.weight"], single.model.linear.weight)  # bit-identical, as the README says
    assert torch.equal(ddp["linear.bias"], single.model.linear.bias)
    assert_near_training_optimum(single, 1e-2)
    # epoch metrics are reduced across the processes: the numbers are the global ones
    ddp_metrics, single_metrics = (
        metrics(version_dir(isolated, 0) / "metrics.csv"),
        metrics(version_dir(isolated, 1) / "metrics.csv"),
    )
    for name in ("train/loss", "val/loss", "val/mse", "val/mae", "val/r2"):
        assert ddp_metrics[name] == pytest.approx(single_metrics[name], rel=1e-4), name

    # a DDP checkpoint tests in one process, and a one-process checkpoint tests under DDP
    ddp_ckpt, single_ckpt = (str(version_dir(isolated, v) / "checkpoints" / "last.ckpt") for v in (0, 1))
    tested = run_cli("test", "--ckpt_path", ddp_ckpt)
    run_ddp("test", *DDP, "--ckpt_path", single_ckpt, cwd=isolated)
    ddp_tested = metrics(version_dir(isolated, 3) / "metrics.csv")
    assert ddp_tested["test/mse"] == pytest.approx(tested.trainer.callback_metrics["test/mse"].item(), rel=1e-4)


@pytest.mark.slow  # 2 processes started by Lightning: seconds each; the kit's DDP runs by default
def test_ddp_shards_are_disjoint_and_cover_the_data(isolated):
    # 1001 examples: 801 to train, which 2 processes cannot split evenly, so one row is padded in
    run_ddp(
        "fit",
        *DDP,
        "--model",
        "ddp_probe.ShardProbe",
        "--data",
        "ddp_probe.RowsDataModule",
        "--data.num_examples",
        "1001",
        "--trainer.max_epochs",
        "1",
        cwd=isolated,
    )
    seen = [json.loads((isolated / f"rows-{rank}.json").read_text()) for rank in (0, 1)]
    splits = SyntheticRegressionDataModule(**{**EXPERIMENT_DATA, "num_examples": 1001})
    splits.setup("fit")
    train_rows, val_rows = splits.splits["train"][2].tolist(), splits.splits["val"][2].tolist()

    trained = seen[0]["train"] + seen[1]["train"]
    assert len(seen[0]["train"]) == len(seen[1]["train"]) == 401  # equal step counts
    assert set(trained) == set(train_rows)
    assert len(trained) - len(set(trained)) == 1  # the one padded row, as DistributedSampler pads
    assert not set(seen[0]["train"]) & set(seen[1]["train"]) - {r for r in trained if trained.count(r) > 1}

    validated = seen[0]["val"] + seen[1]["val"]  # evaluation: no padding, nothing repeated
    assert sorted(validated) == sorted(val_rows)


@pytest.mark.slow
def test_ddp_streaming_trains_the_experiment(isolated):
    run_ddp(
        "fit",
        *DDP,
        "--config",
        str(ROOT / "configs" / "stream.yaml"),
        "--data.num_examples",
        "40000",
        "--data.chunk_size",
        "2000",
        # ddp.yaml's batch (5 a process) and the seed's lr, not stream.yaml's (for millions of examples): 20
        # chunks of 2,000, so that each process gets a validation chunk
        "--data.batch_size",
        "5",
        "--model.optimizer.init_args.lr",
        "0.03",
        cwd=isolated,
    )
    state = torch.load(version_dir(isolated, 0) / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    assert (state["linear.weight"][0] - torch.tensor([2.0, -3.4])).abs().max() < 0.01
    assert abs(state["linear.bias"].item() - 4.2) < 0.01


INFERENCE = ("optimum", "std_error", "std_error_hc3", "t_value", "p_value", "ci_low", "ci_high")


def run_files(root, version: int) -> tuple[dict[str, list[float]], dict[str, float]]:
    """parameters.csv's inference columns (by column, in parameter order) and summary.csv of a run."""
    with open(version_dir(root, version) / "parameters.csv") as handle:
        rows = list(csv.DictReader(handle))
    with open(version_dir(root, version) / "summary.csv") as handle:
        summary = {row["statistic"]: float(row["value"]) for row in csv.DictReader(handle)}
    return {column: [float(row[column]) for row in rows] for column in INFERENCE}, summary


@pytest.mark.slow  # 2 processes started by Lightning, twice
@pytest.mark.parametrize("streamed", [False, True], ids=["in-memory", "streamed"])
def test_ddp_writes_the_inference_of_one_process(streamed, isolated):
    # a table with a text column; streamed: 400 rows in chunks of 300 bytes (~40: each process needs a validation
    # chunk), shared out to the 2 processes, HC3's pass over the training chunks on the process that writes the files
    from test_inference import houses, write_csv

    write_csv(isolated / "houses.csv", ["area", "rooms", "age", "city", "price"], houses(400))
    config = "table-stream.yaml" if streamed else "csv.yaml"
    table = ["--config", str(ROOT / "configs" / config), "--data.path", "houses.csv", "--data.target", "price"]
    table += ["--trainer.max_epochs", "2", *(["--data.chunk_bytes", "300"] if streamed else [])]
    ddp = ["--config", str(ROOT / "configs" / "ddp.yaml"), "--trainer.accelerator", "cpu"]
    run_ddp("fit", *table, *ddp, cwd=isolated)
    run_cli("fit", *table)
    (ddp_parameters, ddp_summary), (parameters, summary) = run_files(isolated, 0), run_files(isolated, 1)
    assert list(ddp_summary) == list(summary) and summary["rows"] > 250  # measured: the same bits, both ways
    for name, value in summary.items():
        assert ddp_summary[name] == pytest.approx(value, rel=1e-9, abs=0), name
    for column, values in parameters.items():
        assert ddp_parameters[column] == pytest.approx(values, rel=1e-9, abs=0), column
