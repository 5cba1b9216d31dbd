"""The guards the CLI adds to every run, on a user's model (tests/user_models.py and variants here): they stop
what Lightning would get wrong and nothing that Lightning would finish correctly.

    python -m pytest tests/test_guards.py
"""

from __future__ import annotations

import math

import pytest
import torch
from conftest import QUIET, USER_EXPERIMENT, run_user, version_dir
from user_models import Classifier

from linreg_pl.cli import main

CHECKPOINT = "lightning.pytorch.callbacks.ModelCheckpoint"


class LogsEveryOtherEpoch(Classifier):
    """Logs `slow_metric` only on odd epochs (validations 2, 4, ...)."""

    def validation_step(self, batch, batch_idx):
        super().validation_step(batch, batch_idx)
        if self.current_epoch % 2 == 1:
            self.log("slow_metric", -float(self.current_epoch))


def test_a_metric_logged_only_when_its_checkpoint_acts_is_not_refused(isolated):
    (isolated / "every2.yaml").write_text(
        f"trainer:\n  callbacks:\n    - class_path: {CHECKPOINT}\n"
        "      init_args: {monitor: slow_metric, every_n_epochs: 2, filename: 'slow-{epoch}'}\n"
    )
    user = ["--model", f"{__name__}.LogsEveryOtherEpoch", "--data", "user_models.Blobs"]
    cli = main(["fit", *user, "--config", "every2.yaml", "--trainer.max_epochs", "4", *QUIET])
    assert cli.trainer.current_epoch == 4
    assert [p.name for p in (version_dir(isolated) / "checkpoints").glob("slow-*")] == ["slow-epoch=3.ckpt"]


def test_early_stopping_that_is_not_strict_is_left_alone(isolated):
    (isolated / "lenient.yaml").write_text(
        "trainer:\n  callbacks:\n    - class_path: lightning.pytorch.callbacks.EarlyStopping\n"
        "      init_args: {monitor: never_logged, strict: false, check_finite: false}\n"
    )
    cli = main(["fit", "--config", USER_EXPERIMENT, "--config", "lenient.yaml", "--trainer.max_epochs", "2", *QUIET])
    assert cli.trainer.current_epoch == 2


def test_a_monitor_never_logged_without_validation_is_one_line(isolated, capsys):
    # Lightning only warns here, and never writes the best checkpoint
    with pytest.raises(SystemExit) as stopped:
        run_user("fit", "--trainer.max_epochs", "1", "--trainer.limit_val_batches", "0")
    assert stopped.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "linreg-pl: error: ModelCheckpoint monitors 'val_acc', which Classifier never logged; it logged: "
        "train_loss. Monitor one of those (its `monitor` argument in trainer.callbacks), or leave that callback out "
        "of the config"
    )


class HugeButFinite(Classifier):
    """Weights of 1e37: their sum overflows float32, each is finite; the run is not diverging."""

    def on_train_start(self) -> None:
        with torch.no_grad():
            self.net[0].weight.fill_(1e37)

    def training_step(self, batch, batch_idx):
        return super().training_step(batch, batch_idx) * 0  # a finite loss; the weights stay as they are


class NaNWeights(Classifier):
    """A weight turns NaN at step 3; the steps after it return no loss (a model skipping bad batches)."""

    def training_step(self, batch, batch_idx):
        return None if self.global_step >= 3 else super().training_step(batch, batch_idx)

    def on_train_batch_end(self, outputs, batch, batch_idx) -> None:
        if self.global_step == 3:
            with torch.no_grad():
                self.net[2].bias[0] = math.nan


@pytest.mark.filterwarnings("ignore:`training_step` returned `None`")
def test_the_divergence_guard_looks_at_each_weight_only_when_a_sum_is_not_finite(isolated, capsys):
    cli = main(["fit", "--config", USER_EXPERIMENT, "--model", f"{__name__}.HugeButFinite", "--trainer.max_epochs",
                "1", "--model.lr", "0", *QUIET])  # fmt: skip
    assert cli.trainer.global_step == 14
    with pytest.raises(SystemExit) as stopped:
        main(["fit", "--config", USER_EXPERIMENT, "--model", f"{__name__}.NaNWeights", "--divergence_guard.init_args"
              ".check_every_n_steps", "1", *QUIET])  # fmt: skip
    assert stopped.value.code == 1
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line.startswith("linreg-pl: error: training diverged at epoch 0, step 4: the weights became NaN or infinite")
