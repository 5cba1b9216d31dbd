"""Checkpoints as Lightning reads them, checked once: on a user's models (tests/user_models.py and variants here).

python -m pytest tests/test_checkpoints.py
"""

from __future__ import annotations

import pytest
import torch
from conftest import QUIET, USER_EXPERIMENT, one_line, run_user, version_dir
from lightning.pytorch import LightningModule
from torch import nn
from user_models import Classifier

from linreg_pl.checkpoint_io import read_checkpoint
from linreg_pl.cli import main


def last(root, version: int = 0) -> str:
    return str(version_dir(root, version) / "checkpoints" / "last.ckpt")


class CountsLoads(Classifier):
    """Counts how often its `on_load_checkpoint` hook runs."""

    loads = 0

    def on_load_checkpoint(self, checkpoint) -> None:
        CountsLoads.loads += 1


@pytest.mark.parametrize("subcommand", ["fit", "validate", "test", "predict"])
def test_a_command_reads_its_checkpoint_once_and_calls_the_models_hook_once(subcommand, isolated, monkeypatch):
    user = ["--model", f"{__name__}.CountsLoads", "--data", "user_models.Blobs"]
    main(["fit", *user, "--trainer.max_epochs", "1", *QUIET])
    reads, real_load = [], torch.load

    def counting_load(f, *args, **kwargs):
        reads.append(str(f))
        return real_load(f, *args, **kwargs)

    monkeypatch.setattr(torch, "load", counting_load)
    CountsLoads.loads = 0
    main([subcommand, *user, "--ckpt_path", last(isolated), "--trainer.max_epochs", "2", *QUIET])
    assert reads == [last(isolated)]  # LightningCLI's hyperparameters, the check and the Trainer: one read
    assert CountsLoads.loads == 1  # Lightning's own call, not a second one of ours


class Lazy(Classifier):
    """Sizes its first layer from the first batch (`nn.LazyLinear`)."""

    def __init__(self, hidden: int = 16, lr: float = 0.05) -> None:
        super().__init__(hidden=hidden, lr=lr)
        self.net = nn.Sequential(nn.LazyLinear(hidden), nn.ReLU(), nn.Linear(hidden, 3))


def test_a_lazy_model_fits_validates_and_predicts_from_its_checkpoint(isolated):
    user = ["--model", f"{__name__}.Lazy", "--data", "user_models.Blobs"]
    fitted = main(["fit", *user, "--trainer.max_epochs", "1", *QUIET])
    validated = main(["validate", *user, "--ckpt_path", last(isolated), *QUIET])
    assert float(validated.trainer.callback_metrics["val_loss"]) == pytest.approx(
        float(fitted.trainer.callback_metrics["val_loss"]), rel=1e-6
    )
    main(["predict", *user, "--ckpt_path", last(isolated), "--predictions.path", "p.csv", *QUIET])
    assert len((isolated / "p.csv").read_text().splitlines()) == 1 + 90


class Loose(Classifier):
    """Loads checkpoints without some of its weights (`strict_loading = False`): a new head."""

    def __init__(self) -> None:
        super().__init__()
        self.strict_loading = False
        self.head = nn.Linear(3, 3)


def test_strict_loading_false_loads_a_checkpoint_without_some_weights(isolated):
    run_user("fit", "--trainer.max_epochs", "1")
    loose = main(["validate", "--model", f"{__name__}.Loose", "--data", "user_models.Blobs", "--ckpt_path",
                  last(isolated), *QUIET])  # fmt: skip
    assert "val_acc" in loose.trainer.callback_metrics


class Payload:
    """Stands for any pickled object: only tensors and plain values are unpickled unless the user says so."""


def test_a_checkpoint_with_other_objects_needs_weights_only_false(isolated, capsys):
    run_user("fit", "--trainer.max_epochs", "1")
    checkpoint = torch.load(last(isolated), weights_only=True)
    checkpoint["payload"] = Payload()
    torch.save(checkpoint, "trusted.ckpt")
    line = one_line(capsys, "validate", "--config", USER_EXPERIMENT, "--ckpt_path", "trusted.ckpt")
    assert line == (
        "linreg-pl: error: checkpoint 'trusted.ckpt' cannot be loaded: it is corrupt or truncated, not a checkpoint, "
        "or holds objects other than tensors and plain values, which are loaded only with --weights_only false "
        "(UnpicklingError)"
    )
    trusted = run_user("validate", "--ckpt_path", "trusted.ckpt", "--weights_only", "false")
    assert "val_acc" in trusted.trainer.callback_metrics


def test_missing_corrupt_and_foreign_checkpoints_are_one_line(isolated, capsys):
    base = ["validate", "--config", USER_EXPERIMENT, "--ckpt_path"]
    assert one_line(capsys, *base, "missing.ckpt") == "linreg-pl: error: checkpoint 'missing.ckpt' does not exist"
    (isolated / "corrupt.ckpt").write_bytes(b"not a checkpoint at all")
    assert "checkpoint 'corrupt.ckpt' cannot be loaded" in one_line(capsys, *base, "corrupt.ckpt")
    torch.save({"weights": torch.zeros(2)}, "plain.ckpt")
    assert one_line(capsys, *base, "plain.ckpt") == (
        "linreg-pl: error: checkpoint 'plain.ckpt' is not a Lightning checkpoint (no state_dict)"
    )
    run_user("fit", "--trainer.max_epochs", "1")
    foreign = torch.load(last(isolated), weights_only=True)
    del foreign["hyper_parameters"]  # written elsewhere: the config's model is built, as it is
    foreign["state_dict"]["net.0.weight"] = torch.zeros(8, 2)
    torch.save(foreign, "foreign.ckpt")
    assert one_line(capsys, *base, "foreign.ckpt") == (
        "linreg-pl: error: checkpoint 'foreign.ckpt' belongs to a model of another shape: "
        "net.0.weight (8, 2) (model has (16, 2))"
    )


def test_directories_and_urls_are_lightnings_to_read(isolated):
    (isolated / "sharded.ckpt").mkdir()  # FSDP and DeepSpeed write a directory
    assert read_checkpoint(str(isolated / "sharded.ckpt")) is None
    assert read_checkpoint("s3://bucket/run/last.ckpt") is None


def test_a_checkpoint_in_torchs_legacy_format_is_read_and_one_in_the_zip_format_memory_mapped(tmp_path, monkeypatch):
    checkpoint = {"state_dict": {"w": torch.arange(4.0)}, "epoch": 3}
    torch.save(checkpoint, tmp_path / "legacy.ckpt", _use_new_zipfile_serialization=False)  # torch < 1.6's format
    torch.save(checkpoint, tmp_path / "zip.ckpt")
    mmaps, real_load = [], torch.load
    monkeypatch.setattr(
        torch, "load", lambda *args, **kwargs: mmaps.append(kwargs["mmap"]) or real_load(*args, **kwargs)
    )
    for name in ("legacy.ckpt", "zip.ckpt"):
        read = read_checkpoint(str(tmp_path / name))
        assert torch.equal(read["state_dict"]["w"], torch.arange(4.0)) and read["epoch"] == 3
    assert mmaps == [False, True]


class Unrecorded(LightningModule):
    """Lazy layers and no `save_hyperparameters()`: the checkpoint does not name its class; the run's config.yaml
    does."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.LazyLinear(8), nn.ReLU(), nn.Linear(8, 3))

    def forward(self, points: torch.Tensor) -> torch.Tensor:
        return self.net(points)

    def training_step(self, batch, batch_idx):
        return nn.functional.cross_entropy(self(batch[0]), batch[1])

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=0.05)


def test_export_takes_the_class_of_a_model_that_saves_no_hyperparameters_from_the_runs_config(isolated, capsys):
    user = ["--model", f"{__name__}.Unrecorded", "--data", "user_models.Blobs", "--trainer.max_epochs", "1"]
    fitted = main(["fit", *user, *QUIET])
    main(["export", "--ckpt_path", last(isolated), "--output", "m.pt2"])
    assert capsys.readouterr().out.splitlines()[-2:] == [
        'input "points": float32 [batch, 2]',
        'output "predictions": float32 [batch, 3]',
    ]
    points = torch.randn(5, 2)
    with torch.no_grad():
        torch.testing.assert_close(torch.export.load("m.pt2").module()(points), fitted.model.cpu().eval()(points))
