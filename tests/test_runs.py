"""Where runs land and what survives a failed checkpoint write or an interrupt, through the real CLI, on a user's
model (tests/user_models.py: `Classifier` on `Blobs`, by tests/configs/classifier.yaml).

    python -m pytest tests/test_runs.py
"""

from __future__ import annotations

import math
import os
import re
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

import pytest
import torch
import user_models
from conftest import STEPS_PER_EPOCH, mount_tmpfs, run_user, version_dir
from lightning.pytorch import Callback

from linreg_pl.cli import main

ONE_EPOCH = ["--trainer.max_epochs", "1"]
TINY = [*ONE_EPOCH, "--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "1"]  # files, not training
FILES = {
    "config.yaml",
    "hparams.yaml",
    "metrics.csv",
    "checkpoints/best-epoch=0.ckpt",
    "checkpoints/last.ckpt",
}


def tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


class Diverges(user_models.Classifier):
    """Its loss turns NaN at the second step, as a blown-up run's would."""

    def training_step(self, batch, batch_idx):
        loss = super().training_step(batch, batch_idx)
        return loss * math.nan if self.global_step >= 1 else loss


def failure(capsys, *args: str) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exit_info:
        run_user("fit", *args)
    err = capsys.readouterr().err.strip().splitlines()
    assert "Traceback" not in "\n".join(err)
    return exit_info.value.code, err[-1]


# --- checkpoints that survive -------------------------------------------------------------------


def test_a_failed_checkpoint_write_is_one_line_and_keeps_the_last_good_one(capsys, isolated):
    code, line = failure(capsys, "--trainer.plugins", "checkpoint_faults.DiskFullOnSecondLast")
    checkpoints = version_dir(isolated) / "checkpoints"
    # epoch 2's last.ckpt fails half-way: epoch 1's is whole, and the best (val_acc reaches 1.0 in epoch 1 and ties
    # keep it) was not rewritten
    best = next(checkpoints.glob("best-*.ckpt"))
    named = "./lightning_logs/version_0/checkpoints/"  # as the run names them: under its save_dir "."
    assert code == 1
    assert line == (
        f"linreg-pl: error: could not write checkpoint {named}last.ckpt: No space left on device (ENOSPC); "
        f"resume from the last good checkpoint: --ckpt_path {named}last.ckpt"
    )
    # the previous last.ckpt is whole; nothing half-written under any name
    assert sorted(p.name for p in checkpoints.iterdir()) == [best.name, "last.ckpt"]
    assert torch.load(checkpoints / "last.ckpt", weights_only=True)["global_step"] == STEPS_PER_EPOCH
    assert torch.load(best, weights_only=True)["global_step"] == STEPS_PER_EPOCH
    resumed = run_user("fit", "--ckpt_path", str(checkpoints / "last.ckpt"))
    assert resumed.trainer.global_step == 3 * STEPS_PER_EPOCH


def press_ctrl_c(times: int = 1, at_step: int = STEPS_PER_EPOCH + 1):
    """A stand-in for `DivergenceGuard.on_train_batch_end` that sends this process Ctrl-C (SIGINT) `times`
    times at `at_step` (default: one step into epoch 2)."""

    def hook(self, trainer, *args):
        if trainer.global_step == at_step:
            for _ in range(times):
                signal.raise_signal(signal.SIGINT)

    return hook


@pytest.fixture
def sigint_ignored():
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    yield
    signal.signal(signal.SIGINT, previous)


def test_ctrl_c_finishes_the_step_and_saves_through_the_plugin(isolated, monkeypatch, capsys):
    from checkpoint_faults import RecordingCheckpointIO

    monkeypatch.setattr("linreg_pl.callbacks.DivergenceGuard.on_train_batch_end", press_ctrl_c())
    RecordingCheckpointIO.written.clear()
    with pytest.raises(SystemExit) as exit_info:
        run_user("fit", "--trainer.plugins", "checkpoint_faults.RecordingCheckpointIO")
    assert exit_info.value.code == 130  # 128 + SIGINT, as a shell reports a process stopped by Ctrl-C
    checkpoints = version_dir(isolated) / "checkpoints"
    named = "./lightning_logs/version_0/checkpoints/interrupted.ckpt"
    assert RecordingCheckpointIO.written[-1] == named
    saved = torch.load(checkpoints / "interrupted.ckpt", weights_only=True)
    assert saved["global_step"] == STEPS_PER_EPOCH + 1
    # a DataLoader keeps no place in its epoch (a stateful loader would: the example's is exact)
    assert capsys.readouterr().out.splitlines()[-1] == (
        f"Interrupted (Ctrl-C): saved {named}. This data keeps no place in the epoch, so a resumed epoch's "
        f"remaining steps start from its first batches. Resume with: fit <same config> --ckpt_path {named}"
    )
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # put back after the save ignored it


def test_a_second_ctrl_c_stops_at_once_and_saves_nothing(isolated, monkeypatch, capsys):
    monkeypatch.setattr("linreg_pl.callbacks.DivergenceGuard.on_train_batch_end", press_ctrl_c(times=2))
    with pytest.raises(SystemExit) as exit_info:
        run_user("fit")
    assert exit_info.value.code == 1  # Lightning's status after a KeyboardInterrupt
    checkpoints = version_dir(isolated) / "checkpoints"
    assert sorted(p.name for p in checkpoints.iterdir()) == ["best-epoch=0.ckpt", "last.ckpt"]
    assert capsys.readouterr().out.splitlines()[-1] == (
        "Stopped at once (KeyboardInterrupt): nothing saved. Resume from the last finished epoch "
        "with: fit <same config> --ckpt_path ./lightning_logs/version_0/checkpoints/last.ckpt"
    )
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


class CtrlCWhenTrainingEnds(Callback):
    """A user's callback during whose `on_train_end` Ctrl-C is pressed."""

    def on_train_end(self, trainer, pl_module) -> None:
        signal.raise_signal(signal.SIGINT)


def test_ctrl_c_after_the_last_step_stops_at_once(isolated, monkeypatch, capsys):
    with pytest.raises(SystemExit) as exit_info:
        run_user("fit", *ONE_EPOCH, "--trainer.callbacks+", f"{__name__}.CtrlCWhenTrainingEnds")
    assert exit_info.value.code == 1
    assert capsys.readouterr().out.splitlines()[-1] == (
        "Stopped at once (KeyboardInterrupt): nothing saved. Resume from the last finished epoch with: "
        "fit <same config> --ckpt_path ./lightning_logs/version_0/checkpoints/last.ckpt"
    )


def test_a_program_that_ignores_ctrl_c_keeps_ignoring_it(isolated, monkeypatch, sigint_ignored):
    monkeypatch.setattr("linreg_pl.callbacks.DivergenceGuard.on_train_batch_end", press_ctrl_c())
    cli = run_user("fit")
    assert cli.trainer.global_step == 3 * STEPS_PER_EPOCH
    assert not (version_dir(isolated) / "checkpoints" / "interrupted.ckpt").exists()
    assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN


def test_stale_temporaries_of_a_killed_write_are_removed_when_fit_starts(isolated):
    run_user("fit", *ONE_EPOCH)
    checkpoints = version_dir(isolated) / "checkpoints"
    stale = checkpoints / ".last.ckpt.abcd1234.tmp"
    stale.write_bytes(b"half a checkpoint")
    os.utime(stale, (0, 0))
    run_user("fit", *ONE_EPOCH, "--ckpt_path", str(checkpoints / "last.ckpt"))
    assert not stale.exists()


@pytest.fixture
def small_tmpfs():
    directory = Path(tempfile.mkdtemp())
    try:
        mount_tmpfs(directory, "32k")
    except BaseException:  # skipped or failed: nothing mounted
        shutil.rmtree(directory)
        raise
    yield directory
    subprocess.run(["umount", str(directory)], check=True, timeout=30)
    directory.rmdir()


def test_a_full_disk_through_the_cli(capsys, small_tmpfs):
    code, line = failure(capsys, "--trainer.default_root_dir", str(small_tmpfs), "--trainer.max_epochs", "10")
    assert code == 1
    assert re.fullmatch(
        r"linreg-pl: error: could not write checkpoint \S+\.ckpt: No space left on device \(ENOSPC\); "
        r"resume from the last good checkpoint: --ckpt_path (\S+\.ckpt)",
        line,
    ), line
    last_good = line.rsplit(" ", 1)[1]
    assert torch.load(last_good, weights_only=True)["state_dict"]
    for path in small_tmpfs.rglob("*.ckpt*"):
        assert path.suffix == ".ckpt" and torch.load(path, weights_only=True)["state_dict"], path


# --- runs land where Lightning users expect -------------------------------------------------------


def test_default_root_dir_holds_the_whole_run(isolated):
    run_user("fit", *ONE_EPOCH, "--trainer.default_root_dir", "runs")
    assert tree(isolated) == {f"runs/lightning_logs/version_0/{name}" for name in FILES}


def test_without_a_logger_each_run_still_has_its_own_directory(isolated):
    for _ in range(2):
        run_user("fit", *ONE_EPOCH, "--trainer.logger", "false")
    files = {"config.yaml", "checkpoints/best-epoch=0.ckpt", "checkpoints/last.ckpt"}
    assert tree(isolated) == {f"lightning_logs/version_{v}/{name}" for v in (0, 1) for name in files}
    assert "logger: false" in (version_dir(isolated, 1) / "config.yaml").read_text()


def test_checkpointing_off_writes_no_checkpoint(isolated):
    cli = run_user("fit", *ONE_EPOCH, "--trainer.enable_checkpointing", "false")
    assert cli.trainer.checkpoint_callbacks == []
    assert tree(isolated) == {
        f"lightning_logs/version_0/{name}" for name in ("config.yaml", "hparams.yaml", "metrics.csv")
    }


def test_an_interrupt_with_checkpointing_off_says_nothing_was_saved(isolated, monkeypatch, capsys):
    monkeypatch.setattr("linreg_pl.callbacks.DivergenceGuard.on_train_batch_end", press_ctrl_c(at_step=1))
    with pytest.raises(SystemExit) as exit_info:
        run_user("fit", "--trainer.enable_checkpointing", "false")
    assert exit_info.value.code == 130
    assert "Interrupted (Ctrl-C): checkpointing is off" in capsys.readouterr().out
    assert not list(isolated.rglob("*.ckpt"))


def test_divergence_with_checkpointing_off_says_no_checkpoint(capsys, isolated):
    code, line = failure(capsys, "--trainer.enable_checkpointing", "false", "--model", f"{__name__}.Diverges")
    assert code == 1 and line.endswith("; no checkpoint was written (checkpointing is off)")


@pytest.mark.parametrize(
    "logger", ["lightning.pytorch.loggers.CSVLogger", "lightning.pytorch.loggers.TensorBoardLogger"]
)
def test_any_logger_keeps_root_name_version(logger, isolated):
    args = [*ONE_EPOCH, "--trainer.logger", logger, "--trainer.logger.name", "exp", "--trainer.default_root_dir", "r"]
    run_user("fit", *args)
    run_user("fit", *args)
    for version in (0, 1):
        run = isolated / "r" / "exp" / f"version_{version}"
        assert {"config.yaml", "hparams.yaml", "checkpoints/last.ckpt"} <= tree(run)
    assert {p.name for p in isolated.iterdir()} == {"r"}


def test_a_run_that_loses_the_race_for_a_version_directory_takes_the_next(isolated, monkeypatch):
    """Forces the collision two runs started together can meet: another run creates version_0 after this run
    listed the directory and before it creates version_0 itself. The reservation must notice (os.mkdir fails
    on an existing directory) and take version_1; a check-then-create or exist_ok would share version_0."""
    real_mkdir, rival = os.mkdir, isolated / "lightning_logs" / "version_0"

    def mkdir_after_a_rival(path, *args, **kwargs):
        if Path(path).resolve() == rival and not rival.exists():
            real_mkdir(rival)  # the other run wins the race
            (rival / "rival.txt").write_text("the other run's")
        return real_mkdir(path, *args, **kwargs)

    monkeypatch.setattr(os, "mkdir", mkdir_after_a_rival)
    run_user("fit", *TINY)
    monkeypatch.undo()
    assert tree(isolated / "lightning_logs" / "version_0") == {"rival.txt"}  # nothing of this run's in it
    assert {"config.yaml", "metrics.csv", "checkpoints/last.ckpt"} <= tree(version_dir(isolated, 1))


def test_an_absolute_logger_save_dir_is_where_the_run_lands(isolated, tmp_path_factory):
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    run_user(
        "fit", *TINY, "--trainer.default_root_dir", "root",
        "--trainer.logger.init_args.save_dir", str(elsewhere),
    )  # fmt: skip
    # an absolute save_dir is not put under default_root_dir
    assert {"config.yaml", "metrics.csv", "checkpoints/last.ckpt"} <= tree(elsewhere / "lightning_logs" / "version_0")
    assert not (isolated / "root").exists()


def test_fit_from_a_runs_saved_config_repeats_the_run_in_a_new_directory(isolated):
    first = run_user("fit", "--trainer.max_epochs", "1", "--model.lr", "0.02")
    saved = version_dir(isolated) / "config.yaml"
    # the saved config alone, as a user reruns it: no configs/default.yaml before it
    again = main(["fit", "--config", str(saved), "--trainer.enable_model_summary", "false"])  # fmt: skip
    assert version_dir(isolated, 1).is_dir() and saved.read_text() != ""
    assert {"config.yaml", "metrics.csv", "checkpoints/last.ckpt"} <= tree(version_dir(isolated, 1))
    for name, value in first.model.state_dict().items():
        assert torch.equal(again.model.state_dict()[name], value), name
    assert again.trainer.global_step == first.trainer.global_step == STEPS_PER_EPOCH


def test_a_rerun_from_the_saved_config_keeps_the_root_it_names(isolated):
    run_user("fit", *TINY, "--trainer.default_root_dir", "root")
    saved = isolated / "root" / "lightning_logs" / "version_0" / "config.yaml"
    assert "save_dir: ." in saved.read_text()  # as given, not already joined onto the root
    main(["fit", "--config", str(saved), "--trainer.enable_model_summary", "false"])
    assert (isolated / "root" / "lightning_logs" / "version_1" / "checkpoints" / "last.ckpt").is_file()
    assert not (isolated / "root" / "root").exists()
