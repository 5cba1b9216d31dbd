"""linreg_pl/fast.py and the entry point's collector handling: faster, with the same results."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import DEFAULT_CONFIG, QUIET, run_cli, version_dir
from lightning.pytorch import Callback

from linreg_pl.cli import build_cli
from linreg_pl.fast import PER_BATCH_HOOKS, LightningOverheadCuts
from linreg_pl.regression.batches import gather
from linreg_pl.regression.model import LinearRegression


def test_the_cuts_change_no_result(isolated):
    cut = run_cli("fit", "--trainer.max_epochs", "2")
    plain = run_cli("fit", "--trainer.max_epochs", "2", "--trainer.profiler", "null")
    assert isinstance(cut.trainer.profiler, LightningOverheadCuts)
    assert not isinstance(plain.trainer.profiler, LightningOverheadCuts)
    assert torch.equal(cut.model.linear.weight, plain.model.linear.weight)
    assert torch.equal(cut.model.linear.bias, plain.model.linear.bias)
    logged = [list(csv.DictReader((version_dir(isolated, v) / "metrics.csv").open())) for v in (0, 1)]
    assert logged[0] == logged[1]
    assert len([row for row in logged[0] if row["train/loss"]]) == 2  # one per epoch


class HookWatch(Callback):
    """Implements one per-batch hook and looks, while training, at what the run did to the others."""

    def __init__(self, fail_at_batch: int | None = None) -> None:
        self.batches = 0
        self.inherited_hooks_seen: set[str] = set()
        self.model_class: type | None = None
        self.fail_at_batch = fail_at_batch

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.batches += 1
        self.inherited_hooks_seen |= {hook for hook in PER_BATCH_HOOKS if callable(getattr(self, hook))}
        self.model_class = type(pl_module)
        if self.batches == self.fail_at_batch:
            raise RuntimeError("a failing callback")


def assert_put_back(cli) -> None:
    assert type(cli.model) is LinearRegression
    for callback in cli.trainer.callbacks:
        assert not set(PER_BATCH_HOOKS) & set(vars(callback))
        assert all(callable(getattr(callback, hook)) for hook in PER_BATCH_HOOKS)


# trainer.fit called directly, without main()'s filter for this warning from inside Lightning
@pytest.mark.filterwarnings(r"ignore:`isinstance\(treespec, LeafSpec\)`:FutureWarning")
def test_implemented_hooks_still_run_and_everything_is_put_back(isolated):
    cli = build_cli(["--config", DEFAULT_CONFIG, "--trainer.max_epochs", "2", *QUIET], run=False)
    watch = HookWatch()
    cli.trainer.callbacks.append(watch)
    cli.trainer.fit(cli.model, cli.datamodule)
    assert watch.batches == cli.trainer.global_step == 2 * len(cli.datamodule.train_dataloader())
    # during the run only the implemented hook was callable, and the model had the fast subclass
    assert watch.inherited_hooks_seen == {"on_train_batch_end"}
    assert watch.model_class is not LinearRegression and issubclass(watch.model_class, LinearRegression)
    assert_put_back(cli)
    assert not [c for c in cli.trainer.callbacks if type(c).__module__ == "linreg_pl.fast"]


@pytest.mark.filterwarnings(r"ignore:`isinstance\(treespec, LeafSpec\)`:FutureWarning")
def test_a_run_that_raises_puts_everything_back_too(isolated):
    cli = build_cli(["--config", DEFAULT_CONFIG, "--trainer.max_epochs", "2", *QUIET], run=False)
    watch = HookWatch(fail_at_batch=5)
    cli.trainer.callbacks.append(watch)
    with pytest.raises(RuntimeError, match="a failing callback"):
        cli.trainer.fit(cli.model, cli.datamodule)
    assert watch.model_class is not LinearRegression  # the cuts were on
    assert_put_back(cli)


def test_gather_takes_the_rows_indexing_takes():
    generator = torch.Generator().manual_seed(0)
    features, targets = torch.randn(50, 3, generator=generator), torch.randn(50, generator=generator)
    for index in (
        torch.tensor([7, 0, 49, 7]),
        torch.tensor([3, 1], dtype=torch.int32),
        torch.tensor([], dtype=torch.long),
    ):
        gathered = gather((features, targets), index)
        assert torch.equal(gathered[0], features[index.long()]) and torch.equal(gathered[1], targets[index.long()])
    sliced = gather((features, targets), slice(10, 20))
    assert sliced[0].data_ptr() == features[10].data_ptr()  # a view, no copy
    assert torch.equal(sliced[1], targets[10:20])


def test_the_entry_point_keeps_the_collector_off_the_imports(isolated):
    # no collection runs while the CLI's modules import; afterwards they are frozen and the collector is on
    probe = """
import gc, sys
import linreg_pl.__main__ as entry
unfrozen_collections = []
gc.callbacks.append(lambda phase, info: phase == "start" and unfrozen_collections.append(gc.get_freeze_count() == 0))
sys.argv = ["linreg-pl", "--help"]
try:
    entry.run()
except SystemExit:
    pass
print(any(unfrozen_collections), gc.get_freeze_count() > 100_000, gc.isenabled(), file=sys.stderr)
"""
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert done.stderr.split()[-3:] == ["False", "True", "True"]
    assert "fit" in done.stdout  # the CLI's help ran


@pytest.mark.parametrize(
    "command", [[sys.executable, "-m", "linreg_pl"], [str(Path(sys.executable).parent / "linreg-pl")]]
)
def test_python_dash_m_and_the_script_run_a_fit(command, isolated):
    fit = subprocess.run(
        [*command, "fit", "--config", DEFAULT_CONFIG, "--trainer.max_epochs", "1", *QUIET],
        capture_output=True,
        text=True,
        cwd=isolated,
    )
    assert fit.returncode == 0, fit.stderr
    assert "epoch 1/1: train/loss" in fit.stdout
    assert (version_dir(isolated) / "checkpoints" / "last.ckpt").is_file()
