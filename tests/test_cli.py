"""The core's CLI on a user's model (tests/user_models.py): Lightning's meanings of its flags, the callbacks every run
gets, LightningCLI's optimiser flags, configs that stand alone, and a user's own errors in one line.

    python -m pytest tests/test_cli.py
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
import yaml
from conftest import QUIET, USER_EXPERIMENT, one_line, run_user, version_dir
from lightning.pytorch import LightningModule
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import Logger
from user_models import Classifier

from linreg_pl.callbacks import DivergenceGuard, InterruptCheckpoint, MonitoredMetricsCheck
from linreg_pl.checkpoint_io import AtomicCheckpointIO
from linreg_pl.cli import main
from linreg_pl.fast import LightningOverheadCuts
from linreg_pl.predictions import PredictionWriter

USER = ["--model", "user_models.Classifier", "--data", "user_models.Blobs"]
GUARDS = (DivergenceGuard, InterruptCheckpoint, MonitoredMetricsCheck, PredictionWriter)


def kinds(trainer) -> list[type]:
    return [type(c) for c in trainer.callbacks]


def test_the_base_config_gives_a_users_model_what_every_run_needs(isolated):
    cli = run_user("fit", "--trainer.max_epochs", "1")
    assert isinstance(cli.trainer.profiler, LightningOverheadCuts)
    assert isinstance(cli.trainer.strategy.checkpoint_io, AtomicCheckpointIO)
    assert type(cli.trainer.logger).__name__ == "CSVLogger" and cli.trainer.logger.log_dir.endswith("version_0")
    assert set(GUARDS) <= set(kinds(cli.trainer))
    assert [(c.monitor, c.filename) for c in cli.trainer.checkpoint_callbacks] == [
        ("val_acc", "best-{epoch}"),  # the user's, first: trainer.checkpoint_callback and `best` are its
        (None, "last"),
    ]
    assert cli.trainer.checkpoint_callback.monitor == "val_acc"
    assert sorted(p.name for p in (version_dir(isolated) / "checkpoints").iterdir()) == [
        "best-epoch=0.ckpt",
        "last.ckpt",
    ]


def test_a_plain_callbacks_list_keeps_last_ckpt_and_the_guards(isolated):
    # Lightning's docs write `callbacks:`, which replaces a list; the CLI adds what every run needs after it
    (isolated / "plain.yaml").write_text(
        "trainer:\n  callbacks:\n    - class_path: lightning.pytorch.callbacks.EarlyStopping\n"
        "      init_args: {monitor: val_loss, patience: 5}\n"
    )
    cli = main(["fit", *USER, "--config", "plain.yaml", "--trainer.max_epochs", "1", *QUIET])
    assert {"EarlyStopping", *(g.__name__ for g in GUARDS)} <= {c.__name__ for c in kinds(cli.trainer)}
    assert (version_dir(isolated) / "checkpoints" / "last.ckpt").is_file()


def test_the_same_config_twice_is_harmless(isolated):
    (isolated / "experiment.yaml").write_text(
        yaml.safe_dump(
            {
                "trainer": {
                    "max_epochs": 1,
                    "callbacks": [
                        {
                            "class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
                            "init_args": {"monitor": "val_loss", "filename": "best"},
                        }
                    ],  # fmt: skip
                },
                "model": {"class_path": "user_models.Classifier"},
                "data": {"class_path": "user_models.Blobs"},
            }
        )
    )
    cli = main(["fit", "--config", "experiment.yaml", "--config", "experiment.yaml", *QUIET])
    assert [c.monitor for c in cli.trainer.checkpoint_callbacks] == ["val_loss", None]


def test_a_callback_the_cli_adds_is_switched_off_or_set_by_its_name(isolated):
    off = run_user("fit", "--trainer.max_epochs", "1", "--divergence_guard", "null", "--predictions", "null")
    assert DivergenceGuard not in kinds(off.trainer) and PredictionWriter not in kinds(off.trainer)
    assert InterruptCheckpoint in kinds(off.trainer)
    tuned = run_user("fit", "--trainer.max_epochs", "1", "--divergence_guard.check_every_n_steps", "7")
    (guard,) = [c for c in tuned.trainer.callbacks if isinstance(c, DivergenceGuard)]
    assert guard.check_every_n_steps == 7
    none = run_user("fit", "--trainer.max_epochs", "1", "--last_checkpoint", "null")
    assert [c.monitor for c in none.trainer.checkpoint_callbacks] == ["val_acc"]
    assert not (version_dir(isolated, 2) / "checkpoints" / "last.ckpt").exists()


def test_ckpt_path_last_resumes_the_newest_run_and_starts_fresh_when_there_is_none(isolated, capsys):
    fresh = run_user("fit", "--trainer.max_epochs", "1", "--ckpt_path", "last")
    assert fresh.trainer.global_step == 14 and fresh.trainer.ckpt_path is None
    assert "--ckpt_path last: no checkpoint under ./lightning_logs yet, so training starts from scratch" in (
        capsys.readouterr().out
    )
    resumed = run_user("fit", "--trainer.max_epochs", "2", "--ckpt_path", "last")
    assert resumed.trainer.ckpt_path == "./lightning_logs/version_0/checkpoints/last.ckpt"
    assert resumed.trainer.global_step == 28  # continued: one epoch more, not two
    assert (version_dir(isolated, 1) / "checkpoints" / "last.ckpt").is_file()
    again = run_user("validate", "--ckpt_path", "last")
    assert again.trainer.ckpt_path == "./lightning_logs/version_1/checkpoints/last.ckpt"


def test_ckpt_path_last_outside_fit_needs_a_checkpoint(isolated, capsys):
    line = one_line(capsys, "test", "--config", USER_EXPERIMENT, "--ckpt_path", "last")
    assert line == "linreg-pl: error: --ckpt_path last: no checkpoint under ./lightning_logs yet; fit first"


def test_ckpt_path_best_is_the_best_checkpoint_of_the_monitored_metric(isolated):
    run_user("fit", "--trainer.max_epochs", "2")
    states = torch.load(version_dir(isolated) / "checkpoints" / "last.ckpt", weights_only=True)["callbacks"]
    (recorded,) = [s["best_model_path"] for key, s in states.items() if s.get("monitor") == "val_acc"]
    tested = run_user("test", "--ckpt_path", "best")
    assert tested.trainer.ckpt_path == recorded and "best-epoch=" in recorded


class Bare(LightningModule):
    """A model without configure_optimizers, for LightningCLI's --optimizer and --lr_scheduler."""

    def __init__(self) -> None:
        super().__init__()
        self.net = torch.nn.Linear(2, 3)

    def training_step(self, batch, batch_idx):
        points, labels = batch
        return F.cross_entropy(self.net(points), labels)


def test_lightning_clis_optimizer_flags_configure_a_model_without_configure_optimizers(isolated):
    cli = main(["fit", "--model", f"{__name__}.Bare", "--data", "user_models.Blobs", "--trainer.max_epochs", "1",
                "--optimizer", "Adam", "--optimizer.lr", "0.01", "--lr_scheduler", "StepLR",
                "--lr_scheduler.step_size", "3", *QUIET])  # fmt: skip
    (optimizer,) = cli.trainer.optimizers
    assert type(optimizer).__name__ == "Adam" and optimizer.defaults["lr"] == 0.01
    assert type(cli.trainer.lr_scheduler_configs[0].scheduler).__name__ == "StepLR"
    assert cli.trainer.global_step == 14


def test_an_overlay_alone_says_what_to_put_before_it(isolated, capsys):
    (isolated / "ddp.yaml").write_text("trainer:\n  strategy: ddp\n  devices: 2\n")
    line = one_line(capsys, "fit", "--config", "ddp.yaml")
    assert line == (
        "linreg-pl: error: ddp.yaml names no model: it adds to an experiment; put an experiment config before it "
        "(e.g. --config configs/default.yaml), or give --model and --data"
    )


class Picky(Classifier):
    """Refuses an argument, as a user's model does."""

    def __init__(self, size: int = 3) -> None:
        if size > 2:
            raise ValueError(f"size must be at most 2, got {size}")
        super().__init__()


class RefusingLogger(Logger):
    """A logger that refuses its tracking URI, as MLflow's does."""

    def __init__(self, tracking_uri: str = "nowhere://") -> None:
        raise ValueError(f"cannot open tracking URI {tracking_uri!r}")

    name = version = None

    def log_hyperparams(self, params, *args, **kwargs) -> None:
        pass

    def log_metrics(self, metrics, step=None) -> None:
        pass


def test_a_users_class_that_raises_while_being_built_is_one_line(isolated, capsys):
    line = one_line(capsys, "fit", "--model", f"{__name__}.Picky", "--data", "user_models.Blobs")
    assert line == f"linreg-pl: error: {__name__}.Picky: ValueError: size must be at most 2, got 3"
    line = one_line(capsys, "fit", *USER, "--trainer.logger", f"{__name__}.RefusingLogger")
    assert line == f"linreg-pl: error: {__name__}.RefusingLogger: ValueError: cannot open tracking URI 'nowhere://'"
    with pytest.raises(ValueError, match="size must be at most 2, got 3"):  # the traceback, with --debug
        main(["fit", "--model", f"{__name__}.Picky", "--data", "user_models.Blobs", "--debug", *QUIET])


def test_print_config_runs_again_as_the_same_experiment(isolated, capsys):
    with pytest.raises(SystemExit) as done:
        main(["fit", "--config", USER_EXPERIMENT, "--trainer.max_epochs", "1", "--print_config", *QUIET])
    assert done.value.code == 0
    (isolated / "printed.yaml").write_text(capsys.readouterr().out)
    printed = main(["fit", "--config", "printed.yaml"])
    direct = run_user("fit", "--trainer.max_epochs", "1")
    for name, value in direct.model.state_dict().items():
        assert torch.equal(printed.model.state_dict()[name], value), name
    assert [type(c) for c in printed.trainer.callbacks].count(ModelCheckpoint) == 2  # nothing doubled


def test_ckpt_path_hpc_means_what_lightning_says(isolated):
    # Lightning's `hpc`: the newest hpc_ckpt_<N>.ckpt in default_root_dir, as a SLURM requeue leaves it
    run_user("fit", "--trainer.max_epochs", "1")
    (isolated / "hpc_ckpt_1.ckpt").write_bytes((version_dir(isolated) / "checkpoints" / "last.ckpt").read_bytes())
    resumed = run_user("fit", "--trainer.max_epochs", "2", "--ckpt_path", "hpc")
    assert resumed.trainer.ckpt_path.endswith("hpc_ckpt_1.ckpt")
    assert resumed.trainer.global_step == 28
