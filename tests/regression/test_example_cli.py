"""The CLI end to end, in-process: every subcommand, correctness against the known truth, checkpoints."""

from __future__ import annotations

import copy
import csv
import re

import pytest
import torch
import yaml
from conftest import ROOT, version_dir
from example_helpers import (
    DEFAULT_CONFIG,
    assert_near_training_optimum,
    no_picture,  # noqa: F401 (autouse: fit.png is drawn by tests marked picture)
    run_cli,
)
from lightning.pytorch import LightningDataModule, LightningModule
from lightning.pytorch.cli import OptimizerCallable
from torch.utils.data import DataLoader, TensorDataset

from linreg_pl.cli import build_cli, main
from linreg_pl.errors import ConfigError
from linreg_pl.regression.model import LinearRegression

TRUE_W, TRUE_B = torch.tensor([2.0, -3.4]), 4.2


def parameters(cli) -> tuple[torch.Tensor, torch.Tensor]:
    return cli.model.linear.weight.detach().clone(), cli.model.linear.bias.detach().clone()


def test_default_fit_recovers_w_and_b_and_prints_the_table(isolated, capsys):
    cli = run_cli("fit", "--config", DEFAULT_CONFIG)
    assert_near_training_optimum(cli, 1e-3)  # measured 7e-4; the truth is 1e-3 away too (the noise)
    out = capsys.readouterr().out
    assert "epoch 3/3: train/loss" in out
    assert "closed-form" in out and "max |learned - true|" in out
    rows = list(csv.DictReader((version_dir(isolated) / "metrics.csv").open()))
    train_losses = [float(r["train/loss"]) for r in rows if r["train/loss"]]
    assert len(train_losses) == 3 and train_losses[2] < train_losses[0]
    val_r2 = [float(r["val/r2"]) for r in rows if r["val/r2"]]
    assert val_r2[-1] > 0.999
    assert {"val/mse", "val/mae", "val/r2", "val/loss"} <= set(rows[0])


def test_without_a_model_the_cli_asks_for_one(isolated, capsys):
    # linreg_pl/base.yaml names no model: the experiment comes from a config or --model/--data
    with pytest.raises(SystemExit) as stopped:
        main(["fit", "--trainer.accelerator", "cpu"])
    assert stopped.value.code == 2
    assert "error: the following arguments are required: fit.data, fit.model" in capsys.readouterr().err


def test_same_seed_gives_bit_identical_parameters_other_seed_does_not(isolated):
    first = parameters(run_cli("fit", "--trainer.max_epochs", "1"))
    second = parameters(run_cli("fit", "--trainer.max_epochs", "1"))
    other = parameters(run_cli("fit", "--trainer.max_epochs", "1", "--seed_everything", "1"))
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])
    assert not torch.equal(first[0], other[0])


def test_fit_twice_keeps_both_runs(isolated):
    run_cli("fit", "--trainer.max_epochs", "1")
    run_cli("fit", "--trainer.max_epochs", "1")
    for version in (0, 1):
        assert (version_dir(isolated, version) / "config.yaml").is_file()
        assert (version_dir(isolated, version) / "checkpoints" / "last.ckpt").is_file()


def test_print_config_round_trips(isolated, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", DEFAULT_CONFIG, "--data.init_args.noise_std", "0.05", "--print_config"])
    assert exit_info.value.code == 0
    printed = capsys.readouterr().out
    (isolated / "printed.yaml").write_text(printed)
    assert yaml.safe_load(printed)["data"]["init_args"]["noise_std"] == 0.05
    from_printed = parameters(run_cli("fit", "--config", "printed.yaml", "--trainer.max_epochs", "1"))
    direct = parameters(run_cli("fit", "--data.init_args.noise_std", "0.05", "--trainer.max_epochs", "1"))
    assert torch.equal(from_printed[0], direct[0]) and torch.equal(from_printed[1], direct[1])


def one_step(*args: str) -> torch.Tensor:
    """The model's weight and bias, flattened, after one training step from the seeded initialisation."""
    cli = run_cli("fit", "--trainer.max_steps", "1", "--trainer.enable_checkpointing", "false", *args)
    return torch.cat([cli.model.linear.weight.detach().flatten(), cli.model.linear.bias.detach()])


def test_learning_rate_and_optimizer_from_the_command_line(isolated):
    initial = build_cli(["--config", DEFAULT_CONFIG, "--trainer.accelerator", "cpu"], run=False).model
    start = torch.cat([initial.linear.weight.detach().flatten(), initial.linear.bias.detach()])
    # plain SGD moves by lr x the gradient: the same first batch, twice the lr, twice the step
    fast, slow = one_step("--model.optimizer.lr", "0.1") - start, one_step("--model.optimizer.lr", "0.05") - start
    assert fast.abs().min() > 0
    torch.testing.assert_close(fast, 2 * slow, rtol=1e-5, atol=0)
    # Adam's first step is lr x m/sqrt(v) = lr x sign(gradient): every parameter moves by exactly lr
    adam = one_step("--model.optimizer", "Adam", "--model.optimizer.lr", "0.05") - start
    torch.testing.assert_close(adam.abs(), torch.full_like(adam, 0.05), rtol=1e-5, atol=0)
    assert torch.equal(adam.sign(), slow.sign())  # down the gradient, as SGD went


def test_scheduler_by_class_path(isolated):
    cli = run_cli(
        "fit",
        "--trainer.max_epochs",
        "2",
        "--model.scheduler",
        "StepLR",
        "--model.scheduler.step_size",
        "1",
        "--model.scheduler.gamma",
        "0.5",
    )
    assert cli.trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(0.03 * 0.25)


def test_validate_test_predict_from_a_checkpoint_match_the_live_model(isolated):
    cli = run_cli("fit")
    live = cli.model.eval()
    datamodule = cli.datamodule
    test_features, test_targets = datamodule.splits["test"][0], datamodule.splits["test"][1]
    with torch.no_grad():
        live_predictions = live(test_features)
    live_mse = torch.mean((live_predictions - test_targets) ** 2).item()
    ckpt = str(version_dir(isolated) / "checkpoints" / "last.ckpt")

    tested = run_cli("test", "--ckpt_path", ckpt)
    assert tested.trainer.callback_metrics["test/mse"].item() == pytest.approx(live_mse, rel=1e-5)

    validated = run_cli("validate", "--ckpt_path", ckpt)
    assert validated.trainer.callback_metrics["val/mse"].item() == pytest.approx(
        cli.trainer.callback_metrics["val/mse"].item(), rel=1e-5
    )

    run_cli("predict", "--ckpt_path", ckpt, "--predictions.path", "out/predictions.csv")
    rows = list(csv.DictReader((isolated / "out" / "predictions.csv").open()))
    assert [int(r["row"]) for r in rows] == datamodule.splits["test"][2].tolist()
    assert torch.allclose(torch.tensor([float(r["prediction"]) for r in rows]), live_predictions, atol=1e-6)


def test_resume_from_last_checkpoint_is_bit_identical(isolated):
    straight = parameters(run_cli("fit"))
    run_cli("fit", "--trainer.max_epochs", "2")
    resumed = run_cli("fit", "--ckpt_path", str(version_dir(isolated, 1) / "checkpoints" / "last.ckpt"))
    assert resumed.trainer.current_epoch == 3
    assert torch.equal(parameters(resumed)[0], straight[0]) and torch.equal(parameters(resumed)[1], straight[1])


class SlowStartRegression(LinearRegression):
    """A user's own model: starts from zero weights instead of small random ones."""

    def __init__(self, num_inputs: int = 2, optimizer: OptimizerCallable = torch.optim.SGD) -> None:
        super().__init__(num_inputs=num_inputs, optimizer=optimizer)
        torch.nn.init.zeros_(self.linear.weight)


def test_a_user_model_subclass_trains_through_the_same_cli(isolated):
    cli = run_cli("fit", "--model", f"{__name__}.SlowStartRegression")
    assert type(cli.model).__name__ == "SlowStartRegression"
    assert_near_training_optimum(cli, 1e-3)


def summary(cli) -> dict:
    """What a config can set, read from the objects the CLI built (not from the parsed config)."""
    trainer, model, data = cli.trainer, cli.model, cli.datamodule
    optimizers = model.configure_optimizers() if isinstance(model, LinearRegression) else None
    optimizer = optimizers["optimizer"] if isinstance(optimizers, dict) else optimizers
    scheduler = optimizers["lr_scheduler"] if isinstance(optimizers, dict) else None
    averaging = [c for c in trainer.callbacks if type(c).__name__ == "TailWeightAveraging"]
    return {
        "seed": torch.initial_seed(),
        "model": type(model).__name__,
        "optimizer": (type(optimizer).__name__, optimizer.param_groups[0]["lr"]) if optimizer else None,
        "scheduler": (type(scheduler).__name__, scheduler.T_max) if scheduler else None,
        "data": type(data).__name__,
        "batch_size": getattr(data, "batch_size", None),
        "num_workers": getattr(data, "num_workers", None),
        "max_epochs": trainer.max_epochs,
        "sanity_steps": trainer.num_sanity_val_steps,
        "strategy": (type(trainer.strategy).__name__, trainer.num_devices),
        "logger": (type(trainer.logger).__name__, trainer.logger.save_dir, trainer.logger.name),
        "profiler": type(trainer.profiler).__name__,
        "checkpoint_io": type(trainer.strategy.checkpoint_io).__name__,
        "progress_bar": trainer.progress_bar_callback is not None,
        "checkpoints": sorted((c.monitor or "", c.filename) for c in trainer.checkpoint_callbacks),
        "callbacks": sorted({type(c).__name__ for c in trainer.callbacks} - {"ModelCheckpoint", "TQDMProgressBar"}),
        "averaging_start": averaging[0].start_fraction if averaging else None,
    }


BASE = {  # linreg_pl/base.yaml, read by every run
    "seed": 0, "max_epochs": None, "sanity_steps": 2, "strategy": ("SingleDeviceStrategy", 1),
    "logger": ("CSVLogger", ".", "lightning_logs"), "profiler": "LightningOverheadCuts",
    "checkpoint_io": "AtomicCheckpointIO", "progress_bar": True, "checkpoints": [("", "last")],
    "callbacks": ["DivergenceGuard", "InterruptCheckpoint", "ModelSummary", "MonitoredMetricsCheck",
                  "PredictionWriter", "SaveConfigCallback"],
}  # fmt: skip
DEFAULT = {  # configs/default.yaml on top of it
    **BASE, "model": "LinearRegression", "optimizer": ("SGD", 0.03), "scheduler": None,
    "data": "SyntheticRegressionDataModule", "batch_size": 10, "num_workers": None, "max_epochs": 3,
    "progress_bar": False, "checkpoints": [("", "last"), ("val/loss", "best-{epoch}-{step}")],
    "callbacks": sorted([*BASE["callbacks"], "ParameterReport"]), "averaging_start": None,
}  # fmt: skip
AT_SCALE = {"optimizer": ("SGD", 0.1), "batch_size": 4096}  # the streamed configs: millions of rows
AVERAGED = {"callbacks": sorted([*DEFAULT["callbacks"], "TailWeightAveraging"]), "averaging_start": 0.5}
# each file in configs/: what it sets, alone (an overlay: on top of configs/default.yaml)
CONFIGS = {
    "default.yaml": DEFAULT,
    "averaged.yaml": {**DEFAULT, **AVERAGED, "max_epochs": 10, "scheduler": ("CosineAnnealingLR", 10)},
    "csv.yaml": {
        **DEFAULT, **AVERAGED, "max_epochs": 60, "scheduler": ("CosineAnnealingLR", 60), "batch_size": 512,
        "optimizer": ("SGD", 0.1),
        "data": "TableRegressionDataModule",
    },
    "ddp.yaml": {**DEFAULT, "strategy": ("DDPStrategy", 2), "batch_size": 5},
    "gpu.yaml": DEFAULT,  # on a CPU machine: see below
    "stream.yaml": {**DEFAULT, **AT_SCALE, "data": "SyntheticStreamDataModule", "num_workers": 1},
    "table-stream.yaml": {**DEFAULT, **AT_SCALE, "data": "TableStreamDataModule", "num_workers": 1, "sanity_steps": 0},
    "tensorboard.yaml": {**DEFAULT, "logger": ("TensorBoardLogger", ".", "lightning_logs")},
}  # fmt: skip


def test_every_config_is_checked_below():
    # configs/sweep.yaml is a sweep file, not a config of `fit` (tests/test_sweep.py checks it)
    assert sorted(CONFIGS) == sorted(p.name for p in (ROOT / "configs").glob("*.yaml") if p.name != "sweep.yaml")


@pytest.mark.parametrize("config", sorted(CONFIGS))
def test_every_config_instantiates_what_it_sets(config, isolated):
    if config == "csv.yaml":  # it names a file of the user's: give it one
        (isolated / "data").mkdir()
        rows = "\n".join(f"{i},{i % 7},{3 * i + 1}" for i in range(50))
        (isolated / "data" / "example.csv").write_text("x1,x2,y\n" + rows + "\n")
    if config == "table-stream.yaml":  # the same, as Parquet in 10 row groups (10% each held out for val, test)
        import pyarrow as pa
        import pyarrow.parquet as pq

        (isolated / "data").mkdir()
        i = list(range(50))
        table = pa.table({"x1": i, "x2": [v % 7 for v in i], "y": [3.0 * v + 1 for v in i]})
        pq.write_table(table, isolated / "data" / "example.parquet", row_group_size=5)
    overlay = config in ("ddp.yaml", "gpu.yaml", "tensorboard.yaml")
    experiment = ["--config", DEFAULT_CONFIG] if overlay else []
    args = [*experiment, "--config", str(ROOT / "configs" / config)]
    if config == "gpu.yaml" and not torch.cuda.is_available():
        # it asks for a GPU: here the Trainer's own one line; on CPU, one device
        with pytest.raises(ConfigError, match="No supported gpu backend found"):
            build_cli(args, run=False)
        args += ["--trainer.accelerator", "cpu"]
    cli = build_cli(args, run=False)
    got = summary(cli)
    assert {key: got[key] for key in CONFIGS[config]} == CONFIGS[config]
    if config == "gpu.yaml" and torch.cuda.is_available():
        assert cli.trainer.accelerator.__class__.__name__ == "CUDAAccelerator" and cli.trainer.num_devices == 1
    if isinstance(cli.model, LinearRegression):
        assert cli.model.hparams.num_inputs == cli.datamodule.num_inputs


def test_a_default_run_prints_no_warnings(isolated):
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-m", "linreg_pl", "fit", "--config", DEFAULT_CONFIG, "--trainer.accelerator", "cpu"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    output = result.stdout + result.stderr
    # Python's and Lightning's warnings print as "<file>.py:<line>: <message>"
    assert not re.search(r"\.py:\d+: ", output) and "warn" not in output.lower(), output
    assert "Tip:" not in result.stderr
    assert "max |learned - true|" in result.stdout


class MLPRegression(LightningModule):
    """A user's own plain LightningModule: nothing of this project's, no `num_inputs`."""

    def __init__(self, hidden: int = 16, lr: float = 0.05) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = torch.nn.Sequential(torch.nn.Linear(2, hidden), torch.nn.Tanh(), torch.nn.Linear(hidden, 1))

    def forward(self, features):
        return self.net(features).squeeze(-1)

    def training_step(self, batch, batch_idx):
        loss = torch.nn.functional.mse_loss(self(batch[0]), batch[1])
        self.log("train/loss", loss, on_step=False, on_epoch=True)
        return loss

    def validation_step(self, batch, batch_idx):
        self.log("val/loss", torch.nn.functional.mse_loss(self(batch[0]), batch[1]))

    def test_step(self, batch, batch_idx):
        self.log("test/mse", torch.nn.functional.mse_loss(self(batch[0]), batch[1]))

    def predict_step(self, batch, batch_idx):
        return self(batch[0])

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr)


class QuadraticDataModule(LightningDataModule):
    """A user's own plain data module with DataLoaders: y = x0² - x1, which no linear model fits."""

    def __init__(self, num_examples: int = 512) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(0)
        self.features = torch.randn(num_examples, 2, generator=generator)
        self.targets = self.features[:, 0] ** 2 - self.features[:, 1]

    def train_dataloader(self):
        return DataLoader(TensorDataset(self.features, self.targets), batch_size=32, shuffle=True)

    def val_dataloader(self):
        return DataLoader(TensorDataset(self.features, self.targets), batch_size=128)

    test_dataloader = val_dataloader
    predict_dataloader = val_dataloader


def test_any_lightning_module_and_data_module_plug_in(isolated):
    plain = ["--model", f"{__name__}.MLPRegression", "--data", f"{__name__}.QuadraticDataModule"]
    cli = run_cli("fit", *plain, "--trainer.max_epochs", "20")
    assert type(cli.model) is MLPRegression and type(cli.datamodule) is QuadraticDataModule
    fitted = cli.trainer.callback_metrics["val/loss"].item()
    assert fitted < 0.1  # a nonlinear fit: the best linear model leaves a mean squared error of 2
    ckpt = str(version_dir(isolated) / "checkpoints" / "last.ckpt")
    assert run_cli("validate", *plain, "--ckpt_path", ckpt).trainer.callback_metrics["val/loss"].item() == (
        pytest.approx(fitted, rel=1e-5)
    )
    assert run_cli("test", *plain, "--ckpt_path", ckpt).trainer.callback_metrics["test/mse"].item() == (
        pytest.approx(fitted, rel=1e-5)
    )
    run_cli("predict", *plain, "--ckpt_path", ckpt, "--predictions.path", "plain.csv")
    rows = list(csv.DictReader((isolated / "plain.csv").open()))
    with torch.no_grad():
        expected = cli.model.eval()(cli.datamodule.features)
    assert [int(r["row"]) for r in rows] == list(range(len(expected)))
    assert torch.allclose(torch.tensor([float(r["prediction"]) for r in rows]), expected, atol=1e-5)


def test_the_example_module_pickles_during_fit_and_trains_on_as_it_did(isolated):
    fitted = run_cli("fit", "--trainer.max_epochs", "1", "--trainer.callbacks+", "user_models.SavesTheModule")
    loaded = torch.load("module.pt", weights_only=False)
    assert type(loaded) is LinearRegression
    assert torch.equal(loaded.linear.weight, fitted.model.linear.weight.cpu())
    optimizer = loaded.configure_optimizers()
    optimizer = optimizer["optimizer"] if isinstance(optimizer, dict) else optimizer
    assert type(optimizer).__name__ == "SGD" and optimizer.defaults["lr"] == 0.03
    assert type(copy.deepcopy(fitted.model)) is LinearRegression
