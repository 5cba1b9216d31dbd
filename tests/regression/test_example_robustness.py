"""Never lose a run, never a traceback for a typo: bad input, checkpoints, divergence, interrupts."""

from __future__ import annotations

import hashlib
import math
import os
import signal

import pytest
import torch
from conftest import interrupt_at, version_dir
from example_helpers import (
    DEFAULT_CONFIG,
    no_picture,  # noqa: F401 (autouse: fit.png is drawn by tests marked picture)
    run_cli,
    with_experiment,
)
from lightning.pytorch import Callback
from typing_extensions import override

from linreg_pl.cli import main
from linreg_pl.regression.model import LinearRegression

SYNTHETIC = "--data.init_args."


def error_line(capsys, *args: str) -> str:
    """Run the CLI expecting an error this project checks itself; return its one stderr line."""
    with pytest.raises(SystemExit) as exit_info:
        main(with_experiment([*args, "--trainer.accelerator", "cpu"]))
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert "Traceback" not in "\n".join(err)
    assert len(err) >= 1 and err[-1].startswith("linreg-pl: error: ")
    return err[-1]


def parse_error(capsys, *args: str) -> str:
    """Run the CLI expecting jsonargparse to refuse the arguments; return its message, reason and all."""
    with pytest.raises(SystemExit) as exit_info:
        main(with_experiment([*args, "--trainer.accelerator", "cpu"]))
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "usage:" not in err  # the reason, not 50 lines of usage
    assert "error: " in err
    return err[err.index("error: ") :]


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ([SYNTHETIC + "batch_size", "0"], "batch_size must be an integer >= 1, got 0"),
        (
            [SYNTHETIC + "num_examples", "2", SYNTHETIC + "val_fraction", "0.4", SYNTHETIC + "test_fraction", "0.4"],
            "2 examples leave 0 for training after the val/test splits, fewer than 1; use more examples",
        ),
        (
            [SYNTHETIC + "num_examples", "5", SYNTHETIC + "val_fraction", "0.1"],
            "val_fraction 0.1 of 5 examples is none",
        ),
        ([SYNTHETIC + "num_examples", "0"], "num_examples must be an integer >= 1, got 0"),
        (
            [SYNTHETIC + "true_w", "[1, 2, 3]"],
            "true_w has 3 values but num_inputs is 2; give 2 values, or true_w: null",
        ),
        ([SYNTHETIC + "noise_std", "-1"], "noise_std must be a finite number >= 0, got -1.0"),
        ([SYNTHETIC + "val_fraction", "1.5"], "val_fraction must be in [0, 1), got 1.5"),
        ([SYNTHETIC + "test_fraction", "-0.1"], "test_fraction must be in [0, 1), got -0.1"),
        (
            [SYNTHETIC + "val_fraction", "0.5", SYNTHETIC + "test_fraction", "0.5"],
            "val_fraction + test_fraction must be < 1",
        ),
        (["--model.init_std", "-1"], "LinearRegression: init_std must be a finite number >= 0, got -1.0"),
        (["--model.optimizer.lr", "0"], "model.optimizer: the learning rate must be a finite number > 0, got 0.0"),
        (["--model.optimizer.lr", "-1"], "model.optimizer: Invalid learning rate: -1.0"),
        (["--model.optimizer.lr", ".nan"], "the learning rate must be a finite number > 0, got nan"),
        (["--model.optimizer.lr", ".inf"], "the learning rate must be a finite number > 0, got inf"),
        (["--trainer.devices", "abc"], "trainer: `devices` selected with `CPUAccelerator` should be an int > 0."),
        (["--ckpt_path", "missing.ckpt"], "checkpoint 'missing.ckpt' does not exist"),
    ],
)
def test_bad_input_is_one_line_naming_the_field(args, expected, capsys, isolated):
    line = error_line(capsys, "fit", *args)
    assert line.endswith(expected) or expected in line
    assert not (version_dir(isolated) / "checkpoints").exists()


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        # jsonargparse's own reasons: the key, then why
        ([SYNTHETIC + "batchsize", "3"], ['Parser key "data"', "Option 'batchsize' is not accepted"]),
        (["--data.batch_size", "ten"], ['Parser key "batch_size"', "Expected a <class 'int'>. Got value: ten"]),
        (["--model.optimizer.lr", "nan"], ['Parser key "lr"', "Expected a <class 'float'>", "Given value: nan"]),
        (["--trainer.max_epochs", "three"], ['Parser key "trainer.max_epochs"', "Given value: three"]),
        (["--config", "missing.yaml"], ['Parser key "config": File does not exist']),
        ([SYNTHETIC + "noise", "0.1"], ["Option 'noise' is not accepted"]),
    ],
)
def test_what_jsonargparse_refuses_keeps_its_reason(args, expected, capsys, isolated):
    message = parse_error(capsys, "fit", *args)
    for part in expected:
        assert part in message
    assert not (version_dir(isolated) / "checkpoints").exists()


def test_unknown_key_in_a_config_file(capsys, isolated):
    (isolated / "typo.yaml").write_text("trainer:\n  max_epoch: 3\n")
    message = parse_error(capsys, "fit", "--config", "typo.yaml")
    assert "does not accept option 'trainer.max_epoch'" in message


def test_debug_shows_the_traceback(isolated, monkeypatch):
    monkeypatch.delenv("JSONARGPARSE_DEBUG", raising=False)
    with pytest.raises(Exception, match="batch_size must be an integer >= 1"):
        main(with_experiment(["fit", SYNTHETIC + "batch_size", "0", "--debug"]))
    assert "JSONARGPARSE_DEBUG" not in os.environ  # for that call only: later ones are not in debug mode


class Payload:
    """Stands for any pickled object: only tensors and plain values are ever unpickled."""


def test_corrupt_and_foreign_checkpoints_are_refused(capsys, isolated):
    (isolated / "corrupt.ckpt").write_bytes(b"not a checkpoint at all")
    assert "cannot be loaded" in error_line(capsys, "test", "--ckpt_path", "corrupt.ckpt")

    torch.save({"state_dict": {}, "payload": Payload()}, isolated / "pickled.ckpt")
    assert "holds objects other than tensors" in error_line(capsys, "test", "--ckpt_path", "pickled.ckpt")

    run_cli("fit", SYNTHETIC + "num_inputs", "3", SYNTHETIC + "true_w", "null", "--trainer.max_epochs", "1")
    other_shape = str(version_dir(isolated) / "checkpoints" / "last.ckpt")
    # the model is rebuilt from the checkpoint's arguments; the data of the config give 2 inputs
    line = error_line(capsys, "predict", "--ckpt_path", other_shape)
    assert line == f"linreg-pl: error: checkpoint {other_shape!r} was trained with num_inputs 3; the data give 2"
    # fit from it builds the model from the data (2 inputs): the checkpoint's weights do not fit
    line = error_line(capsys, "fit", "--ckpt_path", other_shape)
    assert "belongs to a model of another shape: " in line and "linear.weight (1, 3) (model has (1, 2))" in line


def test_divergence_stops_with_a_message_and_writes_no_bad_checkpoint(capsys, isolated):
    with pytest.raises(SystemExit) as exit_info:
        main(with_experiment(["fit", "--model.optimizer.lr", "5", "--trainer.accelerator", "cpu"]))
    assert exit_info.value.code == 1
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line.startswith("linreg-pl: error: training diverged at epoch 0")
    assert "The learning rate 5 is probably too high" in line and "no checkpoint was written" in line
    assert not (version_dir(isolated) / "checkpoints").exists()


class DivergesInSecondEpoch(LinearRegression):
    """Trains normally for one epoch, then its loss turns NaN (as a blown-up run's would)."""

    def training_step(self, batch, batch_idx):
        loss = super().training_step(batch, batch_idx)
        return loss * math.nan if self.current_epoch == 1 and batch_idx >= 5 else loss


def test_the_last_good_checkpoint_survives_a_divergence(capsys, isolated):
    with pytest.raises(SystemExit):
        main(with_experiment(["fit", "--model", f"{__name__}.DivergesInSecondEpoch", "--trainer.accelerator", "cpu"]))
    line = capsys.readouterr().err.strip().splitlines()[-1]
    last = version_dir(isolated) / "checkpoints" / "last.ckpt"
    assert f"the last good checkpoint is kept: {last.relative_to(isolated)}" in line.replace("./", "")
    checkpoint = torch.load(last, weights_only=True)
    assert checkpoint["epoch"] == 0
    assert all(torch.isfinite(v).all() for v in checkpoint["state_dict"].values())


def digest(directory) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(directory.rglob("*")) if p.is_file()}


def test_a_second_run_never_touches_the_first(isolated):
    run_cli("fit", "--trainer.max_epochs", "1")
    before = digest(version_dir(isolated, 0))
    run_cli("fit", "--trainer.max_epochs", "2")
    assert digest(version_dir(isolated, 0)) == before
    assert (version_dir(isolated, 1) / "checkpoints" / "last.ckpt").is_file()


INTERRUPTIBLE = [
    "--config",
    DEFAULT_CONFIG,
    "--trainer.accelerator",
    "cpu",
    SYNTHETIC + "num_examples",
    "2500",
]
STEPS_PER_EPOCH = 200  # 2,000 training examples, batch 10


class StepParameters(Callback):
    """Records the parameters after every step, by global step."""

    after: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    @override
    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.after[trainer.global_step] = (
            pl_module.linear.weight.detach().clone(),
            pl_module.linear.bias.detach().clone(),
        )


class StopAtStep(Callback):
    """Ends `fit` at global step `step` without changing `max_epochs` or `max_steps`, whose resume paths differ."""

    def __init__(self, step: int) -> None:
        self.step = step

    @override
    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step >= self.step:
            trainer.should_stop = True


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """Parameters after each step of the run that is never stopped, for the interrupted ones to match bit for bit."""
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(tmp_path_factory.mktemp("uninterrupted"))
        patch.setattr("sys.argv", ["linreg-pl"])
        StepParameters.after = {}
        main(with_experiment(["fit", *INTERRUPTIBLE, "--trainer.callbacks+", f"{__name__}.StepParameters"]))
    return StepParameters.after


INTERRUPTED_AT = STEPS_PER_EPOCH + 50  # in the second epoch


@pytest.mark.parametrize(
    ("signum", "name", "exit_code"),
    # Ctrl-C's in-process path is in tests/test_runs.py; this process-level one runs with the slow tests
    [(signal.SIGTERM, "SIGTERM", 143), pytest.param(signal.SIGINT, "Ctrl-C", 130, marks=pytest.mark.slow)],
)
def test_an_interrupted_run_saves_and_resumes_bit_identically(signum, name, exit_code, uninterrupted, isolated):
    code, output = interrupt_at(INTERRUPTED_AT, signum, *INTERRUPTIBLE, cwd=isolated)
    assert code == exit_code, output
    assert f"Interrupted ({name}): saved ./lightning_logs/version_0/checkpoints/interrupted.ckpt." in output
    checkpoints = version_dir(isolated) / "checkpoints"
    last, interrupted = checkpoints / "last.ckpt", checkpoints / "interrupted.ckpt"
    assert torch.load(last, weights_only=True)["global_step"] == STEPS_PER_EPOCH
    assert torch.load(interrupted, weights_only=True)["global_step"] == INTERRUPTED_AT

    # a few steps on from each checkpoint, the same bits as the run never stopped. Over whole epochs SGD
    # contracts any difference below float32's resolution, so only a short horizon shows a batch
    # trained twice or skipped.
    for checkpoint, step in ((last, STEPS_PER_EPOCH), (interrupted, INTERRUPTED_AT)):
        stop = ["--trainer.callbacks+", f"{__name__}.StopAtStep", "--trainer.callbacks.step", str(step + 3)]
        resumed = run_cli("fit", *INTERRUPTIBLE, *stop, "--ckpt_path", str(checkpoint))
        assert resumed.trainer.global_step == step + 3
        weight, bias = uninterrupted[step + 3]
        assert torch.equal(resumed.model.linear.weight, weight) and torch.equal(resumed.model.linear.bias, bias)
    # and to the end: the same number of steps
    resumed = run_cli("fit", *INTERRUPTIBLE, "--ckpt_path", str(interrupted))
    assert resumed.trainer.global_step == max(uninterrupted)
